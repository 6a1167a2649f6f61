"""Run-level contribution audit: every stored round valued, per-client evidence, flags and artifacts.

Per round (one :class:`~fedmm.audit.utility.RoundGame` each), Shapley values with their
per-validation-sample evidence (:mod:`fedmm.audit.samplewise`): by default antithetic
permutation sampling until the Monte Carlo SE is ``mc_rel_tol`` of the validation SE; with
``estimator: exact`` all 2^n coalitions up to ``exact_max_players`` clients, with Banzhaf
values and the axiom self-checks on the full utility table. Leave-one-out, cosine to the
FedAvg aggregate update (and to the others' aggregate) and update norms always; clustered
Shapley when configured. Every value has a standard error clustered over the validation set
(:mod:`fedmm.audit.inference`) plus its Monte Carlo part, and a t interval. With
``linearised`` the estimators value the first-order approximation of each game
(:class:`~fedmm.audit.utility.LinearisedGame`) and each round records its error against the
true game on random coalitions.

Per client over the run (:func:`client_summary`): cumulative value (per-sample values summed
over rounds, so rounds sharing the validation set are correlated as they are), its interval,
Holm-adjusted p-value, minimum detectable effect, verdict, flags with their evidence and
thresholds, rank, share of the total gain and a suggested aggregation weight (negative
values clipped to 0, normalised).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from fedmm.artifacts import read_json, read_npz, write_json
from fedmm.config import AuditConfig
from fedmm.data.federated import FederatedData, split_tensors
from fedmm.data.prepare import PreparedData
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.seeding import rng_for, seed_sequence
from fedmm.tensors import TensorData

from . import plots as audit_plots
from .axioms import efficiency_residual
from .clustered import aggregation_weights, clustered_shapley
from .exact import exact_from_table, utility_table
from .game import CachedUtility, TableGame
from .html import render_html, render_not_auditable
from .inference import (
    BootstrapStatistic,
    MeanStatistic,
    holm,
    min_detectable_effect,
    non_overlapping,
    t_interval,
    validation_groups,
)
from .result import ValuationResult
from .samplewise import RoundEstimate, exact_round, sampled_round
from .sampling import (
    MaxEvaluations,
    SamplerState,
    StoppingCriterion,
    msr_banzhaf,
    permutation_shapley,
)
from .signals import cosine_to_aggregate, median_cosine_to_others, update_norms
from .store import LAYOUT_FILE, UpdateStore
from .utility import RoundGame

__all__ = [
    "AUDITED",
    "NOT_AUDITABLE",
    "AuditReport",
    "RoundAudit",
    "audit_round",
    "audit_updates",
    "audit_validation",
    "client_summary",
    "make_statistic",
    "clustered_aggregation_weights",
    "federated_modalities",
    "load_round_game",
]

ROUNDS_FILE, CLIENTS_FILE, META_FILE = "rounds", "clients", "audit.json"
AUDITED, NOT_AUDITABLE = "audited", "not_auditable"  # an audit's state
_PERMUTATION_BATCH = 16  # permutations per batch: the convergence trace's resolution
CLIENT_FIELDS = (
    "client", "value", "stderr", "val_stderr", "mc_stderr", "ci_low", "ci_high", "ci_half_width", "p_value", "p_holm", "mde", "verdict",
    "flags", "rounds", "median_norm_ratio", "rms_cosine_others", "p_independent", "median_cosine",
    "median_cosine_high", "p_opposed", "top_group", "top_group_share",
    "rank", "share", "suggested_weight",
)
PLOTS = {"heatmap": "values_heatmap.png", "cumulative": "cumulative_values.png", "convergence": "convergence.png"}
HTML_FILE = "report.html"


# --------------------------------------------------------------------------- one round


class _Trace(StoppingCriterion):
    """Never stops; records values and standard errors after every batch (convergence plot)."""

    def __init__(self):
        self.points: list[tuple[int, list[float], list[float]]] = []

    def __call__(self, state: SamplerState) -> bool:
        if state.counts.size and state.counts.min() >= 2:
            self.points.append((state.evaluations, state.values.tolist(), state.stderr.tolist()))
        return False

    def __repr__(self):
        return "Trace()"


def _sampled_shapley(utility, n: int, budget: int, seed) -> tuple[ValuationResult, dict]:
    trace = _Trace()
    res = permutation_shapley(utility, n, trace | MaxEvaluations(budget), antithetic=True,
                              batch_size=_PERMUTATION_BATCH, seed=seed)
    return res, {"evaluations": [p[0] for p in trace.points], "values": [p[1] for p in trace.points],
                 "stderr": [p[2] for p in trace.points]}


def clustered_aggregation_weights(game, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """FedMobile-style weights for a round: clustered Shapley values, negatives clipped, normalised.

    ``game`` is a :class:`RoundGame` (or anything with ``n_players`` and ``deltas`` that
    evaluates coalition matrices); clients are clustered on their updates and exact values
    are computed over the ``n_clusters`` clusters (``2^n_clusters`` evaluations). Weights are
    in the game's player order.
    """
    if game.n_players <= n_clusters:
        res = exact_from_table(utility_table(game, game.n_players), game.n_players)[0]
    else:
        res, _ = clustered_shapley(game, game.deltas, n_clusters, seed=seed)
    return aggregation_weights(res.values)


@dataclass
class RoundAudit:
    """One round's rows (one per client), its record for the JSON, its estimate (values, evidence,
    Monte Carlo variance) and, for exact rounds, the utility table."""

    rows: pd.DataFrame
    record: dict
    estimate: RoundEstimate
    table: np.ndarray | None = None
    trace: dict | None = None


def make_statistic(config: AuditConfig, groups: np.ndarray, key: str, labels: np.ndarray, num_classes: int,
                   seed: int = 0):
    """The validation-sampling statistic of the configured metric (see :mod:`fedmm.audit.inference`)."""
    if config.metric == "macro_f1":
        return BootstrapStatistic(groups, labels, num_classes, config.bootstrap_replicates, seed, key)
    return MeanStatistic(groups, key)


def audit_round(
    game: RoundGame,
    config: AuditConfig,
    statistic=None,
    *,
    seed: int = 0,
    client_modalities: Mapping[int, Sequence[str]] | None = None,
) -> RoundAudit:
    """Value every client of one round; see the module docstring for what is computed.

    ``statistic`` (:func:`make_statistic`) says how validation samples are grouped; by
    default every sample is its own cluster.
    """
    t0 = time.perf_counter()
    n, r = game.n_players, game.server_round
    if statistic is None:
        statistic = make_statistic(config, np.arange(len(game.data)), "sample", game.data.labels.cpu().numpy(),
                                   game.num_classes, seed)
    cosine = cosine_to_aggregate(game.deltas, game.fixed_weights)
    cosine_others = cosine_to_aggregate(game.deltas, game.fixed_weights, exclude_self=True)
    norms = update_norms(game.deltas)
    median_cosine = median_cosine_to_others(game.deltas)
    key = -1 if r is None else r
    played = game.linearised() if config.linearised else game
    record: dict[str, Any] = {"round": r, "game": played.game_definition()}
    if config.linearised and config.linearised_check:
        check = rng_for(seed, "audit", "linearised", key).random((config.linearised_check, n)) < 0.5
        record["linearised_error"] = played.error(check)
    banzhaf = np.full(n, np.nan)
    banzhaf_se = np.full(n, np.nan)
    exact = n < 2 or (config.estimator == "exact" and n <= config.exact_max_players)
    if exact:
        est = exact_round(played.rows, statistic, n)
    else:
        ss = seed_sequence(seed, "audit", "shapley", key)
        est, store = sampled_round(played.rows, statistic, n, rel_tol=config.mc_rel_tol, min_pairs=config.min_samples,
                                   max_evaluations=config.max_evaluations, antithetic=config.antithetic, seed=ss)
    full = 2**n - 1
    if est.table is not None:
        table = est.table
        loo = table[full] - table[full ^ (1 << np.arange(n))]
        banzhaf, banzhaf_se = est.info["banzhaf"], np.zeros(n)
        record["banzhaf_residuals"] = est.info["banzhaf_residuals"]
        utility = TableGame(table)
    else:
        table = None
        drop_one = np.ones((n + 1, n), dtype=bool)
        drop_one[np.arange(1, n + 1), np.arange(n)] = False
        index = store.lookup(drop_one)  # before reading store.point: the lookup may extend it
        loo = store.point[index[0]] - store.point[index[1:]]
        record["permutations"] = est.info["permutations"]
        utility = CachedUtility(played, n)
        if config.banzhaf_evaluations:
            ss = seed_sequence(seed, "audit", "banzhaf", key)
            banz = msr_banzhaf(utility, n, MaxEvaluations(config.banzhaf_evaluations), seed=ss)
            banzhaf, banzhaf_se = banz.values, banz.stderr
    ends = np.zeros((2, n), dtype=bool)
    ends[1] = True
    u_empty, u_grand = table[[0, full]] if table is not None else store.point[store.lookup(ends)]
    residuals = est.residuals or {"efficiency": efficiency_residual(est.values, u_grand, u_empty)}
    record.update(method=est.method, evaluations=est.evaluations, u_empty=float(u_empty), u_grand=float(u_grand),
                  residuals=residuals, stop_reason=est.info.get("stop_reason", "exact enumeration"))
    clustered = clustered_weight = np.full(n, np.nan)
    if 0 < config.clusters < n:
        cseed = int(seed_sequence(seed, "audit", "clusters", key).generate_state(1)[0])
        cres, labels = clustered_shapley(utility, game.deltas, config.clusters, seed=cseed)
        clustered, clustered_weight = cres.values, aggregation_weights(cres.values)
        record["clustered"] = {"labels": labels.tolist(), "evaluations": cres.evaluations}
        if table is not None:
            err = np.abs(cres.values - est.values)
            record["clustered"].update(mean_abs_error=float(err.mean()), max_abs_error=float(err.max()))
    val_se, mc_se = np.sqrt(statistic.variance(est.evidence)), np.sqrt(est.mc_variance)
    stderr = np.sqrt(val_se**2 + mc_se**2)
    lo, hi = t_interval(est.values, stderr, statistic.n_groups - 1, config.ci_level)
    mods = client_modalities or {}
    rows = pd.DataFrame({
        "round": r,
        "client": game.client_ids,
        "value": est.values,
        "stderr": stderr,
        "val_stderr": val_se,
        "mc_stderr": mc_se,
        "ci_low": lo,
        "ci_high": hi,
        "evaluations": est.evaluations,
        "method": est.method,
        "loo": loo,
        "banzhaf": banzhaf,
        "banzhaf_stderr": banzhaf_se,
        "clustered": clustered,
        "clustered_weight": clustered_weight,
        "cosine": cosine,
        "cosine_others": cosine_others,
        "median_cosine": median_cosine,
        "norm": norms,
        "norm_ratio": norms / max(float(np.median(norms)), np.finfo(float).tiny),
        "num_examples": game.num_examples.astype(np.int64),
        "fedavg_weight": game.fixed_weights,
        "modalities": ["+".join(mods.get(int(c), [])) for c in game.client_ids],
        "metric": game.metric,
        "weighting": game.weighting,
        "validation_sha256": game.validation_sha256,
    })
    record["clients"] = rows[["client", "value", "stderr", "ci_low", "ci_high"]].assign(
        ci_half_width=(hi - lo) / 2).to_dict("records")
    record["seconds"] = time.perf_counter() - t0
    return RoundAudit(rows=rows, record=record, estimate=est, table=table, trace=est.trace)


def _clean(x: Any) -> Any:
    """JSON-safe copy: numpy to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------- over the run


