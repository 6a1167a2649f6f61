"""FedMobile's parameters (``train.fedmobile``); only clustered-Shapley generator weights need the proxy set."""

from typing import Literal

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo
from fedmm.impute_config import GeneratorConfig


class FedMobileConfig(Params):
    """FedMobile: generated latent features for missing modalities, contribution-aware aggregation."""

    performance_weight: float = Field(
        0.5, ge=0, le=1,
        description="aggregation score = w * local accuracy + (1 - w) * relative local loss reduction",
    )
    model_weighting: Literal["contribution", "samples"] = Field(
        "contribution", description="how client model deltas are weighted: contribution-aware scores, or example counts",
    )
    generator_weighting: Literal["clustered_shapley", "samples"] = Field(
        "clustered_shapley", description="how client generators are weighted when aggregated",
    )
    clusters: int = Field(3, ge=1, description="K-means clusters of client generators for clustered Shapley")
    generator: GeneratorConfig = GeneratorConfig(local_epochs=1, lr=0.003, hidden=128)


def _needs_proxy(params: FedMobileConfig) -> bool:
    return params.generator_weighting == "clustered_shapley"


FEDMOBILE = StrategyInfo("fedmobile", "fedmm.fl.fedmobile.FedMobile", "fedmobile", FedMobileConfig, _needs_proxy)
