"""One round's Shapley values with their evidence: exact enumeration or antithetic permutation sampling.

Both estimators are linear in the coalition utilities, ``values = C @ u`` over the
evaluated coalitions. Applied to per-sample rows instead of ``u`` they give per-sample
values (log-loss, accuracy), and applied to bootstrap replicate utilities they give
replicate values (macro-F1): the *evidence* a statistic turns into a validation-sampling
variance (:mod:`fedmm.audit.inference`).

The sampler (:class:`~fedmm.audit.sampling.PermutationSampler`) draws permutations in
antithetic pairs (a permutation and its reverse; a sample is the pair's average marginal
vector); the default stopping rule, a composable criterion, stops when every client's Monte
Carlo standard error is at most ``rel_tol`` times its validation standard error, after
``min_pairs`` pairs (:class:`~fedmm.audit.sampling.RelativeStandardErrorBelow`), or when the
evaluation budget is spent (:class:`~fedmm.audit.sampling.MaxEvaluations`). Its Monte Carlo
variance is reported and added to the validation variance. If it has evaluated every
coalition, the exact values are returned instead (they cost nothing more). At scale,
:func:`scale_round` values a round from a fixed number of permutations and measures their
Monte Carlo error on one more permutation cut into blocks. Results are
:class:`~fedmm.audit.result.ValuationResult` objects carrying their evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ._bits import enumerate_coalitions
from .exact import exact_from_table, exact_values_from_table
from .game import coalitions_to_masks
from .result import ValuationResult
from .sampling import (
    MaxEvaluations,
    PermutationSampler,
    RelativeStandardErrorBelow,
    SamplerState,
    StoppingCriterion,
)

__all__ = ["RowStore", "exact_round", "sampled_round", "scale_round"]


class RowStore:
    """Distinct coalitions evaluated once each: their utilities and expanded rows, by bitmask."""

    def __init__(self, rows: Callable[[np.ndarray], np.ndarray], statistic, n_players: int):
        self.rows, self.statistic, self.n = rows, statistic, n_players
        self.index: dict = {}
        self.point = np.empty(0)
        self.expanded: np.ndarray | None = None
        self.size = 0

    def unseen(self, coalitions: np.ndarray) -> tuple[np.ndarray, list]:
        keys = coalitions_to_masks(coalitions).tolist()
        new, firsts = [], {}
        for j, k in enumerate(keys):
            if k not in self.index and k not in firsts:
                firsts[k] = j
                new.append(j)
        return np.asarray(new, dtype=np.int64), keys

    def lookup(self, coalitions: np.ndarray) -> np.ndarray:
        """Indices of the coalitions' rows, evaluating the unseen ones in one call."""
        new, keys = self.unseen(coalitions)
        if new.size:
            rows = np.asarray(self.rows(coalitions[new]), dtype=float)
            point, expanded = self.statistic.utilities(rows), self.statistic.expand(rows)
            if self.expanded is None:
                self.expanded = np.empty((0, expanded.shape[1]))
            self.point = np.concatenate([self.point, point])
            self.expanded = np.concatenate([self.expanded, expanded])
            for j in new.tolist():
                self.index[keys[j]] = self.size
                self.size += 1
        return np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))


def exact_round(rows: Callable[[np.ndarray], np.ndarray], statistic, n: int) -> ValuationResult:
    """Every coalition evaluated: exact Shapley values, per-sample (or per-replicate) evidence, axiom residuals."""
    table_rows = np.asarray(rows(enumerate_coalitions(n)), dtype=float)
    return _from_table(statistic.utilities(table_rows), statistic.expand(table_rows), n)


def _from_table(point: np.ndarray, expanded: np.ndarray, n: int, **info) -> ValuationResult:
    shap, banz = exact_from_table(point, n)
    evidence = exact_values_from_table(expanded, n)[0]
    return ValuationResult(
        values=shap.values, stderr=0.0, evaluations=point.size, method="exact_shapley", counts=shap.counts,
        evidence=evidence, table=point, residuals=shap.residuals,
        info={"banzhaf": banz.values, "banzhaf_residuals": banz.residuals, **info},
    )


