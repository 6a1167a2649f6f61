"""The strategies a config can name (``train.strategy``), each in its own module."""

from __future__ import annotations

from fedmm.config import TrainConfig
from fedmm.fl.baselines import FedAvgFinetune, ModalityDropout, ProxyOnly
from fedmm.fl.fedadam import FedAdam
from fedmm.fl.fedmekt import FedMekt
from fedmm.fl.fedmobile import FedMobile
from fedmm.fl.fedprox import FedProx
from fedmm.fl.mmfed3 import MMFeD3
from fedmm.fl.moon import Moon
from fedmm.fl.strategy import FedAvg, ServerContext, Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedProx, Moon, FedMobile, FedMekt, MMFeD3, FedAdam, ModalityDropout, FedAvgFinetune,
                ProxyOnly)
}


def make_strategy(train: TrainConfig, seed: int, server: ServerContext | None = None) -> Strategy:
    """The strategy a config names, built by its :meth:`~fedmm.fl.strategy.Strategy.from_config` and bound to the server."""
    return STRATEGIES[train.strategy].from_config(train, seed, server)
