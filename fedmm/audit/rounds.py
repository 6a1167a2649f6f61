"""One round's contribution audit: Shapley values with their evidence, leave-one-out, update signals.

Per round (one :class:`~fedmm.audit.utility.RoundGame` each), Shapley values with their
per-validation-sample evidence (:mod:`fedmm.audit.samplewise`): by default antithetic
permutation sampling until the Monte Carlo SE is ``mc_rel_tol`` of the validation SE; with
``estimator: exact`` all 2^n coalitions up to ``exact_max_players`` clients, with Banzhaf
values and the axiom self-checks on the full utility table.

At scale (rounds of ``scale_from`` clients or more) a round is valued by Monte Carlo
permutation sampling (Castro, Gomez & Tejada 2009, "Polynomial calculation of the Shapley
value based on sampling", Computers & Operations Research 36(5)) with a fixed budget of
``scale_permutations`` (1) permutations: each client's value is its mean marginal
contribution, an unbiased estimate, and its evidence the same per validation sample. One
permutation gives no per-client variance, so the Monte Carlo variance of a client's marginal
is modelled as ``sigma^2 (FedAvg weight x update norm)^2`` (a marginal contribution scales
with the weighted update) and ``sigma^2`` is measured on one more permutation of which only
the boundaries of blocks of ``scale_block_size`` clients are evaluated
(:func:`~fedmm.audit.samplewise.scale_round`); it is reported and added to the validation SE as
for every sampled round. That is about ``scale_permutations * (n - 1) + n / scale_block_size``
coalition evaluations, each one model on the
validation set (two full permutations, the previous default, cost ``2 (n - 1)``). Exact
leave-one-out would cost ``n`` more, so at scale, for ``neg_log_loss``, it is taken to first
order from one gradient (:meth:`~fedmm.audit.utility.RoundGame.first_order_loo`).

Leave-one-out, cosine to the FedAvg aggregate update (and
to the others' aggregate) and update norms always; clustered Shapley when configured. Every
value has a standard error clustered over the validation set (:mod:`fedmm.audit.inference`)
plus its Monte Carlo part, and a t interval. With ``linearised`` the estimators value the
first-order approximation of each game (:class:`~fedmm.audit.utility.LinearisedGame`) and
each round records its error against the true game on random coalitions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmm.artifacts import read_json
from fedmm.config import AuditConfig
from fedmm.fl.updates import LAYOUT_FILE, UpdateStore
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.seeding import rng_for, seed_sequence
from fedmm.tensors import TensorData

from .axioms import efficiency_residual
from .clustered import aggregation_weights, clustered_shapley
from .exact import exact_from_table, utility_table
from .game import CachedUtility, TableGame
from .inference import BootstrapStatistic, MeanStatistic, t_interval
from .result import ValuationResult
from .samplewise import exact_round, sampled_round, scale_round
from .sampling import MaxEvaluations, msr_banzhaf
from .signals import cosine_to_aggregate, median_cosine_to_others, update_norms
from .utility import RoundGame

__all__ = ["RoundAudit", "audit_round", "clustered_aggregation_weights", "load_round_game", "make_statistic"]


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
    estimate: ValuationResult
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
    norms = update_norms(game.deltas)
    key = -1 if r is None else r
    played = game.linearised() if config.linearised else game
    record: dict[str, Any] = {"round": r, "game": played.game_definition()}
    if config.linearised and config.linearised_check:
        check = rng_for(seed, "audit", "linearised", key).random((config.linearised_check, n)) < 0.5
        record["linearised_error"] = played.error(check)
    est, columns = _shapley_and_coalition_values(game, played, statistic, config, record, seed, key)
    table = est.table
    val_se, mc_se = np.sqrt(statistic.variance(est.evidence)), est.stderr
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
        **columns,
        "cosine": cosine_to_aggregate(game.deltas, game.fixed_weights),
        "cosine_others": cosine_to_aggregate(game.deltas, game.fixed_weights, exclude_self=True),
        "median_cosine": median_cosine_to_others(game.deltas),
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


def _shapley_and_coalition_values(game, played, statistic, config: AuditConfig, record: dict, seed: int, key: int):
    """The round's Shapley estimate, and its leave-one-out, Banzhaf and clustered columns (``record`` gets
    what the JSON keeps of them)."""
    n = game.n_players
    banzhaf = banzhaf_se = np.full(n, np.nan)
    if n < 2 or (config.estimator == "exact" and n <= config.exact_max_players):
        est = exact_round(played.rows, statistic, n)
    else:
        ss = seed_sequence(seed, "audit", "shapley", key)
        at_scale = n >= config.scale_from
        if at_scale:
            est, store = scale_round(played.rows, statistic, n, game.fixed_weights * update_norms(game.deltas),
                                     permutations=config.scale_permutations, block_size=config.scale_block_size, seed=ss)
        else:
            est, store = sampled_round(played.rows, statistic, n, rel_tol=config.mc_rel_tol,
                                       min_pairs=config.min_samples, max_evaluations=config.max_evaluations,
                                       antithetic=config.antithetic, seed=ss)
    full = 2**n - 1
    if est.table is not None:
        loo = est.table[full] - est.table[full ^ (1 << np.arange(n))]
        banzhaf, banzhaf_se = est.info["banzhaf"], np.zeros(n)
        record["banzhaf_residuals"] = est.info["banzhaf_residuals"]
        utility = TableGame(est.table)
        u_empty, u_grand = est.table[[0, full]]
    else:
        if at_scale and played is game and game.metric == "neg_log_loss":
            loo = game.first_order_loo()
            record["loo"] = "first order: (A(N) - A(N - i)) deltas . grad u(N)"
        else:
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
        u_empty, u_grand = store.point[store.lookup(np.arange(n) < np.array([[0], [n]]))]
    residuals = est.residuals or {"efficiency": efficiency_residual(est.values, u_grand, u_empty)}
    record.update(method=est.method, evaluations=est.evaluations, u_empty=float(u_empty), u_grand=float(u_grand),
                  residuals=residuals, stop_reason=est.info.get("stop_reason", "exact enumeration"))
    clustered = clustered_weight = np.full(n, np.nan)
    if 0 < config.clusters < n:
        cseed = int(seed_sequence(seed, "audit", "clusters", key).generate_state(1)[0])
        cres, labels = clustered_shapley(utility, game.deltas, config.clusters, seed=cseed)
        clustered, clustered_weight = cres.values, aggregation_weights(cres.values)
        record["clustered"] = {"labels": labels.tolist(), "evaluations": cres.evaluations}
        if est.table is not None:
            err = np.abs(cres.values - est.values)
            record["clustered"].update(mean_abs_error=float(err.mean()), max_abs_error=float(err.max()))
    return est, {"loo": loo, "banzhaf": banzhaf, "banzhaf_stderr": banzhaf_se, "clustered": clustered,
                 "clustered_weight": clustered_weight}


def load_round_game(
    path: str | Path, model: torch.nn.Module | ModelSpec, val: TensorData, config: AuditConfig = AuditConfig()
) -> RoundGame:
    """The game of one stored ``round_XXXX.npz`` (its update store's ``layout.json`` beside it)."""
    if isinstance(model, ModelSpec):
        model = build_model(model, 0)  # architecture only: every weight comes from the store
    arrays = UpdateStore.read_round(path)
    return RoundGame(
        model, read_json(Path(path).parent / LAYOUT_FILE), arrays["start"], arrays["deltas"],
        arrays["num_examples"], val, client_ids=arrays["client_ids"],
        server_round=int(Path(path).stem.split("_")[-1]), weighting=config.weighting, metric=config.metric,
        memory_mb=config.memory_mb, backend=config.backend,
    )
