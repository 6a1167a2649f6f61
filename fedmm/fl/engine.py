"""The round engine: an in-process simulation of server and clients, checkpointed every round.

Every random draw is keyed by (seed, round, client), never by position in a stream, and
what clients keep between rounds is snapshotted with the checkpoint, so a run interrupted
after round r and resumed from its checkpoint ends exactly where an uninterrupted run does.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedmm.artifacts import read_npz, write_npz
from fedmm.data.corruption import CorruptionPlan
from fedmm.fl.client import Worker, trainable_state
from fedmm.fl.divergence import check_finite
from fedmm.fl.history import ClientRecord, RoundRecord
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.payload import client_payload
from fedmm.fl.strategy import Strategy
from fedmm.fl.updates import UpdateStore, stacked, stacked_entries
from fedmm.metrics import evaluate
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.tensors import State, TensorData

CHECKPOINT_FILE = "checkpoint.npz"
UPDATES_DIR = "updates"
KEPT_DIR = "kept"
SERVER_PREFIX = "server/"


def state_to_arrays(state: State) -> dict[str, np.ndarray]:
    return {name: value.detach().cpu().numpy() for name, value in state.items()}


def arrays_to_state(arrays: dict[str, np.ndarray], device: str) -> State:
    return {name: torch.as_tensor(value, device=device) for name, value in arrays.items()}


class KeptStore:
    """What clients keep between participations (:meth:`Strategy.keep`), snapshotted per round.

    ``after_XXXX.npz`` holds every client's kept state after XXXX completed rounds: per state
    entry ``<name>/clients`` (the ids of the clients that kept it) and ``<name>/values`` (their
    values stacked in that order), a few arrays whatever the number of clients. It is written
    before that round's checkpoint and older snapshots are removed after it, so a resumed run
    finds the snapshot its checkpoint matches. Strategies that keep nothing write nothing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, completed: int) -> Path:
        return self.directory / f"after_{completed:04d}.npz"

    def load(self, completed: int, device: str) -> dict[int, State]:
        kept: dict[int, State] = {}
        if self._path(completed).is_file():
            arrays = read_npz(self._path(completed))
            for key in [key for key in arrays if key.endswith("/clients")]:
                name = key.removesuffix("/clients")
                values = torch.as_tensor(arrays[f"{name}/values"], device=device)
                for client, value in zip(arrays[key].tolist(), values):
                    kept.setdefault(client, {})[name] = value
        return kept

    def save(self, completed: int, kept: dict[int, State]) -> None:
        arrays = {}
        for name in dict.fromkeys(name for state in kept.values() for name in state):
            clients = [client for client, state in kept.items() if name in state]
            values = stacked_entries([kept[client] for client in clients], [name])[name]
            arrays[f"{name}/clients"] = np.array(clients, dtype=np.int64)
            arrays[f"{name}/values"] = values.detach().cpu().numpy()
        if arrays:
            write_npz(self._path(completed), arrays)

    def prune(self, completed: int) -> None:
        for path in self.directory.glob("after_*.npz"):
            if path != self._path(completed):
                path.unlink()


@dataclass
class FederatedOutcome:
    """The final global model and the per-round history."""

    model: torch.nn.Module
    history: list[RoundRecord]
    resumed_from: int
    server_state: State = field(default_factory=dict)


@dataclass
class RoundReplies:
    """What came back from a round's clients: payloads in client-id order, and who did not reply."""

    payloads: list
    dropped: list[int] = field(default_factory=list)


class ClientPool(ABC):
    """How the engine reaches a round's clients: in this process, or over a transport (Flower)."""

    num_clients: int

    @abstractmethod
    def fit_round(
        self, server_round: int, state: State, instructions: list[TrainInstruction], strategy: Strategy
    ) -> RoundReplies:
        """Send each instruction (with the global state) to its client and collect the payloads."""

    def resume(self, completed: int) -> None:
        """Restore what clients keep as it was after ``completed`` rounds (before the first round trained)."""

    def snapshot(self, completed: int) -> None:
        """Persist what clients keep after ``completed`` rounds (called before that round's checkpoint)."""

    def prune(self, completed: int) -> None:
        """Drop snapshots older than ``completed`` rounds (called after that round's checkpoint)."""


