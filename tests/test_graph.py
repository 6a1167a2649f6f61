"""The graphs are declared once: every adapter (DVC, kfp, ZenML, the experiment runner) is generated from them.

Each ``*_mismatch`` helper says how one adapter differs from a graph (empty when it
matches); a stage added to a graph alone, or a second graph with other stages and
artifacts, reaches every adapter with no adapter edited. The house rules the graph
refactor brought in are checked here too: no adapter names a stage, no ``fedmm.*`` tag
literal outside the tag schema, no import of another package's private names, no long
function in ``fedmm/``.
"""

import ast
import inspect
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from fedmm import graph
from fedmm.config import Config, ConfigError, load_config
from fedmm.graph import TRAINING, Graph
from fedmm.stages import dvc_pipeline
from fedmm.tracking import tags

ADAPTERS = ("fedmm_pipelines",)
STEP_ONLY = {"config", "show", "forced"}  # step parameters that are not graph artifacts
COMPONENT_ONLY = {"config_json", "tracking_uri"}


def dvc_mismatch(graph_: Graph = TRAINING) -> list[str]:
    """Differences between the tracked dvc.yaml and the one generated from the graph for params.yaml."""
    tracked = yaml.safe_load((REPO / "dvc.yaml").read_text())
    expected = dvc_pipeline(graph_, load_config(REPO / "params.yaml"))
    names = list(tracked["stages"]), list(expected["stages"])
    problems = [f"stages {names[0]} vs the graph's {names[1]}"] if names[0] != names[1] else []
    problems += [f"stage {name} differs" for name in expected["stages"]
                 if name in tracked["stages"] and tracked["stages"][name] != expected["stages"][name]]
    return problems


def kfp_mismatch(graph_: Graph, components: dict) -> list[str]:
    """Differences between kfp components and the graph's stages, inputs and output."""
    if list(components) != list(graph_.names):
        return [f"components {list(components)} vs the graph's {list(graph_.names)}"]
    problems = []
    for stage in graph_.stages:
        spec = components[stage.name].component_spec
        inputs = set(spec.inputs) - COMPONENT_ONLY
        outputs = {stage.output if name == "Output" else name for name in spec.outputs} - {"metrics"}  # a return value
        if inputs != set(stage.inputs) or outputs != {stage.output}:
            problems.append(f"{stage.name}: component reads {sorted(inputs)}, writes {sorted(outputs)}")
    return problems


def zenml_mismatch(graph_: Graph, steps: dict) -> list[str]:
    """Differences between ZenML steps and the graph's stages and inputs."""
    if list(steps) != list(graph_.names):
        return [f"steps {list(steps)} vs the graph's {list(graph_.names)}"]
    problems = []
    for stage in graph_.stages:
        parameters = set(inspect.signature(steps[stage.name].entrypoint).parameters) - STEP_ONLY
        if parameters != set(stage.inputs):
            problems.append(f"{stage.name}: step reads {sorted(parameters)}, the graph {sorted(stage.inputs)}")
    return problems


def runner_mismatch() -> list[str]:
    from fedmm.experiments.training import CELL_STAGES

    prefix = TRAINING.names[: len(CELL_STAGES)]
    return [] if CELL_STAGES == prefix else [f"experiment cells run {list(CELL_STAGES)}, the graph starts {list(prefix)}"]


def generated(graph_: Graph) -> tuple[dict, dict]:
    """The kfp components and ZenML steps the adapters' factories make for ``graph_``."""
    from fedmm_pipelines.components.stages import make_component
    from fedmm_pipelines.steps.graph import make_step

    return ({s.name: make_component(graph_, s) for s in graph_.stages}, {s.name: make_step(graph_, s) for s in graph_.stages})


