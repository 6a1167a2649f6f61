from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.config import Config


@step(enable_cache=False)
def start_tracking(config: Config) -> Annotated[str, "mlflow_run_id"]:
    """Open this pipeline run's MLflow run."""
    return workflow.start_tracking(config)
