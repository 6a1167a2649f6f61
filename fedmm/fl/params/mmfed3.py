"""MMFeD3's parameters (``train.mmfed3``); it distils on the server's proxy set."""

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo


class MMFeD3Config(Params):
    """MMFeD3: logit and feature distillation, on the clients' own batches and on the server's proxy inputs."""

    logit_weight: float = Field(1.0, ge=0, description="weight of the temperature-scaled logit KL")
    feature_weight: float = Field(1.0, ge=0, description="weight of the fused-representation alignment (MSE)")
    temperature: float = Field(3.0, gt=0, description="softmax temperature of the logit distillation")
    server_epochs: int = Field(
        2, ge=0, description="server epochs distilling the client ensemble on the proxy set (0: clients distil only)"
    )
    warmup_rounds: int = Field(0, ge=0, description="rounds of plain FedAvg before distillation starts (both ways)")


MMFED3 = StrategyInfo("mmfed3", "fedmm.fl.mmfed3.MMFeD3", "mmfed3", MMFeD3Config, proxy=True)
