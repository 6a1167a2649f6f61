"""fedmm: multimodal federated learning with missing modalities, as reproducible pipelines."""

__version__ = "0.1.0"
