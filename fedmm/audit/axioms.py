"""Axiom self-checks (efficiency, symmetry, null player) on a full utility table.

The table holds ``u(S)`` for all 2^n coalitions in bitmask order. Residuals are zero for
exact Shapley values up to floating point error; large residuals flag a bug or an
estimator that does not satisfy the axiom.
"""

from __future__ import annotations

import numpy as np

from ._bits import masks_without

__all__ = [
    "efficiency_residual",
    "symmetric_pairs",
    "symmetry_residual",
    "null_players",
    "null_player_residual",
    "axiom_residuals",
]

_TINY = 1e-12


def _check_table(table: np.ndarray, n_players: int) -> np.ndarray:
    t = np.asarray(table, dtype=float).reshape(-1)
    if t.size != 2**n_players:
        raise ValueError(f"table has {t.size} entries, expected 2**{n_players}")
    return t


def _tolerance(table: np.ndarray, atol: float, rtol: float) -> float:
    scale = float(np.max(np.abs(table))) if table.size else 0.0
    return atol + rtol * scale


def efficiency_residual(values, grand_value: float, empty_value: float) -> float:
    """``|sum(values) - (u(N) - u(empty))| / max(|u(N) - u(empty)|, tiny)``."""
    total = float(grand_value) - float(empty_value)
    return abs(float(np.sum(values)) - total) / max(abs(total), _TINY)


def symmetric_pairs(
    table: np.ndarray, n_players: int, atol: float = 1e-12, rtol: float = 1e-9
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` with ``u(S + i) == u(S + j)`` for every ``S`` containing neither."""
    t = _check_table(table, n_players)
    tol = _tolerance(t, atol, rtol)
    full = 2**n_players - 1
    single = t[1 << np.arange(n_players)]
    drop = t[full ^ (1 << np.arange(n_players))]
    pairs = []
    for i in range(n_players):
        # cheap filter on the singletons and the (N - i) coalitions before the full check
        cand = np.flatnonzero(
            (np.abs(single[i + 1 :] - single[i]) <= tol) & (np.abs(drop[i + 1 :] - drop[i]) <= tol)
        )
        for j in (cand + i + 1).tolist():
            s = masks_without(n_players, [i, j])
            if np.max(np.abs(t[s | (1 << i)] - t[s | (1 << j)])) <= tol:
                pairs.append((i, j))
    return pairs


def symmetry_residual(values, pairs) -> float:
    """``max |v_i - v_j|`` over interchangeable pairs (0 when there are none)."""
    v = np.asarray(values, dtype=float)
    if not len(pairs):
        return 0.0
    p = np.asarray(pairs, dtype=int)
    return float(np.max(np.abs(v[p[:, 0]] - v[p[:, 1]])))


def null_players(
    table: np.ndarray, n_players: int, atol: float = 1e-12, rtol: float = 1e-9
) -> list[int]:
    """Players whose marginal contribution is ~0 to every coalition."""
    t = _check_table(table, n_players)
    tol = _tolerance(t, atol, rtol)
    out = []
    for i in range(n_players):
        s = masks_without(n_players, [i])
        if np.max(np.abs(t[s | (1 << i)] - t[s])) <= tol:
            out.append(i)
    return out


def null_player_residual(values, players) -> float:
    """``max |v_i|`` over null players (0 when there are none)."""
    v = np.asarray(values, dtype=float)
    idx = np.asarray(list(players), dtype=int)
    return float(np.max(np.abs(v[idx]))) if idx.size else 0.0


def axiom_residuals(
    values,
    table: np.ndarray,
    n_players: int,
    *,
    efficiency: bool = True,
    atol: float = 1e-12,
    rtol: float = 1e-9,
) -> dict[str, float]:
    """All residuals as a dict (``efficiency`` only when ``efficiency=True``, e.g. not for Banzhaf)."""
    t = _check_table(table, n_players)
    pairs = symmetric_pairs(t, n_players, atol, rtol)
    nulls = null_players(t, n_players, atol, rtol)
    out: dict[str, float] = {}
    if efficiency:
        out["efficiency"] = efficiency_residual(values, t[-1], t[0])
    out["symmetry"] = symmetry_residual(values, pairs)
    out["null_player"] = null_player_residual(values, nulls)
    out["n_symmetric_pairs"] = float(len(pairs))
    out["n_null_players"] = float(len(nulls))
    return out
