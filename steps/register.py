from typing import Annotated

from zenml import get_step_context, step

from fedmm import workflow
from fedmm.audit.report import AuditReport
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.data.validation import ValidationReport
from fedmm.evaluation import EvaluationReport
from fedmm.fl.result import TrainResult
from fedmm.impute.report import ImputationReport
from fedmm.summary import RunSummary
from pipelines.model_control_plane import TAG_ZENML_VERSION, mirror_aliases
from steps.materializers import JsonArtifactMaterializer


@step(enable_cache=False, output_materializers=JsonArtifactMaterializer)
def register_and_promote(
    config: Config,
    run_id: str,
    prepared: PreparedData,
    federated: FederatedData,
    result: TrainResult,
    evaluation: EvaluationReport,
    data_report: ValidationReport,
    partition_report: ValidationReport,
    audit: AuditReport | None,
    imputation: ImputationReport | None,
) -> Annotated[RunSummary, "run_summary"]:
    """Register the model in MLflow (with the audit and imputation evaluation), promote it if the gates pass,
    mirror it in ZenML."""
    context = get_step_context()
    zenml_version = context.model._get_or_create_model_version()
    summary = workflow.register_and_promote(
        config, run_id, prepared, federated, result, evaluation,
        validation_passed=data_report.success and partition_report.success,
        extra_tags={TAG_ZENML_VERSION: str(zenml_version.id), "fedmm.zenml_pipeline_run": str(context.pipeline_run.id)},
        audit=audit,
        imputation=imputation,
    )
    mirror_aliases(config.registry.model_name)
    context.model.log_metadata(
        {"mlflow_model_version": summary.model_version, "aliases": summary.aliases, "promoted": summary.promoted,
         "test_macro_f1": summary.test_macro_f1, "data_sha256": summary.data_sha256}
    )
    return summary
