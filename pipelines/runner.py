"""Launch the training pipeline and fetch its summary artifact."""

from __future__ import annotations

from fedmm import workflow
from fedmm.config import Config


def run_pipeline(config: Config) -> dict:
    """Check the config against the data, run the ZenML pipeline, return the run summary."""
    workflow.preflight(config)
    from pipelines.training import run_training

    run = run_training(config)
    summary = run.steps["register_and_promote"].outputs["run_summary"]
    artifact = summary[0] if isinstance(summary, list) else summary
    return {**artifact.load(), "zenml_pipeline_run": str(run.id)}
