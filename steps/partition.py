from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from steps.materializers import FolderArtifactMaterializer


@step(output_materializers=FolderArtifactMaterializer)
def partition_clients(config: Config, prepared: PreparedData) -> Annotated[FederatedData, "client_partitions"]:
    """Split the training pool across clients and mask their modalities."""
    return workflow.make_partitions(config, prepared)
