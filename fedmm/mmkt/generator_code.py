"""The registered generator's code (MLflow models-from-code): nothing is unpickled."""

from mlflow.models import set_model

from fedmm.mmkt.pyfunc import GeneratorPyfunc

set_model(GeneratorPyfunc())
