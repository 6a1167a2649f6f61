"""FedAdam's parameters (``train.fedadam``)."""

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo


class FedAdamConfig(Params):
    """FedAdam (FedOpt, Reddi et al. 2021): Adam on the server over the negated mean client delta."""

    server_lr: float = Field(0.01, gt=0, description="server learning rate (eta)")
    beta1: float = Field(0.9, ge=0, lt=1, description="server Adam's first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="server Adam's second-moment decay")
    tau: float = Field(1e-3, gt=0, description="adaptivity (Adam's eps)")


FEDADAM = StrategyInfo("fedadam", "fedmm.fl.fedadam.FedAdam", "fedadam", FedAdamConfig)
