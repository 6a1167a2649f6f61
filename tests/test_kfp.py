"""Kubeflow Pipelines: the compiled YAML (the graph's tasks, ``train.gpus`` on training only) and real local runs.

The local runs use kfp's SubprocessRunner on the current interpreter: every task is a fresh
``python -m kfp.dsl.executor_main`` subprocess that imports fedmm (hence PYTHONPATH), so each
task pays the torch/mlflow/GX imports.
"""

import json
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY, synthetic_overrides, write_synthetic_npz
from kfp import local

from fedmm import graph, runtime
from fedmm.config import ConfigError, config_from_dict, load_config
from fedmm.data.validation import ValidationReport
from fedmm_pipelines.components.pipeline import compile_pipeline, config_json, main, training_pipeline

TASKS = graph.TRAINING.names

# the image name has no "python" in it, which kfp's subprocess runner warns about
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")


def executor_resources(spec: dict) -> dict[str, dict]:
    """Task name -> the container ``resources`` of its executor (empty when none)."""
    out = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        out[name] = spec["deploymentSpec"]["executors"][label]["container"].get("resources", {})
    return out


def test_compiled_pipeline_has_the_graphs_tasks_and_requests_train_gpus(tmp_path, capsys):
    config = load_config(TINY, ["train.gpus=2"])
    path = compile_pipeline(tmp_path / "kfp" / "pipeline.yaml", config)
    spec = yaml.safe_load(path.read_text())

    resources = executor_resources(spec)
    assert set(resources) == set(TASKS)
    accelerator = resources["train"]["accelerator"]
    # kfp 2.17 writes the new fields (resourceType/resourceCount) and the deprecated ones
    assert accelerator == {"resourceType": "nvidia.com/gpu", "resourceCount": "2", "type": "nvidia.com/gpu", "count": "2"}
    assert resources["train"]["resourceCpuRequest"] == "4"
    assert resources["train"]["resourceMemoryRequest"] == "16Gi"
    assert all("accelerator" not in resources[name] for name in TASKS if name != "train")
    cpu_only = compile_pipeline(tmp_path / "kfp" / "cpu.yaml", load_config(TINY))
    assert "accelerator" not in executor_resources(yaml.safe_load(cpu_only.read_text()))["train"]

    # the config is baked in as the parameter's default and parses back to the same config
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert config_from_dict(json.loads(default)) == config
    assert spec["root"]["inputDefinitions"]["parameters"]["tracking_uri"]["defaultValue"] == ""
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["register"].get("cachingOptions", {}).get("enableCaching") is not True
    for stage in graph.TRAINING.stages:  # wired by the graph's artifacts and gates, nothing more
        assert set(tasks[stage.name].get("dependentTasks", [])) == set(graph.TRAINING.upstream(stage)), stage.name
    assert all(executor["container"]["image"] == "fedmm:0.1.0" for executor in spec["deploymentSpec"]["executors"].values())

    # the `make kfp` entry point
    target = tmp_path / "cli" / "out.yaml"
    main(["--config", str(TINY), "--set", "train.rounds=7", "--output", str(target)])
    assert capsys.readouterr().out.strip() == str(target)
    default = yaml.safe_load(target.read_text())["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert json.loads(default)["train"]["rounds"] == 7


@pytest.fixture
def kfp_local(tmp_path, monkeypatch):
    """kfp local mode on this interpreter, with a private fedmm state folder and MLflow store.

    The subprocesses inherit this environment: they import fedmm from the repo and write
    MLflow to the same SQLite file this process reads. Their ``TMPDIR`` (where kfp's task
    script writes ``ephemeral_component.py`` and leaves it) and kfp's workspace are in ``tmp_path``.
    """
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    monkeypatch.setenv("FEDMM_HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(tmp_path / "workspace"))
    yield root
    local.config.LocalExecutionConfig.instance = None
    monkeypatch.undo()
    if "mlflow" in sys.modules:  # fedmm's client() set mlflow's process-wide URI to this test's store
        sys.modules["mlflow"].set_tracking_uri(runtime.tracking_uri())


def run_folder(root: Path) -> Path:
    (folder,) = root.glob("fedmm-training-*")
    return folder


def test_pipeline_runs_locally_with_audit_and_imputation_and_registers_a_challenger(kfp_local, tmp_path):
    from fedmm.tracking import registry

    data = write_synthetic_npz(tmp_path / "data.npz")
    config = load_config(TINY, synthetic_overrides(data, "fedmm-kfp") + [
        "partition.scheme=iid", "partition.num_clients=3", "impute.evaluate=true", "impute.imputers=[zero, mean]",
        "impute.rates=[0.5]"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = training_pipeline(load_config(TINY, ["train.gpus=1"]))(config_json=config_json(config)).output
    # local mode accepts the GPU request and says it ignores it
    assert any(re.search(r"Task 'train'.*'accelerator'.*no effect", str(w.message)) for w in caught)

    version = summary["model_version"]
    assert summary["model_name"] == config.registry.model_name
    assert "challenger" in summary["aliases"]
    assert summary["tracking_uri"] == os.environ["MLFLOW_TRACKING_URI"]
    assert registry.aliases(config.registry.model_name)["challenger"] == version
    # the audit ran and the clean-audit gate read its tags, as on ZenML; the imputation evaluation is attached
    assert summary["audit_rounds"] == 2 and {g["name"] for g in summary["gates"]} >= {"clean_audit"}
    tags = registry.client().get_model_version(config.registry.model_name, version).tags
    assert tags[registry.TAG_AUDIT_HARMFUL] == "[]" and tags["fedmm.imputation.imputers"] == "zero,mean"

    folder = run_folder(kfp_local)
    assert {p.name for p in folder.iterdir()} == set(TASKS)
    metrics = json.loads((folder / "evaluate" / "executor_output.json").read_text())["artifacts"]["metrics"]
    assert metrics["artifacts"][0]["metadata"]["test_macro_f1"] == pytest.approx(summary["test_macro_f1"])


def write_bad_npz(path: Path) -> Path:
    """200 windows of 20 recordings, 3 classes; NaNs in one modality (labels outside 0..2 are refused at load)."""
    write_synthetic_npz(path, n_recordings=20, windows_per_recording=10)
    with np.load(path) as handle:
        arrays = dict(handle)
    arrays["modality/acc"][7:9, 0, 3] = np.nan
    np.savez(path, **arrays)
    return path


def test_bad_data_imported_from_a_uri_fails_validate_data_and_stops_the_pipeline(kfp_local, tmp_path):
    """With --import-data, prepare reads the file a run's data_path_uri names, not the compile-time path: its NaNs
    fail validate-data, and nothing downstream runs."""
    (tmp_path / "elsewhere").mkdir()
    data = write_bad_npz(tmp_path / "elsewhere" / "bad.npz")
    config = load_config(TINY, ["data.source=npz", f"data.path={tmp_path / 'at-compile-time.npz'}",
                                "data.holdout_subjects=0", "partition.scheme=iid", "partition.num_clients=2"])
    spec = yaml.safe_load(compile_pipeline(tmp_path / "imported.yaml", config, import_files=True).read_text())
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["data_path_uri"]["defaultValue"] == str(tmp_path / "at-compile-time.npz")
    assert any("importer" in executor for executor in spec["deploymentSpec"]["executors"].values())

    with pytest.raises(RuntimeError, match="Inner task failed: .*validate-data"):
        training_pipeline(config, import_files=True)(config_json=config_json(config), data_path_uri=str(data))
    folder = run_folder(kfp_local)
    assert {p.name for p in folder.iterdir()} == {"prepare", "validate-data"}  # nothing downstream ran
    report = ValidationReport.from_dict(json.loads((folder / "validate-data" / "data_report").read_text()))
    assert not report.success
    assert {outcome.column for outcome in report.failed()} >= {"acc_nonfinite"}  # the imported file's NaNs
    with pytest.raises(ConfigError, match="data.path is not set"):
        training_pipeline(load_config(TINY), import_files=True)
