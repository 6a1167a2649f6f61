"""FedProx's parameters (``train.fedprox``)."""

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo


class FedProxConfig(Params):
    """FedProx: each client adds (mu/2)*||w - w_global||^2 to its loss."""

    mu: float = Field(0.01, ge=0, description="weight of the proximal term; 0 is FedAvg")


FEDPROX = StrategyInfo("fedprox", "fedmm.fl.fedprox.FedProx", "fedprox", FedProxConfig)
