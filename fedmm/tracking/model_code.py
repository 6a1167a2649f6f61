"""The registered model's code (MLflow models-from-code): MLflow runs this file to build the model, nothing is unpickled."""

from mlflow.models import set_model

from fedmm.tracking.pyfunc import MultimodalPyfunc

set_model(MultimodalPyfunc())
