"""FedMEKT's parameters (``train.fedmekt``); it distils on the server's proxy set."""

from typing import Literal

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo


class FedMektConfig(Params):
    """FedMEKT: clients train multimodal autoencoders on unlabelled data and send proxy-set embeddings."""

    recon_weight: float = Field(1.0, ge=0, description="weight of the clients' reconstruction loss")
    reconstruction: Literal["cross_modal", "joint"] = Field(
        "cross_modal", description="cross_modal: each present modality predicts every present one (FedMEKT's code); "
        "joint: each is decoded from the mean of the present embeddings",
    )
    distill_weight: float = Field(
        0.1, ge=0, description="weight of the clients' KL toward the global proxy embeddings (public code: alpha 0.1)"
    )
    temperature: float = Field(3.0, gt=0, description="softmax temperature over embedding dimensions (public code: 3)")
    server_epochs: int = Field(5, ge=1, description="server epochs distilling aggregated embeddings into the encoders")
    classifier_epochs: int = Field(10, ge=1, description="server epochs training fusion and head on the labelled proxy")


FEDMEKT = StrategyInfo("fedmekt", "fedmm.fl.fedmekt.FedMekt", "fedmekt", FedMektConfig, proxy=True)
