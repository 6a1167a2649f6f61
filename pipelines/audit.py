"""The standalone audit pipeline: audit a past training run, by its ZenML run id."""

from __future__ import annotations

from zenml import pipeline
from zenml.enums import ExecutionMode

from fedmm.config import Config
from pipelines.past_run import training_artifacts
from steps.audit import attach_audit, audit_contributions


@pipeline(enable_cache=False, execution_mode=ExecutionMode.FAIL_FAST)
def audit_pipeline(config: Config, training_run_id: str) -> None:
    artifacts = training_artifacts(training_run_id)
    report = audit_contributions(config, artifacts["prepared"], artifacts["federated"], artifacts["result"], show=False)
    attach_audit(report, artifacts["run_summary"])


def run_audit(config: Config, training_run_id: str):
    """Audit a past training run (its MLflow run and model version get the results); returns the audit run."""
    return audit_pipeline(config, training_run_id)
