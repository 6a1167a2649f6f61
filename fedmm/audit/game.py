"""Cooperative games over clients: the utility protocol, a memoising wrapper and test games.

A *utility* evaluates a whole boolean coalition matrix at once (shapiq style):
``utility(coalitions)`` with ``coalitions`` of shape ``(k, n_players)`` returns ``(k,)``
values. Player ``i`` is in coalition ``r`` iff ``coalitions[r, i]``. Coalitions are
identified by their bitmask ``sum_i coalitions[r, i] << i``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Utility",
    "CachedUtility",
    "Game",
    "TableGame",
    "AdditiveGame",
    "QuadraticGame",
    "GloveGame",
    "RandomGame",
    "WeightedVotingGame",
    "as_coalition_matrix",
    "coalitions_to_masks",
    "masks_to_coalitions",
]


@runtime_checkable
class Utility(Protocol):
    """Anything mapping a ``(k, n_players)`` boolean coalition matrix to ``(k,)`` values."""

    def __call__(self, coalitions: np.ndarray) -> np.ndarray: ...


def as_coalition_matrix(coalitions: np.ndarray, n_players: int | None = None) -> np.ndarray:
    """Validate and return ``coalitions`` as a 2-D boolean array (a 1-D input is one row)."""
    c = np.asarray(coalitions)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2:
        raise ValueError(f"coalitions must be 2-D (k, n_players), got shape {c.shape}")
    if n_players is not None and c.shape[1] != n_players:
        raise ValueError(f"coalitions have {c.shape[1]} columns, expected {n_players}")
    if c.dtype != bool:
        if not np.isin(c, (0, 1)).all():
            raise ValueError("coalitions must be boolean or 0/1")
        c = c.astype(bool)
    return c


def coalitions_to_masks(coalitions: np.ndarray) -> np.ndarray:
    """Bitmask keys of coalition rows: ``uint64`` for n <= 64, else an object array of bytes."""
    c = as_coalition_matrix(coalitions)
    n = c.shape[1]
    packed = np.packbits(c, axis=1, bitorder="little")  # (k, ceil(n/8)) uint8
    if n <= 64:
        buf = np.zeros((c.shape[0], 8), dtype=np.uint8)
        buf[:, : packed.shape[1]] = packed
        return buf.view("<u8").ravel().astype(np.uint64)
    out = np.empty(c.shape[0], dtype=object)
    out[:] = [row.tobytes() for row in packed]
    return out


def masks_to_coalitions(masks: np.ndarray, n_players: int) -> np.ndarray:
    """Inverse of :func:`coalitions_to_masks` for integer masks (n <= 64)."""
    if n_players > 64:
        raise ValueError("integer masks support at most 64 players")
    m = np.asarray(masks, dtype=np.uint64)
    return ((m[:, None] >> np.arange(n_players, dtype=np.uint64)) & np.uint64(1)).astype(bool)


class CachedUtility:
    """Memoise a utility by coalition bitmask; unseen coalitions are evaluated in one batched call.

    ``evaluations`` counts distinct coalitions actually evaluated, ``calls`` the number of
    calls made to the wrapped utility, ``hits`` the rows answered from the cache.
    """

    def __init__(self, utility: Utility, n_players: int | None = None):
        if isinstance(utility, CachedUtility):  # share the inner cache rather than nest
            self.utility = utility.utility
            self._cache = utility._cache
        else:
            self.utility = utility
            self._cache: dict = {}
        self.n_players = n_players if n_players is not None else getattr(utility, "n_players", None)
        self.evaluations = len(self._cache)
        self.calls = 0
        self.hits = 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        c = as_coalition_matrix(coalitions, self.n_players)
        if self.n_players is None:
            self.n_players = c.shape[1]
        if c.shape[0] == 0:
            return np.empty(0, dtype=float)
        keys = coalitions_to_masks(c)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        uniq_list = uniq.tolist()
        get = self._cache.get
        vals = np.array([get(k, np.nan) for k in uniq_list], dtype=float)
        missing = np.flatnonzero(np.array([k not in self._cache for k in uniq_list], dtype=bool))
        if missing.size:
            new = np.asarray(self.utility(c[first[missing]]), dtype=float).reshape(-1)
            if new.shape[0] != missing.size:
                raise ValueError(
                    f"utility returned {new.shape[0]} values for {missing.size} coalitions"
                )
            vals[missing] = new
            self._cache.update(zip([uniq_list[j] for j in missing], new.tolist()))
            self.evaluations += int(missing.size)
            self.calls += 1
        self.hits += int(c.shape[0] - missing.size)
        return vals[inverse.reshape(-1)]

    def count_unseen(self, coalitions: np.ndarray) -> int:
        """Number of distinct coalitions in ``coalitions`` not yet in the cache."""
        keys = np.unique(coalitions_to_masks(coalitions)).tolist()
        return sum(k not in self._cache for k in keys)

    def is_cached(self, keys) -> np.ndarray:
        """Boolean membership of bitmask keys (as from :func:`coalitions_to_masks`)."""
        return np.fromiter((k in self._cache for k in np.asarray(keys).tolist()), dtype=bool)

    def clear(self) -> None:
        self._cache.clear()
        self.evaluations = self.calls = self.hits = 0


class Game:
    """Base class of vectorised test games; subclasses implement ``_value(coalitions)``."""

    n_players: int

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        c = as_coalition_matrix(coalitions, self.n_players)
        return np.asarray(self._value(c), dtype=float).reshape(c.shape[0])

    def _value(self, coalitions: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def grand_value(self) -> float:
        return float(self(np.ones((1, self.n_players), dtype=bool))[0])

    def empty_value(self) -> float:
        return float(self(np.zeros((1, self.n_players), dtype=bool))[0])


class TableGame(Game):
    """Game given by a full table of 2^n values indexed by bitmask."""

    def __init__(self, table: np.ndarray):
        t = np.asarray(table, dtype=float).reshape(-1)
        n = int(round(np.log2(t.size))) if t.size else -1
        if n < 1 or 2**n != t.size:
            raise ValueError("table length must be 2**n_players with n_players >= 1")
        self.n_players = n
        self.values_table = t
        self._pow = (1 << np.arange(n)).astype(np.int64)

    def _value(self, coalitions):
        return self.values_table[coalitions.astype(np.int64) @ self._pow]

    def table(self) -> np.ndarray:
        return self.values_table.copy()


class RandomGame(TableGame):
    """Independent N(0, 1) values for every coalition (the empty coalition included)."""

    def __init__(self, n_players: int, seed: int | None = 0):
        if not 1 <= n_players <= 24:
            raise ValueError("RandomGame supports 1..24 players")
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        super().__init__(rng.standard_normal(2**n_players))


class AdditiveGame(Game):
    """``u(S) = intercept + sum_{i in S} w_i``; Shapley and Banzhaf values equal ``w``."""

    def __init__(self, weights, intercept: float = 0.0):
        self.weights = np.asarray(weights, dtype=float).reshape(-1)
        self.intercept = float(intercept)
        self.n_players = self.weights.size

    def _value(self, coalitions):
        return coalitions @ self.weights + self.intercept

    def shapley_values(self) -> np.ndarray:
        return self.weights.copy()


class QuadraticGame(Game):
    """``u(S) = intercept + w.s + s^T A s`` with ``A`` symmetrised and zero diagonal.

    Closed-form Shapley value: ``w_i + sum_j A_ij`` (each pair's interaction split evenly).
    """

    def __init__(self, weights, interactions, intercept: float = 0.0):
        self.weights = np.asarray(weights, dtype=float).reshape(-1)
        a = np.asarray(interactions, dtype=float)
        a = 0.5 * (a + a.T)
        np.fill_diagonal(a, 0.0)
        self.interactions = a
        self.intercept = float(intercept)
        self.n_players = self.weights.size

    def _value(self, coalitions):
        s = coalitions.astype(float)
        return s @ self.weights + np.einsum("ki,ij,kj->k", s, self.interactions, s) + self.intercept

    def shapley_values(self) -> np.ndarray:
        return self.weights + self.interactions.sum(axis=1)


class GloveGame(Game):
    """``u(S) = min(#left players in S, #right players in S)``."""

    def __init__(self, left, right):
        self.left = np.asarray(left, dtype=int).reshape(-1)
        self.right = np.asarray(right, dtype=int).reshape(-1)
        if np.intersect1d(self.left, self.right).size:
            raise ValueError("a player cannot hold both a left and a right glove")
        players = np.concatenate([self.left, self.right])
        self.n_players = int(players.max()) + 1 if players.size else 0

    def _value(self, coalitions):
        return np.minimum(coalitions[:, self.left].sum(1), coalitions[:, self.right].sum(1))


class WeightedVotingGame(Game):
    """``u(S) = 1`` if the total weight of ``S`` reaches ``quota``, else 0."""

    def __init__(self, weights, quota: float):
        self.weights = np.asarray(weights, dtype=float).reshape(-1)
        self.quota = float(quota)
        self.n_players = self.weights.size

    def _value(self, coalitions):
        return (coalitions @ self.weights >= self.quota).astype(float)
