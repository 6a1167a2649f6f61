from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.fl.result import TrainResult
from fedmm.impute.report import ImputationReport
from fedmm.summary import RunSummary
from steps.materializers import FolderArtifactMaterializer


@step(output_materializers=FolderArtifactMaterializer)
def evaluate_imputation(
    config: Config, prepared: PreparedData, federated: FederatedData, result: TrainResult
) -> Annotated[ImputationReport, "imputation_report"]:
    """Fit the imputers federatedly; reconstruction, downstream macro-F1 and cost per pattern and rate."""
    return workflow.evaluate_imputation(config, prepared, federated, result)


@step(enable_cache=False)
def attach_imputation(report: ImputationReport, run_summary: RunSummary) -> None:
    """Log the imputation evaluation to the training run's MLflow run and tag its model version."""
    workflow.attach_imputation(report, run_summary)
