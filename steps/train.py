from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.fl.result import TrainResult
from fedmm.progress import RoundProgress
from steps.materializers import FolderArtifactMaterializer


@step(output_materializers=FolderArtifactMaterializer)
def train_federated(
    config: Config, prepared: PreparedData, federated: FederatedData
) -> Annotated[TrainResult, "training_result"]:
    """Federated rounds (resumable from the last checkpoint) and the centralized reference."""
    with RoundProgress(config.train.rounds, config.train.strategy) as progress:
        return workflow.train_models(config, prepared, federated, progress.update)
