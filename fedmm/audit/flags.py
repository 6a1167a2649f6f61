"""The run's per-client table and the flag rules: harmful, free rider, anomalous, with their evidence.

Per client over the run (:func:`client_summary`): cumulative value (per-sample values summed
over rounds, so rounds sharing the validation set are correlated as they are), its interval,
Holm-adjusted p-value, minimum detectable effect, verdict, flags with their evidence and
thresholds (:func:`flag_clients`), rank, share of the total gain and a suggested aggregation
weight (negative values clipped to 0, normalised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedmm.config import AuditConfig

from .clustered import aggregation_weights
from .inference import holm, min_detectable_effect, t_interval
from .rounds import RoundAudit

__all__ = ["VERDICTS", "AuditFlags", "client_summary", "flag_clients", "json_safe"]


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



def json_safe(x: Any) -> Any:
    """JSON-safe copy: numpy to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


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
    return out, flag_clients(out, statistic, config, n_parameters)


def flag_clients(out: pd.DataFrame, statistic, config: AuditConfig, n_parameters: int) -> AuditFlags:
    """The flag rules (see :func:`client_summary`) over the per-client table; adds its ``verdict`` and ``flags``
    columns and returns the flags with their evidence and thresholds."""
    harmful = (out["p_holm"] < config.alpha) & (out["ci_high"] < -config.min_effect)
    opposed = (out["p_opposed"] < config.alpha) & (out["median_cosine_high"] < -config.min_cosine)
    # RMS cosine a random direction stays below with probability 1 - alpha over T rounds: the noise test
    # only applies where this is below min_cosine (enough parameters to tell noise from signal)
    noise_floor = {t: float(np.sqrt(stats.chi2.ppf(1 - config.alpha, t) / (t * n_parameters)))
                   for t in set(out["rounds"].tolist())}
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
    return AuditFlags(json_safe(thresholds), json_safe(flags), json_safe(float(out["value"].sum())))


def _p_below_zero(mean: np.ndarray, se: np.ndarray, df) -> np.ndarray:
    """One-sided t-test p-values of H0: the mean is at least 0 (a zero SE gives 0 or 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean < 0, -np.inf, np.inf))
        return stats.t.cdf(tstat, df)
