"""Imputer settings chosen on the validation split, then scored once on the test split.

``impute.select`` lists candidate overrides of an imputer's settings section. Every candidate
is fitted on the clients and scored on the complete validation split, masked by the
evaluation's patterns and rates, by the mean share of the zero-fill-to-oracle macro-F1 gap it
recovers; the best is kept (the first on a tie, or where no candidate has a gap to recover).
:func:`select_imputers` never sees the test split; :func:`evaluate_selected` scores only the
chosen imputers on it. Candidates that differ only in an imputer's ``inference_settings``
share one fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedmm.impute.base import ImputationError, Imputer
from fedmm.impute.evaluate import complete_samples, evaluate_imputation
from fedmm.impute.registry import make_imputer
from fedmm.impute.report import ImputationReport
from fedmm.impute_config import Candidate, ImputeConfig
from fedmm.models.multimodal import MultimodalNet
from fedmm.tensors import TensorData
from fedmm.tracking import tags as T

SELECTED_TAG = T.IMPUTATION_SELECTED


@dataclass
class Selection:
    """The fitted imputers with their chosen settings, and every candidate's validation score."""

    imputers: dict[str, Imputer]
    table: pd.DataFrame
    """One row per candidate: imputer, candidate (its overrides), validation_gap_recovered, chosen."""
    notes: list[str]
    """Imputers whose every candidate scored nan on validation, and what was kept instead."""


def _fit_sharing(name: str, config: ImputeConfig, fits: dict[str, Imputer], clients: list[TensorData],
                 model: MultimodalNet, seed: int) -> Imputer:
    """``name`` fitted under ``config``, restored from an earlier fit that differs only in inference settings."""
    imputer = make_imputer(name, config)
    settings = getattr(config, name).model_dump()
    key = json.dumps({k: v for k, v in settings.items() if k not in imputer.inference_settings}, sort_keys=True)
    if key not in fits:
        fits[key] = imputer.fit(clients, model, seed)
        return fits[key]
    imputer.restore(fits[key].state(), model)
    imputer.fit_seconds = fits[key].fit_seconds
    return imputer


def validation_score(report: ImputationReport) -> float:
    """Mean share of the gap recovered over the report's patterns and rates (nan where none has a gap)."""
    recovered = report.table["gap_recovered"].dropna()
    return float(recovered.mean()) if len(recovered) else float("nan")


def select_imputers(
    config: ImputeConfig, clients: list[TensorData], model: MultimodalNet, validation: TensorData,
    owners: np.ndarray, seed: int,
) -> Selection:
    """Every configured imputer fitted, those with ``config.select`` candidates at the validation-best one."""
    if any(config.select.get(name) for name in config.imputers) and not len(validation):
        raise ImputationError("impute.select chooses settings on the validation split, which is empty: "
                              "raise data.val_fraction or set impute.select={}")
    imputers, rows, notes = {}, [], []
    patterns = list(config.patterns) or None
    for name in config.imputers:
        candidates: tuple[Candidate, ...] = config.select.get(name, ())
        if not candidates:
            imputers[name] = make_imputer(name, config).fit(clients, model, seed)
            continue
        fits: dict[str, Imputer] = {}
        fitted, scores = [], []
        for candidate in candidates:
            imputer = _fit_sharing(name, config.with_candidate(name, candidate), fits, clients, model, seed)
            fitted.append(imputer)
            scores.append(validation_score(
                evaluate_imputation(model, validation, {name: imputer}, owners, seed, patterns, config.rates)))
        best = int(np.argmax([score if math.isfinite(score) else -math.inf for score in scores]))
        if not any(math.isfinite(score) for score in scores):
            why = (f"on the {len(validation)} complete validation samples, zero-filling the missing modalities "
                   "scored at least as well as the full data: no gap to recover" if len(validation)
                   else "no validation sample has every modality")
            notes.append(f"{name}: every candidate's validation gap recovered is nan ({why}), so none was better; "
                         f"kept the first, {json.dumps(candidates[0], sort_keys=True)}")
        imputers[name] = fitted[best]
        rows += [{"imputer": name, "candidate": json.dumps(candidate, sort_keys=True), "validation_gap_recovered": score,
                  "chosen": k == best} for k, (candidate, score) in enumerate(zip(candidates, scores))]
    columns = ["imputer", "candidate", "validation_gap_recovered", "chosen"]
    return Selection(imputers, pd.DataFrame(rows, columns=columns), notes)


def evaluate_selected(
    config: ImputeConfig, clients: list[TensorData], model: MultimodalNet,
    validation: tuple[TensorData, np.ndarray], test: tuple[TensorData, np.ndarray], seed: int,
) -> tuple[ImputationReport, dict[str, Imputer]]:
    """Choose settings on ``validation`` (data, owners), then score the chosen imputers on ``test`` (data, owners).

    Both are restricted to their samples that have every modality (:func:`complete_samples`);
    the report's ``meta["complete_samples"]`` says how many of the test split's that left.
    Returns the report, whose ``meta["selection"]`` holds every candidate's validation score, and the imputers.
    """
    needs_validation = any(config.select.get(name) for name in config.imputers)
    if needs_validation and len(validation[0]):
        validation = complete_samples(*validation, "validation")
    selection = select_imputers(config, clients, model, *validation, seed)
    data, owners = complete_samples(*test, "test")
    report = evaluate_imputation(model, data, selection.imputers, owners, seed, list(config.patterns) or None, config.rates)
    report.meta["selection"] = selection.table.to_dict("records")
    if selection.notes:
        report.meta["selection_notes"] = selection.notes
    report.meta["complete_samples"] = {"samples": len(data), "of": len(test[0])}
    return report, selection.imputers


def selection_tags(report: ImputationReport) -> dict[str, str]:
    """Each selected imputer's chosen candidate and its validation score, as model-version tags."""
    tags = {}
    for row in report.meta.get("selection", []):
        if row["chosen"]:
            tags[SELECTED_TAG + row["imputer"]] = f"{row['candidate']} (validation gap recovered " \
                                                  f"{row['validation_gap_recovered']:.4f})"
    return tags
