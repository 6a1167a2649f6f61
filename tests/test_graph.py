"""The stage graph is declared once: every adapter (DVC, kfp, ZenML, the experiment runner) matches it.

Each ``*_mismatch`` helper says how one adapter differs from the graph (empty when it
matches); the last tests add a stage to the graph alone and check every helper notices.
"""

import inspect
import subprocess
import sys

import yaml
from conftest import REPO

from fedmm import graph, workflow
from fedmm.config import Config, load_config
from fedmm.stages import dvc_pipeline

ZENML_ONLY = {"config", "run_id", "show"}  # step parameters that are not graph artifacts


def dvc_mismatch() -> list[str]:
    """Differences between the tracked dvc.yaml and the one generated from the graph for params.yaml."""
    tracked = yaml.safe_load((REPO / "dvc.yaml").read_text())
    expected = dvc_pipeline(load_config(REPO / "params.yaml"))
    names = list(tracked["stages"]), list(expected["stages"])
    problems = [f"stages {names[0]} vs the graph's {names[1]}"] if names[0] != names[1] else []
    problems += [f"stage {name} differs" for name in expected["stages"]
                 if name in tracked["stages"] and tracked["stages"][name] != expected["stages"][name]]
    return problems


def kfp_mismatch() -> list[str]:
    """Differences between the kfp components and the graph's stages, inputs and output."""
    from components.stages import COMPONENTS

    if list(COMPONENTS) != list(graph.NAMES):
        return [f"components {list(COMPONENTS)} vs the graph's {list(graph.NAMES)}"]
    problems = []
    for stage in graph.STAGES:
        spec = COMPONENTS[stage.name].component_spec
        inputs = set(spec.inputs) - {"config_json", "tracking_uri"}
        outputs = {stage.output if name == "Output" else name for name in spec.outputs} - {"metrics"}  # a return value
        if inputs != set(stage.inputs) or outputs != {stage.output}:
            problems.append(f"{stage.name}: component reads {sorted(inputs)}, writes {sorted(outputs)}")
    return problems


def zenml_mismatch() -> list[str]:
    """Differences between the ZenML steps and the graph's stages and inputs."""
    from pipelines.training import STEPS

    if list(STEPS) != list(graph.NAMES):
        return [f"steps {list(STEPS)} vs the graph's {list(graph.NAMES)}"]
    problems = []
    for stage in graph.STAGES:
        parameters = set(inspect.signature(STEPS[stage.name].entrypoint).parameters) - ZENML_ONLY
        if parameters != set(stage.inputs):
            problems.append(f"{stage.name}: step reads {sorted(parameters)}, the graph {sorted(stage.inputs)}")
    return problems


def runner_mismatch() -> list[str]:
    from fedmm.experiments.runner import CELL_STAGES

    prefix = graph.NAMES[: len(CELL_STAGES)]
    return [] if CELL_STAGES == prefix else [f"experiment cells run {list(CELL_STAGES)}, the graph starts {list(prefix)}"]


def test_the_graph_is_well_formed():
    assert graph.SECTIONS == tuple(Config.model_fields)
    config = Config()
    produced: set[str] = set()
    for stage in graph.STAGES:
        assert set(stage.inputs) <= produced, f"{stage.name} reads an artifact no earlier stage writes"
        assert stage.output in graph.ARTIFACTS and stage.output not in produced
        produced.add(stage.output)
        assert set(stage.after) <= set(graph.NAMES[: graph.NAMES.index(stage.name)])
        parameters = inspect.signature(graph.function(stage)).parameters
        assert set(stage.inputs) <= set(parameters), f"{stage.function} does not take {stage.inputs}"
        for key in (*stage.reads, *stage.files):
            graph.config_value(config, key)  # every declared key exists
        if stage.skip:
            assert callable(getattr(workflow, stage.skip))
    assert produced == set(graph.ARTIFACTS)
    assert graph.stage("register").reads == graph.SECTIONS  # the version records the whole config's hash
    train = graph.stage("train")
    assert train.gpu and train.transport == "train.transport" and "impute.serve" in train.reads
    assert [s.name for s in graph.STAGES if s.gpu] == ["train"]
    assert [s.name for s in graph.STAGES if not s.cacheable] == ["register"]


