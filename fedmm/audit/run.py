"""The contribution audit of a training run: every stored round valued, the clients summarised and flagged.

:func:`audit_updates` values every round of a run's :class:`~fedmm.fl.updates.UpdateStore`
(:mod:`fedmm.audit.rounds`), summarises and flags the clients (:mod:`fedmm.audit.flags`) and
returns an :class:`~fedmm.audit.report.AuditReport`; :func:`audit_validation` picks the
validation windows and their clusters the audit scores on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedmm.config import AuditConfig
from fedmm.data.federated import FederatedData, split_tensors
from fedmm.data.prepare import PreparedData
from fedmm.fl.updates import UpdateStore
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.seeding import seed_sequence
from fedmm.tensors import TensorData, intra_op_threads

from .flags import client_summary, json_safe
from .game import TableGame
from .inference import non_overlapping, validation_groups
from .report import AUDITED, CLIENT_FIELDS, AuditMeta, AuditReport
from .result import ValuationResult
from .rounds import RoundAudit, audit_round, load_round_game, make_statistic
from .sampling import MaxEvaluations, SamplerState, StoppingCriterion, permutation_shapley

__all__ = ["audit_updates", "audit_validation", "federated_modalities"]

_PERMUTATION_BATCH = 16  # permutations per batch: the convergence trace's resolution


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


def _workers(config: AuditConfig, n_rounds: int, device: torch.device) -> int:
    """Rounds audited at once: ``audit.workers``, or one per CPU core (one on a GPU, which batches instead,
    and one for linearised games: torch's forward-mode AD levels are process-wide, not per thread)."""
    if device.type != "cpu" or config.linearised:
        return 1
    return max(1, min(n_rounds, config.workers or len(os.sched_getaffinity(0))))


def audit_updates(
    updates_dir: str | Path,
    model: torch.nn.Module | ModelSpec,
    val: TensorData,
    config: AuditConfig = AuditConfig(),
    *,
    groups: np.ndarray | None = None,
    group_key: str = "sample",
    group_reason: str | None = None,
    client_modalities: Mapping[int, Sequence[str]] | None = None,
    seed: int = 0,
    on_round: Callable[[dict], None] | None = None,
) -> AuditReport:
    """Audit every round stored in an update store (``updates/`` of a training run).

    ``model`` (a module or the :class:`ModelSpec` to build one) only gives the architecture;
    ``val`` is the validation set every coalition model is scored on, ``groups`` its cluster
    ids named by ``group_key`` (default: every sample its own; ``group_reason`` says why, when it is not the
    recording, and is kept with the inference); ``client_modalities`` maps
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
    with intra_op_threads(1 if workers > 1 else torch.get_num_threads()), ThreadPoolExecutor(workers) as pool:
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
        "inference": {**statistic.describe(), **({"group_reason": group_reason} if group_reason else {})},
    }
    meta = AuditMeta(AUDITED, config, seed, json_safe([a.record for a in audits]),
                     json_safe(clients[list(CLIENT_FIELDS)].to_dict("records")), flags, json_safe(game),
                     json_safe(_convergence(audits, config, seed)))
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