def well_formed(graph_: Graph) -> None:
    """Each stage reads only earlier artifacts, takes them, names existing config keys and hooks."""
    config = graph_.config_class()()
    assert graph_.sections == tuple(type(config).model_fields)
    produced: set[str] = set()
    for stage in graph_.stages:
        assert set(stage.inputs) <= produced, f"{stage.name} reads an artifact no earlier stage writes"
        assert stage.output not in produced
        graph_.artifact(stage.output)
        produced.add(stage.output)
        assert set(stage.after) <= set(graph_.names[: graph_.names.index(stage.name)])
        parameters = inspect.signature(graph_.function(stage)).parameters
        assert set(stage.inputs) <= set(parameters), f"{stage.function} does not take {stage.inputs}"
        for key in (*stage.reads, *stage.files):
            graph.config_value(config, key)  # every declared key exists
        for hook in (stage.progress, stage.metrics, stage.track, stage.show, stage.attach,
                     *(r.write for r in stage.reports)):
            assert hook is None or callable(graph.resolve(hook)), hook
    assert produced == {a.name for a in graph_.artifacts}
    for hook in (graph_.when, graph_.preflight, graph_.conclude):
        assert hook is None or callable(graph.resolve(hook)), hook


def test_the_graph_is_well_formed():
    for graph_ in graph.GRAPHS.values():
        well_formed(graph_)
    config = Config()
    assert TRAINING.stage("register").reads == TRAINING.sections  # the version records the whole config's hash
    train = TRAINING.stage("train")
    assert train.gpu and train.transport == "train.transport" and "impute.serve" in train.reads
    assert [s.name for s in TRAINING.stages if s.gpu] == ["train"]
    assert [s.name for s in TRAINING.stages if not s.cacheable] == ["register"]
    assert TRAINING.result == "summary" and graph.for_config(config) is TRAINING


def test_skipped_stages_say_why():
    assert [s.name for s in TRAINING.stages if s.skip] == ["evaluate-imputation"]  # no deltas: the audit says so
    assert TRAINING.skip_reason(TRAINING.stage("evaluate-imputation"), Config()) == "impute.evaluate is false"
    assert TRAINING.skip_reason(TRAINING.stage("evaluate-imputation"), load_config(None, ["impute.evaluate=true"])) is None


def test_dvc_yaml_is_the_graph_and_params_yaml_a_full_config():
    assert dvc_mismatch() == []
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params == load_config(REPO / "params.yaml").model_dump(mode="json")  # DVC needs every key it lists


def test_dvc_stages_depend_on_what_they_read(tmp_path):
    config = load_config(None, ["data.source=npz", f"data.path={tmp_path / 'mine.npz'}"])
    stages = dvc_pipeline(TRAINING, config)["stages"]
    assert "impute.serve" in stages["train"]["params"] and "artifacts/validation/partitions.json" in stages["train"]["deps"]
    assert stages["prepare"]["deps"] == [str(tmp_path / "mine.npz")]
    assert stages["register"]["deps"][-2:] == ["artifacts/audit", "artifacts/imputation"]
    assert stages["register"]["outs"] == [{"artifacts/registry/summary.json": {"cache": False}}]
    assert stages["evaluate"]["metrics"] == [{"artifacts/evaluation/metrics.json": {"cache": False}}]  # its hooks
    assert stages["evaluate"]["plots"] == [{"artifacts/evaluation/rounds.csv": {"cache": False, "x": "round"}}]


def test_a_stage_sees_the_config_keys_it_reads_and_defaults_elsewhere():
    """What a ZenML step's cache key holds: a change outside what a stage reads leaves its view unchanged."""
    config = load_config(REPO / "params.yaml", ["train.strategy=mmfed3", "partition.proxy_fraction=0.1",
                                                "validation.value_bounds={acc: [-20, 20]}", "impute.serve=mean"])
    changed = config.model_copy(update={"audit": config.audit.model_copy(update={"max_evaluations": 64}),
                                        "registry": config.registry.model_copy(update={"champion_margin": 0.05})})
    view = lambda name, c: TRAINING.stage_config(TRAINING.stage(name), c)  # noqa: E731
    for name in ("prepare", "partition", "train", "evaluate-imputation"):
        assert view(name, changed) == view(name, config), name
    assert view("audit", changed).audit.max_evaluations == 64
    train = view("train", config)
    assert (train.train, train.partition, train.impute.serve) == (config.train, config.partition, "mean")
    assert train.validation.value_bounds == {"acc": (-20.0, 20.0)} and train.registry == Config().registry
    assert view("prepare", config).train == Config().train
    assert view("register", changed) == changed


