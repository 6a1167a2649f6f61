"""Cheap per-client signals: update norm, cosine similarity to the aggregate update and to each other update."""

from __future__ import annotations

import numpy as np

__all__ = [
    "flatten_updates",
    "update_norms",
    "aggregate_update",
    "cosine_to_aggregate",
    "median_cosine_to_others",
    "update_signals",
]


def flatten_updates(updates) -> np.ndarray:
    """``(n, d)`` float matrix from an array with leading client axis or a list of arrays."""
    if isinstance(updates, np.ndarray):
        return updates.reshape(updates.shape[0], -1).astype(float, copy=False)
    return np.stack([np.asarray(u, dtype=float).reshape(-1) for u in updates])


def _weights(weights, n: int) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.size != n:
        raise ValueError(f"{w.size} weights for {n} updates")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    return w


def update_norms(updates) -> np.ndarray:
    """L2 norm of each client's flattened update."""
    return np.linalg.norm(flatten_updates(updates), axis=1)


def aggregate_update(updates, weights=None) -> np.ndarray:
    """Weighted mean update (uniform weights by default)."""
    x = flatten_updates(updates)
    w = _weights(weights, x.shape[0])
    return w @ x / max(w.sum(), np.finfo(float).tiny)


def cosine_to_aggregate(
    updates, weights=None, *, exclude_self: bool = False, eps: float = 1e-12
) -> np.ndarray:
    """Cosine similarity of each update to the weighted aggregate.

    With ``exclude_self=True`` client ``i`` is compared with the aggregate of the others
    (computed in closed form from the full sum, no ``n x d`` temporaries). Zero vectors
    give cosine 0.
    """
    x = flatten_updates(updates)
    n = x.shape[0]
    w = _weights(weights, n)
    total = w @ x  # sum_j w_j x_j
    sq = np.einsum("ij,ij->i", x, x)
    xt = x @ total
    if exclude_self:
        rest = w.sum() - w
        dot = xt - w * sq  # x_i . (T - w_i x_i); the 1/rest scale cancels in the cosine
        agg_sq = np.maximum(total @ total - 2 * w * xt + w**2 * sq, 0.0)
        agg_sq = np.where(rest > 0, agg_sq, 0.0)
    else:
        dot = xt
        agg_sq = np.full(n, total @ total)
    denom = np.sqrt(sq) * np.sqrt(agg_sq)
    return np.where(denom > eps, dot / np.maximum(denom, eps), 0.0)


def median_cosine_to_others(updates, eps: float = 1e-12) -> np.ndarray:
    """Median over the other clients ``j`` of ``cos(x_i, x_j)``; NaN for a lone client.

    Unlike the cosine to the others' aggregate, this reference is robust to a minority of
    clients sending corrupted updates (a reversed x-2 client drags the aggregate against the
    honest clients, not the median). Zero vectors give cosine 0.
    """
    x = flatten_updates(updates)
    n = x.shape[0]
    norms = np.linalg.norm(x, axis=1)
    unit = x / np.where(norms > eps, norms, np.inf)[:, None]
    gram = unit @ unit.T
    others = gram[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return np.median(others, axis=1) if n > 1 else np.full(n, np.nan)


def update_signals(updates, weights=None, *, exclude_self: bool = False) -> dict[str, np.ndarray]:
    """``{"cosine": ..., "norm": ...}`` per client."""
    return {
        "cosine": cosine_to_aggregate(updates, weights, exclude_self=exclude_self),
        "norm": update_norms(updates),
    }
