"""The training pipeline, the ZenML adapter of ``fedmm.graph``: prepare -> validate -> partition/mask ->
validate -> train -> evaluate -> audit -> imputation evaluation -> register.

A stage the graph skips for a config (the imputation evaluation unless ``impute.evaluate``)
is left out and its artifact is None; without parameter deltas the audit records that there
is nothing to audit.
The validation gates order the stages after them with ``after=``, so cached steps read only
the artifacts they use, and each step gets the config as its stage sees it
(``graph.stage_config``: the keys it reads), so a change elsewhere in the config reuses its
cached output. Tracking is ZenML's own: the MLflow run opens first and each step
logs to it (``fedmm.workflow.record_and_register`` does the same at the end for DVC and kfp).
"""

from __future__ import annotations

from zenml import Model, pipeline
from zenml.config import ResourceSettings
from zenml.enums import ExecutionMode

from fedmm import graph
from fedmm.config import Config
from steps.audit import audit_contributions, log_audit
from steps.evaluate import evaluate_models
from steps.imputation import evaluate_imputation
from steps.partition import partition_clients
from steps.prepare import prepare_data
from steps.register import register_and_promote
from steps.tracking import start_tracking
from steps.train import train_federated
from steps.validate import validate_data, validate_partitions

STEPS = {
    "prepare": prepare_data,
    "validate-data": validate_data,
    "partition": partition_clients,
    "validate-partitions": validate_partitions,
    "train": train_federated,
    "evaluate": evaluate_models,
    "audit": audit_contributions,
    "evaluate-imputation": evaluate_imputation,
    "register": register_and_promote,
}
"""The step of each graph stage (a test checks a run's steps and their inputs against the graph)."""


# Fail fast: the first failed step stops the run and its own error (e.g. which expectations
# failed) reaches the caller, instead of a generic "step(s) failed".
@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def training_pipeline(config: Config) -> None:
    seen = lambda name: graph.stage_config(graph.stage(name), config)  # noqa: E731  (what the step's cache key holds)
    run_id = start_tracking(config)
    prepared = prepare_data(seen("prepare"))
    data_report = validate_data(seen("validate-data"), prepared, run_id)
    federated = partition_clients(seen("partition"), prepared, after=data_report)
    partition_report = validate_partitions(seen("validate-partitions"), federated, run_id)
    result = train_federated(seen("train"), prepared, federated, after=partition_report)
    evaluation = evaluate_models(run_id, prepared, federated, result)
    audit = audit_contributions(seen("audit"), prepared, federated, result)
    log_audit(run_id, audit)
    imputation = None
    if graph.skip_reason(graph.stage("evaluate-imputation"), config) is None:
        imputation = evaluate_imputation(seen("evaluate-imputation"), prepared, federated, result)
    register_and_promote(
        config, run_id, prepared, federated, result, evaluation, data_report, partition_report, audit, imputation
    )


def configured_pipeline(config: Config):
    """The pipeline with its ZenML model and resource settings for this config.

    ``train.gpus`` becomes the GPU stage's ``ResourceSettings(gpu_count=...)`` (the local
    orchestrator ignores it; Kubeflow turns it into a GPU limit).
    """
    options: dict = {"model": Model(name=config.registry.model_name, description="fedmm global model")}
    if config.train.gpus:
        resources = ResourceSettings(gpu_count=config.train.gpus)
        options["step_configurations"] = {
            STEPS[stage.name].name: {"settings": {"resources": resources}} for stage in graph.STAGES if stage.gpu
        }
    return training_pipeline.with_options(**options)


def run_training(config: Config):
    """Run the pipeline on the active (default: local) stack; returns the pipeline run."""
    return configured_pipeline(config)(config)