class InProcessClients(ClientPool):
    """Every client simulated in this process, one after another on one shared worker model.

    What clients keep between participations lives in memory and in a :class:`KeptStore`.
    """

    def __init__(
        self, spec: ModelSpec, clients: list[TensorData], seed: int, device: str, workdir: Path,
        corruption: CorruptionPlan | None = None,
    ) -> None:
        self.clients, self.corruption, self.device = clients, corruption, device
        self.num_clients = len(clients)
        self.worker = Worker(build_model(spec, seed).to(device))
        self.kept_store = KeptStore(Path(workdir) / KEPT_DIR)
        self.kept: dict[int, State] = {}

    def resume(self, completed: int) -> None:
        self.kept = self.kept_store.load(completed, self.device)

    def fit_round(
        self, server_round: int, state: State, instructions: list[TrainInstruction], strategy: Strategy
    ) -> RoundReplies:
        payloads = []
        for ins in instructions:
            update, client_kept = client_payload(
                self.worker, state, self.clients[ins.client_id], ins, strategy, self.corruption,
                self.kept.get(ins.client_id),
            )
            payloads.append(update)
            if client_kept is not None:
                self.kept[ins.client_id] = client_kept
        return RoundReplies(payloads)

    def snapshot(self, completed: int) -> None:
        self.kept_store.save(completed, self.kept)

    def prune(self, completed: int) -> None:
        self.kept_store.prune(completed)


def _load_checkpoint(path: Path, device: str) -> tuple[int, State, State, list[RoundRecord]] | None:
    """Completed rounds, global state, the strategy's server state and the history."""
    if not path.is_file():
        return None
    arrays = read_npz(path)
    completed = int(arrays.pop("completed_rounds"))
    history = [RoundRecord.from_dict(r) for r in json.loads(arrays.pop("history").tobytes().decode())]
    server = {k.removeprefix(SERVER_PREFIX): arrays.pop(k) for k in list(arrays) if k.startswith(SERVER_PREFIX)}
    return completed, arrays_to_state(arrays, device), arrays_to_state(server, device), history


def _save_checkpoint(path: Path, completed: int, state: State, server: State, history: list[str]) -> None:
    """``history``: each round's record as JSON, serialised once when it was recorded (a round of 1,000 clients
    is 1,000 client records, and the checkpoint holds every round's)."""
    arrays = state_to_arrays(state)
    arrays.update({SERVER_PREFIX + k: v for k, v in state_to_arrays(server).items()})
    arrays["completed_rounds"] = np.array(completed)
    arrays["history"] = np.frombuffer(f"[{','.join(history)}]".encode(), dtype=np.uint8)
    write_npz(path, arrays)


def scored(split: str, completed: int, rounds: int, eval_every: int) -> bool:
    """Whether ``split`` is scored after round ``completed``: validation always, others every ``eval_every`` and last."""
    return split == "val" or completed == rounds or (eval_every > 0 and completed % eval_every == 0)


def run_federated(
    spec: ModelSpec,
    pool: ClientPool,
    evaluation: dict[str, TensorData],
    strategy: Strategy,
    rounds: int,
    seed: int,
    workdir: Path,
    device: str,
    on_round: Callable[[RoundRecord], None] | None = None,
    eval_every: int = 1,
) -> FederatedOutcome:
    """Run (or resume) ``rounds`` federated rounds over ``pool``; checkpoint and store updates every round.

    ``evaluation`` maps a name (``val``, ``test``, ...) to data the global model is scored on:
    ``val`` after every round, the others after every ``eval_every``-th round and the last
    (0: the last only). A round's record names the clients that were asked but did not reply
    (``dropped``); the engine aggregates what came back. A strategy that needs the server's
    proxy set and has none is refused before anything runs.
    """
    if strategy.needs_proxy:
        strategy.require_proxy()
    workdir = Path(workdir)
    checkpoint = workdir / CHECKPOINT_FILE
    store = UpdateStore(workdir / UPDATES_DIR)
    model = build_model(spec, seed).to(device)
    state = trainable_state(model)
    history: list[RoundRecord] = []
    start = 0
    loaded = _load_checkpoint(checkpoint, device)
    if loaded is not None:
        start, state, server_state, history = loaded
        strategy.load_server_state(server_state)
    else:
        store.write_layout(state)
    recorded = [json.dumps(record.to_dict()) for record in history]
    pool.resume(start)
    for server_round in range(start, rounds):
        replies = pool.fit_round(server_round, state, strategy.configure_train(server_round, pool.num_clients), strategy)
        updates = replies.payloads
        if strategy.sends_deltas():
            updates = stacked(updates, state)
            store.write_round(server_round, state, updates)
        state = strategy.aggregate_train(server_round, state, updates)
        check_finite(server_round + 1, state, updates)
        model.load_state_dict(state)
        predictor = strategy.predictor(model)
        record = RoundRecord(
            server_round + 1,
            {split: evaluate(predictor, data) for split, data in evaluation.items()
             if scored(split, server_round + 1, rounds, eval_every)},
            [ClientRecord(u.client_id, u.num_examples, dict(u.metrics)) for u in updates],
            replies.dropped,
        )
        history.append(record)
        recorded.append(json.dumps(record.to_dict()))
        pool.snapshot(server_round + 1)
        _save_checkpoint(checkpoint, server_round + 1, state, strategy.server_state(), recorded)
        pool.prune(server_round + 1)
        if on_round is not None:
            on_round(record)
    model.load_state_dict(state)
    return FederatedOutcome(model=model, history=history, resumed_from=start, server_state=strategy.server_state())
