"""Strategies: what the server asks of clients, what clients optimise, how the server aggregates.

Modelled on Flower's message-API ``Strategy``: a strategy never runs the loop (the engine
does) and never touches transport. Its messages are the plain typed values of
:mod:`fedmm.fl.messages`; its client -> server payload is ``payload_type``.

On the client, ``local_objective`` builds the loss of one round of local training: it sees
every batch's :class:`Forward` (per-modality embeddings, fused representation, logits), the
round's global state, and what the client kept from its last participation (``keep``; the
client's own storage, never sent to the server). ``fit`` is the whole client side: for FedAvg
local training under that objective, returning a :class:`ClientUpdate`; knowledge-transfer
strategies override it to train other modules or send other payloads.

A strategy is generic in its payload (``Strategy[PayloadT]``): ``fit`` returns one,
``aggregate_train`` takes a list of them, ``free_rider_payload`` fabricates one, and the
class's generic argument is its ``payload_type`` (``class FedMobile(FedAvg[FedMobileUpdate])``).
Its own hyperparameters are keyword-only constructor arguments, validated against the
fields of the same names in its ``train.<config_section>`` model, and :meth:`Strategy.from_config`
is the one way a config builds it.

So FedProx or MOON are a new ``local_objective``; FedMEKT or dual distillation a new ``fit``,
payload and ``aggregate_train``; and the same classes can run over Flower by mapping these
types onto its messages (``keep`` onto the client's ``Context.state``, ``server_state`` onto
the server app's state).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, get_args

import numpy as np
import torch
from pydantic import ValidationError

from fedmm.config import TrainConfig
from fedmm.fl.client import Worker, representer, train_client
from fedmm.fl.messages import ClientUpdate, Forward, LocalContext, LocalLoss, TrainInstruction, cross_entropy
from fedmm.fl.params import FEDAVG, Params, StrategyInfo
from fedmm.fl.updates import StackedStates, delta_matrix
from fedmm.models.multimodal import ModelSpec
from fedmm.seeding import rng_for
from fedmm.tensors import State, TensorData, weighted_mean

PayloadT = TypeVar("PayloadT")


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


class Strategy(ABC, Generic[PayloadT]):
    """A federated learning algorithm: configure clients, local objective, aggregate.

    ``train`` holds the schedule every strategy shares (``rounds``, ``client_fraction``,
    ``local_epochs``, ``batch_size``, ``lr``, ``optimizer``); a subclass's own parameters are
    keyword-only constructor arguments named as the fields of ``train.<config_section>``.
    ``server`` is None where nothing server-side is needed (a strategy's class-level facts);
    with a server, a strategy that ``needs_proxy`` refuses one without a proxy set.
    """

    info: ClassVar[StrategyInfo]
    """The strategy's declaration (:mod:`fedmm.fl.params`): ``name``, ``config_section`` and ``needs_proxy`` come from it."""
    name: ClassVar[str]
    payload_type: ClassVar[type]
    config_section: ClassVar[str | None] = None
    needs_proxy: bool = False
    """Whether the strategy needs the server's labelled proxy set (an instance may refine it from its parameters)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "info" in cls.__dict__:
            cls.name, cls.config_section, cls.needs_proxy = cls.info.name, cls.info.section, cls.info.needs_proxy()
        for base in cls.__dict__.get("__orig_bases__", ()):
            argument = next(iter(get_args(base)), None)
            if isinstance(argument, type):
                cls.payload_type = argument

    def __init__(self, train: TrainConfig, seed: int, server: ServerContext | None = None) -> None:
        self.train = train
        self.seed = seed
        self.server = server
        if server is not None and self.needs_proxy:
            self.require_proxy()

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The strategy's own parameters: its constructor's keyword-only arguments."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)

    @classmethod
    def from_config(cls, train: TrainConfig, seed: int, server: ServerContext | None = None) -> Strategy:
        """The strategy ``train`` configures: each parameter is the field of that name in ``train.<config_section>``."""
        section = getattr(train, cls.config_section) if cls.config_section else None
        return cls(train, seed, server, **{name: getattr(section, name) for name in cls.parameter_names()})

    @classmethod
    def checked(cls, **parameters: Any) -> Params:
        """``parameters`` validated by the strategy's config section model (its bounds are the config's).

        A bad value raises one :class:`StrategyError` line naming the strategy, the parameter and the value.
        """
        try:
            return cls.info.params(**parameters)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise StrategyError(f"{cls.__name__}({where}={problem['input']!r}): {problem['msg']}") from None

    def require_proxy(self) -> TensorData:
        """The server's proxy set; a clear :class:`StrategyError` when there is none or it is empty."""
        proxy = None if self.server is None else self.server.proxy
        if proxy is None or not len(proxy):
            raise StrategyError(f"strategy {self.name!r} needs a server proxy set: set partition.proxy_fraction > 0")
        return proxy

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

    @abstractmethod
    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[PayloadT, State | None]:
        """The client side of a round: its payload and what it keeps."""

    def free_rider_payload(self, instruction: TrainInstruction, global_state: State, num_examples: int) -> PayloadT:
        """What a free rider (a client that skips training) sends: for delta payloads, a zero delta.

        Update corruptions then replace the delta (``free_rider_noise``: seeded noise). Without a
        parameter delta there is nothing to free-ride with.
        """
        raise StrategyError(f"strategy {self.name!r} sends no parameter deltas: a free rider cannot be simulated")

    @abstractmethod
    def aggregate_train(self, server_round: int, global_state: State, updates: list[PayloadT]) -> State:
        """The next global state from this round's client payloads."""

    def predictor(self, model: torch.nn.Module) -> torch.nn.Module:
        """The global model as it predicts now (default: :meth:`predictor_from` over the current server state)."""
        return self.predictor_from(model, self.server_state())

    @classmethod
    def predictor_from(cls, model: torch.nn.Module, server_state: State) -> torch.nn.Module:
        """The predicting model from a trained global model and the final server state (default: the model).

        FedMobile adds its generator here, so a saved run predicts as the strategy did.
        """
        return model

    def server_state(self) -> State:
        """What the server keeps besides the global model (checkpointed with it; default: nothing)."""
        return {}

    def load_server_state(self, state: State) -> None:
        """Restore :meth:`server_state` when a run resumes."""

    def client_state(self) -> State:
        """What a transport sends each client with the global model (default: the whole :meth:`server_state`);
        a site hands it to :meth:`load_server_state` before :meth:`fit`."""
        return self.server_state()


