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

from fedmm.artifacts import read_json, read_npz, write_json, write_npz
from fedmm.fl.engine import arrays_to_state, state_to_arrays
from fedmm.fl.result import TrainResult
from fedmm.fl.strategies import STRATEGIES
from fedmm.models.multimodal import ModelSpec, MultimodalNet

MASK_KEY = "mask"


def save_model_dir(directory: Path, result: TrainResult) -> Path:
    """Write the network as ``spec.json`` + ``weights.npz`` and the strategy's inference state (pickle-free)."""
    write_json(directory / "spec.json", result.spec.to_dict())
    write_json(directory / "strategy.json", {"strategy": result.strategy})
    write_npz(directory / "weights.npz", state_to_arrays(result.state))
    write_npz(directory / "server_state.npz", state_to_arrays(result.server_state))
    return directory


def load_model_dir(directory: Path) -> torch.nn.Module:
    """The network as its strategy predicts with it (FedMobile: generated features for missing modalities)."""
    directory = Path(directory)
    model = MultimodalNet(ModelSpec.from_dict(read_json(directory / "spec.json")))
    model.load_state_dict(arrays_to_state(read_npz(directory / "weights.npz"), "cpu"))
    strategy = STRATEGIES[read_json(directory / "strategy.json")["strategy"]]
    return strategy.inference(model.eval(), arrays_to_state(read_npz(directory / "server_state.npz"), "cpu")).eval()


class MultimodalPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts class probabilities from per-modality arrays and a presence mask."""

    def load_context(self, context) -> None:
        self.model = load_model_dir(Path(context.artifacts["network"]))

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
