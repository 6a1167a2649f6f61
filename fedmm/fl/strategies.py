"""The strategies a config can name (``train.strategy``, declared in :mod:`fedmm.fl.params`), imported when first asked for.

A Flower site imports only the strategy it runs: FedMobile's generator (``fedmm.impute``) loads
with FedMobile alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from fedmm.config import TrainConfig
from fedmm.fl.params import DECLARED
from fedmm.fl.strategy import ServerContext, Strategy


class Strategies(Mapping[str, type[Strategy]]):
    """Strategy classes by name; a class's module is imported on first lookup."""

    def __getitem__(self, name: str) -> type[Strategy]:
        module, _, attribute = DECLARED[name].where.rpartition(".")
        return getattr(importlib.import_module(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(DECLARED)

    def __len__(self) -> int:
        return len(DECLARED)


STRATEGIES = Strategies()


def make_strategy(train: TrainConfig, seed: int, server: ServerContext | None = None) -> Strategy:
    """The strategy a config names, built by its :meth:`~fedmm.fl.strategy.Strategy.from_config` and bound to the server."""
    return STRATEGIES[train.strategy].from_config(train, seed, server)
