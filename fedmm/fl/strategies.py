"""The strategies a config can name (``train.strategy``), each in its own module, imported when first asked for.

A Flower site imports only the strategy it runs: FedMobile's generator (``fedmm.impute``) loads
with FedMobile alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from fedmm.config import TrainConfig
from fedmm.fl.strategy import ServerContext, Strategy

WHERE = {
    "fedavg": "fedmm.fl.strategy.FedAvg",
    "fedprox": "fedmm.fl.fedprox.FedProx",
    "moon": "fedmm.fl.moon.Moon",
    "fedmobile": "fedmm.fl.fedmobile.FedMobile",
    "fedmekt": "fedmm.fl.fedmekt.FedMekt",
    "mmfed3": "fedmm.fl.mmfed3.MMFeD3",
    "fedadam": "fedmm.fl.fedadam.FedAdam",
    "fedavg_dropout": "fedmm.fl.baselines.ModalityDropout",
    "fedavg_ft": "fedmm.fl.baselines.FedAvgFinetune",
    "proxy_only": "fedmm.fl.baselines.ProxyOnly",
}
"""Each strategy's class by name, as ``module.Class``."""


class Strategies(Mapping[str, type[Strategy]]):
    """Strategy classes by name; a class's module is imported on first lookup."""

    def __getitem__(self, name: str) -> type[Strategy]:
        module, _, attribute = WHERE[name].rpartition(".")
        return getattr(importlib.import_module(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(WHERE)

    def __len__(self) -> int:
        return len(WHERE)


STRATEGIES = Strategies()


def make_strategy(train: TrainConfig, seed: int, server: ServerContext | None = None) -> Strategy:
    """The strategy a config names, built by its :meth:`~fedmm.fl.strategy.Strategy.from_config` and bound to the server."""
    return STRATEGIES[train.strategy].from_config(train, seed, server)
