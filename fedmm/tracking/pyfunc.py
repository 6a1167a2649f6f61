"""The registered model: an MLflow pyfunc over the multimodal network.

Input: a dict of arrays, one per modality (float32, (B, C, T) or (B, D)) plus ``mask``
(float32 (B, M), 1 where the modality is present, in the model's modality order).
Output: class probabilities (B, K).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch

from fedmm.fl.result import load_predictor
from fedmm.models.multimodal import MultimodalNet

MASK_KEY = "mask"


class MultimodalPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts class probabilities from per-modality arrays and a presence mask."""

    def load_context(self, context) -> None:
        self.model = load_predictor(Path(context.artifacts["network"]))

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        return predict_probabilities(self.model, model_input)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Class probabilities for a pyfunc-style input dict (modalities + ``mask``)."""
    modalities = model_modalities(model)
    missing = [name for name in [*modalities, MASK_KEY] if name not in arrays]
    if missing:
        raise ValueError(f"model input lacks {missing}; expected {modalities} and {MASK_KEY!r}")
    inputs = {name: torch.as_tensor(np.asarray(arrays[name]), dtype=torch.float32) for name in modalities}
    mask = torch.as_tensor(np.asarray(arrays[MASK_KEY])) > 0.5
    return torch.softmax(model(inputs, mask), dim=1).numpy()


def model_modalities(model: torch.nn.Module) -> list[str]:
    """The modality order of a network or of a wrapper around one (``.model``)."""
    return model.modalities if isinstance(model, MultimodalNet) else model.model.modalities


def model_input(arrays: dict[str, np.ndarray], presence: np.ndarray) -> dict[str, np.ndarray]:
    """The pyfunc input dict for per-modality arrays and a boolean presence matrix."""
    return {**{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, MASK_KEY: presence.astype(np.float32)}
