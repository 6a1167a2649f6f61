"""The standalone imputation-evaluation pipeline over a past training run, by its ZenML run id."""

from __future__ import annotations

from zenml import pipeline
from zenml.enums import ExecutionMode

from fedmm.config import Config
from pipelines.past_run import training_artifacts
from steps.imputation import attach_imputation, evaluate_imputation


@pipeline(enable_cache=False, execution_mode=ExecutionMode.FAIL_FAST)
def imputation_pipeline(config: Config, training_run_id: str) -> None:
    artifacts = training_artifacts(training_run_id)
    report = evaluate_imputation(config, artifacts["prepared"], artifacts["federated"], artifacts["result"])
    attach_imputation(report, artifacts["run_summary"])


def run_imputation(config: Config, training_run_id: str):
    """Evaluate imputers on a past training run's model (results go to its MLflow run and version)."""
    return imputation_pipeline(config, training_run_id)
