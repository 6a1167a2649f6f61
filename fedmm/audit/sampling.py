"""Sampled semivalues: truncated permutation Shapley and maximum-sample-reuse Banzhaf.

The estimator, the sampler, the utility and the stopping rule are separate (pyDVL style).
:class:`PermutationSampler` is the one permutation sampler: it draws batches of permutations
(optionally antithetic pairs) and turns their marginal vectors into samples; every
permutation estimator here and in :mod:`fedmm.audit.samplewise` runs on it. Stopping rules
are objects called on a :class:`SamplerState`; they compose with ``|`` (stop when any is
met) and ``&`` (stop when all are met). A rule may also cap the remaining evaluation
budget (``MaxEvaluations``), which the samplers respect exactly: a batch is shrunk so that
its worst-case number of new evaluations fits, so ``evaluations <= cap`` holds (apart from
the two evaluations of the empty and grand coalitions that permutation sampling needs).

All utility calls go through :class:`~fedmm.audit.game.CachedUtility`, so ``evaluations``
counts distinct coalitions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .axioms import efficiency_residual
from .game import CachedUtility, Utility, coalitions_to_masks
from .result import ValuationResult

__all__ = [
    "SamplerState",
    "PermutationSampler",
    "StoppingCriterion",
    "AnyOf",
    "AllOf",
    "MaxEvaluations",
    "MaxPermutations",
    "MaxTime",
    "StandardErrorBelow",
    "RelativeStandardErrorBelow",
    "RunningMoments",
    "permutation_shapley",
    "msr_banzhaf",
]


# --------------------------------------------------------------------------- state & stopping


@dataclass
class SamplerState:
    """Snapshot handed to stopping rules after each batch."""

    n_players: int
    evaluations: int  # distinct utility evaluations used by this run
    samples: int  # permutations (or coalitions, for MSR) drawn and used
    counts: np.ndarray  # samples per player
    values: np.ndarray
    stderr: np.ndarray
    iterations: int  # batches processed
    elapsed_s: float
    max_evaluations: float  # 2**n (inf for n > 62): nothing new can be evaluated beyond it
    reference_stderr: np.ndarray | None = None  # e.g. the values' validation-sampling SE


class StoppingCriterion:
    """Base stopping rule: ``rule(state) -> bool``; compose with ``|`` and ``&``."""

    def __call__(self, state: SamplerState) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def remaining_evaluations(self, state: SamplerState) -> float:
        """Hard cap on further evaluations implied by this rule (``inf`` if none)."""
        return math.inf

    def triggered(self, state: SamplerState) -> list[str]:
        """Names of the elementary rules currently met."""
        return [str(self)] if self(state) else []

    def __or__(self, other: StoppingCriterion) -> AnyOf:
        return AnyOf(self, other)

    def __and__(self, other: StoppingCriterion) -> AllOf:
        return AllOf(self, other)


class _Composite(StoppingCriterion):
    _sep = ""

    def __init__(self, *criteria: StoppingCriterion):
        flat: list[StoppingCriterion] = []
        for c in criteria:
            if not isinstance(c, StoppingCriterion):
                raise TypeError(f"not a StoppingCriterion: {c!r}")
            flat.extend(c.criteria if type(c) is type(self) else [c])
        self.criteria = tuple(flat)

    def triggered(self, state):
        return [name for c in self.criteria for name in c.triggered(state)]

    def __repr__(self):
        return "(" + self._sep.join(repr(c) for c in self.criteria) + ")"


class AnyOf(_Composite):
    """Stop when any rule is met; the evaluation cap is the tightest one."""

    _sep = " | "

    def __call__(self, state):
        return any(c(state) for c in self.criteria)

    def remaining_evaluations(self, state):
        return min(c.remaining_evaluations(state) for c in self.criteria)


class AllOf(_Composite):
    """Stop when all rules are met; only binds the budget when every rule caps it."""

    _sep = " & "

    def __call__(self, state):
        return all(c(state) for c in self.criteria)

    def remaining_evaluations(self, state):
        return max(c.remaining_evaluations(state) for c in self.criteria)


class MaxEvaluations(StoppingCriterion):
    """Stop once ``n`` distinct evaluations are used (or every coalition has been evaluated)."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = int(n)

    def __call__(self, state):
        return state.evaluations >= min(self.n, state.max_evaluations)

    def remaining_evaluations(self, state):
        return max(self.n - state.evaluations, 0)

    def __repr__(self):
        return f"MaxEvaluations({self.n})"


