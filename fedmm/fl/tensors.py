"""Datasets as tensors on the training device, batched by index (no per-sample Python)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

UNLABELLED = -1
"""The label of a client sample whose label the client does not know (semi-supervised settings)."""


@dataclass
class TensorData:
    """Per-modality inputs, a presence mask and labels, all on one device."""

    inputs: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_numpy(
        cls, inputs: dict[str, np.ndarray], mask: np.ndarray, labels: np.ndarray, device: str = "cpu"
    ) -> TensorData:
        return cls(
            inputs={name: torch.as_tensor(value, dtype=torch.float32, device=device) for name, value in inputs.items()},
            mask=torch.as_tensor(mask, dtype=torch.bool, device=device),
            labels=torch.as_tensor(labels, dtype=torch.long, device=device),
        )

    @property
    def labelled(self) -> torch.Tensor:
        """Which samples carry a label."""
        return self.labels != UNLABELLED

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> TensorData:
        return TensorData({k: v[index] for k, v in self.inputs.items()}, self.mask[index], self.labels[index])

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield batches in a seeded random order (sequential order without a generator)."""
        n = len(self)
        if generator is None:
            order = torch.arange(n, device=self.labels.device)
        else:
            order = torch.randperm(n, generator=generator).to(self.labels.device)
        for start in range(0, n, batch_size):
            yield self.take(order[start:start + batch_size])

    @staticmethod
    def concat(parts: list[TensorData]) -> TensorData:
        return TensorData(
            inputs={name: torch.cat([p.inputs[name] for p in parts]) for name in parts[0].inputs},
            mask=torch.cat([p.mask for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
        )
