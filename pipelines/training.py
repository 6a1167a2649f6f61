"""The training pipeline: prepare -> validate -> partition/mask -> validate -> train -> evaluate -> audit -> register.

The audit runs for strategies whose clients send parameter deltas (not FedMEKT's embeddings).

With ``impute.evaluate`` the imputation evaluation runs after registration and is attached
to the registered version.
"""

from __future__ import annotations

from zenml import Model, pipeline
from zenml.config import ResourceSettings
from zenml.enums import ExecutionMode

from fedmm.config import Config
from fedmm.fl.strategies import STRATEGIES
from steps.audit import audit_contributions, log_audit
from steps.evaluate import evaluate_models
from steps.imputation import attach_imputation, evaluate_imputation
from steps.partition import partition_clients
from steps.prepare import prepare_data
from steps.register import register_and_promote
from steps.tracking import start_tracking
from steps.train import train_federated
from steps.validate import validate_data, validate_partitions


# Fail fast: the first failed step stops the run and its own error (e.g. which expectations
# failed) reaches the caller, instead of a generic "step(s) failed".
@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def training_pipeline(config: Config) -> None:
    run_id = start_tracking(config)
    prepared = prepare_data(config)
    data_report = validate_data(config, prepared, run_id)
    federated = partition_clients(config, prepared, data_report)
    partition_report = validate_partitions(config, federated, run_id)
    result = train_federated(config, prepared, federated, partition_report)
    evaluation = evaluate_models(run_id, prepared, federated, result)
    audit = None
    if STRATEGIES[config.train.strategy].sends_deltas():
        audit = audit_contributions(config, prepared, federated, result)
        log_audit(run_id, audit)
    summary = register_and_promote(
        config, run_id, prepared, federated, result, evaluation, data_report, partition_report, audit
    )
    if config.impute.evaluate:
        attach_imputation(evaluate_imputation(config, prepared, federated, result), summary)


def configured_pipeline(config: Config):
    """The pipeline with its ZenML model and resource settings for this config.

    ``train.gpus`` becomes the training step's ``ResourceSettings(gpu_count=...)`` (the local
    orchestrator ignores it; Kubeflow turns it into a GPU limit).
    """
    options: dict = {"model": Model(name=config.registry.model_name, description="fedmm global model")}
    if config.train.gpus:
        resources = ResourceSettings(gpu_count=config.train.gpus)
        options["step_configurations"] = {"train_federated": {"settings": {"resources": resources}}}
    return training_pipeline.with_options(**options)


def run_training(config: Config):
    """Run the pipeline on the active (default: local) stack; returns the pipeline run."""
    return configured_pipeline(config)(config)
