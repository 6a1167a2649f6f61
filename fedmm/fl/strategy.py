"""Strategies: what the server asks of clients, what clients optimise, how the server aggregates.

Modelled on Flower's message-API ``Strategy``: a strategy never runs the loop (the engine
does) and never touches transport. Messages are plain typed values:

- server -> client: :class:`TrainInstruction` (which client, local settings);
- client -> server: the strategy's ``payload_type`` (FedAvg: :class:`ClientUpdate`, a
  parameter delta and its example count).

On the client, ``local_objective`` builds the loss of one round of local training: it sees
every batch's :class:`Forward` (per-modality embeddings, fused representation, logits), the
round's global state, and what the client kept from its last participation (``keep``; the
client's own storage, never sent to the server).

So FedProx or MOON are a new ``local_objective``; FedMEKT or dual distillation a new payload
and ``aggregate_train``; and the same classes can run over Flower by mapping these types onto
its messages (``keep`` onto the client's ``Context.state``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from fedmm.config import TrainConfig
from fedmm.fl.tensors import TensorData
from fedmm.seeding import rng_for

State = dict[str, torch.Tensor]


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


LocalLoss = Callable[[Forward], torch.Tensor]


def cross_entropy(out: Forward) -> torch.Tensor:
    """The supervised loss of a batch."""
    return torch.nn.functional.cross_entropy(out.logits, out.batch.labels)


class Strategy(ABC):
    """A federated learning algorithm: configure clients, local objective, aggregate."""

    name: str
    payload_type: type = ClientUpdate

    @abstractmethod
    def configure_train(self, server_round: int, num_clients: int) -> list[TrainInstruction]:
        """Choose this round's clients and their local settings."""

    @abstractmethod
    def local_objective(self, model: torch.nn.Module, global_state: State, kept: State | None) -> LocalLoss:
        """The client's loss for one round of local training, built once before its first batch.

        ``model`` is the client's model, holding ``global_state`` (the round's start model)
        when training starts; ``kept`` is what :meth:`keep` returned at the client's last
        participation, None at its first.
        """

    def keep(self, trained: State) -> State | None:
        """What a client stores locally after training, for its next participation (default: nothing)."""
        return None

    @abstractmethod
    def aggregate_train(self, server_round: int, global_state: State, updates: list[ClientUpdate]) -> State:
        """The next global state from this round's client payloads."""


class FedAvg(Strategy):
    """Federated averaging (McMahan et al. 2017) with sample-weighted aggregation.

    Each round a seeded ``client_fraction`` of the clients (at least one) trains for
    ``local_epochs`` with cross-entropy; the server adds the example-weighted mean delta.

    Client contract: minimise plain cross-entropy on local data and send a
    :class:`ClientUpdate`: the delta of every floating-point state entry and the number of
    examples trained on.
    """

    name = "fedavg"

    def __init__(self, train: TrainConfig, seed: int) -> None:
        self.train = train
        self.seed = seed

    def select_clients(self, server_round: int, num_clients: int) -> np.ndarray:
        count = max(1, int(round(self.train.client_fraction * num_clients)))
        chosen = rng_for(self.seed, "select", server_round).choice(num_clients, size=count, replace=False)
        return np.sort(chosen)

    def configure_train(self, server_round: int, num_clients: int) -> list[TrainInstruction]:
        return [
            TrainInstruction(
                client_id=int(client),
                server_round=server_round,
                local_epochs=self.train.local_epochs,
                batch_size=self.train.batch_size,
                lr=self.train.lr,
                optimizer=self.train.optimizer,
            )
            for client in self.select_clients(server_round, num_clients)
        ]

    def local_objective(self, model: torch.nn.Module, global_state: State, kept: State | None) -> LocalLoss:
        return cross_entropy

    def aggregate_train(self, server_round: int, global_state: State, updates: list[ClientUpdate]) -> State:
        if not updates:
            raise ValueError(f"round {server_round}: no client updates to aggregate")
        total = sum(update.num_examples for update in updates)
        merged = dict(global_state)
        for name in updates[0].delta:
            weighted = sum(update.delta[name] * (update.num_examples / total) for update in updates)
            merged[name] = global_state[name] + weighted
        return merged
