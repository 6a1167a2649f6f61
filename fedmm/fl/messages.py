"""The typed values strategies, clients and the engine exchange (transport-agnostic).

- server -> client: :class:`TrainInstruction` (which client, local settings);
- client -> server: a strategy's ``payload_type``; parameter-averaging strategies send a
  :class:`ClientUpdate` (a parameter delta and its example count), knowledge-transfer
  strategies send their own payload (FedMEKT: proxy-set embeddings, no parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fedmm.tensors import State, TensorData


@dataclass(frozen=True)
class TrainInstruction:
    """Server -> client: train locally with these settings."""

    client_id: int
    server_round: int
    local_epochs: int
    batch_size: int
    lr: float
    optimizer: str


@dataclass(frozen=True)
class ClientUpdate:
    """Client -> server payload of parameter-averaging strategies: trained minus global weights."""

    client_id: int
    num_examples: int
    delta: State
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Forward:
    """One batch through the client's model: what a local objective sees."""

    batch: TensorData
    embeddings: torch.Tensor  # (B, M, E) per modality, zero where absent
    representation: torch.Tensor  # (B, F) the fused representation the head classifies
    logits: torch.Tensor
    real: torch.Tensor | None = None  # (B,) which rows are samples, not padding (None: all; vectorised engine)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of per-sample ``values`` over the batch's real samples."""
        if self.real is None:
            return values.mean()
        return (values * self.real).sum() / self.real.sum().clamp(min=1)


LocalLoss = Callable[[Forward], torch.Tensor]
Represent = Callable[[State, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LocalContext:
    """What a client's local objective sees besides the batch (see :meth:`FedAvg.client_loss`).

    ``params`` are the client's trainable parameters as they are now (the live model's in the
    loop, functional per-client slices in the vectorised engine); ``represent(state, inputs,
    mask)`` is the fused representation of the network holding another ``state``; ``kept`` is
    what the client kept from its last participation (None at its first; in the vectorised
    engine a placeholder, with ``has_kept`` 0).
    """

    params: State
    global_state: State
    represent: Represent
    kept: State | None = None
    has_kept: torch.Tensor | float = 1.0


def cross_entropy(out: Forward) -> torch.Tensor:
    """The supervised loss of a batch: mean cross-entropy over its labelled samples (0 if none)."""
    return labelled_cross_entropy(out.logits, out.batch.labels)


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the samples whose label is not :data:`~fedmm.tensors.UNLABELLED`."""
    labelled = labels >= 0
    losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return (losses * labelled).sum() / labelled.sum().clamp(min=1)
