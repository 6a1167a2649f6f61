"""The floor imputers: zero fill (the model's own missing path) and federated mean fill."""

from __future__ import annotations

import numpy as np
import torch

from fedmm.impute.base import Imputer
from fedmm.models.multimodal import MultimodalNet
from fedmm.moments import Moments, aggregate
from fedmm.tensors import TensorData


class ZeroFill(Imputer):
    """Zero embeddings, left flagged absent: exactly what the model does with a missing modality."""

    name = "zero"
    space = "latent"
    marks_present = False

    def _fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> None:
        """Nothing to learn."""

    def _impute(self, values: torch.Tensor, mask: torch.Tensor, owners: np.ndarray | None) -> torch.Tensor:
        return torch.zeros_like(values)

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def restore(self, state: dict[str, torch.Tensor], model: MultimodalNet) -> ZeroFill:
        return self


class MeanFill(Imputer):
    """The per-feature mean of each modality's present values, from federated sums and counts."""

    name = "mean"
    space = "input"

    def _fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> None:
        self.means = {}
        for m, name in enumerate(model.modalities):
            payloads = [
                Moments.of(client.inputs[name].flatten(1).cpu().numpy(), client.mask[:, m].cpu().numpy())
                for client in clients
            ]
            self.means[name] = torch.as_tensor(aggregate(payloads).mean, dtype=torch.float32)

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.means)

    def restore(self, state: dict[str, torch.Tensor], model: MultimodalNet) -> MeanFill:
        self.means = {name: state[name] for name in model.modalities}
        return self

    def _impute(self, values: dict[str, torch.Tensor], mask: torch.Tensor, owners: np.ndarray | None) -> dict:
        return {
            name: self.means[name].to(x.device).reshape(1, *x.shape[1:]).expand_as(x)
            for name, x in values.items()
        }
