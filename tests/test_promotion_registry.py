"""Registry behaviour on real registered models, on SQLite and on PostgreSQL: what promotion can be trusted with.

Models come from a one-round in-process training on a synthetic file (no ZenML), registered
exactly as the pipeline's register step does.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from promotion_support import backend, postgres_server, register_trained, train_tiny  # noqa: F401 (fixtures)

from fedmm.cli import main
from fedmm.tracking import registry, runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("seed0"), "unused", seed=0)


@pytest.fixture(scope="module")
def trained_other_split(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("seed1"), "unused", seed=1)


def _register_again(name: str, trained, like: str) -> str:
    """Another version of the same trained model on the same frozen test set (identical predictions)."""
    config, prepared, federated, result, evaluation = trained
    run_id = runs.start_run(config)
    version_tags = registry.client().get_model_version(name, like).tags
    version_tags = {k: v for k, v in version_tags.items() if not k.startswith(("fedmm.promotion", "fedmm.gates",
                                                                                  registry.TAG_REPLACED))}
    test_set = prepared.dataset.subset(prepared.indices("test"))
    return registry.register_model(run_id, name, result, test_set, version_tags)


def _policy(**overrides):
    return registry.GatePolicy(**{"min_macro_f1": 0.0, "min_test_samples": 10, **overrides})


def test_versions_gate_rollback_and_audit_history(backend, trained, tmp_path):
    name = f"reg-{backend}"
    summary = register_trained(trained, name)
    v1 = summary.model_version
    assert summary.promoted and registry.aliases(name)[registry.CHAMPION] == v1
    tags = registry.client().get_model_version(name, v1).tags
    assert tags[registry.TAG_REGISTRATION] == registry.COMPLETE and len(tags[registry.TAG_MODEL_SHA]) == 64
    assert tags[registry.TAG_REPLACED] == "none"
    # the registered model is code plus npz/JSON weights: no pickle anywhere in it
    local = registry._download_model(name, v1, tmp_path / "download")
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert "model_code.py" in files and not any(f.endswith((".pkl", ".pickle", ".pt")) for f in files)

    # identical predictions on the same frozen test set: promoted at margin 0, never at a positive margin
    v2 = _register_again(name, trained, v1)
    refused = registry.promote(name, v2, _policy(margin=0.01))
    gate = {g.name: g for g in refused.gates}["beats_champion"]
    assert not refused.promoted and "paired bootstrap interval [+0.0000, +0.0000]" in gate.detail
    assert registry.promote(name, v2, _policy()).promoted
    v3 = _register_again(name, trained, v1)
    assert registry.promote(name, v3, _policy()).promoted
    assert registry.aliases(name) == {"champion": v3, "previous-champion": v2, "challenger": v3}

    # a test set below the configured minimum is not evidence
    small = registry.promote(name, v1, _policy(min_test_samples=10_000))
    assert not small.promoted and not {g.name: g for g in small.gates}["test_size"].passed

    # rollback goes through the gates and walks back the history instead of swapping two versions
    floor = registry.rollback(name, _policy(min_macro_f1=1.01))
    assert not floor.promoted and registry.aliases(name)["champion"] == v3
    assert registry.rollback(name, _policy()).promoted
    assert registry.aliases(name)["champion"] == v2 and registry.aliases(name)["previous-champion"] == v1
    assert registry.rollback(name, _policy()).promoted
    assert registry.aliases(name)["champion"] == v1 and "previous-champion" not in registry.aliases(name)
    with pytest.raises(registry.RegistryError, match="no 'previous-champion'"):
        registry.rollback(name, _policy())

    # a re-audit keeps the first audit, and the gate says which audit it read
    registry.record_audit(name, v2, {registry.TAG_AUDIT_HARMFUL: "[]", "fedmm.audit.game": "first"})
    audit = {g.name: g for g in registry.promote(name, v2, _policy(require_clean_audit=True)).gates}["clean_audit"]
    assert audit.passed and "(audit 1 of 1" in audit.detail
    registry.record_audit(name, v2, {registry.TAG_AUDIT_HARMFUL: "[4]", "fedmm.audit.game": "again"})
    tags = registry.client().get_model_version(name, v2).tags
    assert tags[f"{registry.AUDIT_HISTORY}1.harmful_clients"] == "[]" and tags[f"{registry.AUDIT_HISTORY}1.game"] == "first"
    assert tags[registry.TAG_AUDIT_HARMFUL] == "[4]" and tags[registry.TAG_AUDIT_COUNT] == "2"
    audit = {g.name: g for g in registry.promote(name, v2, _policy(require_clean_audit=True)).gates}["clean_audit"]
    assert not audit.passed and "[4]" in audit.detail and "(audit 2 of 2" in audit.detail


def test_champion_on_another_test_set_is_not_compared(backend, trained, trained_other_split):
    name = f"cmp-{backend}"
    first = register_trained(trained, name)
    second = register_trained(trained_other_split, name)
    gate = second.gate("beats_champion")
    assert not second.promoted and not gate.passed and "not comparable" in gate.detail
    assert registry.aliases(name)["champion"] == first.model_version


def test_tampered_model_is_refused_before_it_runs(trained, tmp_path):
    name = "tampered"
    summary = register_trained(trained, name)
    version = registry.model_version(name, summary.model_version)
    source = Path(version.source.removeprefix("file://"))
    marker = tmp_path / "code-ran"
    with open(source / "model_code.py", "a") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    result = CliRunner().invoke(main, ["promote", "--model", name, "--version", summary.model_version])
    assert result.exit_code == 2 and "refusing to load a modified model" in result.output
    assert not marker.exists()


def test_floor_and_margin_outside_zero_one_are_refused():
    for option, value in (("--min-macro-f1", "-5"), ("--margin", "2")):
        result = CliRunner().invoke(main, ["promote", "--model", "any", "--version", "1", option, value])
        assert result.exit_code == 2 and "is not in the range 0<=x<=1" in result.output


def test_dead_process_runs_and_half_registered_versions_are_swept(tmp_path):
    from fedmm.config import load_config

    dead = subprocess.run([sys.executable, "-c", "import os, psutil; print(os.getpid(), psutil.Process().create_time())"],
                          capture_output=True, text=True, check=True).stdout.split()
    run_id = runs.start_run(load_config(None))
    mlflow_client = registry.client()
    mlflow_client.set_tag(run_id, runs.TAG_PID, dead[0])
    mlflow_client.set_tag(run_id, runs.TAG_PROCESS_STARTED, f"{float(dead[1]):.3f}")
    registry.ensure_registered_model("half")
    source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/model"
    pending = mlflow_client.create_model_version("half", source, run_id=run_id,
                                                 tags={registry.TAG_REGISTRATION: registry.PENDING}).version
    live = runs.start_run(load_config(None))  # this process's own run is left alone
    swept = registry.sweep()
    assert any(run_id in line and "marked FAILED" in line for line in swept)
    assert f"half-registered half v{pending} deleted" in swept
    assert mlflow_client.get_run(run_id).info.status == "FAILED"
    assert mlflow_client.get_run(live).info.status == "RUNNING"
    assert registry.sweep() == []
    runs.end_run(live)
    with pytest.raises(registry.RegistryError, match="no version"):
        registry.promote("half", pending, _policy())


def test_promote_uses_the_gate_settings_recorded_with_the_version_unless_overridden(trained):
    name = "recorded-gates"
    summary = register_trained(trained, name)  # registered with require_clean_audit=false and no audit
    assert registry.recorded_policy(name, summary.model_version).require_clean_audit is False
    args = ["promote", "--model", name, "--version", summary.model_version]
    recorded = CliRunner().invoke(main, args)
    assert recorded.exit_code == 0, recorded.output
    assert f"gate settings recorded with {name} v{summary.model_version}:" in recorded.output
    assert "is already champion" in recorded.output
    overridden = CliRunner().invoke(main, [*args, "--require-clean-audit"])
    assert overridden.exit_code == 1
    assert "overridden on the command line: require_clean_audit=True" in overridden.output
    assert "FAIL  clean_audit: no contribution audit is recorded" in overridden.output


def test_tampered_weights_are_refused_even_under_plain_mlflow(trained):
    import mlflow

    from fedmm.artifacts import read_npz, write_npz

    name = "tampered-weights"
    summary = register_trained(trained, name)
    source = Path(registry.model_version(name, summary.model_version).source.removeprefix("file://"))
    assert mlflow.pyfunc.load_model(f"models:/{name}@champion") is not None
    weights = source / "artifacts" / "network" / "model.npz"
    arrays = read_npz(weights)
    first = sorted(arrays)[0]
    write_npz(weights, {**arrays, first: arrays[first] + 1})  # a valid file with other weights
    with pytest.raises(Exception, match="refusing to build a model from modified weights"):
        mlflow.pyfunc.load_model(f"models:/{name}@champion")


def test_fedmm_load_model_checks_every_file_before_mlflow_imports_any(trained, tmp_path):
    import fedmm

    name = "tampered-code"
    summary = register_trained(trained, name)
    assert fedmm.load_model(name).metadata.signature is not None
    source = Path(registry.model_version(name, summary.model_version).source.removeprefix("file://"))
    marker = tmp_path / "code-ran"
    with open(source / "model_code.py", "a") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    with pytest.raises(registry.RegistryError, match="refusing to load a modified model"):
        fedmm.load_model(name)
    assert not marker.exists()
    with pytest.raises(registry.RegistryError, match="no version with alias 'nonesuch'"):
        fedmm.load_model(name, "nonesuch")
