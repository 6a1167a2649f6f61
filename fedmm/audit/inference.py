"""Uncertainty of contribution values over the validation set, and the tests behind the flags.

A round's utility is a validation metric. For log-loss and accuracy it is a mean over
validation samples, ``u(S) = mean_s u_s(S)``, so every semivalue is the mean of the
per-sample values (Shapley values are linear in the utility): client ``i``'s value is
``mean_s phi_{i,s}``. Validation samples are not independent (overlapping windows of one
recording, recordings of one subject), so standard errors are clustered by a grouping key
(:func:`validation_groups`) with the CR1 sandwich estimator and t quantiles on ``G - 1``
degrees of freedom (Cameron & Miller 2015, "A Practitioner's Guide to Cluster-Robust
Inference", J. Human Resources 50(2); with one regressor, the intercept, the small-sample
factor is ``G / (G - 1)``). The same per-sample values summed over rounds give the
cumulative value, so rounds sharing one validation set are correlated exactly as they are.

Macro-F1 is not a mean over samples: its games use a cluster bootstrap (whole clusters
resampled with replacement; each replicate re-scores every evaluated coalition), and the
values' replicates play the role of the per-sample values.

Many clients are tested at once: one-sided p-values are adjusted with Holm's step-down
procedure (Holm 1979, "A Simple Sequentially Rejective Multiple Test Procedure", Scand. J.
Statistics 6(2)), which controls the family-wise error rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "GROUP_KEYS",
    "MeanStatistic",
    "BootstrapStatistic",
    "validation_groups",
    "grouping_reason",
    "non_overlapping",
    "cr1_variance",
    "holm",
    "t_interval",
    "min_detectable_effect",
]

GROUP_KEYS = ("recording", "subject", "sample")


def validation_groups(recording: np.ndarray, subject: np.ndarray) -> tuple[str, np.ndarray]:
    """The clustering key of a validation set: ``recording`` where at least two recordings hold
    several samples between them, else ``subject`` likewise, else ``sample``."""
    n = len(recording)
    for key, ids in (("recording", np.asarray(recording)), ("subject", np.asarray(subject))):
        if 2 <= len(np.unique(ids)) < n:
            return key, ids
    return "sample", np.arange(n)


def grouping_reason(key: str, recording: np.ndarray, subject: np.ndarray) -> str | None:
    """Why the validation set is clustered by ``key`` rather than a key before it in :data:`GROUP_KEYS`,
    in words; None for ``recording``. ``recording`` and ``subject`` are the whole validation split's ids."""
    reasons = []
    for earlier, ids in zip(GROUP_KEYS[:GROUP_KEYS.index(key)], (recording, subject)):
        n, count = len(ids), len(np.unique(ids))
        if count == n:
            reasons.append(f"not by {earlier}: each of the {n} validation samples is its own {earlier}")
        elif count < 2:
            reasons.append(f"not by {earlier}: all {n} validation samples are one {earlier}")
        else:
            reasons.append(f"not by {earlier}: its non-overlapping windows leave one sample per {earlier}")
    return "; ".join(reasons) or None


