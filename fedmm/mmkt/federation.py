"""FedMMKT's federation: UCI Multiple Features clients whose ``pix`` view is a 16x16 image, and its rounds.

The rounds are the round engine's (:func:`fedmm.fl.training.train`, checkpointed and resumable)
under the registered strategy of the method (:class:`fedmm.mmkt.strategy.FedMMKT`, or FedAvg):
``fedmmkt`` co-enhances the generator, ``fedavg_frozen`` sends the pretrained generator's images
and never fine-tunes it, ``fedavg`` sends no images. Clients train one after another (the
engine's loop) and no centralized reference is trained unless the run's ``set`` asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmm.config import Config, load_config
from fedmm.data.federated import FederatedData, client_arrays
from fedmm.data.images import IMAGE_VIEW
from fedmm.data.prepare import PreparedData
from fedmm.fl.history import RoundRecord
from fedmm.fl.result import TrainResult
from fedmm.fl.training import evaluation_sets, model_spec, train
from fedmm.mmkt.config import MMKTConfig
from fedmm.models.multimodal import ModelSpec
from fedmm.tensors import TensorData

DEFAULTS = ("data.square_images=true", "train.engine=loop", "train.centralized=false")
"""What a FedMMKT run sets before the run's own ``set``: ``pix`` as the generator's 16x16 images
(:mod:`fedmm.data.images`), clients one after another, no centralized reference."""


@dataclass
class Federation:
    """The clients' training data, the evaluation sets and the task model's spec."""

    config: Config
    prepared: PreparedData
    federated: FederatedData
    clients: list[TensorData]
    evaluation: dict[str, TensorData]
    spec: ModelSpec

    @classmethod
    def build(cls, config: Config, prepared: PreparedData, federated: FederatedData) -> Federation:
        """The clients' tensors, evaluation sets and model spec of ``prepared`` (its ``pix`` square) and its partition."""
        clients = [TensorData.from_numpy(*client_arrays(prepared, federated, k)) for k in range(federated.num_clients)]
        return cls(config, prepared, federated, clients, evaluation_sets(prepared, "cpu", federated),
                   model_spec(config, prepared))

    def image_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Real 16x16 images and labels of a split (server-side evaluation only)."""
        index = self.prepared.indices(split)
        return self.prepared.dataset.modalities[IMAGE_VIEW][index], self.prepared.dataset.labels[index]


def federation_config(config: MMKTConfig) -> Config:
    """The base fedmm config with :data:`DEFAULTS`, the run's overrides and seed, and the method's strategy."""
    base = load_config(config.base, [*DEFAULTS, *config.set, f"seed={config.seed}", f"train.strategy={config.strategy}"])
    return base.model_copy(update={"train": base.train.model_copy(update={"fedmmkt": config.strategy_section()})})


def train_federation(config: MMKTConfig, federation: Federation, workdir: Path | None = None,
                     on_round: Callable[[RoundRecord], None] | None = None) -> TrainResult:
    """The method's rounds on the round engine, resuming from their checkpoint (in ``workdir``, else the one the
    training fingerprint names); the result's server state holds a co-enhanced generator."""
    return train(federation_config(config), federation.prepared, federation.federated, on_round, workdir)
