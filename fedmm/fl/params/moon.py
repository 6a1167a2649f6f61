"""MOON's parameters (``train.moon``)."""

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo


class MoonConfig(Params):
    """MOON: model-contrastive loss on the fused representation, weighted by mu."""

    mu: float = Field(1.0, ge=0, description="weight of the contrastive term; 0 is FedAvg")
    temperature: float = Field(0.5, gt=0, description="temperature of the cosine similarities")


MOON = StrategyInfo("moon", "fedmm.fl.moon.Moon", "moon", MoonConfig)
