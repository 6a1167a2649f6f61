"""Run-level contribution audit: every stored round valued, per-client evidence, flags and artifacts.

Per round (one :class:`~fedmm.audit.utility.RoundGame` each): exact Shapley and Banzhaf when
the round has at most ``exact_max_players`` clients (or 2^n fits the sampling budget), with
the axiom self-checks on the full utility table; beyond that, permutation Shapley under a
budget and stopping rule (standard errors, CIs, evaluation counts). Leave-one-out, cosine to
the FedAvg aggregate update and update norm always; clustered Shapley when configured, with
its error against exact values where those exist. With ``linearised`` the estimators value
the first-order approximation of each game (:class:`~fedmm.audit.utility.LinearisedGame`)
and each round records its error against the true game on random coalitions.

Per client over the run: cumulative value (sum over rounds; standard errors added in
quadrature), rank, share of the total gain, flags with their evidence and thresholds, and a
suggested aggregation weight (negative values clipped to 0, normalised).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from fedmm.artifacts import read_json, read_npz, write_json
from fedmm.config import AuditConfig
from fedmm.fl.tensors import TensorData
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.seeding import rng_for, seed_sequence

from .clustered import aggregation_weights, clustered_shapley
from .exact import exact_from_table, leave_one_out, utility_table
from .game import CachedUtility, TableGame
from .result import ValuationResult, normal_interval
from .sampling import (
    MaxEvaluations,
    SamplerState,
    StandardErrorBelow,
    StoppingCriterion,
    msr_banzhaf,
    permutation_shapley,
)
from .signals import cosine_to_aggregate, update_norms
from .utility import RoundGame

if TYPE_CHECKING:
    from fedmm.data.federated import FederatedData
    from fedmm.data.prepare import PreparedData
    from fedmm.fl.result import TrainResult

__all__ = [
    "AuditReport",
    "RoundAudit",
    "audit_round",
    "audit_updates",
    "audit_run",
    "client_summary",
    "clustered_aggregation_weights",
    "federated_modalities",
    "load_round_game",
]

ROUNDS_FILE, CLIENTS_FILE, META_FILE = "rounds", "clients", "audit.json"
_PERMUTATION_BATCH = 16  # permutations per batch: the convergence trace's resolution
PLOTS = {"heatmap": "values_heatmap.png", "cumulative": "cumulative_values.png", "convergence": "convergence.png"}


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


def _sampling_rule(config: AuditConfig, budget: int) -> StoppingCriterion:
    rule: StoppingCriterion = MaxEvaluations(budget)
    if config.stderr_tol > 0:
        rule = rule | StandardErrorBelow(config.stderr_tol)
    return rule


def _sampled_shapley(utility, n: int, config: AuditConfig, budget: int, seed) -> tuple[ValuationResult, dict]:
    trace = _Trace()
    res = permutation_shapley(
        utility, n, trace | _sampling_rule(config, budget), truncation_tol=config.truncation_tol,
        antithetic=config.antithetic, batch_size=_PERMUTATION_BATCH, seed=seed,
    )
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
    """One round's rows (one per client), its record for the JSON and, for exact rounds, the utility table."""

    rows: pd.DataFrame
    record: dict
    table: np.ndarray | None = None
    trace: dict | None = None


