"""Launch the training pipeline and fetch its summary artifact."""

from __future__ import annotations

from dataclasses import replace

from fedmm.config import Config
from fedmm.runtime import state_dir
from fedmm.summary import RunSummary
from fedmm.tracking.lock import file_lock


def ensure_store() -> None:
    """Create and migrate the local ZenML store once, under a lock: concurrent first runs wait for it."""
    from zenml.client import Client

    with file_lock(state_dir() / "zenml.init.lock", what="ZenML store lock"):
        Client().zen_store  # noqa: B018 (reading the property creates and migrates the store)


def run_pipeline(config: Config, echo=print) -> RunSummary:
    """Check the config against the data, sweep what crashed runs left, run the ZenML pipeline.

    Preflight warnings and what was swept are passed to ``echo``. Returns the run summary.
    """
    from fedmm import workflow

    for warning in workflow.preflight(config):
        echo(f"warning: {warning}")
    from fedmm.tracking.registry import sweep
    from pipelines.training import run_training

    for line in sweep():
        echo(f"swept: {line}")
    ensure_store()
    run = run_training(config)
    summary = run.steps["register_and_promote"].outputs["run_summary"]
    artifact = summary[0] if isinstance(summary, list) else summary
    return replace(artifact.load(), zenml_pipeline_run=str(run.id))
