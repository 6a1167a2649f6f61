"""kill -9 at every point of a promotion or rollback never leaves the aliases half-moved.

A real process promotes (or rolls back) and SIGKILLs itself just before its k-th registry
write, for every k; the next holder of the model's lock (``sweep``, or any promotion) must
find the registry either exactly as before or exactly as after the decision, never between.
"""

import json
import os
import subprocess
import sys

import pytest
from promotion_support import REPO, count_writes, register_stress_versions, stress_policy, stress_predict, stress_test_set

from fedmm.tracking import registry

DECISION_TAGS = ("fedmm.promotion", "fedmm.gates", registry.TAG_REPLACED, registry.TAG_GATE_POLICY,
                 registry.TAG_ROLLED_BACK)


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(registry, "predict_version", stress_predict)
    monkeypatch.setattr(registry, "load_test_set", lambda name, version: stress_test_set())


def _state(model_name: str) -> dict:
    """Aliases, decision tags of every version, and any pending record: what a half-move would show in."""
    mlflow_client = registry.client()
    versions = mlflow_client.search_model_versions(f"name='{model_name}'")
    return {"aliases": registry.aliases(model_name),
            "pending": mlflow_client.get_registered_model(model_name).tags.get(registry.TAG_PENDING_DECISION),
            "tags": {v.version: {k: t for k, t in v.tags.items() if k in DECISION_TAGS} for v in versions}}


def _prepare(operation: str, model_name: str) -> None:
    """``promote``: v1 champion, v2 to promote. ``rollback``: v1 then v2 promoted, v2 to roll back from."""
    register_stress_versions(model_name, 2)
    registry.promote(model_name, "1", stress_policy(), stress_test_set())
    if operation == "rollback":
        registry.promote(model_name, "2", stress_policy(), stress_test_set())


def _run(operation: str, model_name: str):
    if operation == "promote":
        return registry.promote(model_name, "2", stress_policy(), stress_test_set())
    return registry.rollback(model_name, stress_policy())


def _writes_of(operation: str) -> tuple[int, dict, dict]:
    """How many registry writes one uninterrupted decision makes, and the states before and after it."""
    model_name = f"reference-{operation}"
    _prepare(operation, model_name)
    before, writes = _state(model_name), []
    originals = count_writes(lambda: writes.append(1))
    try:
        assert _run(operation, model_name).promoted
    finally:
        from mlflow import MlflowClient

        for name, original in originals.items():
            setattr(MlflowClient, name, original)
    return len(writes), before, _state(model_name)


def test_kill_9_before_every_registry_write_leaves_before_or_after_never_between(sqlite_store):
    plan, expected = [], {}
    for operation in ("promote", "rollback"):
        count, before, after = _writes_of(operation)
        assert after["aliases"] != before["aliases"] and after["pending"] is None
        for kill_at in range(1, count + 1):
            model_name = f"kill-{operation}-{kill_at}"
            _prepare(operation, model_name)
            plan.append([operation, model_name, kill_at])
            expected[model_name] = (before, after)
    driven = subprocess.run([sys.executable, str(REPO / "tests" / "promotion_support.py"), "kill", json.dumps(plan)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert driven.returncode == 0, driven.stderr[-3000:]
    ended = [json.loads(line) for line in driven.stdout.splitlines()]
    assert [e[:3] for e in ended] == plan and all(e[3] == -9 for e in ended), ended  # every child died by SIGKILL
    swept = registry.sweep()
    for operation, model_name, kill_at in plan:
        before, after = expected[model_name]
        state = _state(model_name)
        if kill_at == 1:  # killed before the decision was written: nothing changed
            assert state == before, (model_name, state)
        else:  # the decision record was written: the sweep completed it
            assert state == after, (model_name, state)
            what = "promotion" if operation == "promote" else "rollback"
            assert f"interrupted {what} of {model_name} v{'2' if operation == 'promote' else '1'} completed" in swept
    assert registry.sweep() == []
