"""FedMMKT's measurements: the task model on complete and masked test inputs, and the generator against real images.

Server-side metrics (evaluation only; no training step sees them):

- ``synthetic_to_real_accuracy``: a logistic regression trained only on
  ``eval_images_per_class`` generated images per class, scored on the real held-out
  (test) UCI ``pix`` images;
- ``fidelity`` and ``fidelity_<digit>``: the share of generated images per prompt that a
  fixed logistic regression trained on the real ``pix`` training split assigns to the
  prompted class (overall and per prompt).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from fedmm.data.images import SIDE
from fedmm.metrics import evaluate
from fedmm.mmkt.generator import WORDS, TextToImage, generate, pretrained
from fedmm.models.multimodal import MultimodalNet

if TYPE_CHECKING:
    from fedmm.mmkt.config import MMKTConfig
    from fedmm.mmkt.federation import Federation

CLIENT_VIEWS = ("test", "test_missing")
GAP = 1
"""Blank pixels around each image of a grid."""


def client_metrics(model: MultimodalNet, evaluation: dict) -> dict[str, float]:
    """Accuracy and macro-F1 of the task model per test view present (``test``, ``test_missing``)."""
    return {f"{view}_{k}": v for view in CLIENT_VIEWS if view in evaluation
            for k, v in evaluate(model, evaluation[view]).items() if k in ("accuracy", "macro_f1")}


def real_classifier(images: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """The fixed real-data reference classifier of 16x16 images."""
    return LogisticRegression(max_iter=2000).fit(images, labels)


def evaluation_images(generator: TextToImage, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images per prompt from noise keyed by ``seed`` alone (the same before and after fine-tuning)."""
    classes = torch.arange(len(WORDS)).repeat_interleave(per_class)
    return generate(generator, classes, seed, "evaluation").numpy(), classes.numpy()


def server_metrics(images: np.ndarray, classes: np.ndarray, reference: LogisticRegression,
                   real_test: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Synthetic-to-real accuracy and per-prompt fidelity of generated images."""
    trained = LogisticRegression(max_iter=2000).fit(images, classes)
    correct = reference.predict(images) == classes
    return {
        "synthetic_to_real_accuracy": float((trained.predict(real_test[0]) == real_test[1]).mean()),
        "fidelity": float(correct.mean()),
        **{f"fidelity_{d}": float(correct[classes == d].mean()) for d in range(len(WORDS))},
    }


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


def plot_grids(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, per_class: int = 8) -> Path:
    """One panel per entry (e.g. before / after): a row per prompt, ``per_class`` of its images."""
    from fedmm.plotting import pyplot, save_figure

    fig, axes = pyplot().subplots(1, len(panels), figsize=(3.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, (images, classes)) in zip(axes[0], panels.items()):
        rows = [images[classes == d][:per_class].reshape(-1, SIDE, SIDE) for d in range(len(WORDS))]
        padded = [np.pad(row, ((0, 0), (GAP, GAP), (GAP, GAP))) for row in rows]
        grid = np.concatenate([np.concatenate(list(row), axis=1) for row in padded], axis=0)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_yticks((np.arange(len(WORDS)) + 0.5) * (SIDE + 2 * GAP), [f'"{w}"' for w in WORDS], fontsize=7)
        ax.set_xticks([])
    return save_figure(fig, path)
