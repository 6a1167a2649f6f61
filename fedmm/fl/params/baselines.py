"""The baselines' parameters: modality dropout (``train.dropout``) and the proxy-set baselines (``train.proxy``)."""

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo


class DropoutConfig(Params):
    """fedavg_dropout: clients also train on their batches with present modalities dropped at random."""

    rate: float = Field(0.5, gt=0, lt=1, description="probability each present modality is dropped (one always stays)")


class ProxyConfig(Params):
    """The proxy-set baselines: proxy_only (the server's labelled proxy set alone) and fedavg_ft (FedAvg, then fine-tuning)."""

    epochs: int = Field(3, ge=1, description="proxy_only: epochs over the proxy set per round")
    finetune_epochs: int = Field(5, ge=1, description="fedavg_ft: epochs over the proxy set after the last round")
    modality_dropout: bool = Field(True, description="also show every proxy batch with each single modality absent")


FEDAVG_DROPOUT = StrategyInfo("fedavg_dropout", "fedmm.fl.baselines.ModalityDropout", "dropout", DropoutConfig)
FEDAVG_FT = StrategyInfo("fedavg_ft", "fedmm.fl.baselines.FedAvgFinetune", "proxy", ProxyConfig, proxy=True)
PROXY_ONLY = StrategyInfo("proxy_only", "fedmm.fl.baselines.ProxyOnly", "proxy", ProxyConfig, proxy=True)
