"""The strategies a config can name (``train.strategy``), each in its own module."""

from __future__ import annotations

from fedmm.config import TrainConfig
from fedmm.fl.fedprox import FedProx
from fedmm.fl.moon import Moon
from fedmm.fl.strategy import FedAvg, Strategy

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg, FedProx, Moon)}


def make_strategy(train: TrainConfig, seed: int) -> Strategy:
    """The strategy a config names."""
    return STRATEGIES[train.strategy](train, seed)
