"""Clustered Shapley (FedMobile style) and value-to-aggregation-weight conversion.

Players are clustered on feature vectors (e.g. flattened updates) with a seeded KMeans;
exact Shapley is computed over the ``k`` clusters as super-players (``2^k`` evaluations)
and each cluster's value is shared equally among its members.
"""

from __future__ import annotations

import numpy as np

from .exact import DEFAULT_CHUNK, exact_from_table, utility_table
from .game import Utility
from .result import ValuationResult

__all__ = ["cluster_players", "clustered_shapley", "aggregation_weights"]


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 in order of first appearance (drops empty cluster ids)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv.reshape(-1)].astype(np.int64)


def _representatives(features: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    """Per cluster, the member closest to the cluster mean (first member without features)."""
    k = int(labels.max()) + 1
    reps = np.empty(k, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if features is None:
            reps[c] = members[0]
            continue
        x = features[members]
        d = np.sum((x - x.mean(axis=0)) ** 2, axis=1)
        reps[c] = members[int(np.argmin(d))]
    return reps


def cluster_players(
    features, n_clusters: int, *, seed: int = 0, n_init: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """KMeans labels (canonical order) and representative player per cluster.

    ``n_clusters`` is capped at the number of distinct feature rows.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=float)
    x = x.reshape(x.shape[0], -1)
    if not 1 <= n_clusters:
        raise ValueError("n_clusters must be >= 1")
    k = min(int(n_clusters), np.unique(x, axis=0).shape[0])
    if k == 1:
        labels = np.zeros(x.shape[0], dtype=np.int64)
    else:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
        labels = _canonical_labels(km.labels_)
    return labels, _representatives(x, labels)


def clustered_shapley(
    utility: Utility,
    features=None,
    n_clusters: int | None = None,
    *,
    labels=None,
    seed: int = 0,
    n_init: int = 10,
    expand: str = "members",
    chunk_size: int = DEFAULT_CHUNK,
    check_axioms: bool = True,
) -> tuple[ValuationResult, np.ndarray]:
    """Exact Shapley over clusters, shared equally within each cluster.

    Either ``features`` (``(n, d)``) and ``n_clusters`` or precomputed ``labels``. With
    ``expand="members"`` a cluster joins a coalition with all its members (the utility sees
    the expanded player-level matrix); with ``expand="representative"`` only its
    representative joins. Residuals are those of the cluster-level game.
    Returns ``(result, labels)``.
    """
    if expand not in ("members", "representative"):
        raise ValueError("expand must be 'members' or 'representative'")
    x = None
    if features is not None:
        x = np.asarray(features, dtype=float)
        x = x.reshape(x.shape[0], -1)
    if labels is None:
        if x is None or n_clusters is None:
            raise ValueError("give features and n_clusters, or labels")
        labels, reps = cluster_players(x, n_clusters, seed=seed, n_init=n_init)
    else:
        labels = _canonical_labels(np.asarray(labels).reshape(-1))
        reps = _representatives(x, labels)
    n = labels.size
    k = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=k)

    def cluster_utility(c: np.ndarray) -> np.ndarray:
        if expand == "members":
            players = c[:, labels]
        else:
            players = np.zeros((c.shape[0], n), dtype=bool)
            players[:, reps] = c
        return utility(players)

    table = utility_table(cluster_utility, k, chunk_size)
    cres, _ = exact_from_table(table, k, check_axioms=check_axioms)
    values = cres.values[labels] / sizes[labels]
    result = ValuationResult(
        values=values,
        stderr=np.zeros(n),
        evaluations=table.size,
        method="clustered_shapley",
        counts=np.full(n, table.size // 2),
        residuals=cres.residuals,
        info={
            "n_clusters": k,
            "labels": labels.tolist(),
            "representatives": reps.tolist(),
            "cluster_values": cres.values.tolist(),
            "cluster_sizes": sizes.tolist(),
            "expand": expand,
            "u_empty": float(table[0]),
            "u_grand": float(table[-1]),
        },
    )
    return result, labels


def aggregation_weights(values, floor: float = 0.0) -> np.ndarray:
    """Non-negative weights summing to 1: ``max(v, floor)`` normalised, uniform if all zero."""
    if floor < 0:
        raise ValueError("floor must be >= 0")
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 0:
        return v
    w = np.where(np.isfinite(v), np.maximum(v, floor), floor)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(v.size, 1.0 / v.size)
    return w / total
