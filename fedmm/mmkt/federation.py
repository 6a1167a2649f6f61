"""FedMMKT's federation: UCI Multiple Features clients whose ``pix`` view is a 16x16 image, and its rounds.

The rounds are the round engine's (:func:`fedmm.fl.training.train`, checkpointed and resumable)
under the registered strategy of the method (:class:`fedmm.mmkt.strategy.FedMMKT`, or FedAvg):
``fedmmkt`` co-enhances the generator, ``fedavg_frozen`` sends the pretrained generator's images
and never fine-tunes it, ``fedavg`` sends no images. Clients train one after another (the
engine's loop) and no centralized reference is trained unless the run's ``set`` asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedmm.artifacts import sha256_arrays
from fedmm.config import Config, load_config
from fedmm.data.federated import FederatedData, client_arrays, partition_and_mask
from fedmm.data.prepare import PreparedData, normalisation_stats, prepare
from fedmm.fl.history import RoundRecord
from fedmm.fl.result import TrainResult
from fedmm.fl.training import evaluation_sets, model_spec, train
from fedmm.mmkt.config import MMKTConfig
from fedmm.mmkt.generator import resample
from fedmm.mmkt.strategy import IMAGE_VIEW
from fedmm.models.multimodal import ModelSpec
from fedmm.tensors import TensorData

DEFAULTS = ("train.engine=loop", "train.centralized=false")
"""What a FedMMKT run sets before the run's own ``set``: clients one after another, no centralized reference."""

PIX_SHAPE = (16, 15)
"""UCI ``pix``: 240 pixel averages (0-6) of a 15-wide, 16-tall image, row by row."""
PIX_MAX = 6.0


def square_images(prepared: PreparedData) -> PreparedData:
    """The prepared data with ``pix`` as 16x16 images in [0, 1] (the generator's format), stats and hashes redone."""
    dataset = prepared.dataset
    pix = resample(dataset.modalities[IMAGE_VIEW].reshape(-1, *PIX_SHAPE) / PIX_MAX)
    dataset = replace(dataset, modalities={**dataset.modalities, IMAGE_VIEW: pix})
    stats = normalisation_stats(dataset, prepared.indices("train"))
    square = PreparedData(dataset, prepared.split, stats, dict(prepared.manifest))
    square.manifest.update(
        modalities={**prepared.manifest["modalities"], IMAGE_VIEW: [pix.shape[1]]},
        value_bounds={**prepared.manifest["value_bounds"], IMAGE_VIEW: [0.0, 1.0]},
        data_sha256=sha256_arrays(square.to_arrays()),
        test_sha256=dataset.subset(prepared.indices("test")).content_hash(),
        image_view=f"{IMAGE_VIEW} resampled from {PIX_SHAPE[1]}x{PIX_SHAPE[0]} to 16x16, divided by {PIX_MAX:g}",
    )
    return square


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
    def build(cls, config: Config, prepared: PreparedData, federated: FederatedData | None = None) -> Federation:
        """Partition and mask ``prepared`` (already square) by the config's rules (or take the given partition)."""
        if federated is None:
            federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
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


def load_federation(config: Config) -> tuple[PreparedData, Federation]:
    """Prepare the source (as loaded, for validation) and the square-image federation."""
    prepared = prepare(config.data, config.seed)
    return prepared, Federation.build(config, square_images(prepared))


def train_federation(config: MMKTConfig, federation: Federation, workdir: Path | None = None,
                     on_round: Callable[[RoundRecord], None] | None = None) -> TrainResult:
    """The method's rounds on the round engine, resuming from their checkpoint (in ``workdir``, else the one the
    training fingerprint names); the result's server state holds a co-enhanced generator."""
    return train(federation_config(config), federation.prepared, federation.federated, on_round, workdir)
