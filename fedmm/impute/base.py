"""The imputer interface: fitted over client datasets, fills absent modalities in one declared space.

- ``space == "input"``: values are the raw per-modality inputs ``{name: (B, ...)}``; the
  model's encoders turn an imputation into embeddings.
- ``space == "latent"``: values are the frozen model's embeddings ``(B, M, E)``, zero where
  a modality is absent (``MultimodalNet.embed``).

:meth:`Imputer.impute` returns the present entries exactly as given, whatever the
subclass computes: a mask is never violated. ``owners`` names the client each sample lives
on; imputers fitted client-locally impute a sample with its owner's imputer, federated ones
ignore it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np
import torch

from fedmm.models.multimodal import MultimodalNet
from fedmm.tensors import TensorData

Space = Literal["input", "latent"]
Values = dict[str, torch.Tensor] | torch.Tensor


class ImputationError(ValueError):
    """An imputer cannot be fitted or used as asked."""


class Imputer(ABC):
    """Fit over a list of client datasets (no raw data pooled), then fill absent modalities.

    ``marks_present`` says how the model should see an imputed modality: as present (its
    imputed embedding trusted) or still absent (zero fill is the model's own missing path).
    """

    name: ClassVar[str]
    space: ClassVar[Space]
    marks_present: ClassVar[bool] = True
    inference_settings: ClassVar[tuple[str, ...]] = ()
    """Settings read only at imputation: candidates differing in nothing else share one fit (:meth:`restore`)."""

    def __init__(self) -> None:
        self.fit_seconds = float("nan")

    def fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> Imputer:
        """Fit on the clients' (masked) data with the frozen trained model; records ``fit_seconds``."""
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            self._fit(clients, model, seed)
        self.fit_seconds = time.perf_counter() - start
        return self

    def impute(self, values: Values, mask: torch.Tensor, owners: np.ndarray | None = None) -> Values:
        """Fill the absent entries of ``values`` (``mask`` (B, M) is True where present).

        Imputed entries are constants; present entries keep their gradient, so a latent
        imputer can sit between encoders and fusion at training time.
        """
        with torch.no_grad():
            filled = self._impute(values, mask, owners)
        if isinstance(values, torch.Tensor):
            return torch.where(mask.unsqueeze(-1), values, filled)
        return {
            name: torch.where(mask[:, m].reshape(-1, *[1] * (x.ndim - 1)), x, filled[name])
            for m, (name, x) in enumerate(values.items())
        }

    def state(self) -> dict[str, torch.Tensor]:
        """What a fitted imputer needs to impute again (saved with a model that serves it)."""
        raise ImputationError(f"imputer {self.name!r} cannot be saved to serve a model")

    def restore(self, state: dict[str, torch.Tensor], model: MultimodalNet) -> Imputer:
        """The fitted imputer again, from :meth:`state` and the model it was fitted with."""
        raise ImputationError(f"imputer {self.name!r} cannot be restored")

    @abstractmethod
    def _fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> None:
        """Learn from the clients; runs under ``torch.no_grad`` (enable grad where training)."""

    @abstractmethod
    def _impute(self, values: Values, mask: torch.Tensor, owners: np.ndarray | None) -> Values:
        """Values of the same layout whose absent entries hold the imputation."""


def imputed_logits(
    imputer: Imputer, model: MultimodalNet, inputs: dict[str, torch.Tensor], mask: torch.Tensor,
    owners: np.ndarray | None = None,
) -> torch.Tensor:
    """The model's logits with absent modalities imputed, flagged as the imputer says (inference)."""
    everything = torch.ones_like(mask)
    if imputer.space == "input":
        embeddings = model.embed(imputer.impute(inputs, mask, owners), everything)
    else:
        embeddings = imputer.impute(model.embed(inputs, mask), mask, owners)
    return model.head(model.fuse(embeddings, everything if imputer.marks_present else mask))


class ImputingNet(torch.nn.Module):
    """A model that imputes absent modalities with a fitted imputer before fusing (inference)."""

    def __init__(self, model: MultimodalNet, imputer: Imputer) -> None:
        super().__init__()
        self.model, self.imputer = model, imputer

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return imputed_logits(self.imputer, self.model, inputs, mask)


def standardized_blocks(model: MultimodalNet, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Each modality standardised by the model's own statistics and flattened to (B, D_m)."""
    return [
        model.standardize[name](inputs[name]).flatten(1).cpu().numpy().astype(np.float64)
        for name in model.modalities
    ]


def from_standardized(model: MultimodalNet, blocks: list[np.ndarray], like: dict[str, torch.Tensor]) -> dict:
    """Inverse of :func:`standardized_blocks`: raw inputs shaped and placed like ``like``."""
    out = {}
    for name, block in zip(model.modalities, blocks):
        layer = model.standardize[name]
        x = torch.as_tensor(block, dtype=torch.float32, device=like[name].device).reshape(like[name].shape)
        out[name] = x * layer.std + layer.mean
    return out