class MaxPermutations(StoppingCriterion):
    """Stop once ``n`` samples (permutations; coalitions for MSR) have been used."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = int(n)

    def __call__(self, state):
        return state.samples >= self.n

    def __repr__(self):
        return f"{type(self).__name__}({self.n})"


class MaxTime(StoppingCriterion):
    """Stop after ``seconds`` of wall-clock time (not deterministic)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def __call__(self, state):
        return state.elapsed_s >= self.seconds

    def __repr__(self):
        return f"MaxTime({self.seconds})"


class StandardErrorBelow(StoppingCriterion):
    """Stop when every player's standard error is below ``tol`` after ``min_samples`` samples."""

    def __init__(self, tol: float, min_samples: int = 30):
        self.tol = float(tol)
        self.min_samples = int(min_samples)

    def __call__(self, state):
        return bool(
            state.counts.size
            and state.counts.min() >= self.min_samples
            and np.all(state.stderr < self.tol)
        )

    def __repr__(self):
        return f"StandardErrorBelow({self.tol:g}, min_samples={self.min_samples})"


class RelativeStandardErrorBelow(StoppingCriterion):
    """Stop when every player's standard error is at most ``rel_tol`` x its ``reference_stderr``
    (e.g. the validation-sampling SE) after ``min_samples`` samples."""

    def __init__(self, rel_tol: float, min_samples: int = 2):
        if rel_tol <= 0 or min_samples < 2:
            raise ValueError("rel_tol must be > 0 and min_samples >= 2")
        self.rel_tol = float(rel_tol)
        self.min_samples = int(min_samples)

    def __call__(self, state):
        if state.reference_stderr is None or state.samples < self.min_samples:
            return False
        return bool(np.all(state.stderr <= self.rel_tol * state.reference_stderr))

    def triggered(self, state):
        return [f"Monte Carlo SE <= {self.rel_tol:g} x validation SE after {state.samples} samples"] if self(state) else []

    def __repr__(self):
        return f"RelativeStandardErrorBelow({self.rel_tol:g}, min_samples={self.min_samples})"


# --------------------------------------------------------------------------- the sampler


