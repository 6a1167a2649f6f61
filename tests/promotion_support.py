"""Shared pieces of the promotion tests: a PostgreSQL tracking store, synthetic versions, the stress driver.

The stress driver runs as its own small process (``python tests/promotion_support.py ...``):
it imports fedmm once, then forks two promotion processes per pair that start at the
same instant, so 20 pairs cost one import instead of forty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
POSTGRES_SCRIPT = REPO / "infra" / "postgres.sh"
POSTGRES_ENV = "FEDMM_TEST_POSTGRES_URI"
STRESS_SAMPLES, STRESS_RECORDINGS, STRESS_CLASSES = 60, 12, 3
PAIR_STAGGER_S = 0.1


def start_postgres() -> tuple[str, object]:
    """The server URI from ``FEDMM_TEST_POSTGRES_URI`` (CI), else a throwaway server; returns (uri, stop)."""
    if os.environ.get(POSTGRES_ENV):
        return os.environ[POSTGRES_ENV], lambda: None
    from fedmm.fl.deploy import free_port

    data = tempfile.mkdtemp(prefix="fedmm-pg-")  # a port of its own: test modules may run side by side (xdist)
    started = subprocess.run([str(POSTGRES_SCRIPT), "start", data, str(free_port())],
                             capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"could not start PostgreSQL for the tests: {started.stderr.strip()}")
    return started.stdout.strip(), lambda: subprocess.run([str(POSTGRES_SCRIPT), "stop", data], check=False)


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL server for one test module."""
    uri, stop = start_postgres()
    yield uri
    stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch, tmp_path):
    """The tracking store of one test: a fresh SQLite file, or a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        uri = new_database(request.getfixturevalue("postgres_server"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return request.param


def new_database(server_uri: str) -> str:
    """A fresh, empty database on the server; returns its URI."""
    from sqlalchemy import create_engine, text

    name = f"fedmm_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_uri.rsplit("/", 1)[0] + f"/{name}"


def stress_test_set():
    """60 samples in 12 recordings, 3 classes: the frozen test set every stress version is scored on."""
    from fedmm.data.dataset import MultimodalDataset

    rng = np.random.default_rng(0)
    labels = np.arange(STRESS_SAMPLES) % STRESS_CLASSES
    return MultimodalDataset(
        modalities={"a": rng.standard_normal((STRESS_SAMPLES, 2)).astype(np.float32),
                    "b": rng.standard_normal((STRESS_SAMPLES, 2)).astype(np.float32)},
        labels=labels, class_names=["x", "y", "z"], subject=np.zeros(STRESS_SAMPLES, dtype=np.int64),
        recording=np.arange(STRESS_SAMPLES) // (STRESS_SAMPLES // STRESS_RECORDINGS),
    )


def stress_predictions(correct: int) -> np.ndarray:
    """A version right on the first ``correct`` samples: a better version is right on a superset."""
    labels = stress_test_set().labels
    predicted = labels.copy()
    predicted[correct:] = (labels[correct:] + 1) % STRESS_CLASSES
    return predicted


def register_stress_versions(model_name: str, count: int) -> None:
    """``count`` complete, validated versions; version j is right on 15 + j samples of the stress test set."""
    from fedmm.tracking import registry, runs

    mlflow_client = registry.client()
    mlflow_client.create_registered_model(model_name)
    run = mlflow_client.create_run(runs.experiment_id())
    test_sha = stress_test_set().content_hash()
    for j in range(1, count + 1):
        mlflow_client.create_model_version(
            model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            tags={registry.TAG_VALIDATION: "true", registry.TAG_TEST_SHA: test_sha,
                  registry.TAG_REGISTRATION: registry.COMPLETE, "stress.correct": str(15 + j)},
        )
    runs.end_run(run.info.run_id)


def drive(model_name: str, pairs: int, results: str, score_seconds: float) -> None:
    """Fork two promotions per pair (versions 2i-1 and 2i) that start at the same instant.

    Pair i starts ``PAIR_STAGGER_S`` after pair i-1, so pairs also overlap one another.
    """
    from fedmm import runtime

    runtime.configure()
    from fedmm.tracking import registry

    test_set = stress_test_set()
    policy = registry.GatePolicy(min_macro_f1=0.0, min_test_samples=30, resamples=200)

    def predict(name, version, _test_set):
        time.sleep(score_seconds)  # scoring takes time: the window in which unlocked promotions interleave
        return stress_predictions(int(registry.client().get_model_version(name, version).tags["stress.correct"]))

    # Open the stores once here (schema checks take seconds per process), then drop their pooled
    # connections: every forked child opens its own (SQLAlchemy's rule for engines across fork).
    mlflow_client = registry.client()
    mlflow_client.get_registered_model(model_name)
    mlflow_client.search_runs([mlflow_client.get_experiment_by_name("fedmm").experiment_id], max_results=1)
    for store in (mlflow_client._tracking_client.store, mlflow_client._get_registry_client().store):
        store.engine.dispose()
    started, first_start = time.monotonic(), time.time() + 0.2
    children = []
    for pair in range(pairs):
        start_at = first_start + pair * PAIR_STAGGER_S
        for version in (2 * pair + 1, 2 * pair + 2):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    registry.predict_version = predict
                    time.sleep(max(0.0, start_at - time.time()))
                    decision = registry.promote(model_name, str(version), policy, test_set)
                    line = json.dumps({"version": decision.version, "promoted": decision.promoted,
                                       "champion_before": decision.champion_before,
                                       "gates": {g.name: g.passed for g in decision.gates}})
                    with open(results, "a") as handle:
                        handle.write(line + "\n")
                except BaseException as error:  # reported to the test, which fails on a missing line
                    print(f"promotion of v{version} failed: {error!r}", file=sys.stderr)
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    print(f"{pairs} pairs in {time.monotonic() - started:.1f} s")


REGISTRY_WRITES = ("set_registered_model_alias", "delete_registered_model_alias", "set_model_version_tag",
                   "set_registered_model_tag", "delete_registered_model_tag")


def stress_policy():
    from fedmm.tracking import registry

    return registry.GatePolicy(min_macro_f1=0.0, min_test_samples=30, resamples=200)


def stress_predict(name, version, _test_set):
    """Predictions of a stress version (right on as many samples as its ``stress.correct`` tag says)."""
    from fedmm.tracking import registry

    return stress_predictions(int(registry.client().get_model_version(name, version).tags["stress.correct"]))


def count_writes(on_write) -> dict:
    """Call ``on_write()`` before every registry write of MlflowClient (alias moves, tags); returns the originals."""
    from mlflow import MlflowClient

    originals = {name: getattr(MlflowClient, name) for name in REGISTRY_WRITES}
    for name, original in originals.items():
        setattr(MlflowClient, name, _before(original, on_write))
    return originals


def _before(original, on_write):
    def write(self, *args, **kwargs):
        on_write()
        return original(self, *args, **kwargs)
    return write


def kill_at_each_write(plan: str) -> None:
    """For each (operation, model, k) of the JSON ``plan``, fork a process that runs the operation
    (``promote`` v2 or ``rollback``) and SIGKILLs itself just before its k-th registry write.

    Prints one JSON line per child: its plan entry and how it ended (signal number or exit code).
    """
    from fedmm import runtime

    runtime.configure()
    from fedmm.tracking import registry

    registry.predict_version = stress_predict
    registry.load_test_set = lambda name, version: stress_test_set()
    registry.client().search_registered_models(max_results=1)
    for store in (registry.client()._tracking_client.store, registry.client()._get_registry_client().store):
        store.engine.dispose()  # every forked child opens its own connections
    for operation, model_name, kill_at in json.loads(plan):
        pid = os.fork()
        if pid == 0:
            writes = []

            def before_write(writes=writes, kill_at=kill_at):
                writes.append(1)
                if len(writes) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            count_writes(before_write)
            if operation == "promote":
                registry.promote(model_name, "2", stress_policy(), stress_test_set())
            else:
                registry.rollback(model_name, stress_policy())
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        ended = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps([operation, model_name, kill_at, ended]), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "kill":
        kill_at_each_write(sys.argv[2])
    else:
        drive(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))


def train_tiny(tmp_path: Path, model_name: str, seed: int = 0, extra: tuple[str, ...] = ()):
    """Train the tiny config on a synthetic file in-process (no ZenML): (config, prepared, federated, result, evaluation)."""
    from conftest import TINY, synthetic_overrides, write_synthetic_npz

    from fedmm import workflow
    from fedmm.config import load_config

    path = write_synthetic_npz(tmp_path / f"data-{seed}.npz")
    config = load_config(TINY, [*synthetic_overrides(path, model_name), "train.rounds=1", "train.centralized=false",
                                "registry.min_test_samples=10", f"seed={seed}", *extra])
    prepared = workflow.prepare_data(config)
    federated = workflow.make_partitions(config, prepared)
    result = workflow.train_models(config, prepared, federated)
    return config, prepared, federated, result, workflow.evaluate_models(prepared, federated, result)


def register_trained(trained, model_name: str):
    """Register and gate a trained model like the pipeline's register step, without an audit; returns the run summary.

    There is no audit here, so the clean-audit gate (on by default) is switched off for these registry tests.
    """
    from fedmm import workflow

    config, prepared, federated, result, evaluation = trained
    config = config.model_copy(update={"registry": config.registry.model_copy(
        update={"model_name": model_name, "require_clean_audit": False})})
    run_id = workflow.start_tracking(config)
    return workflow.register_and_promote(config, run_id, prepared, federated, result, evaluation,
                                         validation_passed=True)

