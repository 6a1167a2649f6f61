"""The registered model: an MLflow pyfunc over the multimodal network.

Input: a dict of arrays, one per modality (float32, (B, C, T) or (B, D)) plus ``mask``
(float32 (B, M), 1 where the modality is present, in the model's modality order). A sample
without a modality has 0 in that mask column; its values there are ignored (any filler,
NaN included). Output: class probabilities (B, K).

The model is saved with MLflow's models-from-code: the class comes from
``model_code.py`` (copied into the model), the weights are the predictor's npz/JSON files,
so nothing is unpickled at load. Every file of the saved model is hashed at registration
(:func:`directory_sha256`) and checked again before anything of it is loaded
(:func:`load_verified`, ``fedmm.load_model``). The weights' own hash is recorded in the
model's config, and the model's code checks it before it builds the network, so tampered
weights are refused even under a plain ``mlflow.pyfunc.load_model`` (which runs whatever
``model_code.py`` the artifact store holds: only ``fedmm.load_model`` checks the code too).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch

import fedmm
from fedmm.artifacts import directory_sha256
from fedmm.fl.result import load_predictor
from fedmm.models.multimodal import MultimodalNet

MASK_KEY = "mask"
NETWORK_SHA_KEY = "network_sha256"
MODEL_CODE = Path(__file__).with_name("model_code.py")
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "mlflow==3.17.2"]


class TamperedModelError(ValueError):
    """A registered model's files differ from those hashed at registration."""


class MultimodalPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts class probabilities from per-modality arrays and a presence mask."""

    def load_context(self, context) -> None:
        network = Path(context.artifacts["network"])
        verify_network(network, (context.model_config or {}).get(NETWORK_SHA_KEY))
        self.model = load_predictor(network)

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        return predict_probabilities(self.model, model_input)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Class probabilities for a pyfunc-style input dict (modalities + ``mask``)."""
    modalities = model_modalities(model)
    missing = [name for name in [*modalities, MASK_KEY] if name not in arrays]
    if missing:
        raise ValueError(f"model input lacks {missing}; expected {modalities} and {MASK_KEY!r}")
    mask = torch.as_tensor(np.asarray(arrays[MASK_KEY])) > 0.5
    inputs = {}
    for m, name in enumerate(modalities):
        values = torch.as_tensor(np.asarray(arrays[name]), dtype=torch.float32)
        present = mask[:, m].reshape(-1, *[1] * (values.ndim - 1))
        inputs[name] = torch.where(present, values, torch.zeros((), dtype=values.dtype))
    return torch.softmax(model(inputs, mask), dim=1).numpy()


def model_modalities(model: torch.nn.Module) -> list[str]:
    """The modality order of a network or of a wrapper around one (``.model``)."""
    return model.modalities if isinstance(model, MultimodalNet) else model.model.modalities


def model_input(arrays: dict[str, np.ndarray], presence: np.ndarray) -> dict[str, np.ndarray]:
    """The pyfunc input dict for per-modality arrays and a boolean presence matrix."""
    return {**{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, MASK_KEY: presence.astype(np.float32)}


EXAMPLE_ROWS = 4


def input_example(dataset) -> dict[str, np.ndarray]:
    """The registered input example: a few samples of ``dataset`` (a MultimodalDataset), showing the presence mask.

    Samples that lack a modality come first when the data has them; otherwise the last row
    has its last modality marked absent (zeroed), so the example shows how missing input is given.
    """
    incomplete = np.flatnonzero(~dataset.presence.all(axis=1))[: EXAMPLE_ROWS // 2]
    rows = np.concatenate([incomplete, np.setdiff1d(np.arange(len(dataset)), incomplete)[: EXAMPLE_ROWS - len(incomplete)]])
    presence = dataset.presence[rows].copy()
    if presence.all() and len(rows) > 1:
        presence[-1, -1] = False
    arrays = {name: np.where(presence[:, m].reshape(-1, *[1] * (array.ndim - 1)), array[rows], 0.0)
              for m, (name, array) in enumerate(dataset.modalities.items())}
    return model_input(arrays, presence)


def verify_network(network: Path, expected_sha256: str | None) -> None:
    """Refuse weights whose files do not hash to the SHA-256 recorded in the model's config when it was saved."""
    actual = directory_sha256(network)
    if actual != expected_sha256:
        raise TamperedModelError(
            f"the weights in {network} hash to {actual[:16]}..., not the {str(expected_sha256)[:16]}... recorded "
            "when the model was saved: refusing to build a model from modified weights"
        )


def save_pyfunc(path: Path, network: Path, example: dict[str, np.ndarray], signature, code: Path = MODEL_CODE) -> str:
    """Save the model (models-from-code ``code``, npz/JSON weights) to ``path``; returns its :func:`directory_sha256`.

    The weights' own :func:`directory_sha256` goes into the model's config (``network_sha256``) for
    the model's code to check at load.
    """
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(code),
        artifacts={"network": str(network)},
        model_config={NETWORK_SHA_KEY: directory_sha256(network)},
        signature=signature,
        input_example=example,
        code_paths=[str(Path(fedmm.__file__).parent)],
        pip_requirements=PIP_REQUIREMENTS,
    )
    return directory_sha256(path)


def load_verified(path: Path, expected_sha256: str | None, what: str):
    """Load a saved pyfunc only if its files hash to ``expected_sha256`` (recorded at registration)."""
    if not expected_sha256:
        raise TamperedModelError(f"{what} records no model SHA-256: it was not registered by this fedmm; refusing to load it")
    actual = directory_sha256(path)
    if actual != expected_sha256:
        raise TamperedModelError(
            f"the files of {what} hash to {actual[:16]}..., not the {expected_sha256[:16]}... recorded at "
            "registration: refusing to load a modified model"
        )
    return mlflow.pyfunc.load_model(str(path))
