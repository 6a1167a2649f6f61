"""The errors a user can cause and fix: the CLI prints these as one line, without a traceback."""

from fedmm.config import ConfigError
from fedmm.data.dataset import DatasetError
from fedmm.data.masking import MaskError
from fedmm.data.partition import PartitionError


class PastRunError(ValueError):
    """The training run to analyse (audit, imputation) does not exist or has not finished."""


def user_errors() -> tuple[type[Exception], ...]:
    """Error types that name a problem in the user's input (config, data, registry request)."""
    from fedmm.data.validation import DataValidationError
    from fedmm.fl.deploy import DeploymentError
    from fedmm.fl.federation import FederationError

    errors = [ConfigError, DatasetError, MaskError, PartitionError, DataValidationError, PastRunError,
              DeploymentError, FederationError]
    try:
        from fedmm.tracking.registry import RegistryError
    except ImportError:  # a site install has no MLflow
        return tuple(errors)
    return (*errors, RegistryError)