def test_skipped_stages_say_why():
    assert [s.name for s in graph.STAGES if s.skip] == ["evaluate-imputation"]  # no deltas: the audit says so
    assert graph.skip_reason(graph.stage("evaluate-imputation"), Config()) == "impute.evaluate is false"
    assert graph.skip_reason(graph.stage("evaluate-imputation"), load_config(None, ["impute.evaluate=true"])) is None


def test_dvc_yaml_is_the_graph_and_params_yaml_a_full_config():
    assert dvc_mismatch() == []
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params == load_config(REPO / "params.yaml").model_dump(mode="json")  # DVC needs every key it lists


def test_dvc_stages_depend_on_what_they_read(tmp_path):
    config = load_config(None, ["data.source=npz", f"data.path={tmp_path / 'mine.npz'}"])
    stages = dvc_pipeline(config)["stages"]
    assert "impute.serve" in stages["train"]["params"] and "artifacts/validation/partitions.json" in stages["train"]["deps"]
    assert stages["prepare"]["deps"] == [str(tmp_path / "mine.npz")]
    assert stages["register"]["deps"][-2:] == ["artifacts/audit", "artifacts/imputation"]
    assert stages["register"]["outs"] == [{"artifacts/registry/summary.json": {"cache": False}}]


def test_a_stage_sees_the_config_keys_it_reads_and_defaults_elsewhere():
    """What a ZenML step's cache key holds: a change outside what a stage reads leaves its view unchanged."""
    config = load_config(REPO / "params.yaml", ["train.strategy=mmfed3", "partition.proxy_fraction=0.1",
                                                "validation.value_bounds={acc: [-20, 20]}", "impute.serve=mean"])
    changed = config.model_copy(update={"audit": config.audit.model_copy(update={"max_evaluations": 64}),
                                        "registry": config.registry.model_copy(update={"champion_margin": 0.05})})
    for name in ("prepare", "partition", "train", "evaluate-imputation"):
        assert graph.stage_config(graph.stage(name), changed) == graph.stage_config(graph.stage(name), config), name
    assert graph.stage_config(graph.stage("audit"), changed).audit.max_evaluations == 64
    train = graph.stage_config(graph.stage("train"), config)
    assert (train.train, train.partition, train.impute.serve) == (config.train, config.partition, "mean")
    assert train.validation.value_bounds == {"acc": (-20.0, 20.0)} and train.registry == Config().registry
    assert graph.stage_config(graph.stage("prepare"), config).train == Config().train
    assert graph.stage_config(graph.stage("register"), changed) == changed


def test_kfp_components_match_the_graph():
    assert kfp_mismatch() == []


def test_zenml_steps_match_the_graph():
    assert zenml_mismatch() == []


def test_experiment_cells_run_the_graph_with_both_gates():
    assert runner_mismatch() == []


def test_a_stage_added_to_the_graph_alone_fails_every_adapter_check(monkeypatch):
    extra = graph.Stage("report", "evaluate_models", ("prepared", "federated", "result"), "evaluation", ())
    monkeypatch.setattr(graph, "STAGES", (*graph.STAGES, extra))
    monkeypatch.setattr(graph, "NAMES", (*graph.NAMES, "report"))
    assert dvc_mismatch() and kfp_mismatch() and zenml_mismatch()


def test_a_stage_added_to_dvc_yaml_alone_fails(monkeypatch, tmp_path):
    tracked = yaml.safe_load((REPO / "dvc.yaml").read_text())
    tracked["stages"]["report"] = {"cmd": "fedmm stage evaluate --config params.yaml --workdir artifacts"}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(tracked))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert dvc_mismatch()


LIGHT = ("fedmm.fl", "fedmm.fl.training", "fedmm.data", "fedmm.data.federated", "fedmm.audit", "fedmm.impute",
         "fedmm.impute.evaluate", "fedmm.graph", "fedmm.stages", "fedmm.workflow", "fedmm.cli", "fedmm.kg.run",
         "fedmm.kg.experiment")


def test_core_modules_import_no_orchestrator():
    """A fresh interpreter: the core (down to the training, audit and imputation-evaluation modules and the
    stage functions) loads no orchestrator, tracking or plotting library, nor any adapter."""
    heavy = ("zenml", "kfp", "mlflow", "matplotlib", "pipelines", "steps", "components")
    code = f"import sys, {', '.join(LIGHT)}; print(sorted(n for n in {heavy!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
