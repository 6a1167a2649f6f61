"""Comparing two models on one test set: macro-F1 difference with a paired cluster bootstrap.

Windows cut from one recording overlap, so samples are not independent: the bootstrap
resamples whole recordings (clusters) with replacement, and both models are scored on the
same resample (paired), so the interval is that of the *difference*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    """Macro-F1 of ``a`` minus that of ``b`` with a percentile bootstrap interval."""

    a: float
    b: float
    low: float
    high: float
    level: float
    clusters: int
    samples: int

    @property
    def estimate(self) -> float:
        return self.a - self.b


def weighted_macro_f1(
    labels: np.ndarray, predicted: np.ndarray, weights: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Macro-F1 for each row of sample ``weights`` (R, N) over ``classes`` (F1 0 where undefined)."""
    scores = []
    for k in classes:
        true_k, pred_k = labels == k, predicted == k
        tp = weights @ (true_k & pred_k)
        denominator = weights @ true_k + weights @ pred_k
        scores.append(np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0))
    return np.mean(scores, axis=0)


def paired_difference(
    labels: np.ndarray,
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    clusters: np.ndarray,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Difference:
    """Macro-F1(a) - macro-F1(b) on the same samples, with a paired cluster-bootstrap interval.

    Classes are those present in the truth or either prediction, as in scikit-learn's
    macro average of each model.
    """
    labels, predicted_a, predicted_b = (np.asarray(x) for x in (labels, predicted_a, predicted_b))
    classes = np.unique(np.concatenate([labels, predicted_a, predicted_b]))
    _, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(cluster_index.max()) + 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    drawn = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=resamples).astype(float)
    weights = np.vstack([np.ones(len(labels)), drawn[:, cluster_index]])
    a = weighted_macro_f1(labels, predicted_a, weights, classes)
    b = weighted_macro_f1(labels, predicted_b, weights, classes)
    differences = a[1:] - b[1:]
    tail = (1 - level) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return Difference(float(a[0]), float(b[0]), float(low), float(high), level, n_clusters, len(labels))