class PermutationSampler:
    """Uniform random permutations of ``n`` players in batches; with ``antithetic`` each one is
    followed by its reverse and a *sample* is the pair's average marginal vector.

    ``draw(batch)`` gives ``batch`` permutations (rounded up to whole pairs) and their
    position matrix; ``samples(marginals)`` turns ``(b, n, ...)`` marginals in draw order into
    per-sample values ``(b or b / 2, n, ...)``. Deterministic given ``seed``.
    """

    def __init__(self, n: int, *, antithetic: bool = False, seed=None):
        self.n, self.antithetic = int(n), bool(antithetic)
        self.rng, self.entropy = _make_rng(seed)
        self.per_sample = 2 if antithetic else 1

    def draw(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(perms, pos)``: ``perms[b]`` a permutation and ``pos[b, player]`` the player's position in it."""
        base = self.rng.permuted(np.tile(np.arange(self.n), (-(-batch // self.per_sample), 1)), axis=1)
        if self.antithetic:
            perms = np.empty((2 * base.shape[0], self.n), dtype=np.int64)
            perms[0::2], perms[1::2] = base, base[:, ::-1]
        else:
            perms = base
        return perms, np.argsort(perms, axis=1)

    def samples(self, marginals: np.ndarray) -> np.ndarray:
        """Per-sample values: the marginals, or the antithetic pairs' averages."""
        return marginals.reshape(-1, self.per_sample, *marginals.shape[1:]).mean(axis=1)


# --------------------------------------------------------------------------- running moments


class RunningMoments:
    """Vectorised Welford / Chan running mean and variance per player."""

    def __init__(self, n: int):
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self._m2 = np.zeros(n)

    def update(self, x: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add the rows of ``x`` (``(b, n)``); ``mask`` selects which entries are samples."""
        x = np.asarray(x, dtype=float)
        if x.size == 0:
            return
        w = np.ones_like(x) if mask is None else np.asarray(mask, dtype=float)
        nb = w.sum(axis=0)
        has = nb > 0
        mb = np.divide((x * w).sum(axis=0), nb, out=np.zeros_like(self.mean), where=has)
        m2b = (((x - mb) * w) ** 2).sum(axis=0)
        tot = self.count + nb
        delta = mb - self.mean
        frac = np.divide(nb, tot, out=np.zeros_like(self.mean), where=tot > 0)
        self.mean = self.mean + delta * frac
        self._m2 = self._m2 + m2b + delta**2 * self.count * frac
        self.count = self.count + nb.astype(np.int64)

    @property
    def variance(self) -> np.ndarray:
        """Unbiased sample variance (``inf`` with fewer than two samples)."""
        out = np.full_like(self.mean, np.inf)
        ok = self.count > 1
        out[ok] = self._m2[ok] / (self.count[ok] - 1)
        return out

    @property
    def stderr(self) -> np.ndarray:
        out = np.full_like(self.mean, np.inf)
        ok = self.count > 1
        out[ok] = np.sqrt(self.variance[ok] / self.count[ok])
        return out


# --------------------------------------------------------------------------- shared machinery


def _make_rng(seed) -> tuple[np.random.Generator, object]:
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.default_rng(ss), ss.entropy


def _as_cache(utility: Utility, n: int) -> CachedUtility:
    return utility if isinstance(utility, CachedUtility) else CachedUtility(utility, n)


def _samples_fitting(cache: CachedUtility, keys: np.ndarray, budget: float) -> int:
    """Largest number of leading samples whose distinct unseen keys fit in ``budget``.

    ``keys`` has shape ``(n_samples, keys_per_sample)``, in processing order.
    """
    n_samples, per = keys.shape
    flat = keys.reshape(-1)
    unseen = np.flatnonzero(~cache.is_cached(flat))
    if unseen.size == 0:
        return n_samples
    _, first = np.unique(flat[unseen], return_index=True)
    new_per_sample = np.bincount(unseen[first] // per, minlength=n_samples)
    return int(np.searchsorted(np.cumsum(new_per_sample), budget, side="right"))


def _permutations_fitting(cache: CachedUtility, pos: np.ndarray, budget: float, per_sample: int) -> int:
    """How many leading permutations (whole samples of ``per_sample``) fit ``budget`` new evaluations."""
    b, n = pos.shape
    coal = pos[:, None, :] < np.arange(1, n)[None, :, None]
    fit = _samples_fitting(cache, coalitions_to_masks(coal.reshape(-1, n)).reshape(b, n - 1), budget)
    return fit - fit % per_sample


def _max_evaluations(n: int) -> float:
    return float(2**n) if n <= 62 else math.inf


# --------------------------------------------------------------------------- permutation Shapley


def _scan_prefixes(cache: CachedUtility, pos: np.ndarray, ends: tuple[float, float], step: int, tol: float,
                   truncate_all: bool) -> tuple[np.ndarray, np.ndarray]:
    """Marginals by position ``(b, n)`` of a batch of permutations (``pos``: positions by player), scanned
    ``step`` prefix lengths per utility call; a permutation is truncated (later marginals 0) once a prefix is
    within ``tol * |u(N)|`` of ``u(N)``. Also returns where each permutation was truncated (``n``: never)."""
    b, n = pos.shape
    u_empty, u_full = ends
    thr = tol * abs(u_full)
    vals = np.full((b, n + 1), np.nan)
    vals[:, 0], vals[:, n] = u_empty, u_full
    trunc = np.full(b, 0 if truncate_all else n)  # marginals at positions >= trunc are 0
    active = np.full(b, not truncate_all)
    k = 1
    while k < n and active.any():
        ks = np.arange(k, min(k + step, n))
        idx = np.flatnonzero(active)
        coal = pos[idx][:, None, :] < ks[None, :, None]
        v = cache(coal.reshape(-1, n)).reshape(idx.size, ks.size)
        vals[idx[:, None], ks[None, :]] = v
        if tol > 0:
            close = np.abs(u_full - v) < thr
            hit = close.any(axis=1)
            if hit.any():
                trunc[idx[hit]] = ks[close[hit].argmax(axis=1)]
                active[idx[hit]] = False
        k = int(ks[-1]) + 1
    marg_pos = np.diff(vals, axis=1)
    marg_pos[np.arange(1, n + 1)[None, :] > trunc[:, None]] = 0.0
    return marg_pos, trunc


def _permutation_batching(n: int, tol: float, antithetic: bool, batch_size: int,
                          lookahead: int | None) -> tuple[int, int]:
    """Checked ``(batch_size, step)`` of :func:`permutation_shapley`: an even batch with antithetic pairs; by
    default every prefix in one call without truncation, one prefix per call with it."""
    if n < 1:
        raise ValueError("n_players must be >= 1")
    if tol < 0:
        raise ValueError("truncation_tol must be >= 0")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if antithetic:
        batch_size += batch_size % 2
    step = max(1, n - 1) if lookahead is None and tol == 0 else int(lookahead or 1)
    if step < 1:
        raise ValueError("lookahead must be >= 1")
    return batch_size, step


def permutation_shapley(
    utility: Utility,
    n_players: int,
    stopping: StoppingCriterion,
    *,
    truncation_tol: float = 0.0,
    antithetic: bool = False,
    batch_size: int = 32,
    lookahead: int | None = None,
    seed=None,
) -> ValuationResult:
    """Monte Carlo permutation Shapley with GTG-style within-round truncation.

    Each permutation is scanned prefix by prefix; once ``|u(N) - u(prefix)| <
    truncation_tol * |u(N)|`` (the empty prefix included), the remaining marginals are 0
    and not evaluated. ``truncation_tol=0`` disables truncation (unbiased estimator).

    Prefixes of a whole batch of permutations are evaluated together: ``lookahead``
    prefix positions per utility call (default: all ``n - 1`` in one call without
    truncation, 1 with truncation). The estimate does not depend on ``lookahead``; a
    larger one trades evaluations past the truncation point for fewer utility calls.

    With ``antithetic=True`` each permutation is paired with its reverse and a sample is
    the pair's average (``counts`` then counts pairs). Deterministic given ``seed``.
    """
    n = int(n_players)
    batch_size, step = _permutation_batching(n, truncation_tol, antithetic, batch_size, lookahead)
    sampler = PermutationSampler(n, antithetic=antithetic, seed=seed)
    cache = _as_cache(utility, n)
    ev0, calls0 = cache.evaluations, cache.calls
    t0 = time.perf_counter()
    ends = np.zeros((2, n), dtype=bool)
    ends[1] = True
    u_empty, u_full = cache(ends)
    truncate_all = truncation_tol > 0 and abs(u_full - u_empty) < truncation_tol * abs(u_full)

    moments = RunningMoments(n)
    n_perms = n_truncated = iterations = 0

    def state() -> SamplerState:
        return SamplerState(
            n_players=n,
            evaluations=cache.evaluations - ev0,
            samples=n_perms,
            counts=moments.count.copy(),
            values=moments.mean.copy(),
            stderr=moments.stderr,
            iterations=iterations,
            elapsed_s=time.perf_counter() - t0,
            max_evaluations=_max_evaluations(n),
        )

    while True:
        st = state()
        if stopping(st):
            reason = ", ".join(stopping.triggered(st))
            break
        perms, pos = sampler.draw(batch_size)

        budget = stopping.remaining_evaluations(st)
        if budget < perms.shape[0] * (n - 1) and not truncate_all:
            fit = _permutations_fitting(cache, pos, budget, sampler.per_sample)
            if fit == 0:
                reason = f"evaluation budget exhausted ({stopping!r})"
                break
            perms, pos = perms[:fit], pos[:fit]

        b = perms.shape[0]
        marg_pos, trunc = _scan_prefixes(cache, pos, (u_empty, u_full), step, truncation_tol, truncate_all)
        moments.update(sampler.samples(np.take_along_axis(marg_pos, pos, axis=1)))
        n_perms += b
        n_truncated += int((trunc < n).sum())
        iterations += 1

    st = state()
    return ValuationResult(
        values=moments.mean,
        stderr=moments.stderr,
        evaluations=st.evaluations,
        method="permutation_shapley",
        counts=moments.count,
        residuals={"efficiency": efficiency_residual(moments.mean, u_full, u_empty)}
        if n_perms
        else {},
        info={
            "permutations": n_perms,
            "truncated_permutations": n_truncated,
            "truncation_tol": float(truncation_tol),
            "antithetic": bool(antithetic),
            "batch_size": int(batch_size),
            "lookahead": int(step),
            "utility_calls": cache.calls - calls0,
            "iterations": iterations,
            "stop_reason": reason,
            "seed_entropy": str(sampler.entropy),
            "u_empty": float(u_empty),
            "u_grand": float(u_full),
        },
    )


# --------------------------------------------------------------------------- MSR Banzhaf


def msr_banzhaf(
    utility: Utility,
    n_players: int,
    stopping: StoppingCriterion,
    *,
    batch_size: int = 256,
    seed=None,
) -> ValuationResult:
    """Maximum-sample-reuse Banzhaf: every sampled coalition updates every player.

    Coalitions are drawn uniformly (each player in with probability 1/2); the value of
    ``i`` is ``mean(u(S) | i in S) - mean(u(S) | i not in S)`` with standard error
    ``sqrt(var_in / n_in + var_out / n_out)``. ``counts`` are coalitions sampled.
    """
    n = int(n_players)
    if n < 1:
        raise ValueError("n_players must be >= 1")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rng, entropy = _make_rng(seed)
    cache = _as_cache(utility, n)
    ev0, calls0 = cache.evaluations, cache.calls
    t0 = time.perf_counter()
    m_in, m_out = RunningMoments(n), RunningMoments(n)
    samples = iterations = 0

    def current() -> tuple[np.ndarray, np.ndarray]:
        se = np.sqrt(
            m_in.variance / np.maximum(m_in.count, 1) + m_out.variance / np.maximum(m_out.count, 1)
        )  # inf until both sides have two samples
        return m_in.mean - m_out.mean, se

    def state() -> SamplerState:
        v, se = current()
        return SamplerState(
            n_players=n,
            evaluations=cache.evaluations - ev0,
            samples=samples,
            counts=m_in.count + m_out.count,
            values=v,
            stderr=se,
            iterations=iterations,
            elapsed_s=time.perf_counter() - t0,
            max_evaluations=_max_evaluations(n),
        )

    while True:
        st = state()
        if stopping(st):
            reason = ", ".join(stopping.triggered(st))
            break
        coal = rng.random((batch_size, n)) < 0.5
        budget = stopping.remaining_evaluations(st)
        if budget < batch_size:
            fit = _samples_fitting(cache, coalitions_to_masks(coal)[:, None], budget)
            if fit == 0:
                reason = f"evaluation budget exhausted ({stopping!r})"
                break
            coal = coal[:fit]
        u = cache(coal)
        vals = np.broadcast_to(u[:, None], coal.shape)
        m_in.update(vals, coal)
        m_out.update(vals, ~coal)
        samples += coal.shape[0]
        iterations += 1

    st = state()
    return ValuationResult(
        values=st.values,
        stderr=st.stderr,
        evaluations=st.evaluations,
        method="msr_banzhaf",
        counts=st.counts,
        info={
            "samples": samples,
            "batch_size": int(batch_size),
            "utility_calls": cache.calls - calls0,
            "iterations": iterations,
            "stop_reason": reason,
            "seed_entropy": str(entropy),
        },
    )
