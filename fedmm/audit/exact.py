"""Exact semivalues by full enumeration of the 2^n coalitions, plus leave-one-out.

The coalitions are enumerated as a bitmask-ordered boolean matrix and evaluated in
chunks (one utility call per chunk, so ``chunk_size`` bounds memory). Values are then
computed from the utility table with vectorised index arithmetic: for player ``i`` the
coalitions without ``i`` are ``S`` and ``S | (1 << i)`` adds it.
"""

from __future__ import annotations

import math

import numpy as np

from ._bits import enumerate_coalitions, masks_without, popcount
from .axioms import axiom_residuals
from .game import Utility
from .result import ValuationResult

__all__ = [
    "MAX_EXACT_PLAYERS",
    "enumerate_coalitions",
    "utility_table",
    "shapley_weights",
    "exact_values_from_table",
    "exact_from_table",
    "exact_shapley",
    "exact_banzhaf",
    "exact_shapley_banzhaf",
    "leave_one_out",
]

MAX_EXACT_PLAYERS = 24
DEFAULT_CHUNK = 8192


def _check_n(n_players: int) -> int:
    n = int(n_players)
    if not 1 <= n <= MAX_EXACT_PLAYERS:
        raise ValueError(f"exact enumeration supports 1..{MAX_EXACT_PLAYERS} players, got {n}")
    return n


def utility_table(utility: Utility, n_players: int, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """``u(S)`` for all 2^n coalitions in bitmask order; one utility call per chunk."""
    n = _check_n(n_players)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    total = 2**n
    table = np.empty(total, dtype=float)
    for start in range(0, total, chunk_size):
        stop = min(start + chunk_size, total)
        vals = np.asarray(utility(enumerate_coalitions(n, start, stop)), dtype=float).reshape(-1)
        if vals.shape[0] != stop - start:
            raise ValueError(f"utility returned {vals.shape[0]} values for {stop - start} coalitions")
        table[start:stop] = vals
    return table


def shapley_weights(n_players: int) -> np.ndarray:
    """``w[s] = s! (n-1-s)! / n!`` for coalition sizes ``s = 0..n-1``."""
    n = int(n_players)
    return np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)], dtype=float)


def exact_values_from_table(table: np.ndarray, n_players: int) -> tuple[np.ndarray, np.ndarray]:
    """Shapley and Banzhaf values from a full bitmask-ordered table of 2^n utilities.

    A ``(2^n, M)`` table (e.g. per-sample utilities) gives ``(n, M)`` values, column by column.
    """
    n = _check_n(n_players)
    t = np.asarray(table, dtype=float)
    t = t.reshape(-1) if t.ndim < 2 else t
    if t.shape[0] != 2**n:
        raise ValueError(f"table has {t.shape[0]} entries, expected 2**{n}")
    base = np.arange(2 ** (n - 1), dtype=np.int64)
    # inserting a zero bit does not change the popcount, so |S| is the same for every player
    w = shapley_weights(n)[popcount(base)].reshape(-1, *([1] * (t.ndim - 1)))
    shapley = np.empty((n, *t.shape[1:]))
    banzhaf = np.empty((n, *t.shape[1:]))
    for i in range(n):
        s = masks_without(n, [i])
        d = t[s | (1 << i)] - t[s]
        shapley[i] = np.multiply(w, d).sum(axis=0)  # not BLAS: avoids thread spin-up on busy hosts
        banzhaf[i] = d.sum(axis=0) / base.size
    return shapley, banzhaf


def exact_from_table(
    table: np.ndarray, n_players: int, *, check_axioms: bool = True
) -> tuple[ValuationResult, ValuationResult]:
    """Exact Shapley and Banzhaf ``ValuationResult``s from a full utility table."""
    n = _check_n(n_players)
    t = np.asarray(table, dtype=float).reshape(-1)
    shap, banz = exact_values_from_table(t, n)
    info = {"u_empty": float(t[0]), "u_grand": float(t[-1])}
    out = []
    for vals, method, eff in ((shap, "exact_shapley", True), (banz, "exact_banzhaf", False)):
        res = axiom_residuals(vals, t, n, efficiency=eff) if check_axioms else {}
        out.append(
            ValuationResult(
                values=vals,
                stderr=np.zeros(n),
                evaluations=t.size,
                method=method,
                counts=np.full(n, t.size // 2),
                residuals=res,
                info=dict(info),
            )
        )
    return out[0], out[1]


def exact_shapley_banzhaf(
    utility: Utility,
    n_players: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    check_axioms: bool = True,
) -> tuple[ValuationResult, ValuationResult]:
    """Exact Shapley and Banzhaf values sharing one enumeration of the 2^n coalitions."""
    table = utility_table(utility, n_players, chunk_size)
    return exact_from_table(table, n_players, check_axioms=check_axioms)


def exact_shapley(
    utility: Utility,
    n_players: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    check_axioms: bool = True,
) -> ValuationResult:
    """Exact Shapley values (2^n evaluations) with axiom residuals attached."""
    return exact_shapley_banzhaf(utility, n_players, chunk_size=chunk_size, check_axioms=check_axioms)[0]


def exact_banzhaf(
    utility: Utility,
    n_players: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    check_axioms: bool = True,
) -> ValuationResult:
    """Exact Banzhaf values (2^n evaluations); residuals: symmetry and null player."""
    return exact_shapley_banzhaf(utility, n_players, chunk_size=chunk_size, check_axioms=check_axioms)[1]


def leave_one_out(utility: Utility, n_players: int) -> ValuationResult:
    """``v_i = u(N) - u(N - i)`` from one call with n+1 coalitions."""
    n = int(n_players)
    if n < 1:
        raise ValueError("n_players must be >= 1")
    c = np.ones((n + 1, n), dtype=bool)
    c[np.arange(1, n + 1), np.arange(n)] = False
    u = np.asarray(utility(c), dtype=float).reshape(-1)
    if u.shape[0] != n + 1:
        raise ValueError(f"utility returned {u.shape[0]} values for {n + 1} coalitions")
    return ValuationResult(
        values=u[0] - u[1:],
        stderr=np.zeros(n),
        evaluations=n + 1,
        method="leave_one_out",
        counts=np.ones(n, dtype=np.int64),
        info={"u_grand": float(u[0])},
    )
