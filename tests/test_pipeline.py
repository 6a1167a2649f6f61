"""End to end through the real stack: ZenML local orchestrator, GX, MLflow registry."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, synthetic_overrides, write_synthetic_npz
from mlflow.exceptions import MlflowException

from fedmm import graph
from fedmm.cli import main
from fedmm.config import load_config
from fedmm.report import summary_dir
from fedmm.tracking import registry


def _versions(name: str) -> int:
    try:
        return len(registry.client().search_model_versions(f"name='{name}'"))
    except MlflowException:
        return 0


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The tiny smartwatch config through `fedmm run`, as a user runs it, and the registry's aliases right after
    (later tests move them)."""
    workdir = tmp_path_factory.mktemp("run")
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=workdir):
        result = runner.invoke(main, ["run", "--config", str(TINY)], catch_exceptions=False)
        summary = json.loads((summary_dir() / "summary.json").read_text())
    return result, summary, registry.aliases("fedmm-tiny")


def test_run_registers_promotes_and_writes_summary(first_run):
    result, summary, aliases = first_run
    assert result.exit_code == 0, result.output
    for key in ("test_accuracy", "test_macro_f1", "centralized_macro_f1", "model_name", "model_version",
                "aliases", "tracking_uri", "config_hash", "data_sha256", "test_subjects_macro_f1"):
        assert key in summary
    assert summary["config_hash"] == load_config(TINY).hash()
    assert summary["aliases"] == ["challenger", "champion"]
    assert aliases == {"champion": summary["model_version"], "challenger": summary["model_version"]}
    version = registry.client().get_model_version("fedmm-tiny", summary["model_version"])
    for tag in ("fedmm.data_sha256", "fedmm.partition_config_hash", "fedmm.git_commit", "fedmm.strategy"):
        assert tag in version.tags
    assert version.tags["fedmm.data_sha256"] == summary["data_sha256"]
    assert "held-out recordings" in result.output
    # where everything is: the run's ids and URIs, the audit's page, this run's own reports folder
    assert f"ZenML run: {summary['zenml_pipeline_run']}\n" in result.output
    assert f"MLflow run: runs:/{summary['mlflow_run_id']}\n" in result.output
    assert f"model version: models:/fedmm-tiny/{summary['model_version']}\n" in result.output
    report = result.output.split("audit report: ", 1)[1].splitlines()[0]
    assert Path(report).is_file() and report.endswith("audit/report.html")
    assert os.readlink(summary_dir()) == summary["zenml_pipeline_run"]


DEFAULT_RUN_TAGS = Path(__file__).parent / "default_run_tags.json"
VOLATILE = {"fedmm.git_commit", "fedmm.audit.recorded_at", "fedmm.model_sha256", "fedmm.mlflow_run_id",
            "fedmm.zenml_model_version_id", "fedmm.zenml_pipeline_run", "fedmm.host", "fedmm.pid", "fedmm.process_started",
            "mlflow.runName", "mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"}


def default_run_tags(summary: dict) -> dict[str, dict[str, str]]:
    """The MLflow run's and the model version's tags of a run, volatile values normalised: ids, commit, owner, time,
    and the saved model folder's hash (MLflow stamps a time and uuid into it)."""
    import re

    run_id = summary["mlflow_run_id"]
    mlflow_client = registry.client()
    found = {"run": mlflow_client.get_run(run_id).data.tags,
             "version": mlflow_client.get_model_version(summary["model_name"], summary["model_version"]).tags}
    return {where: {key: "<volatile>" if key in VOLATILE else re.sub(run_id, "<run>", value)
                    for key, value in sorted(tags.items())} for where, tags in found.items()}