class FedAvg(Strategy[PayloadT]):
    """Federated averaging (McMahan et al. 2017) with sample-weighted aggregation; no parameters of its own.

    Each round a seeded ``client_fraction`` of the clients (at least one) trains for
    ``local_epochs`` with cross-entropy; the server adds the example-weighted mean delta.

    Client contract: minimise plain cross-entropy on local data and send a
    :class:`ClientUpdate`: the delta of every floating-point state entry and the number of
    examples trained on. A free rider sends a zero delta.

    Generic in the payload so strategies that extend FedAvg's selection declare theirs
    (``FedAvg[FedMobileUpdate]``); FedAvg itself sends :class:`ClientUpdate`.
    """

    info = FEDAVG
    payload_type = ClientUpdate

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
        """:meth:`client_loss` over the live model's parameters."""
        context = LocalContext(dict(model.named_parameters()), global_state, representer(model), kept)
        return lambda out: self.client_loss(out, context)

    def client_loss(self, out: Forward, context: LocalContext) -> torch.Tensor:
        """The loss of one batch: a pure function of the batch and the client's parameters.

        The loop engine calls it through :meth:`local_objective`; the vectorised engine
        (:mod:`fedmm.fl.vectorised`) calls it per client inside ``torch.func.vmap``, with
        padded rows marked in ``out.real`` and padded rows unlabelled. A subclass that
        overrides :meth:`local_objective` or :meth:`fit` instead trains in the loop.
        """
        return cross_entropy(out)

    @classmethod
    def vectorisable(cls) -> bool:
        """Whether local training is FedAvg's over :meth:`client_loss` (what the vectorised engine runs)."""
        return cls.fit is FedAvg.fit and cls.local_objective is FedAvg.local_objective

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[ClientUpdate, State | None]:
        """Local training under :meth:`local_objective`; the payload is the trained delta."""
        worker.load(global_state)
        return train_client(
            worker, global_state, data, instruction, self.local_objective(worker.model, global_state, kept),
            self.keep, self.seed,
        )

    def free_rider_payload(self, instruction: TrainInstruction, global_state: State, num_examples: int) -> ClientUpdate:
        zeros = {name: torch.zeros_like(value) for name, value in global_state.items()}
        return ClientUpdate(instruction.client_id, num_examples, zeros)

    def mean_delta(self, server_round: int, updates: list[ClientUpdate]) -> State:
        """The example-weighted mean of the clients' deltas (:func:`~fedmm.tensors.weighted_mean` over their matrix)."""
        if not updates:
            raise ValueError(f"round {server_round}: no client updates to aggregate")
        stack = StackedStates(delta_matrix(updates, updates[0].delta), updates[0].delta)
        return stack.unflatten(weighted_mean(list(stack.matrix), [update.num_examples for update in updates]))

    def aggregate_train(self, server_round: int, global_state: State, updates: list[ClientUpdate]) -> State:
        merged = dict(global_state)
        for name, delta in self.mean_delta(server_round, updates).items():
            merged[name] = global_state[name] + delta
        return merged
