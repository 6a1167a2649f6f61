"""Federated training of latent-space imputers over the frozen model's embeddings.

Each client embeds its own samples with the trained global encoders, trains the imputer
network locally from the round's global weights, and sends those weights with its count of
usable samples (two or more modalities present); the server takes the weighted mean
(FedAvg). Embeddings are scaled per dimension by federated moments. A strategy can reuse
:func:`masked_targets` and :func:`train_federated` with its own (non-frozen) encoders.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fedmm.impute.base import ImputationError
from fedmm.models.multimodal import MultimodalNet
from fedmm.moments import Moments, aggregate
from fedmm.tensors import State, TensorData, fedavg_states


@dataclass
class LatentData:
    """One client's embeddings (n, M, E), zero where absent, and presence (n, M)."""

    embeddings: torch.Tensor
    present: torch.Tensor

    def moments(self) -> list[Moments]:
        """Per-modality moments of the present embeddings (the client -> server payload of :meth:`Scaler.federated`)."""
        return [
            Moments.of(self.embeddings[:, m].cpu().numpy(), self.present[:, m].cpu().numpy())
            for m in range(self.embeddings.shape[1])
        ]

    @property
    def usable(self) -> torch.Tensor:
        """Samples with at least two modalities present: only those can teach cross-modal imputation."""
        return self.present.sum(1) >= 2

    def batches(self, batch_size: int, generator: torch.Generator):
        """Seeded mini-batches of the usable samples."""
        rows = torch.nonzero(self.usable).flatten()
        order = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield self.embeddings[index], self.present[index]


@torch.no_grad()
def client_latents(model: MultimodalNet, clients: list[TensorData], batch_size: int = 1024) -> list[LatentData]:
    """Every client's embeddings by the frozen encoders (computed on the client)."""
    out = []
    for client in clients:
        parts = [model.embed(batch.inputs, batch.mask) for batch in client.batches(batch_size)]
        embeddings = torch.cat(parts) if parts else torch.zeros(0, len(model.modalities), model.spec.embed_dim)
        out.append(LatentData(embeddings, client.mask))
    return out


class Scaler(nn.Module):
    """Per (modality, dimension) standardisation of embeddings and their observed range, from federated moments."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        for name, value in (("mean", mean), ("std", std), ("low", low), ("high", high)):
            self.register_buffer(name, value)

    @classmethod
    def federated(cls, clients: list[LatentData]) -> Scaler:
        return cls.from_moments([client.moments() for client in clients])

    @classmethod
    def from_moments(cls, payloads: list[list[Moments]]) -> Scaler:
        """The scaler from every client's per-modality :meth:`LatentData.moments`."""
        stats = [aggregate(list(per_modality)) for per_modality in zip(*payloads)]
        columns = zip(*((s.mean, s.std, *s.bounds) for s in stats))
        return cls(*(torch.as_tensor(np.stack(column), dtype=torch.float32) for column in columns))

    def forward(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Scaled embeddings, zero where absent."""
        return (embeddings - self.mean) / self.std * present.unsqueeze(-1)

    def clamp(self, scaled: torch.Tensor) -> torch.Tensor:
        """Scaled values clipped to the range the clients observed."""
        return torch.clamp(scaled, (self.low - self.mean) / self.std, (self.high - self.mean) / self.std)

    def inverse(self, scaled: torch.Tensor) -> torch.Tensor:
        """Embeddings from scaled values, clipped to the observed range."""
        return self.clamp(scaled) * self.std + self.mean


def prefixed(prefix: str, state: State) -> State:
    """``state`` with every key under ``prefix``."""
    return {prefix + name: value for name, value in state.items()}


def unprefixed(prefix: str, state: State) -> State:
    """The entries of ``state`` under ``prefix``, without it."""
    return {name.removeprefix(prefix): value for name, value in state.items() if name.startswith(prefix)}


def scaler_from(state: State) -> Scaler:
    """A :class:`Scaler` from its ``state_dict``."""
    return Scaler(*(state[k] for k in ("mean", "std", "low", "high")))


def masked_targets(present: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Masked supervision: hide a random non-empty proper subset of each sample's present modalities.

    Each present modality is hidden with probability 1/2; a sample left with none hidden
    hides one of its present modalities at random, one left with none visible shows one.
    """
    draw = torch.rand(present.shape, generator=generator).to(present.device)
    targets = (draw < 0.5) & present
    pick = torch.argmax(torch.where(present, draw, -1.0), dim=1, keepdim=True)
    one = torch.zeros_like(present).scatter_(1, pick, True)
    targets = torch.where(targets.any(1, keepdim=True), targets, one)
    return torch.where((targets == present).all(1, keepdim=True), targets & ~one, targets)


def train_federated(
    module: nn.Module,
    clients: list[LatentData],
    local_train: Callable[[nn.Module, LatentData, int, int], None],
    rounds: int,
    label: str,
) -> nn.Module:
    """FedAvg over ``rounds``: every client with usable samples runs ``local_train(module, data, round, client)``.

    ``label`` names the progress bar.
    """
    weights = [int(c.usable.sum()) for c in clients]
    if not any(weights):
        raise ImputationError("no client holds a sample with two modalities present: nothing to learn from")
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for server_round in tqdm(range(rounds), desc=label, unit="round", file=sys.stderr):
        states = []
        for k, data in enumerate(clients):
            if not weights[k]:
                continue
            module.load_state_dict(state)
            module.train()
            local_train(module, data, server_round, k)
            states.append({key: v.detach().clone() for key, v in module.state_dict().items()})
        state = fedavg_states(states, [w for w in weights if w])
    module.load_state_dict(state)
    return module.eval()