def audit_round(
    game: RoundGame,
    config: AuditConfig,
    *,
    seed: int = 0,
    client_modalities: Mapping[int, Sequence[str]] | None = None,
) -> RoundAudit:
    """Value every client of one round; see the module docstring for what is computed."""
    t0 = time.perf_counter()
    n, r = game.n_players, game.server_round
    cosine = cosine_to_aggregate(game.deltas, game.fixed_weights)
    norms = update_norms(game.deltas)
    key = -1 if r is None else r
    played = game.linearised() if config.linearised else game
    record: dict[str, Any] = {"round": r, "game": played.game_definition()}
    if config.linearised and config.linearised_check:
        check = rng_for(seed, "audit", "linearised", key).random((config.linearised_check, n)) < 0.5
        record["linearised_error"] = played.error(check)
    table = trace = None
    banzhaf = np.full(n, np.nan)
    banzhaf_se = np.full(n, np.nan)
    if n <= config.exact_max_players or 2**n <= config.max_evaluations:  # exact is no dearer than the budget
        table = utility_table(played, n)
        shap, banz = exact_from_table(table, n)
        full = 2**n - 1
        loo = table[full] - table[full ^ (1 << np.arange(n))]
        banzhaf, banzhaf_se = banz.values, banz.stderr
        record["banzhaf_residuals"] = banz.residuals
        utility = TableGame(table)
    else:
        utility = CachedUtility(played, n)
        ss = seed_sequence(seed, "audit", "shapley", key)
        shap, trace = _sampled_shapley(utility, n, config, config.max_evaluations, ss)
        loo = leave_one_out(utility, n).values
        record["stop_reason"] = shap.info["stop_reason"]
        record["permutations"] = shap.info["permutations"]
        if config.banzhaf_evaluations:
            ss = seed_sequence(seed, "audit", "banzhaf", key)
            banz = msr_banzhaf(utility, n, MaxEvaluations(config.banzhaf_evaluations), seed=ss)
            banzhaf, banzhaf_se = banz.values, banz.stderr
    record.update(
        method=shap.method,
        evaluations=shap.evaluations,
        u_empty=shap.info["u_empty"],
        u_grand=shap.info["u_grand"],
        residuals=shap.residuals,
    )
    clustered = clustered_weight = np.full(n, np.nan)
    if 0 < config.clusters < n:
        cseed = int(seed_sequence(seed, "audit", "clusters", key).generate_state(1)[0])
        cres, labels = clustered_shapley(utility, game.deltas, config.clusters, seed=cseed)
        clustered, clustered_weight = cres.values, aggregation_weights(cres.values)
        record["clustered"] = {"labels": labels.tolist(), "evaluations": cres.evaluations}
        if table is not None:
            err = np.abs(cres.values - shap.values)
            record["clustered"].update(mean_abs_error=float(err.mean()), max_abs_error=float(err.max()))
    lo, hi = shap.ci(config.ci_level)
    mods = client_modalities or {}
    rows = pd.DataFrame({
        "round": r,
        "client": game.client_ids,
        "value": shap.values,
        "stderr": shap.stderr,
        "ci_low": lo,
        "ci_high": hi,
        "evaluations": shap.evaluations,
        "method": shap.method,
        "loo": loo,
        "banzhaf": banzhaf,
        "banzhaf_stderr": banzhaf_se,
        "clustered": clustered,
        "clustered_weight": clustered_weight,
        "cosine": cosine,
        "norm": norms,
        "norm_ratio": norms / max(float(np.median(norms)), np.finfo(float).tiny),
        "num_examples": game.num_examples.astype(np.int64),
        "fedavg_weight": game.fixed_weights,
        "modalities": ["+".join(mods.get(int(c), [])) for c in game.client_ids],
        "metric": game.metric,
        "weighting": game.weighting,
        "validation_sha256": game.validation_sha256,
    })
    record["seconds"] = time.perf_counter() - t0
    return RoundAudit(rows=rows, record=record, table=table, trace=trace)


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


