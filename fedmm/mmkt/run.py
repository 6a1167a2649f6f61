"""One FedMMKT cell: a method on a seed's federation, with the client and (for ``fedmmkt``) the server metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmm.fl.result import TrainResult
from fedmm.mmkt.config import MMKTConfig
from fedmm.mmkt.evaluate import client_metrics, evaluation_images, real_classifier, server_metrics
from fedmm.mmkt.federation import Federation, federation_config, train_federation
from fedmm.mmkt.generator import TextToImage, pretrained
from fedmm.mmkt.strategy import generator_of
from fedmm.progress import RoundProgress


@dataclass
class CellResult:
    """A cell's metrics, its trained task model and, for ``fedmmkt``, the co-enhanced generator and its images
    before/after."""

    metrics: dict[str, float]
    trained: TrainResult
    generator: TextToImage | None = None
    images: dict[str, tuple[np.ndarray, np.ndarray]] | None = None


def run_cell(config: MMKTConfig, federation: Federation, workdir: Path | None = None) -> CellResult:
    """Train the task model by ``config.method`` (round checkpoints in ``workdir``, else the training fingerprint's
    folder); score it, and score the generator before and after co-enhancement."""
    start = time.perf_counter()
    with RoundProgress(federation_config(config).train.rounds, f"{config.method} seed {config.seed}") as progress:
        trained = train_federation(config, federation, workdir, progress.update)
    metrics = client_metrics(trained.model(), federation.evaluation)
    if config.method != "fedmmkt":
        return CellResult({**metrics, "seconds": round(time.perf_counter() - start, 1)}, trained)
    generator = generator_of(trained.server_state, config.strategy_section())
    images = generator_images(config, generator)
    metrics.update(generator_metrics(federation, *images.values()))
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    return CellResult(metrics, trained, generator, images)


def generator_images(config: MMKTConfig, generator: TextToImage) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The evaluation images (same noise) of the pretrained generator and of ``generator``, by panel title."""
    models = {"before (pretrained on load_digits)": pretrained(config.generator), "after co-enhancement": generator}
    return {title: evaluation_images(model, config.eval_images_per_class, config.seed) for title, model in models.items()}


def generator_metrics(federation: Federation, before: tuple[np.ndarray, np.ndarray],
                      after: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """``server_before_*`` and ``server_after_*`` metrics of the generated images before and after co-enhancement."""
    reference = real_classifier(*federation.image_split("train"))
    real_test = federation.image_split("test")
    return {f"server_{name}_{k}": v for name, (images, classes) in (("before", before), ("after", after))
            for k, v in server_metrics(images, classes, reference, real_test).items()}
