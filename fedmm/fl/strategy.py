"""Strategies: what the server asks of clients, what clients optimise, how the server aggregates.

Modelled on Flower's message-API ``Strategy``: a strategy never runs the loop (the engine
does) and never touches transport. Its messages are the plain typed values of
:mod:`fedmm.fl.messages`; its client -> server payload is ``payload_type``.

On the client, ``local_objective`` builds the loss of one round of local training: it sees
every batch's :class:`Forward` (per-modality embeddings, fused representation, logits), the
round's global state, and what the client kept from its last participation (``keep``; the
client's own storage, never sent to the server). ``fit`` is the whole client side: by default
local training under that objective, returning a :class:`ClientUpdate`; knowledge-transfer
strategies override it to train other modules or send other payloads.

So FedProx or MOON are a new ``local_objective``; FedMEKT or dual distillation a new ``fit``,
payload and ``aggregate_train``; and the same classes can run over Flower by mapping these
types onto its messages (``keep`` onto the client's ``Context.state``, ``server_state`` onto
the server app's state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from fedmm.config import TrainConfig
from fedmm.fl.client import Worker, train_client
from fedmm.fl.messages import ClientUpdate, Forward, LocalLoss, State, TrainInstruction, cross_entropy
from fedmm.fl.tensors import TensorData
from fedmm.models.multimodal import ModelSpec
from fedmm.seeding import rng_for

__all__ = [
    "ClientUpdate", "FedAvg", "Forward", "LocalLoss", "ServerContext", "State", "Strategy", "StrategyError",
    "TrainInstruction", "cross_entropy",
]


class StrategyError(ValueError):
    """A strategy cannot run on what it was given (e.g. no proxy set for a distillation strategy)."""


@dataclass(frozen=True)
class ServerContext:
    """What the server holds besides the global model: the model spec, its device and a labelled proxy set.

    The proxy set (``partition.proxy_fraction`` of the training pool, every modality present,
    never given to a client) is empty unless configured; knowledge-transfer strategies need it.
    """

    spec: ModelSpec
    device: str = "cpu"
    proxy: TensorData | None = None

    def require_proxy(self, strategy: str) -> TensorData:
        if self.proxy is None or not len(self.proxy):
            raise StrategyError(f"strategy {strategy!r} needs a server proxy set: set partition.proxy_fraction > 0")
        return self.proxy


class Strategy(ABC):
    """A federated learning algorithm: configure clients, local objective, aggregate."""

    name: str
    payload_type: type = ClientUpdate

    def __init__(self, train: TrainConfig, seed: int, server: ServerContext | None = None) -> None:
        self.train = train
        self.seed = seed
        self.server = server

    @classmethod
    def sends_deltas(cls) -> bool:
        """Whether clients send parameter deltas (what update corruptions and the contribution audit act on)."""
        return issubclass(cls.payload_type, ClientUpdate)

    @classmethod
    def extra_labels(cls, train: TrainConfig) -> bool:
        """Whether the method trains on labels FedAvg never sees (the server's labelled proxy set)."""
        return False

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

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[ClientUpdate, State | None]:
        """The client side of a round: its payload and what it keeps (default: local training, a delta)."""
        worker.load(global_state)
        return train_client(
            worker, global_state, data, instruction, self.local_objective(worker.model, global_state, kept),
            self.keep, self.seed,
        )

    @abstractmethod
    def aggregate_train(self, server_round: int, global_state: State, updates: list) -> State:
        """The next global state from this round's client payloads."""

    def predictor(self, model: torch.nn.Module) -> torch.nn.Module:
        """The global model as it predicts now (default: :meth:`inference` over the current server state)."""
        return self.inference(model, self.server_state())

    @classmethod
    def inference(cls, model: torch.nn.Module, server_state: State) -> torch.nn.Module:
        """The predicting model from a trained global model and the final server state (default: the model).

        FedMobile adds its generator here, so a saved run predicts as the strategy did.
        """
        return model

    def server_state(self) -> State:
        """What the server keeps besides the global model (checkpointed with it; default: nothing)."""
        return {}

    def load_server_state(self, state: State) -> None:
        """Restore :meth:`server_state` when a run resumes."""


class FedAvg(Strategy):
    """Federated averaging (McMahan et al. 2017) with sample-weighted aggregation.

    Each round a seeded ``client_fraction`` of the clients (at least one) trains for
    ``local_epochs`` with cross-entropy; the server adds the example-weighted mean delta.

    Client contract: minimise plain cross-entropy on local data and send a
    :class:`ClientUpdate`: the delta of every floating-point state entry and the number of
    examples trained on.
    """

    name = "fedavg"

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

    def mean_delta(self, server_round: int, updates: list[ClientUpdate]) -> State:
        """The example-weighted mean of the clients' deltas."""
        if not updates:
            raise ValueError(f"round {server_round}: no client updates to aggregate")
        total = sum(update.num_examples for update in updates)
        return {
            name: sum(update.delta[name] * (update.num_examples / total) for update in updates)
            for name in updates[0].delta
        }

    def aggregate_train(self, server_round: int, global_state: State, updates: list[ClientUpdate]) -> State:
        merged = dict(global_state)
        for name, delta in self.mean_delta(server_round, updates).items():
            merged[name] = global_state[name] + delta
        return merged
