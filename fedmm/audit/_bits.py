"""Bitmask helpers shared by the exact estimators and the axiom checks."""

from __future__ import annotations

import numpy as np

__all__ = ["popcount", "enumerate_coalitions", "masks_without"]


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each (non-negative) integer."""
    x = np.asarray(x, dtype=np.int64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    out = np.zeros_like(x)  # pragma: no cover - numpy < 2
    y = x.copy()
    while y.any():
        out += y & 1
        y >>= 1
    return out


def enumerate_coalitions(n_players: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Boolean coalition matrix of bitmasks ``start..stop-1`` (bit i = player i)."""
    stop = 2**n_players if stop is None else stop
    idx = np.arange(start, stop, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n_players, dtype=np.int64)) & 1).astype(bool)


def masks_without(n_players: int, players) -> np.ndarray:
    """All bitmasks over ``n_players`` with the bits of ``players`` cleared, ascending.

    Built by index arithmetic: enumerate the other bits and insert a zero at each position.
    """
    pos = sorted({int(p) for p in np.atleast_1d(players)})
    base = np.arange(2 ** (n_players - len(pos)), dtype=np.int64)
    for p in pos:  # ascending insertion keeps earlier insertions in place
        base = ((base >> p) << (p + 1)) | (base & ((1 << p) - 1))
    return base
