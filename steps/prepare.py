from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.config import Config
from fedmm.data.prepare import PreparedData
from steps.materializers import FolderArtifactMaterializer


@step(output_materializers=FolderArtifactMaterializer)
def prepare_data(config: Config) -> Annotated[PreparedData, "prepared_data"]:
    """Verify, window and split the source data."""
    return workflow.prepare_data(config)