def test_kfp_components_and_zenml_steps_match_the_graph():
    from fedmm_pipelines.components.stages import components_of
    from fedmm_pipelines.steps.graph import steps_of

    for graph_ in graph.GRAPHS.values():
        assert kfp_mismatch(graph_, components_of(graph_)) == []
        assert zenml_mismatch(graph_, steps_of(graph_)) == []


def test_a_cached_step_is_not_reused_by_other_fedmm_code(tmp_path):
    """Every cacheable step's cache key holds fedmm's source hash, which any edit of a fedmm file changes."""
    import shutil

    from zenml.utils import source_utils

    import fedmm
    from fedmm.artifacts import directory_sha256
    from fedmm_pipelines.steps.graph import fedmm_code_version, steps_of

    for graph_ in graph.GRAPHS.values():
        for stage in graph_.stages:
            policy = steps_of(graph_)[stage.name].configuration.cache_policy
            assert source_utils.load(policy.cache_func)() == fedmm_code_version(), stage.name
    copy = shutil.copytree(Path(fedmm.__file__).parent, tmp_path / "fedmm", ignore=shutil.ignore_patterns("__pycache__"))
    assert directory_sha256(copy, "*.py") == fedmm_code_version()
    with (copy / "fl" / "strategy.py").open("a") as edited:
        edited.write("\n")
    assert directory_sha256(copy, "*.py") != fedmm_code_version()


def test_a_fedmkgc_file_runs_the_fedmkgc_graph_through_the_same_adapters(tmp_path):
    """``fedmm run`` picks the FedMKGC graph for a ``task: fedmkgc`` config; kfp and DVC build it as any graph."""
    from kfp import compiler

    from fedmm.kg.config import KGRunConfig, load_kg_run_config
    from fedmm_pipelines.components.pipeline import graph_pipeline

    path = tmp_path / "kg.yaml"
    path.write_text(yaml.safe_dump({"task": "fedmkgc", "run": {"dataset": "nations"}}))
    config = load_kg_run_config(path, ["registry.min_mrr=0.2"])
    with pytest.raises(ConfigError, match=r"^invalid configuration: run.method: Input should be 'local'"):
        load_kg_run_config(path, ["run.method=bogus"])  # one line, as a training config's
    assert graph.for_config(config) is graph.FEDMKGC and graph.for_config(Config()) is TRAINING
    view = graph.FEDMKGC.stage_config(graph.FEDMKGC.stage("train"), config)
    assert view.run == config.run and view.registry == KGRunConfig().registry  # a gate change reuses training
    compiler.Compiler().compile(graph_pipeline(graph.FEDMKGC, config), str(tmp_path / "kg_kfp.yaml"))
    tasks = yaml.safe_load((tmp_path / "kg_kfp.yaml").read_text())["root"]["dag"]["tasks"]
    assert set(tasks) == set(graph.FEDMKGC.names)
    assert list(dvc_pipeline(graph.FEDMKGC, config)["stages"]) == list(graph.FEDMKGC.names)


def test_experiment_cells_run_the_graph_with_both_gates():
    assert runner_mismatch() == []


def test_a_stage_added_to_the_graph_alone_reaches_every_adapter():
    extra = graph.Stage("report", "evaluate_models", ("prepared", "federated", "result"), "report", ())
    grown = replace(TRAINING, artifacts=(*TRAINING.artifacts, graph.Artifact("report", "report.json", "json")),
                    stages=(*TRAINING.stages[:-1], extra, TRAINING.stages[-1]))
    assert dvc_mismatch(grown)  # the tracked dvc.yaml must be regenerated
    with pytest.raises(ValueError, match="differs from the declared graph"):  # it would replace training's steps
        generated(grown)
    grown = replace(grown, name="training-grown")
    components, steps = generated(grown)
    assert kfp_mismatch(grown, components) == [] and zenml_mismatch(grown, steps) == []
    assert "report" in dvc_pipeline(grown, Config())["stages"]


