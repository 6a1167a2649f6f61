"""MLflow run logging: one MLflow run per pipeline run, filled in stage by stage."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.entities import Metric
from sqlalchemy.exc import DatabaseError

from fedmm.config import Config
from fedmm.runtime import state_dir, tracking_uri
from fedmm.tracking import lock, plots
from fedmm.tracking import tags as T
from fedmm.tracking.store import StoreError, check_store

if TYPE_CHECKING:
    from fedmm.data.validation import ValidationReport
    from fedmm.evaluation import EvaluationReport
    from fedmm.fl.history import RoundRecord

EXPERIMENT = "fedmm"
AUDIT_REPORT = "audit/report.html"
TAG_HOST, TAG_PID, TAG_PROCESS_STARTED = T.HOST, T.PID, T.PROCESS_STARTED


_INITIALISED: set[str] = set()


def client() -> MlflowClient:
    """The MLflow client of the tracking URI; a new SQLite store is created once, under a lock (see :func:`initialise`)."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri not in _INITIALISED:
        initialise(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def initialise(uri: str) -> None:
    """Create and migrate the tracking and registry stores of an SQLite URI under a file lock beside it.

    MLflow creates its tables on first use; two processes doing so at once on a new file fail
    (``table ... already exists``). Here the first one creates them and the others wait. A store
    that cannot be used (not a database, corrupt, unreachable) is a :class:`StoreError` first.
    """
    check_store(uri)
    database = lock.sqlite_path(uri)
    if database is not None:
        with lock.file_lock(database.with_name(f"{database.name}.init.lock"), what="MLflow store lock"):
            try:
                store_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                store_client.search_experiments(max_results=1)
                store_client.search_registered_models(max_results=1)
            except DatabaseError as error:
                if "malformed" not in str(error) and "not a database" not in str(error):
                    raise
                raise StoreError(f"{database} is a corrupt SQLite database ({getattr(error, 'orig', error)}): "
                                 "restore it from a backup or move it away") from None
    _INITIALISED.add(uri)


def experiment_id(name: str = EXPERIMENT) -> str:
    """The experiment's id, creating it with artifacts inside the state folder.

    On a tracking server (``http(s)://``) the server's own artifact root is used instead.
    """
    mlflow_client = client()
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None if tracking_uri().startswith(("http://", "https://")) else (state_dir() / "mlartifacts").as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    """The current git commit, or 'unknown' outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(payload: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def start_run(config: Config, run_name: str | None = None) -> str:
    """Create the MLflow run of a pipeline run, log its parameters, and return its id."""
    mlflow_client = client()
    run = mlflow_client.create_run(
        experiment_id(),
        run_name=run_name,
        tags={T.CONFIG_HASH: config.hash(), T.GIT_COMMIT: git_commit(), T.STRATEGY: config.train.strategy,
              **owner_tags()},
    )
    params = flatten(config.model_dump(mode="json"))
    for key, value in params.items():
        mlflow_client.log_param(run.info.run_id, key, value[:6000])
    return run.info.run_id


def log_dict(run_id: str, payload: dict, artifact_file: str) -> None:
    client().log_dict(run_id, payload, artifact_file)


def log_validation(run_id: str, report: ValidationReport) -> None:
    """The validation report as an artifact, plus pass/fail and failure counts as metrics."""
    mlflow_client = client()
    mlflow_client.log_dict(run_id, report.to_dict(), f"validation/{report.suite}.json")
    mlflow_client.log_metric(run_id, f"validation.{report.suite}.success", float(report.success))
    mlflow_client.log_metric(run_id, f"validation.{report.suite}.failed_expectations", float(len(report.failed())))


def log_training(run_id: str, history: list[RoundRecord], centralized: list[dict] | None) -> None:
    """Per-round global metrics (``<split>_<metric>``, step = round) and each client's training metrics
    (``client_<id>.<metric>``, whatever its strategy reports)."""
    mlflow_client = client()
    for record in history:
        metrics = {f"{split}_{name}": value for split, scores in record.scores.items() for name, value in scores.items()}
        for client_record in record.clients:
            metrics.update({f"client_{client_record.client}.{key}": value for key, value in client_record.metrics.items()
                            if isinstance(value, float)})
        _log_metrics(mlflow_client, run_id, metrics, record.round)
    if centralized:
        for record in centralized:
            metrics = {f"centralized.{k}": v for k, v in record.items() if isinstance(v, float)}
            _log_metrics(mlflow_client, run_id, metrics, record["epoch"])


def _log_metrics(mlflow_client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    entries = [Metric(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
    for start in range(0, len(entries), 900):
        mlflow_client.log_batch(run_id, metrics=entries[start:start + 900])


def log_evaluation(run_id: str, evaluation: EvaluationReport, history: list[RoundRecord], centralized: list[dict] | None) -> None:
    """Final metrics, the evaluation report and the plots."""
    mlflow_client = client()
    _log_metrics(mlflow_client, run_id, {f"final.{k}": v for k, v in evaluation.headline().items()}, 0)
    mlflow_client.log_dict(run_id, evaluation.to_dict(), "evaluation/report.json")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plots.accuracy_per_round(history, centralized[-1] if centralized else None, folder / "accuracy_per_round.png")
        plots.per_client_accuracy(evaluation.clients, folder / "per_client_accuracy.png")
        plots.confusion_matrix(evaluation.confusion_matrix, evaluation.class_names, folder / "confusion_matrix.png")
        mlflow_client.log_artifacts(run_id, str(folder), "plots")


def log_audit(run_id: str, report) -> None:
    """A contribution audit (``fedmm.audit.AuditReport``): tables, JSON, plots and the page ``audit/report.html``
    (:data:`AUDIT_REPORT`) under ``audit/``, headline metrics."""
    mlflow_client = client()
    _log_metrics(mlflow_client, run_id, {f"final.{k}": v for k, v in report.summary().items()}, 0)
    cumulative = {f"audit.client_{int(r.client)}.value": float(r.value) for r in report.clients.itertuples()}
    _log_metrics(mlflow_client, run_id, cumulative, 0)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow_client.log_artifacts(run_id, str(report.save(Path(tmp) / "audit")), "audit")


def log_imputation(run_id: str, report) -> None:
    """An imputation evaluation (``fedmm.impute.report.ImputationReport``) under ``imputation/``."""
    mlflow_client = client()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imputation"
        report.save(folder)
        mlflow_client.log_artifacts(run_id, str(folder), "imputation")


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


def owner_tags() -> dict[str, str]:
    """Which process owns a run: host, pid and the process's start time (pids are reused)."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()),
            TAG_PROCESS_STARTED: f"{psutil.Process().create_time():.3f}"}


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process that created a run still runs; None when that cannot be known here."""
    if tags.get(TAG_HOST) != socket.gethostname() or TAG_PID not in tags:
        return None
    try:
        started = psutil.Process(int(tags[TAG_PID])).create_time()
    except (psutil.NoSuchProcess, ValueError):
        return False
    recorded = tags.get(TAG_PROCESS_STARTED)
    return recorded is None or abs(started - float(recorded)) < 0.01  # another process with a reused pid: gone


def fail_own_runs(reason: str) -> list[str]:
    """Mark the RUNNING runs this process started FAILED (its command failed), with ``reason``; returns their ids."""
    mlflow_client = client()
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return []
    own = mlflow_client.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.`{TAG_PID}` = '{os.getpid()}'",
                                    max_results=1000)
    for run in own:
        if owner_alive(run.data.tags):
            mlflow_client.set_tag(run.info.run_id, T.FAILED, reason[:5000])
            mlflow_client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in own]


def sweep_stale_runs() -> list[str]:
    """Mark RUNNING runs whose process on this host is gone as FAILED; returns what was swept.

    Runs started on another host (or before fedmm recorded owners) are left alone.
    """
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    swept = []
    for run in mlflow_client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        if owner_alive(run.data.tags) is False:
            mlflow_client.set_tag(run.info.run_id, T.SWEPT, f"process {run.data.tags[TAG_PID]} is gone")
            mlflow_client.set_terminated(run.info.run_id, status="FAILED")
            swept.append(f"run {run.info.run_id} (process {run.data.tags[TAG_PID]} gone) marked FAILED")
    return swept