def test_the_default_run_tags_as_before(first_run):
    """The default run's MLflow tags (keys and values, ids normalised) are those recorded before the graph refactor
    (before later tests audit the version again)."""
    _, summary, _ = first_run
    found, before = default_run_tags(summary), json.loads(DEFAULT_RUN_TAGS.read_text())
    differ = {(where, key): (found[where].get(key), before[where].get(key)) for where in before
              for key in {*found[where], *before[where]} if found[where].get(key) != before[where].get(key)}
    assert differ == {}


def test_the_run_follows_the_graph(first_run):
    """One step per graph stage (the unconfigured imputation evaluation left out), each reading the graph's inputs."""
    from zenml.client import Client

    from fedmm_pipelines.steps.graph import steps_of

    _, summary, _ = first_run
    run = Client().get_pipeline_run(summary["zenml_pipeline_run"])
    steps = steps_of(graph.TRAINING)
    stages = [stage for stage in graph.TRAINING.stages if stage.skip is None]
    assert set(run.steps) == {steps[stage.name].name for stage in stages}  # nothing else: no step wired by hand
    for stage in stages:
        step = run.steps[steps[stage.name].name]
        assert set(step.inputs) == set(stage.inputs) - {"imputation"}, stage.name
        assert set(step.spec.upstream_steps) >= {steps[name].name for name in graph.TRAINING.upstream(stage)
                                                  if name != "evaluate-imputation"}, stage.name


def test_registered_model_predicts_from_its_signature(first_run):
    _, summary, _ = first_run
    test_set = registry.load_test_set("fedmm-tiny", summary["model_version"])
    score = registry.score_version("fedmm-tiny", summary["model_version"], test_set)
    assert score == pytest.approx(summary["test_macro_f1"], abs=1e-6)


def test_rerun_is_not_promoted_without_beating_champion_and_rollback_works(first_run, tmp_path, monkeypatch):
    _, summary, _ = first_run
    monkeypatch.chdir(tmp_path)
    champion = summary["model_version"]
    runner = CliRunner()
    result = runner.invoke(main, ["run", "-c", str(TINY), "--set", "registry.champion_margin=0.01",
                                  "--set", "train.gpus=1"])
    assert result.exit_code == 1 and "FAIL: " in result.output, result.output  # registered, a gate failed
    # the GPU request reaches the training step's ZenML settings (the local orchestrator ignores it)
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    run_id = json.loads((summary_dir() / "summary.json").read_text())["zenml_pipeline_run"]
    from fedmm_pipelines.steps.graph import step_name

    steps = Client().get_pipeline_run(run_id).steps
    prepare, partition, train = (step_name(graph.TRAINING.stage(name)) for name in ("prepare", "partition", "train"))
    assert steps[train].config.settings["resources"].gpu_count == 1
    # only registry and train keys changed: the steps that read neither reuse their cached outputs
    status = {name: steps[name].status for name in (prepare, partition, train)}
    assert status == {prepare: ExecutionStatus.CACHED, partition: ExecutionStatus.CACHED,
                      train: ExecutionStatus.COMPLETED}
    aliases = registry.aliases("fedmm-tiny")
    assert aliases["champion"] == champion
    newest = aliases["challenger"]
    assert newest != champion
    # same model, same frozen test set: equal scores never clear a positive margin
    result = runner.invoke(main, ["promote", "-c", str(TINY), "--model", "fedmm-tiny", "--version", newest, "--margin", "0.01"])
    assert result.exit_code == 1 and "FAIL  beats_champion" in result.output
    result = runner.invoke(main, ["promote", "-c", str(TINY), "--model", "fedmm-tiny", "--version", newest, "--margin", "0"])
    assert result.exit_code == 0, result.output
    assert registry.aliases("fedmm-tiny")["champion"] == newest
    assert registry.aliases("fedmm-tiny")["previous-champion"] == champion
    result = runner.invoke(main, ["rollback", "-c", str(TINY), "--model", "fedmm-tiny"])  # through the gates
    assert result.exit_code == 0, result.output
    assert registry.aliases("fedmm-tiny")["champion"] == champion
    assert "previous-champion" not in registry.aliases("fedmm-tiny")


