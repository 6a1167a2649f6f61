from typing import Annotated

from zenml import save_artifact, step

from fedmm import workflow
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.data.validation import ValidationReport
from steps.materializers import JsonArtifactMaterializer


def _record(run_id: str, report: ValidationReport, name: str) -> ValidationReport:
    if not report.success:
        save_artifact(report, name=name, materializer=JsonArtifactMaterializer)
    workflow.record_validation(run_id, report)
    return report


@step(enable_cache=False, output_materializers=JsonArtifactMaterializer)
def validate_data(
    config: Config, prepared: PreparedData, run_id: str
) -> Annotated[ValidationReport, "data_validation_report"]:
    """Great Expectations suite over the prepared data; fails the run when it fails."""
    return _record(run_id, workflow.validate_data(config, prepared), "data_validation_report")


@step(enable_cache=False, output_materializers=JsonArtifactMaterializer)
def validate_partitions(
    config: Config, federated: FederatedData, run_id: str
) -> Annotated[ValidationReport, "partition_validation_report"]:
    """Great Expectations suite over client sizes and realised missing rates."""
    return _record(run_id, workflow.check_partitions(config, federated), "partition_validation_report")