def sampled_round(
    rows: Callable[[np.ndarray], np.ndarray],
    statistic,
    n: int,
    stopping: StoppingCriterion | None = None,
    *,
    rel_tol: float = 0.1,
    min_pairs: int = 6,
    max_evaluations: int = 2000,
    batch_pairs: int = 2,
    antithetic: bool = True,
    seed=None,
) -> tuple[ValuationResult, RowStore]:
    """Permutation Shapley on a :class:`~fedmm.audit.sampling.PermutationSampler` until ``stopping``.

    The default rule is the module docstring's: ``MaxEvaluations(max_evaluations) |
    RelativeStandardErrorBelow(rel_tol, min_pairs)``. A batch whose new coalitions exceed the
    rule's remaining evaluations is not evaluated. A sample is an antithetic pair's average
    marginal vector (one permutation with ``antithetic=False``). Returns the estimate and
    the store of evaluated rows (for leave-one-out and other coalitions the caller needs).
    """
    if n < 2:
        raise ValueError("sampling needs at least two players")
    stopping = stopping or MaxEvaluations(max(max_evaluations, 2)) | RelativeStandardErrorBelow(rel_tol, min_pairs)
    sampler = PermutationSampler(n, antithetic=antithetic, seed=seed)
    store = RowStore(rows, statistic, n)
    t0 = time.perf_counter()
    ends = np.zeros((2, n), dtype=bool)
    ends[1] = True
    store.lookup(ends)
    total = 2**n if n < 63 else np.inf
    counts = np.zeros((n, 0))
    samples: list[np.ndarray] = []
    perms_used = 0
    trace = {"evaluations": [], "values": [], "stderr": []}
    state = _state(n, store, 0, None, t0)
    while not stopping(state):
        perms, pos = sampler.draw(batch_pairs * sampler.per_sample)
        coal = (pos[:, None, :] < np.arange(n + 1)[None, :, None]).reshape(-1, n)  # prefixes 0..n
        new, _ = store.unseen(coal)
        if new.size > stopping.remaining_evaluations(state):
            break
        idx = store.lookup(coal).reshape(perms.shape[0], n + 1)
        if counts.shape[1] < store.size:
            counts = np.pad(counts, ((0, 0), (0, store.size - counts.shape[1])))
        np.add.at(counts, (perms, idx[:, 1:]), 1.0)
        np.add.at(counts, (perms, idx[:, :-1]), -1.0)
        samples.append(sampler.samples(np.take_along_axis(np.diff(store.point[idx], axis=1), pos, axis=1)))
        perms_used += perms.shape[0]
        if store.size >= total:
            point, expanded = _ordered(store, n)
            est = _from_table(point, expanded, n, stop_reason="every coalition evaluated", permutations=perms_used)
            return est, store
        est = _estimate(store, counts, perms_used, np.concatenate(samples), statistic)
        trace["evaluations"].append(store.size)
        trace["values"].append(est.values.tolist())
        trace["stderr"].append(est.stderr.tolist())
        state = _state(n, store, len(est.info["samples"]), est, t0)
    if not samples:
        raise ValueError(f"an evaluation budget of {max_evaluations} cannot fit one permutation of {n} players")
    reason = ", ".join(stopping.triggered(state)) or f"evaluation budget reached ({stopping!r})"
    est = _estimate(store, counts, perms_used, np.concatenate(samples), statistic)
    est.info.update(stop_reason=reason, permutations=perms_used, seconds=time.perf_counter() - t0)
    est.trace = trace
    return est, store


def _state(n: int, store: RowStore, samples: int, est: ValuationResult | None, t0: float) -> SamplerState:
    """The sampler's state for the stopping rule: the estimate's Monte Carlo and validation SEs."""
    inf = np.full(n, np.inf)
    return SamplerState(
        n_players=n, evaluations=store.size, samples=samples, counts=np.full(n, samples), iterations=samples,
        values=np.zeros(n) if est is None else est.values, stderr=inf if est is None else est.stderr,
        elapsed_s=time.perf_counter() - t0, max_evaluations=float(2**n) if n < 63 else np.inf,
        reference_stderr=None if est is None else np.sqrt(est.info["val_variance"]),
    )