def client_summary(rounds: pd.DataFrame, config: AuditConfig) -> tuple[pd.DataFrame, dict]:
    """Per-client table over the run and the flags with their evidence (see :class:`AuditConfig`)."""
    g = rounds.assign(variance=rounds["stderr"] ** 2).groupby("client", sort=True)
    out = pd.DataFrame({
        "value": g["value"].sum(),
        "stderr": np.sqrt(g["variance"].sum()),
        "rounds": g.size(),
        "loo": g["loo"].sum(),
        "banzhaf": g["banzhaf"].sum(min_count=1),
        "mean_cosine": g["cosine"].mean(),
        "median_norm_ratio": g["norm_ratio"].median(),
        "num_examples": g["num_examples"].max(),
        "modalities": g["modalities"].first(),
    }).reset_index()
    out["ci_low"], out["ci_high"] = normal_interval(out["value"], out["stderr"], config.ci_level)
    out["rank"] = out["value"].rank(ascending=False, method="min").astype(np.int64)
    total = float(out["value"].sum())
    out["share"] = out["value"] / total if abs(total) > np.finfo(float).eps else np.nan
    out["suggested_weight"] = aggregation_weights(out["value"].to_numpy())

    scale = float(out["value"].abs().sum())
    negligible = config.negligible_value * scale
    bottom = float(np.quantile(out["value"], config.low_quality_quantile))
    thresholds = {
        "free_rider_norm": config.free_rider_norm,
        "negligible_value": config.negligible_value,
        "negligible_abs": negligible,
        "low_quality_quantile": config.low_quality_quantile,
        "low_quality_value": bottom,
        "low_quality_cosine": config.low_quality_cosine,
    }
    flags: dict[str, list[dict]] = {}
    labels = []
    for row in out.itertuples(index=False):
        found = []
        evidence = {"value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high,
                    "median_norm_ratio": row.median_norm_ratio, "mean_cosine": row.mean_cosine}
        free = row.median_norm_ratio <= config.free_rider_norm and abs(row.value) <= negligible
        harmful = row.ci_high < -negligible
        if free:
            found.append("free_rider")
        if harmful:
            found.append("harmful")
        if not (free or harmful) and row.value <= bottom and row.mean_cosine < config.low_quality_cosine:
            found.append("low_quality")
        if found:
            flags[str(int(row.client))] = [{"flag": f, "evidence": evidence} for f in found]
        labels.append(",".join(found))
    out["flags"] = labels
    return out, {"thresholds": thresholds, "clients": _clean(flags), "total_gain": total}


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
    _, trace = _sampled_shapley(TableGame(a.table), n, config, budget, seed_sequence(seed, "audit", "convergence"))
    return {
        "round": a.record["round"], "clients": a.rows["client"].tolist(), "exact": a.rows["value"].tolist(), **trace,
    }


# --------------------------------------------------------------------------- the report


