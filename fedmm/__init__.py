"""fedmm: multimodal federated learning with missing modalities, as reproducible pipelines."""

__version__ = "0.1.0"


def load_model(name: str, alias: str = "champion"):
    """Load a registered model (an MLflow pyfunc) after checking every file against the registry's SHA-256.

    Use it instead of ``mlflow.pyfunc.load_model``, which runs whatever code the artifact store holds.
    """
    from fedmm import runtime

    runtime.configure()
    from fedmm.tracking.registry import load_model as load_verified_model

    return load_verified_model(name, alias)