def non_overlapping(recording: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Indices keeping every ``ceil(window / stride)``-th window of each recording, so that
    kept windows do not overlap (windows of a recording are consecutive and in order)."""
    recording = np.asarray(recording)
    step = max(1, -(-int(window) // int(stride)))
    _, inverse = np.unique(recording, return_inverse=True)
    position = np.zeros(len(recording), dtype=np.int64)
    seen: dict[int, int] = {}
    for k, g in enumerate(inverse.tolist()):
        position[k] = seen.get(g, 0)
        seen[g] = position[k] + 1
    return np.flatnonzero(position % step == 0)


def cr1_variance(phi: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """CR1 cluster-robust variance of ``mean(phi, axis=-1)`` (Cameron & Miller 2015).

    ``phi`` is ``(..., N)``, ``groups`` ``(N,)``: ``V = G/(G-1) * sum_g (sum_{s in g} (phi_s -
    mean))^2 / N^2``. With every sample its own cluster this is the usual ``s^2 / N``.
    """
    phi = np.asarray(phi, dtype=float)
    _, inverse = np.unique(groups, return_inverse=True)
    g, n = int(inverse.max()) + 1, phi.shape[-1]
    if g < 2:
        raise ValueError("clustered standard errors need at least two clusters")
    resid = phi - phi.mean(axis=-1, keepdims=True)
    onehot = np.zeros((n, g))
    onehot[np.arange(n), inverse] = 1.0
    sums = resid @ onehot
    return g / (g - 1) * (sums**2).sum(axis=-1) / n**2


def holm(p: np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values: ``max_{j<=i} min(1, (m - j + 1) p_(j))`` in sorted order."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out


def t_interval(value, stderr, df: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``level`` interval ``value -+ t_{(1+level)/2, df} * stderr``."""
    half = stats.t.ppf(0.5 + level / 2.0, df) * np.asarray(stderr, dtype=float)
    value = np.asarray(value, dtype=float)
    return value - half, value + half


def min_detectable_effect(stderr, df: int, alpha: float, power: float = 0.8) -> np.ndarray:
    """Smallest true harm a one-sided t test at level ``alpha`` detects with ``power``:
    ``(t_{1-alpha} + t_{power}) * stderr`` on ``df`` degrees of freedom."""
    return (stats.t.ppf(1 - alpha, df) + stats.t.ppf(power, df)) * np.asarray(stderr, dtype=float)


@dataclass
class MeanStatistic:
    """Log-loss and accuracy games: per-sample utilities, CR1 standard errors clustered by ``groups``.

    Rows are per-sample utilities ``(k, N)``; :meth:`expand` is the identity, so a value's
    evidence is its per-sample values.
    """

    groups: np.ndarray
    key: str = "sample"
    method = "cr1"

    def __post_init__(self):
        self.groups = np.asarray(self.groups)
        self.n_groups = int(len(np.unique(self.groups)))
        if self.n_groups < 2:
            raise ValueError("the validation set needs at least two clusters for standard errors")

    def utilities(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=float).mean(axis=-1)

    def expand(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=float)

    def variance(self, evidence: np.ndarray) -> np.ndarray:
        return cr1_variance(evidence, self.groups)

    def group_contributions(self, evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, G)`` each cluster's part of each value (they sum to the value), and the cluster ids."""
        ids, inverse = np.unique(self.groups, return_inverse=True)
        onehot = np.zeros((len(self.groups), len(ids)))
        onehot[np.arange(len(self.groups)), inverse] = 1.0
        return np.asarray(evidence, dtype=float) @ onehot / len(self.groups), ids

    def describe(self) -> dict:
        return {"method": self.method, "group_key": self.key, "n_groups": self.n_groups,
                "df": self.n_groups - 1, "n_samples": int(len(self.groups))}


@dataclass
class BootstrapStatistic:
    """Macro-F1 games: rows are predicted classes ``(k, N)``; a cluster bootstrap of ``replicates``.

    :meth:`expand` re-scores each coalition under every replicate's cluster multiplicities, so a
    value's evidence is its ``replicates`` bootstrap values and its variance their variance.
    """

    groups: np.ndarray
    labels: np.ndarray
    num_classes: int
    replicates: int = 200
    seed: int = 0
    key: str = "sample"
    chunk: int = 32

    method = "cluster_bootstrap"

    def __post_init__(self):
        self.groups = np.asarray(self.groups)
        ids, inverse = np.unique(self.groups, return_inverse=True)
        self.n_groups = len(ids)
        if self.n_groups < 2:
            raise ValueError("the validation set needs at least two clusters for a cluster bootstrap")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7919]))
        draws = rng.integers(0, self.n_groups, (self.replicates, self.n_groups))
        counts = np.stack([np.bincount(d, minlength=self.n_groups) for d in draws])
        self.weights = counts[:, inverse].astype(float)  # (B, N) multiplicity of each sample
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def _macro_f1(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``(k, W)`` weighted macro-F1 of ``k`` prediction rows under ``W`` weight vectors."""
        k, kk = self.num_classes, self.num_classes**2
        pred = np.asarray(rows).astype(np.int64)
        out = np.empty((pred.shape[0], weights.shape[0]))
        for lo in range(0, pred.shape[0], self.chunk):
            cell = self.labels[None, :] * k + pred[lo : lo + self.chunk]  # (c, N)
            onehot = np.zeros((*cell.shape, kk))
            np.put_along_axis(onehot, cell[..., None], 1.0, axis=-1)
            cm = np.einsum("wn,cnq->cwq", weights, onehot).reshape(cell.shape[0], weights.shape[0], k, k)
            tp = np.diagonal(cm, axis1=2, axis2=3)
            denom = cm.sum(3) + cm.sum(2)
            f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
            out[lo : lo + self.chunk] = f1.mean(-1)
        return out

    def utilities(self, rows: np.ndarray) -> np.ndarray:
        return self._macro_f1(rows, np.ones((1, self.labels.size)))[:, 0]

    def expand(self, rows: np.ndarray) -> np.ndarray:
        return self._macro_f1(rows, self.weights)

    def variance(self, evidence: np.ndarray) -> np.ndarray:
        return np.var(np.asarray(evidence, dtype=float), axis=-1, ddof=1)

    def group_contributions(self, evidence):
        return None, None

    def describe(self) -> dict:
        return {"method": self.method, "group_key": self.key, "n_groups": self.n_groups,
                "df": self.n_groups - 1, "n_samples": int(len(self.groups)), "replicates": self.replicates}
