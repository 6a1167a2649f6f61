"""Per-modality encoders, a fusion layer that takes a modality-presence mask, a classifier head.

Missing modalities are zero-filled in embedding space: the fusion layer multiplies each
modality's embedding by its presence bit and also sees the mask itself, so it can tell a
missing modality from a present one that happens to embed near zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from fedmm.config import ModelConfig


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network: input shapes, classes, sizes, input stats."""

    sample_shapes: dict[str, tuple[int, ...]]
    num_classes: int
    embed_dim: int
    channels: int
    fusion_dim: int
    stats: dict[str, list[list[float]]]

    @classmethod
    def build(
        cls, sample_shapes: dict[str, tuple[int, ...]], num_classes: int, config: ModelConfig,
        stats: dict[str, np.ndarray],
    ) -> ModelSpec:
        return cls(
            sample_shapes={name: tuple(int(d) for d in shape) for name, shape in sample_shapes.items()},
            num_classes=int(num_classes),
            embed_dim=config.embed_dim,
            channels=config.channels,
            fusion_dim=config.fusion_dim,
            stats={name: np.asarray(value, dtype=float).tolist() for name, value in stats.items()},
        )

    def to_dict(self) -> dict:
        """JSON-able; ``modalities`` keeps the modality order, which a key-sorting JSON writer would lose."""
        return {**asdict(self), "modalities": self.modalities}

    @classmethod
    def from_dict(cls, payload: dict) -> ModelSpec:
        payload = dict(payload)
        order = payload.pop("modalities", list(payload["sample_shapes"]))
        payload["sample_shapes"] = {name: tuple(payload["sample_shapes"][name]) for name in order}
        return cls(**payload)

    @property
    def modalities(self) -> list[str]:
        return list(self.sample_shapes)


class Standardize(nn.Module):
    """Fixed per-channel standardisation with training-split statistics."""

    def __init__(self, stats: list[list[float]], ndim: int) -> None:
        super().__init__()
        mean, std = torch.tensor(stats, dtype=torch.float32)
        shape = (1, -1, 1) if ndim == 2 else (1, -1)
        self.register_buffer("mean", mean.reshape(shape))
        self.register_buffer("std", std.reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ConvEncoder(nn.Module):
    """A 1D CNN over (channels, time) ending in global average pooling."""

    def __init__(self, in_channels: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, channels, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(channels, channels * 2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(channels * 2, embed_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MlpEncoder(nn.Module):
    """A two-layer MLP over a feature vector."""

    def __init__(self, in_features: int, width: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, embed_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_encoder(shape: tuple[int, ...], spec: ModelSpec) -> nn.Module:
    """A CNN for (C, T) time series, an MLP for (D,) feature vectors."""
    if len(shape) == 2:
        return ConvEncoder(shape[0], spec.channels, spec.embed_dim)
    return MlpEncoder(shape[0], max(spec.channels * 4, spec.embed_dim), spec.embed_dim)


class MultimodalNet(nn.Module):
    """Encoders per modality -> masked fusion -> classifier head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.modalities = spec.modalities
        self.standardize = nn.ModuleDict(
            {name: Standardize(spec.stats[name], len(shape)) for name, shape in spec.sample_shapes.items()}
        )
        self.encoders = nn.ModuleDict({name: make_encoder(shape, spec) for name, shape in spec.sample_shapes.items()})
        num_modalities = len(self.modalities)
        self.fusion = nn.Sequential(
            nn.Linear(num_modalities * spec.embed_dim + num_modalities, spec.fusion_dim), nn.ReLU()
        )
        self.head = nn.Linear(spec.fusion_dim, spec.num_classes)

    def embed(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Per-modality embeddings (B, M, E), zero where the modality is absent."""
        parts = [
            self.encoders[name](self.standardize[name](inputs[name])) for name in self.modalities
        ]
        return torch.stack(parts, dim=1) * mask.unsqueeze(-1).to(parts[0].dtype)

    def fuse(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([embeddings.flatten(1), mask.to(embeddings.dtype)], dim=1))

    def represent(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The fused representation (B, F) that the head classifies."""
        return self.fuse(self.embed(inputs, mask), mask)

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.represent(inputs, mask))


def build_model(spec: ModelSpec, seed: int) -> MultimodalNet:
    """A freshly initialised network; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalNet(spec)
