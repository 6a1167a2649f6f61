"""One FedMMKT cell: a method on a seed's federation, with the client and (for ``fedmmkt``) the server metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fedmm.mmkt.config import MMKTConfig
from fedmm.mmkt.evaluate import client_metrics, evaluation_images, real_classifier, server_metrics
from fedmm.mmkt.federation import Federation, RunOutcome, run_rounds
from fedmm.mmkt.generator import TextToImage, pretrained


@dataclass
class CellResult:
    """A cell's metrics, its task model and, for ``fedmmkt``, the co-enhanced generator and its images before/after."""

    metrics: dict[str, float]
    outcome: RunOutcome
    generator: TextToImage | None = None
    images: dict[str, tuple[np.ndarray, np.ndarray]] | None = None


def run_cell(config: MMKTConfig, federation: Federation) -> CellResult:
    """Train the task model by ``config.method``; score it, and score the generator before and after co-enhancement."""
    start = time.perf_counter()
    generator = None if config.method == "fedavg" else pretrained(config.generator)
    before = evaluation_images(generator, config.eval_images_per_class, config.seed) if generator else None
    outcome = run_rounds(config, federation, generator)
    metrics = client_metrics(outcome.model, federation.evaluation)
    if config.method != "fedmmkt":
        return CellResult({**metrics, "seconds": round(time.perf_counter() - start, 1)}, outcome)
    after = evaluation_images(generator, config.eval_images_per_class, config.seed)
    reference = real_classifier(*federation.image_split("train"))
    real_test = federation.image_split("test")
    for name, (images, classes) in (("before", before), ("after", after)):
        metrics.update({f"server_{name}_{k}": v for k, v in server_metrics(images, classes, reference, real_test).items()})
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    return CellResult(metrics, outcome, generator, {"before (pretrained on load_digits)": before,
                                                   "after co-enhancement": after})