def test_a_second_graph_with_other_stages_and_artifacts_runs_through_every_adapter(tmp_path):
    """A graph that is not the training graph: prepare -> validate -> evaluate over a toy artifact set."""
    from kfp import compiler

    from fedmm_pipelines.components.pipeline import graph_pipeline
    from fedmm_pipelines.pipelines.graph import make_pipeline

    second = Graph(
        name="checked-data", module=TRAINING.module, config=TRAINING.config, sections=TRAINING.sections,
        artifacts=(TRAINING.artifact("prepared"), TRAINING.artifact("data_report")),
        stages=(TRAINING.stage("prepare"), TRAINING.stage("validate-data")),
    )
    assert second.result == "data_report" and second.description == "prepare -> validate-data"
    assert list(dvc_pipeline(second, Config())["stages"]) == ["prepare", "validate-data"]
    components, steps = generated(second)
    assert kfp_mismatch(second, components) == [] and zenml_mismatch(second, steps) == []
    path = tmp_path / "second.yaml"
    compiler.Compiler().compile(graph_pipeline(second, Config()), str(path))
    assert set(yaml.safe_load(path.read_text())["root"]["dag"]["tasks"]) == {"prepare", "validate-data"}
    assert make_pipeline(second).name == "checked-data_pipeline"


def constants(folder: str):
    """Every (file, string constant) of the Python files under ``folder``."""
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path.relative_to(REPO), node.value


def test_no_adapter_wires_a_stage_by_hand():
    """Adapters name no stage, stage function or artifact of any graph: they loop over the graph."""
    named = {value for g in graph.GRAPHS.values() for s in g.stages for value in (s.name, s.function, s.output)}
    found = sorted({(str(path), value) for folder in ADAPTERS for path, value in constants(folder) if value in named})
    assert found == []


def test_tags_are_spelled_once():
    keys = {str(tag) for tag in tags.ALL} | {value for value in vars(tags).values() if isinstance(value, tags.Family)}
    assert len(keys) == len(tags.ALL) + len([v for v in vars(tags).values() if isinstance(v, tags.Family)])
    found = sorted({(str(path), value) for folder in ("fedmm", *ADAPTERS) for path, value in constants(folder)
                    if value in keys and path.name != "tags.py"})
    assert found == []


def test_no_module_imports_another_packages_private_names():
    found = []
    for folder in ("fedmm", *ADAPTERS, "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    is_file = (REPO / (node.module.replace(".", "/") + ".py")).is_file()
                    owner = node.module.rpartition(".")[0] if is_file else node.module
                    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                    if private and owner != package:
                        found.append(f"{path.relative_to(REPO)}: from {node.module} import {', '.join(private)}")
    assert found == []


def test_no_function_in_fedmm_is_over_100_lines():
    long = []
    for path in (REPO / "fedmm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []


LIGHT = ("fedmm.fl", "fedmm.fl.training", "fedmm.data", "fedmm.data.federated", "fedmm.audit", "fedmm.impute",
         "fedmm.impute.evaluate", "fedmm.graph", "fedmm.stages", "fedmm.workflow", "fedmm.preflight", "fedmm.hooks",
         "fedmm.tracker", "fedmm.cli", "fedmm.kg.run", "fedmm.kg.experiment")


def test_core_modules_import_no_orchestrator():
    """A fresh interpreter: the core (down to the training, audit and imputation-evaluation modules and the
    stage functions) loads no orchestrator, tracking or plotting library, nor any adapter."""
    heavy = ("zenml", "kfp", "mlflow", "matplotlib", *ADAPTERS)
    code = f"import sys, {', '.join(LIGHT)}; print(sorted(n for n in {heavy!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"



def test_the_core_installs_without_the_orchestrators():
    """pyproject.toml: the orchestrators are the ``pipelines`` extra; only ``fedmm`` and its adapters' package install."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    orchestrators = {"zenml", "kfp", "dvc"}
    names = lambda requirements: {r.split("[")[0].split("=")[0].split(">")[0].strip() for r in requirements}  # noqa: E731
    assert not names(project["project"]["dependencies"]) & orchestrators
    assert names(project["project"]["optional-dependencies"]["pipelines"]) == orchestrators
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["fedmm*", ADAPTERS[0] + "*"]
