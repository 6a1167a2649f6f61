"""The registered generator's code (MLflow models-from-code): nothing is unpickled."""

from mlflow.models import set_model

from fedmm.tracking.generator import GeneratorPyfunc

set_model(GeneratorPyfunc())
