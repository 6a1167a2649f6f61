"""The centralized reference: the federation's model trained on the pooled client data, cached by what it
depends on, and trained beside the federation (in a forked process) where a spare core allows."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

from fedmm.artifacts import read_json, read_npz, write_json, write_npz
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.fl.client import OPTIMIZERS, run_epochs
from fedmm.fl.deploy import die_with_parent
from fedmm.fl.engine import arrays_to_state, state_to_arrays
from fedmm.fl.messages import cross_entropy
from fedmm.metrics import evaluate
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.progress import RoundProgress
from fedmm.runtime import state_dir
from fedmm.tensors import State, TensorData

logger = logging.getLogger(__name__)

CENTRAL_FILE = "centralized.npz"
CENTRAL_HISTORY_FILE = "centralized.json"
Reference = tuple[State, list[dict]]


def centralized_epochs(config: Config) -> int:
    """The centralized budget: as many passes over the pooled data as FedAvg makes in total."""
    train = config.train
    return max(1, int(round(train.rounds * train.local_epochs * train.client_fraction)))


def centralized_fingerprint(config: Config, prepared: PreparedData, federated: FederatedData, device: str) -> str:
    """What determines the centralized reference: the pooled client data, evaluation splits, model, seed and
    the optimiser, batch size and epoch budget (not the strategy), so runs that differ only there share it."""
    train = config.train
    settings = {"optimizer": train.optimizer, "lr": train.lr, "batch_size": train.batch_size,
                "epochs": centralized_epochs(config), "device": device}
    parts = [prepared.data_sha256, federated.content_hash, config.hash("model", "seed"), json.dumps(settings, sort_keys=True)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


class CentralizedReference:
    """The reference for one run: where it is cached, and how to train it into that cache."""

    def __init__(self, config: Config, prepared: PreparedData, federated: FederatedData, spec: ModelSpec,
                 clients: list[TensorData], evaluation: dict[str, TensorData], device: str) -> None:
        self.config, self.spec, self.clients, self.evaluation, self.device = config, spec, clients, evaluation, device
        self.folder = state_dir() / "centralized" / centralized_fingerprint(config, prepared, federated, device)[:16]

    @property
    def cached(self) -> bool:
        return (self.folder / CENTRAL_FILE).is_file() and (self.folder / CENTRAL_HISTORY_FILE).is_file()

    def load(self) -> Reference:
        return arrays_to_state(read_npz(self.folder / CENTRAL_FILE), "cpu"), read_json(self.folder / CENTRAL_HISTORY_FILE)

    def get(self, on_epoch: Callable[[], None] | None = None) -> Reference:
        """The cached reference, trained (and cached) first when there is none."""
        if self.cached:
            return self.load()
        pooled = TensorData.concat([c for c in self.clients if len(c)])
        model, history = train_centralized(self.spec, pooled, self.evaluation, self.config, self.device, on_epoch)
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        write_json(self.folder / CENTRAL_HISTORY_FILE, history)
        write_npz(self.folder / CENTRAL_FILE, state_to_arrays(state))
        return state, history


def train_centralized(
    spec: ModelSpec, pooled: TensorData, evaluation: dict[str, TensorData], config: Config, device: str,
    on_epoch: Callable[[], None] | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """The pooled-data reference: same model, optimiser and sample budget as the federation. Its progress is a
    bar, or ``on_epoch`` called after each epoch."""
    model = build_model(spec, config.seed).to(device)
    optimizer = OPTIMIZERS[config.train.optimizer](model.parameters(), lr=config.train.lr)
    history = []
    epochs = centralized_epochs(config)
    shown = RoundProgress(epochs, "centralized reference", unit="epoch") if on_epoch is None else nullcontext()
    with shown as progress:  # no tqdm in a forked child: its lock may have been held by another thread at the fork
        for epoch in range(epochs):
            metrics = run_epochs(
                model, pooled, cross_entropy, 1, config.train.batch_size, optimizer, ("centralized", epoch), config.seed,
            )
            history.append({"epoch": epoch + 1, **metrics})
            (on_epoch or progress.step)()
    history[-1].update(
        {f"{split}_{k}": v for split, data in evaluation.items() for k, v in evaluate(model, data).items()}
    )
    return model, history


def spare_cores() -> int:
    """The cores this process may run on, less the one it trains on."""
    return len(os.sched_getaffinity(0)) - 1


@contextmanager
def reference_beside(reference: CentralizedReference) -> Iterator[Callable[[], Reference]]:
    """Yield a function that returns the reference. On a CPU with a spare core and no cached reference, a
    forked child trains it (at one intra-op thread, bit-identical to training it here) while the ``with``
    block runs, the federation; the function then waits for it, showing its progress. A failure of the block
    kills the child; a failed child is retrained here. Elsewhere the function trains it here, when called."""
    if reference.cached or reference.device != "cpu" or spare_cores() < 1:
        yield reference.get
        return
    context = multiprocessing.get_context("fork")
    epochs_done = context.Value("i", 0, lock=False)
    child = context.Process(target=_train_in_child, args=(reference, epochs_done, die_with_parent()),
                            name="centralized-reference", daemon=True)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # held until the child ignores it
    try:
        child.start()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C held meanwhile is raised here: the child is killed
        yield lambda: _wait_for(child, epochs_done, reference)
    finally:
        if child.is_alive():
            child.kill()
        child.join()


def _train_in_child(reference: CentralizedReference, epochs_done, tie_to_parent: Callable[[], None]) -> None:
    """The child's work. Ctrl-C reaches the whole process group: the run, not the child, answers it (and kills
    the child); an error ends the child with exit code 1 and no traceback: the run retrains and reports it."""
    tie_to_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # forked with SIGINT blocked: one sent meanwhile waits, then is ignored
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)

    def count() -> None:
        epochs_done.value += 1

    try:
        reference.get(on_epoch=count)
    except Exception:  # noqa: BLE001 (reported by the run, which trains it again)
        sys.exit(1)


def _wait_for(child, epochs_done, reference: CentralizedReference) -> Reference:
    with RoundProgress(centralized_epochs(reference.config), "centralized reference", unit="epoch") as progress:
        while child.is_alive():
            progress.reach(epochs_done.value)
            child.join(0.25)
        progress.reach(epochs_done.value)
    if child.exitcode != 0:
        logger.warning("the centralized reference's process ended with exit code %s; training it here", child.exitcode)
    return reference.get()