def test_training_audits_contributions_and_tags_the_version(first_run):
    result, summary, _ = first_run
    assert summary["audit_rounds"] == 2 and summary["audit_efficiency_residual_max"] <= 1e-6
    version = registry.client().get_model_version("fedmm-tiny", summary["model_version"])
    assert version.tags[registry.TAG_AUDIT_HARMFUL] == "[]"
    assert "neg_log_loss" in version.tags["fedmm.audit.game"]
    artifacts = {a.path for a in registry.client().list_artifacts(summary["mlflow_run_id"], "audit")}
    assert {"audit/audit.json", "audit/clients.parquet", "audit/rounds.csv"} <= artifacts


def test_audit_of_a_past_run_by_its_id(first_run):
    _, summary, _ = first_run
    result = CliRunner().invoke(main, ["audit", "--run", summary["zenml_pipeline_run"], "-c", str(TINY),
                                       "--set", "audit.metric=accuracy"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "contribution audit: Shapley values (accuracy" in result.output
    version = registry.client().get_model_version("fedmm-tiny", summary["model_version"])
    assert "accuracy" in version.tags["fedmm.audit.game"]
    missing = CliRunner().invoke(main, ["audit", "--run", "00000000-0000-0000-0000-000000000000"])
    assert missing.exit_code == 2 and "no ZenML pipeline run" in missing.output


def test_harmful_client_blocks_promotion_when_the_audit_gate_is_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ["partition.scheme=iid", "partition.num_clients=4", "registry.require_clean_audit=true",
                 "registry.model_name=fedmm-audit-gate", "corruption.clients=[{client: 1, kind: scaled_update, scale: -4}]",
                 "impute.evaluate=true", "impute.imputers=[zero, mean]", "impute.rates=[0.5]"]
    result = CliRunner().invoke(main, ["run", "-c", str(TINY), *sum([["--set", o] for o in overrides], [])],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output  # the clean-audit gate failed
    summary = json.loads((summary_dir() / "summary.json").read_text())
    # x-4 over two rounds: an update norm four times the others' (anomalous), harmful when the evidence suffices
    assert {f["flag"] for f in summary["audit_flags"]["1"]} & {"harmful", "anomalous"}
    assert set(summary["audit_flags"]) == {"1"}
    gate = {g["name"]: g for g in summary["gates"]}["clean_audit"]
    assert not gate["passed"] and "[1]" in gate["detail"]
    assert not summary["promoted"] and "champion" not in registry.aliases("fedmm-audit-gate")
    # the imputation evaluation ran in the pipeline and is attached to the version
    version = registry.client().get_model_version("fedmm-audit-gate", summary["model_version"])
    assert version.tags["fedmm.imputation.imputers"] == "zero,mean"
    artifacts = {a.path for a in registry.client().list_artifacts(summary["mlflow_run_id"], "imputation")}
    assert "imputation/imputation.csv" in artifacts


def test_imputation_evaluation_of_a_past_run(first_run):
    _, summary, _ = first_run
    overrides = ["impute.imputers=[zero, mean, generator]", "impute.generator.rounds=1",
                 "impute.generator.local_epochs=1", "impute.rates=[0.5]"]
    result = CliRunner().invoke(main, ["impute", "--run", summary["zenml_pipeline_run"], "-c", str(TINY),
                                       *sum([["--set", o] for o in overrides], [])], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "generator" in result.output
    assert "rates 0.5 (impute.rates)" in result.output and "gap_recovered = (macro_f1 - floor_macro_f1)" in result.output
    version = registry.client().get_model_version("fedmm-tiny", summary["model_version"])
    assert version.tags["fedmm.imputation.imputers"] == "zero,mean,generator"
    assert version.tags["fedmm.imputation.best"] in ("mean", "generator")
    assert "Settings chosen on the validation split" in result.output  # impute.select's default generator candidates
    assert version.tags["fedmm.imputation.selected.generator"].startswith('{"distill_weight": ')


@pytest.mark.parametrize("defect", ["nan", "unknown_label"])
def test_bad_data_fails_validation_and_registers_nothing(tmp_path, defect):
    path = write_synthetic_npz(tmp_path / "data.npz")
    arrays = dict(np.load(path))
    if defect == "nan":
        arrays["modality/acc"][[3, 50, 90], 0, 5] = np.nan
        expected = "validation failed"  # found by the Great Expectations suite, after prepare
        detail = "acc_nonfinite"
    else:
        arrays["labels"][7] = 9
        expected = "label 9 but only 3 class_names"  # found by the preflight, before any work
        detail = "labels must be 0..2"
    np.savez(path, **arrays)
    name = f"fedmm-bad-{defect.replace('_', '-')}"
    before = _versions(name)
    result = CliRunner().invoke(main, ["run", "-c", str(TINY), *sum([["--set", o] for o in synthetic_overrides(path, name)], [])])
    assert result.exit_code == 2
    assert expected in result.output and detail in result.output
    # one error line and where the details are, not ZenML's step-failure traceback
    assert "Traceback" not in result.output and "Failed to run step" not in result.output
    log = [line for line in result.output.splitlines() if line.startswith("details: ")][0].removeprefix("details: ")
    assert "Traceback" in Path(log).read_text()
    assert _versions(name) == before == 0


def test_bad_config_fails_before_any_work():
    result = CliRunner().invoke(main, ["run", "-c", str(TINY), "--set", "partition.scheme=iid",
                                       "--set", "partition.num_clients=0"])
    assert result.exit_code == 2
    assert "partition.num_clients" in result.output
    result = CliRunner().invoke(main, ["run", "-c", str(TINY), "--set", "mask.missing_rate={audio: 0.5}"])
    assert result.exit_code == 2
    assert "modalities ['audio']" in result.output


@pytest.mark.parametrize("strategy", ["fedmobile", "fedmekt"])
def test_knowledge_transfer_strategies_run_through_the_pipeline(first_run, tmp_path, monkeypatch, strategy):
    """FedMobile's registered model fills missing modalities with its generator; FedMEKT (no deltas) skips the audit."""
    import mlflow.pyfunc

    from fedmm.impute.generator import GeneratedFeaturesNet

    monkeypatch.chdir(tmp_path)
    name = f"fedmm-tiny-{strategy}"
    result = CliRunner().invoke(main, [
        "run", "--config", str(TINY), "--set", f"train.strategy={strategy}", "--set", "partition.proxy_fraction=0.1",
        "--set", "mask.missing_rate={gyro: 0.5}", "--set", f"registry.model_name={name}",
    ], catch_exceptions=False)
    summary = json.loads((summary_dir() / "summary.json").read_text())
    assert result.exit_code == (0 if summary["promoted"] else 1), result.output  # a tiny model may miss the floor
    assert summary["strategy"] == strategy and "test_missing_macro_f1" in summary
    assert (summary["audit_rounds"] > 0) == (strategy == "fedmobile")
    if strategy == "fedmekt":  # nothing to audit is an explicit state the clean-audit gate passes, not a missing tag
        gate = {g["name"]: g for g in summary["gates"]}["clean_audit"]
        assert gate["passed"] and "nothing to audit" in gate["detail"] and "no parameter deltas" in gate["detail"]
    test_set = registry.load_test_set(name, summary["model_version"])
    assert registry.score_version(name, summary["model_version"], test_set) == pytest.approx(
        summary["test_macro_f1"], abs=1e-6)
    network = mlflow.pyfunc.load_model(f"models:/{name}/{summary['model_version']}").unwrap_python_model().model
    assert isinstance(network, GeneratedFeaturesNet) == (strategy == "fedmobile")