VERDICTS = ("harmful", "insufficient evidence", "not harmful")


def client_summary(audits: Sequence[RoundAudit], statistic, config: AuditConfig) -> tuple[pd.DataFrame, AuditFlags]:
    """Per-client table over the run and the flags with their evidence (see :class:`AuditConfig`).

    A client's cumulative value sums its per-round values; its evidence (per-sample values,
    or bootstrap replicates) sums the same way, so the validation variance of the sum
    accounts for rounds sharing one validation set; the rounds' Monte Carlo variances add.
    ``harmful`` needs the Holm-adjusted one-sided p-value (H1: value < 0; t test on ``G - 1``
    degrees of freedom) below ``alpha`` and the CI's upper bound below ``-min_effect``.

    Direction (``anomalous`` when opposed): each round's median cosine to the other clients'
    updates is one replicate; one-sided t-test over the client's T rounds (H0: mean >= 0, T - 1
    df), Holm-adjusted over clients, and the CI's upper bound must lie below ``-min_cosine``.
    Given the training history a round's cosine is its mean for that model state plus noise
    from fresh local minibatches (a martingale difference), so the sample variance, which also
    holds the drift of the per-round means over training, makes the test conservative.
    """
    rounds = pd.concat([a.rows for a in audits], ignore_index=True)
    clients = np.unique(rounds["client"].to_numpy())
    where = {int(c): j for j, c in enumerate(clients)}
    evidence = np.zeros((clients.size, audits[0].estimate.evidence.shape[1]))
    mc = np.zeros(clients.size)
    for a in audits:
        pos = [where[int(c)] for c in a.rows["client"]]
        evidence[pos] += a.estimate.evidence
        mc[pos] += a.estimate.mc_variance
    val_var = statistic.variance(evidence)
    g = rounds.groupby("client", sort=True)
    n_rounds = g.size().to_numpy()
    cos_sq = rounds.assign(sq=rounds["cosine_others"] ** 2).groupby("client", sort=True)["sq"].sum().to_numpy()
    n_parameters = int(audits[0].record["game"]["n_parameters"])
    out = pd.DataFrame({
        "client": clients,
        "value": g["value"].sum().to_numpy(),
        "stderr": np.sqrt(val_var + mc),
        "val_stderr": np.sqrt(val_var),
        "mc_stderr": np.sqrt(mc),
        "rounds": n_rounds,
        "loo": g["loo"].sum().to_numpy(),
        "banzhaf": g["banzhaf"].sum(min_count=1).to_numpy(),
        "mean_cosine": g["cosine"].mean().to_numpy(),
        "rms_cosine_others": np.sqrt(cos_sq / n_rounds),
        # an update independent of the others' has cosine ~ N(0, 1/P) in each round: P * sum cos^2 ~ chi2(T)
        "p_independent": stats.chi2.sf(n_parameters * cos_sq, n_rounds),
        "median_norm_ratio": g["norm_ratio"].median().to_numpy(),
        "num_examples": g["num_examples"].max().to_numpy(),
        "modalities": g["modalities"].first().to_numpy(),
    })
    df = statistic.n_groups - 1
    out["ci_low"], out["ci_high"] = t_interval(out["value"], out["stderr"], df, config.ci_level)
    out["ci_half_width"] = (out["ci_high"] - out["ci_low"]) / 2
    se = out["stderr"].to_numpy()
    value = out["value"].to_numpy()
    out["p_value"] = _p_below_zero(value, se, df)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    # direction: per-round median cosine to the other clients' updates, rounds as replicates (t on T - 1 df)
    cos = g["median_cosine"]
    cos_se = (cos.std(ddof=1) / np.sqrt(n_rounds)).to_numpy()
    out["median_cosine"] = cos.mean().to_numpy()
    with np.errstate(invalid="ignore"):
        out["median_cosine_high"] = t_interval(out["median_cosine"], cos_se, n_rounds - 1, config.ci_level)[1]
        p_opposed = _p_below_zero(out["median_cosine"].to_numpy(), cos_se, n_rounds - 1)
    finite = np.isfinite(p_opposed)
    out["p_opposed"] = np.nan
    out.loc[finite, "p_opposed"] = holm(p_opposed[finite])
    out["mde"] = min_detectable_effect(se, df, config.alpha / len(out), config.mde_power)
    parts, ids = statistic.group_contributions(evidence)
    if parts is not None:  # the cluster contributing most in the value's direction, and its share of |evidence|
        signed = parts * np.sign(value)[:, None]
        top = signed.argmax(axis=1)
        out["top_group"] = ids[top]
        total_abs = np.abs(parts).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["top_group_share"] = np.where(total_abs > 0, signed[np.arange(len(out)), top] / total_abs, np.nan)
    else:
        out["top_group"], out["top_group_share"] = -1, np.nan
    out["rank"] = out["value"].rank(ascending=False, method="min").astype(np.int64)
    total = float(out["value"].sum())
    out["share"] = out["value"] / total if abs(total) > np.finfo(float).eps else np.nan
    out["suggested_weight"] = aggregation_weights(out["value"].to_numpy())

    harmful = (out["p_holm"] < config.alpha) & (out["ci_high"] < -config.min_effect)
    opposed = (out["p_opposed"] < config.alpha) & (out["median_cosine_high"] < -config.min_cosine)
    # RMS cosine a random direction stays below with probability 1 - alpha over T rounds: the noise test
    # only applies where this is below min_cosine (enough parameters to tell noise from signal)
    noise_floor = {t: float(np.sqrt(stats.chi2.ppf(1 - config.alpha, t) / (t * n_parameters))) for t in set(n_rounds)}
    out["verdict"] = np.where(harmful, VERDICTS[0], np.where(out["ci_low"] < -config.min_effect, VERDICTS[1],
                                                             VERDICTS[2]))
    thresholds = {
        "alpha": config.alpha,
        "min_effect": config.min_effect,
        "ci_level": config.ci_level,
        "multiple_testing": "holm",
        "power_for_mde": config.mde_power,
        "free_rider_norm": config.free_rider_norm,
        "min_cosine": config.min_cosine,
        "noise_rms_cosine_floor": max(noise_floor.values()),
        "anomalous_norm_ratio": config.anomalous_norm_ratio,
        "direction_test": "one-sided t over rounds of the median cosine to each other client's update, holm",
        **statistic.describe(),
    }
    flags: dict[str, list[dict]] = {}
    labels = []
    for row, is_harmful, is_opposed in zip(out.itertuples(index=False), harmful, opposed):
        evidence_row = {k: getattr(row, k) for k in (
            "value", "stderr", "ci_low", "ci_high", "p_value", "p_holm", "mde", "median_norm_ratio",
            "rms_cosine_others", "p_independent", "median_cosine", "median_cosine_high", "p_opposed")}
        found = []
        if is_harmful:
            found.append(("harmful", "Holm-adjusted p < alpha and the CI lies below -min_effect"))
        if row.median_norm_ratio <= config.free_rider_norm:
            found.append(("free_rider", "zero update: median update norm / the round's median norm <= free_rider_norm"))
        elif row.rms_cosine_others < config.min_cosine and noise_floor[row.rounds] < config.min_cosine:
            found.append(("free_rider", "noise update: root-mean-square cosine to the others' aggregate < min_cosine"))
        if row.median_norm_ratio > config.anomalous_norm_ratio:
            found.append(("anomalous", "median update norm / the round's median norm > anomalous_norm_ratio"))
        if is_opposed:
            found.append(("anomalous", "update opposed to the others': the per-round median cosine to the other "
                                       "clients' updates has Holm-adjusted p < alpha and its CI lies below -min_cosine"))
        if found:
            flags[str(int(row.client))] = [{"flag": f, "rule": why, "evidence": evidence_row} for f, why in found]
        labels.append(",".join(dict.fromkeys(f for f, _ in found)))
    out["flags"] = labels
    return out, AuditFlags(_clean(thresholds), _clean(flags), _clean(total))


