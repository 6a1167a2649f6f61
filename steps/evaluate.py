from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.evaluation import EvaluationReport
from fedmm.fl.result import TrainResult
from steps.materializers import JsonArtifactMaterializer


@step(output_materializers=JsonArtifactMaterializer)
def evaluate_models(
    run_id: str, prepared: PreparedData, federated: FederatedData, result: TrainResult
) -> Annotated[EvaluationReport, "evaluation_report"]:
    """Both test protocols, the centralized gap, per-client metrics; logged with plots."""
    evaluation = workflow.evaluate_models(prepared, federated, result)
    workflow.log_results(run_id, result, evaluation)
    return evaluation