@dataclass
class AuditReport:
    """The audit's tables (per round and client; per client over the run) and its JSON record."""

    rounds: pd.DataFrame
    clients: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def flags(self) -> dict[str, list[dict]]:
        """Flagged clients (id as string) -> ``[{"flag", "evidence"}, ...]``."""
        return self.meta["flags"]["clients"]

    def suggested_weights(self) -> dict[int, float]:
        return dict(zip(self.clients["client"].astype(int), self.clients["suggested_weight"].astype(float)))

    def summary(self) -> dict[str, float]:
        """Scalars for tracking: total gain, flagged clients, worst axiom residuals, evaluations."""
        res = [r["residuals"] for r in self.meta["rounds"]]
        worst = lambda key: max((float(x[key]) for x in res if key in x), default=0.0)
        return {
            "audit_rounds": float(len(self.meta["rounds"])),
            "audit_total_gain": float(self.meta["flags"]["total_gain"]),
            "audit_flagged_clients": float(len(self.flags)),
            "audit_efficiency_residual_max": worst("efficiency"),
            "audit_symmetry_residual_max": worst("symmetry"),
            "audit_null_player_residual_max": worst("null_player"),
            "audit_evaluations": float(sum(r["evaluations"] for r in self.meta["rounds"])),
        }

    def save(self, directory: str | Path, plots: bool = True) -> Path:
        """Write tables (Parquet and CSV), ``audit.json`` and, with ``plots``, the PNG plots."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in ((ROUNDS_FILE, self.rounds), (CLIENTS_FILE, self.clients)):
            frame.to_parquet(directory / f"{name}.parquet", index=False)
            frame.to_csv(directory / f"{name}.csv", index=False)
        if plots:
            from . import plots as audit_plots

            audit_plots.values_heatmap(self.rounds, directory / PLOTS["heatmap"])
            level = self.meta["config"]["ci_level"]
            audit_plots.cumulative_values(self.clients, level, directory / PLOTS["cumulative"])
            if self.meta.get("convergence"):
                audit_plots.convergence(self.meta["convergence"], directory / PLOTS["convergence"], level)
        write_json(directory / META_FILE, self.meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AuditReport:
        directory = Path(directory)
        return cls(
            rounds=pd.read_parquet(directory / f"{ROUNDS_FILE}.parquet"),
            clients=pd.read_parquet(directory / f"{CLIENTS_FILE}.parquet"),
            meta=read_json(directory / META_FILE),
        )


def load_round_game(
    path: str | Path, model: torch.nn.Module | ModelSpec, val: TensorData, config: AuditConfig = AuditConfig()
) -> RoundGame:
    """The game of one stored ``round_XXXX.npz`` (its update store's ``layout.json`` beside it)."""
    from fedmm.fl.engine import LAYOUT_FILE  # lazy: strategies may import the audit

    if isinstance(model, ModelSpec):
        model = build_model(model, 0)  # architecture only: every weight comes from the store
    arrays = read_npz(path)
    return RoundGame(
        model, read_json(Path(path).parent / LAYOUT_FILE), arrays["start"], arrays["deltas"],
        arrays["num_examples"], val, client_ids=arrays["client_ids"],
        server_round=int(Path(path).stem.split("_")[-1]), weighting=config.weighting, metric=config.metric,
        memory_mb=config.memory_mb, backend=config.backend,
    )


def audit_updates(
    updates_dir: str | Path,
    model: torch.nn.Module | ModelSpec,
    val: TensorData,
    config: AuditConfig = AuditConfig(),
    *,
    client_modalities: Mapping[int, Sequence[str]] | None = None,
    seed: int = 0,
    on_round: Callable[[dict], None] | None = None,
) -> AuditReport:
    """Audit every round stored in an update store (``updates/`` of a training run).

    ``model`` (a module or the :class:`ModelSpec` to build one) only gives the architecture;
    ``val`` is the validation set every coalition model is scored on; ``client_modalities``
    maps client id -> modalities it holds (reported per row). Every random draw is keyed by
    (``seed``, round). ``on_round`` gets each round's JSON record as it finishes.
    """
    from fedmm.fl.engine import UpdateStore  # lazy: strategies may import the audit

    paths = UpdateStore(Path(updates_dir)).rounds()
    if not paths:
        raise FileNotFoundError(f"no stored rounds under {updates_dir}")
    if isinstance(model, ModelSpec):
        model = build_model(model, 0)
    audits = []
    for path in paths:
        game = load_round_game(path, model, val, config)
        audit = audit_round(game, config, seed=seed, client_modalities=client_modalities)
        audits.append(audit)
        if on_round is not None:
            on_round(audit.record)
    rounds = pd.concat([a.rows for a in audits], ignore_index=True)
    first = audits[0].record["game"]
    clients, flags = client_summary(rounds, config)
    clients = clients.assign(**{k: first[k] for k in ("metric", "weighting", "validation_sha256")})
    meta = {
        "config": config.model_dump(mode="json"),
        "seed": seed,
        "game": {
            **{k: first[k] for k in ("weighting", "metric", "utility", "validation_sha256", "n_val", "num_classes")},
            "linearised": config.linearised,
        },
        "rounds": [a.record for a in audits],
        "flags": flags,
        "convergence": _convergence(audits, config, seed),
    }
    return AuditReport(rounds=rounds, clients=clients, meta=_clean(meta))


def federated_modalities(federated: FederatedData) -> dict[int, list[str]]:
    """Client id -> the modalities it holds."""
    return {k: [m for m, on in zip(federated.modalities, row) if on] for k, row in enumerate(federated.held)}


def audit_run(
    result: TrainResult,
    prepared: PreparedData,
    federated: FederatedData,
    config: AuditConfig = AuditConfig(),
    device: str = "cpu",
    *,
    seed: int = 0,
    on_round: Callable[[dict], None] | None = None,
) -> AuditReport:
    """Audit a training run on the prepared validation split (see :func:`audit_updates`)."""
    from fedmm.fl.training import split_tensors  # lazy: strategies may import the audit

    val = split_tensors(prepared, "val", device)
    if not len(val):
        raise ValueError("the prepared data has no validation split (data.val_fraction is 0)")
    report = audit_updates(
        result.updates_dir, result.spec, val, config,
        client_modalities=federated_modalities(federated), seed=seed, on_round=on_round,
    )
    report.meta["training_fingerprint"] = result.fingerprint
    report.meta["partition_sha256"] = federated.content_hash
    return report