def _ordered(store: RowStore, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The store's rows in bitmask order (it holds every coalition)."""
    order = store.lookup(enumerate_coalitions(n))
    return store.point[order], store.expanded[order]


def _estimate(store: RowStore, counts: np.ndarray, perms: int, samples: np.ndarray, statistic) -> ValuationResult:
    coef = counts[:, : store.size] / perms
    evidence = coef @ store.expanded
    k = samples.shape[0]
    mc = samples.var(axis=0, ddof=1) / k if k > 1 else np.full(samples.shape[1], np.inf)
    return ValuationResult(
        values=coef @ store.point, stderr=np.sqrt(mc), evaluations=store.size, method="permutation_shapley",
        counts=k, evidence=evidence, info={"samples": samples, "val_variance": statistic.variance(evidence)},
    )


def scale_round(
    rows: Callable[[np.ndarray], np.ndarray],
    statistic,
    n: int,
    scale: np.ndarray,
    *,
    permutations: int = 1,
    block_size: int = 6,
    seed=None,
) -> tuple[ValuationResult, RowStore]:
    """Permutation Shapley at scale: ``permutations`` full permutations and one block permutation for the error.

    The values and their evidence are the mean marginals of ``permutations`` uniform permutations
    (Castro, Gomez & Tejada 2009): ``permutations * (n - 1)`` coalitions. A client's marginal is
    modelled as ``phi_i + scale_i (beta (position - mean) + e)`` with ``var(e) = sigma_e^2``
    (``scale``: FedAvg weight x update norm, which a marginal contribution scales with; ``beta``: the
    drift of marginals along a permutation, fitted on the full permutations), so its Monte Carlo
    variance is ``scale_i^2 (beta^2 var(position) + sigma_e^2)``. ``sigma_e^2`` is measured on
    independent evidence: one more permutation cut into contiguous blocks of ``block_size`` clients,
    of which only the boundaries are evaluated. A block's utility gain (less its drift) and the
    same clients' summed marginals from the full permutations estimate the same sum of Shapley
    values: ``n / block_size`` degrees of freedom for as many evaluations, where a second full
    permutation (``block_size=1``) gives ``n``. Neighbours in a permutation share its prefix, so
    their marginals correlate a little (measured with the smartwatch model at 1,000 clients: a
    block of 6 varies 1.8x, of 3 1.5x, of 62 7.9x what independent marginals would) and the error
    is somewhat conservative; small blocks keep it so. With two or more full permutations the
    clients' own deviations are pooled too, and each client's variance is at least its own.
    """
    if n < 2 or permutations < 1 or block_size < 1:
        raise ValueError("sampling at scale needs two players, one permutation and blocks of one client or more")
    k = permutations
    perms, pos = PermutationSampler(n, seed=seed).draw(k + 1)
    edges = np.append(np.arange(0, n, block_size), n)
    prefixes = (pos[:k, None, :] < np.arange(n + 1)[None, :, None]).reshape(-1, n)
    store = RowStore(rows, statistic, n)
    idx = store.lookup(np.concatenate([prefixes, pos[k][None, :] < edges[:, None]]))  # one call: every coalition
    main, cuts = idx[: k * (n + 1)].reshape(k, n + 1), idx[k * (n + 1):]
    counts = np.zeros((n, store.size))
    np.add.at(counts, (perms[:k], main[:, 1:]), 1.0)
    np.add.at(counts, (perms[:k], main[:, :-1]), -1.0)
    marginals = np.take_along_axis(np.diff(store.point[main], axis=1), pos[:k], axis=1)
    est = _estimate(store, counts, k, marginals, statistic)
    s2 = np.asarray(scale, dtype=float) ** 2
    own = est.stderr**2 * k  # a marginal's variance, per client (inf with one permutation)
    sigma2, dof = _pooled_variance(marginals, pos, np.diff(store.point[cuts]), edges, s2, own)
    est.stderr = np.sqrt(np.maximum(sigma2 * s2, own if k > 1 else 0.0) / k)
    est.info.update(stop_reason=f"{k} permutation(s) and {edges.size - 1} blocks", permutations=k,
                    blocks=int(edges.size - 1), pooled_dof=dof, pooled_variance=sigma2)
    return est, store


def _pooled_variance(marginals: np.ndarray, pos: np.ndarray, gains: np.ndarray, edges: np.ndarray, s2: np.ndarray,
                     own: np.ndarray) -> tuple[float, int]:
    """:func:`scale_round`'s ``sigma^2`` (a marginal's variance per unit scale^2) and its degrees of freedom.

    ``marginals`` ``(k, n)`` by client and ``pos`` ``(k + 1, n)`` positions of the full permutations and
    of the block permutation, whose ``gains`` are its blocks' (between ``edges``) utility gains.
    """
    k, n = marginals.shape
    live = s2 > 0
    if not live.any():
        return 0.0, 0
    x, z = pos[:k, live].ravel() - (n - 1) / 2, (marginals[:, live] / np.sqrt(s2[live])).ravel()
    beta = float(np.sum(x * (z - z.mean())) / np.sum(x**2)) if np.any(x) else 0.0
    drift = beta**2 * (n**2 - 1) / 12  # the variance of beta x position over a uniform position
    members = [np.flatnonzero((pos[k] >= lo) & (pos[k] < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    ratios = []
    for b, gain in zip(members, gains):
        fpc = 1 - (b.size - 1) / (n - 1)  # a permutation's marginals sum to u(N) - u(empty)
        mass = s2[b].sum() * fpc
        if mass > 0:
            expected = beta * np.sum(np.sqrt(s2[b]) * (pos[k, b] - (n - 1) / 2))
            d = marginals[:, b].sum(axis=1).mean() - (gain - expected)
            ratios.append((d**2 - drift * mass / k) / (mass * (1 + 1 / k)))
    dof = len(ratios)
    sigma2 = max(float(np.mean(ratios)), 0.0) + drift if ratios else drift
    if k > 1:
        own_sigma2 = float(np.mean(own[live] / s2[live]))
        sigma2 = (dof * sigma2 + int(live.sum()) * (k - 1) * own_sigma2) / (dof + int(live.sum()) * (k - 1))
        dof += int(live.sum()) * (k - 1)
    return sigma2, dof