def _p_below_zero(mean: np.ndarray, se: np.ndarray, df) -> np.ndarray:
    """One-sided t-test p-values of H0: the mean is at least 0 (a zero SE gives 0 or 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean < 0, -np.inf, np.inf))
        return stats.t.cdf(tstat, df)


def _convergence(audits: list[RoundAudit], config: AuditConfig, seed: int) -> dict | None:
    """Values vs evaluations for one round: the largest sampled one, else the largest exact one
    re-estimated by sampling from its utility table (no model evaluations) against its exact values."""
    sampled = [a for a in audits if a.trace is not None]
    if sampled:
        a = max(sampled, key=lambda a: len(a.rows))
        return {"round": a.record["round"], "clients": a.rows["client"].tolist(), "exact": None, **a.trace}
    exact = [a for a in audits if a.table is not None and len(a.rows) > 1]
    if not exact:
        return None
    a = max(exact, key=lambda a: (len(a.rows), a.record["round"] or 0))
    n = len(a.rows)
    budget = min(config.max_evaluations, 2**n)
    _, trace = _sampled_shapley(TableGame(a.table), n, budget, seed_sequence(seed, "audit", "convergence"))
    return {
        "round": a.record["round"], "clients": a.rows["client"].tolist(), "exact": a.rows["value"].tolist(), **trace,
    }


# --------------------------------------------------------------------------- the report


@dataclass
class AuditFlags:
    """The flags of an audit: the thresholds they were decided with, the flagged clients (id as string ->
    ``[{"flag", "evidence"}, ...]``) and the run's total gain (sum of the clients' values)."""

    thresholds: dict[str, Any]
    clients: dict[str, list[dict]]
    total_gain: float

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds, "clients": self.clients, "total_gain": self.total_gain}

    @classmethod
    def from_dict(cls, payload: dict) -> AuditFlags:
        return cls(payload["thresholds"], payload["clients"], payload["total_gain"])


@dataclass
class AuditMeta:
    """The audit's JSON record (``audit.json``), from which its page is rendered.

    ``rounds`` and ``clients`` hold the per-round records and per-client rows; ``game``
    describes the cooperative game and its inference (None when nothing was audited, and
    ``reason`` says why); ``convergence`` traces one round's estimate. The training and
    partition hashes, the partition's corruption ground truth and the detection quality are
    filled in by the stage that audits a training run.
    """

    state: str
    config: AuditConfig
    seed: int
    rounds: list[dict]
    clients: list[dict]
    flags: AuditFlags
    game: dict | None = None
    convergence: dict | None = None
    reason: str | None = None
    training_fingerprint: str | None = None
    partition_sha256: str | None = None
    corruption_ground_truth: list[dict] | None = None
    detection: dict | None = None

    def to_dict(self) -> dict:
        payload = {"state": self.state, "config": self.config.model_dump(mode="json"), "seed": self.seed,
                   "rounds": self.rounds, "clients": self.clients, "flags": self.flags.to_dict()}
        if self.state == AUDITED:
            payload.update(game=self.game, convergence=self.convergence)
        for name in _META_OPTIONAL:
            if getattr(self, name) is not None:
                payload[name] = getattr(self, name)
        return payload

    @classmethod
    def from_dict(cls, payload: dict) -> AuditMeta:
        return cls(payload.get("state", AUDITED), AuditConfig.model_validate(payload["config"]), payload["seed"],
                   payload["rounds"], payload["clients"], AuditFlags.from_dict(payload["flags"]), payload.get("game"),
                   payload.get("convergence"), **{name: payload.get(name) for name in _META_OPTIONAL})


_META_OPTIONAL = ("reason", "training_fingerprint", "partition_sha256", "corruption_ground_truth", "detection")


@dataclass
class AuditReport:
    """The audit's tables (per round and client; per client over the run) and its JSON record."""

    rounds: pd.DataFrame
    clients: pd.DataFrame
    meta: AuditMeta

    @classmethod
    def not_auditable(cls, reason: str, config: AuditConfig = AuditConfig(), seed: int = 0) -> AuditReport:
        """The record of a run with nothing to value (e.g. its clients send no parameter deltas), and why."""
        meta = AuditMeta(NOT_AUDITABLE, config, seed, [], [], AuditFlags({}, {}, 0.0), reason=reason)
        return cls(rounds=pd.DataFrame(), clients=pd.DataFrame(columns=list(CLIENT_FIELDS)), meta=meta)

    @property
    def state(self) -> str:
        """``audited``, or ``not_auditable`` (``meta.reason`` says why)."""
        return self.meta.state

    @property
    def flags(self) -> dict[str, list[dict]]:
        """Flagged clients (id as string) -> ``[{"flag", "evidence"}, ...]``."""
        return self.meta.flags.clients

    def suggested_weights(self) -> dict[int, float]:
        return dict(zip(self.clients["client"].astype(int), self.clients["suggested_weight"].astype(float)))

    def summary(self) -> dict[str, float]:
        """Scalars for tracking: total gain, flagged clients, worst axiom residuals, evaluations."""
        res = [r["residuals"] for r in self.meta.rounds]
        worst = lambda key: max((float(x[key]) for x in res if key in x), default=0.0)
        return {
            "audit_rounds": float(len(self.meta.rounds)),
            "audit_total_gain": float(self.meta.flags.total_gain),
            "audit_flagged_clients": float(len(self.flags)),
            "audit_efficiency_residual_max": worst("efficiency"),
            "audit_symmetry_residual_max": worst("symmetry"),
            "audit_null_player_residual_max": worst("null_player"),
            "audit_evaluations": float(sum(r["evaluations"] for r in self.meta.rounds)),
        }

    def save(self, directory: str | Path, plots: bool = True) -> Path:
        """Write tables (Parquet and CSV), ``audit.json`` and, with ``plots``, the PNG plots and ``report.html``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in ((ROUNDS_FILE, self.rounds), (CLIENTS_FILE, self.clients)):
            frame.to_parquet(directory / f"{name}.parquet", index=False)
            frame.to_csv(directory / f"{name}.csv", index=False)
        if plots and self.state == NOT_AUDITABLE:
            (directory / HTML_FILE).write_text(render_not_auditable(self.meta.to_dict()), encoding="utf-8")
        elif plots:
            audit_plots.values_heatmap(self.rounds, directory / PLOTS["heatmap"])
            level = self.meta.config.ci_level
            audit_plots.cumulative_values(self.clients, level, directory / PLOTS["cumulative"])
            images = {"Shapley value per round": directory / PLOTS["heatmap"],
                      "Cumulative value per client": directory / PLOTS["cumulative"]}
            if self.meta.convergence:
                audit_plots.convergence(self.meta.convergence, directory / PLOTS["convergence"], level)
                images["Convergence of the sampled estimate"] = directory / PLOTS["convergence"]
            (directory / HTML_FILE).write_text(render_html(self.meta.to_dict(), images), encoding="utf-8")
        write_json(directory / META_FILE, self.meta.to_dict())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AuditReport:
        directory = Path(directory)
        return cls(
            rounds=pd.read_parquet(directory / f"{ROUNDS_FILE}.parquet"),
            clients=pd.read_parquet(directory / f"{CLIENTS_FILE}.parquet"),
            meta=AuditMeta.from_dict(read_json(directory / META_FILE)),
        )


def load_round_game(
    path: str | Path, model: torch.nn.Module | ModelSpec, val: TensorData, config: AuditConfig = AuditConfig()
) -> RoundGame:
    """The game of one stored ``round_XXXX.npz`` (its update store's ``layout.json`` beside it)."""
    if isinstance(model, ModelSpec):
        model = build_model(model, 0)  # architecture only: every weight comes from the store
    arrays = read_npz(path)
    return RoundGame(
        model, read_json(Path(path).parent / LAYOUT_FILE), arrays["start"], arrays["deltas"],
        arrays["num_examples"], val, client_ids=arrays["client_ids"],
        server_round=int(Path(path).stem.split("_")[-1]), weighting=config.weighting, metric=config.metric,
        memory_mb=config.memory_mb, backend=config.backend,
    )


def _workers(config: AuditConfig, n_rounds: int, device: torch.device) -> int:
    """Rounds audited at once: ``audit.workers``, or one per CPU core (one on a GPU, which batches instead,
    and one for linearised games: torch's forward-mode AD levels are process-wide, not per thread)."""
    if device.type != "cpu" or config.linearised:
        return 1
    return max(1, min(n_rounds, config.workers or len(os.sched_getaffinity(0))))


@contextmanager
def _intra_op_threads(n: int):
    """Run with ``n`` torch CPU threads. Parallel rounds use one each: on a loaded 2-core host two
    intra-op threads per evaluation spin-wait (measured: 1.6x to 8x the wall time of one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def audit_updates(
    updates_dir: str | Path,
    model: torch.nn.Module | ModelSpec,
    val: TensorData,
    config: AuditConfig = AuditConfig(),
    *,
    groups: np.ndarray | None = None,
    group_key: str = "sample",
    client_modalities: Mapping[int, Sequence[str]] | None = None,
    seed: int = 0,
    on_round: Callable[[dict], None] | None = None,
) -> AuditReport:
    """Audit every round stored in an update store (``updates/`` of a training run).

    ``model`` (a module or the :class:`ModelSpec` to build one) only gives the architecture;
    ``val`` is the validation set every coalition model is scored on, ``groups`` its cluster
    ids named by ``group_key`` (default: every sample its own); ``client_modalities`` maps
    client id -> modalities it holds (reported per row). Every random draw is keyed by
    (``seed``, round). ``on_round`` gets each round's JSON record as it finishes.
    """
    paths = UpdateStore(Path(updates_dir)).rounds()
    if not paths:
        raise FileNotFoundError(f"no stored rounds under {updates_dir}")
    if isinstance(model, ModelSpec):
        model = build_model(model, 0)
    if groups is None:
        groups = np.arange(len(val))
    first_game = load_round_game(paths[0], model, val, config)
    statistic = make_statistic(config, groups, group_key, val.labels.cpu().numpy(), first_game.num_classes, seed)

    def audit_path(path) -> RoundAudit:
        game = first_game if path == paths[0] else load_round_game(path, model, val, config)
        return audit_round(game, config, statistic, seed=seed, client_modalities=client_modalities)

    audits = []
    workers = _workers(config, len(paths), val.labels.device)
    with _intra_op_threads(1 if workers > 1 else torch.get_num_threads()), ThreadPoolExecutor(workers) as pool:
        for audit in pool.map(audit_path, paths):  # in round order; every draw is keyed by its round
            audits.append(audit)
            if on_round is not None:
                on_round(audit.record)
    rounds = pd.concat([a.rows for a in audits], ignore_index=True)
    first = audits[0].record["game"]
    clients, flags = client_summary(audits, statistic, config)
    clients = clients.assign(**{k: first[k] for k in ("metric", "weighting", "validation_sha256")})
    game = {
        **{k: first[k] for k in ("weighting", "metric", "utility", "validation_sha256", "n_val", "num_classes")},
        "linearised": config.linearised,
        "inference": statistic.describe(),
    }
    meta = AuditMeta(AUDITED, config, seed, _clean([a.record for a in audits]),
                     _clean(clients[list(CLIENT_FIELDS)].to_dict("records")), flags, _clean(game),
                     _clean(_convergence(audits, config, seed)))
    return AuditReport(rounds=rounds, clients=clients, meta=meta)


def federated_modalities(federated: FederatedData) -> dict[int, list[str]]:
    """Client id -> the modalities it holds."""
    return {k: [m for m, on in zip(federated.modalities, row) if on] for k, row in enumerate(federated.held)}


def audit_validation(prepared: PreparedData, config: AuditConfig, device: str = "cpu") -> tuple[TensorData, np.ndarray, str]:
    """The validation split the audit scores on, its cluster ids and their key.

    With ``validation_windows: non_overlapping`` and a windowed source (``data.window`` >
    ``data.stride`` over recordings), every ``ceil(window / stride)``-th window of each
    recording is kept, so no two kept windows overlap.
    """
    index = prepared.indices("val")
    if not len(index):
        raise ValueError("the prepared data has no validation split (data.val_fraction is 0)")
    dataset = prepared.dataset
    key, _ = validation_groups(dataset.recording[index], dataset.subject[index])
    keep = np.arange(len(index))
    data_config = prepared.manifest["data_config"]
    windowed = prepared.manifest["source"]["name"] != "npz" and key == "recording"
    if config.validation_windows == "non_overlapping" and windowed and data_config["window"] > data_config["stride"]:
        keep = non_overlapping(dataset.recording[index], data_config["window"], data_config["stride"])
    val = split_tensors(prepared, "val", device)
    val = val.take(torch.as_tensor(keep, device=val.labels.device))
    key, groups = validation_groups(dataset.recording[index][keep], dataset.subject[index][keep])
    return val, groups, key
