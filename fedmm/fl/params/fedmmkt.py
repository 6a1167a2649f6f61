"""FedMMKT's parameters (``train.fedmmkt``): the server's generator, the images it sends, whether it is co-enhanced."""

from pydantic import Field

from fedmm.fl.params.base import Params, StrategyInfo
from fedmm.mmkt.config import FinetuneConfig, GeneratorConfig


class FedMMKTConfig(Params):
    """FedMMKT (He et al. 2025): the pretrained text-to-image generator, its prompted images and its fine-tuning."""

    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    images_per_class: int = Field(20, ge=1, description="prompted images per class the server sends each round")
    co_enhance: bool = Field(True, description="fine-tune the generator on the clients' feedback each round "
                                               "(false: the pretrained generator, frozen: FedAvg + frozen generator)")


FEDMMKT = StrategyInfo("fedmmkt", "fedmm.mmkt.strategy.FedMMKT", "fedmmkt", FedMMKTConfig)
