"""The FedMKGC results table: datasets x methods x missing rates x seeds, run resumably.

Finished runs are rows of ``cells.csv`` and are never rerun; runs whose effective config is
the same (a structure-only method at every missing rate) train once. The table reports the
mean and sd over seeds of filtered test MRR and Hits@1/3/10, and each method's MRR minus the
baseline's on the same seed with a 95% t interval. Every run is an MLflow child run of one
parent run that carries the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats
from tqdm import tqdm

from fedmm.artifacts import write_text
from fedmm.config import ConfigError
from fedmm.kg.config import METHODS, TASK, KGConfig
from fedmm.kg.data import KG_NAMES
from fedmm.tracking import tags as T

EXPERIMENT = "fedmm-kg-experiments"
METRICS = ("mrr", "hits@1", "hits@3", "hits@10")


class KGExperimentSpec(BaseModel):
    """``configs/experiments/fedmkgc*.yaml``: a base :class:`KGConfig` and the axes of the matrix."""

    model_config = ConfigDict(extra="forbid")

    task: Literal[TASK]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    config: dict = Field(default_factory=dict, description="KGConfig fields shared by every run")
    datasets: dict[Literal[KG_NAMES], dict] = Field(min_length=1, description="per dataset, KGConfig fields over config")
    methods: list[Literal[tuple(METHODS)]] = Field(min_length=1)
    missing_rates: list[float] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    baseline: Literal[tuple(METHODS)] = "fede"


def is_kg_spec(path: str | Path) -> bool:
    """Whether an experiment file is a FedMKGC matrix (``task: fedmkgc``)."""
    try:
        payload = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(payload, dict) and payload.get("task") == TASK


def load_kg_spec(path: str | Path) -> tuple[KGExperimentSpec, list[KGConfig]]:
    """The spec and every run's validated config (a bad one fails before anything runs)."""
    try:
        spec = KGExperimentSpec.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        configs = [
            KGConfig(**{**spec.config, **(overrides or {}), "dataset": d, "method": m, "missing_rate": r, "seed": s})
            for d, overrides in spec.datasets.items() for r in spec.missing_rates for m in spec.methods
            for s in spec.seeds
        ]
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"experiment file {path} is invalid:\n{error}") from None
    if spec.baseline not in spec.methods:
        raise ConfigError(f"experiment file {path}: baseline {spec.baseline!r} is not one of its methods")
    return spec, configs


def _row(config: KGConfig, result: dict) -> dict:
    return {"run_id": config.run_id(), "dataset": config.dataset, "method": config.method,
            "missing_rate": config.missing_rate, "seed": config.seed,
            **{k: v for k, v in result.items() if k != "report"}}


def summarise(cells: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Mean and sd per (dataset, rate, method), and the paired MRR difference to ``baseline`` with its t interval."""
    rows = []
    for (dataset, rate, method), part in cells.groupby(["dataset", "missing_rate", "method"], sort=False):
        row = {"dataset": dataset, "missing_rate": rate, "method": method, "seeds": len(part)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = part[metric].mean(), part[metric].std()
        base = cells[(cells.dataset == dataset) & (cells.missing_rate == rate) & (cells.method == baseline)]
        paired = part.set_index("seed")["mrr"] - base.set_index("seed")["mrr"]
        paired = paired.dropna()
        row["delta_mrr"], row["delta_low"], row["delta_high"] = paired_interval(paired.to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_interval(differences: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided t interval (NaN bounds below two pairs)."""
    n = len(differences)
    if n == 0:
        return (np.nan, np.nan, np.nan)
    mean = float(differences.mean())
    if n < 2:
        return (mean, np.nan, np.nan)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * differences.std(ddof=1) / np.sqrt(n))
    return (mean, mean - half, mean + half)


def markdown(summary: pd.DataFrame, baseline: str) -> str:
    """One table per (dataset, missing rate): methods as rows."""
    lines = []
    for (dataset, rate), part in summary.groupby(["dataset", "missing_rate"], sort=False):
        seeds = int(part["seeds"].max())
        lines += [f"### {dataset}, missing rate {rate:g} (filtered test metrics, mean ± sd over {seeds} seeds; "
                  f"Δ MRR: paired difference to {baseline}, 95% t interval)", "",
                  "| method | MRR | Hits@1 | Hits@3 | Hits@10 | Δ MRR |", "| --- | --- | --- | --- | --- | --- |"]
        for row in part.to_dict("records"):
            cells = [f"{row[f'{m}_mean']:.3f} ± {_sd(row[f'{m}_sd'])}" for m in METRICS]
            delta = "—" if row["method"] == baseline else (
                f"{row['delta_mrr']:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]"
                if not np.isnan(row["delta_low"]) else f"{row['delta_mrr']:+.3f}")
            lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {delta} |")
        lines.append("")
    return "\n".join(lines)


def _sd(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3f}"


def run_kg_experiment(spec: KGExperimentSpec, configs: list[KGConfig], directory: Path, track: bool = True) -> dict:
    """Run every config not yet in ``cells.csv``, then write ``summary.csv`` and ``table.md``.

    The datasets still to run on pass the graph's ``kg_triples`` validation before any run starts; each run is
    the FedMKGC graph's stages up to the evaluation (:func:`fedmm.kg.run.run`).
    """
    from fedmm.kg.run import run, validated

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cells.csv"
    done: dict[str, dict] = {}
    if path.is_file():
        done = {row["run_id"]: row for row in pd.read_csv(path, dtype={"run_id": str}).to_dict("records")}
    todo = list({c.run_id(): c for c in configs if c.run_id() not in done}.values())
    reports = {dataset: validated(dataset) for dataset in dict.fromkeys(c.dataset for c in todo)}
    tracker = _Tracker(spec) if track else None
    for config in tqdm(todo, desc=spec.name, unit="run"):
        done[config.run_id()] = _row(config, run(config, reports[config.dataset]))
        if tracker:
            tracker.child(config, done[config.run_id()])
        write_text(path, pd.DataFrame(done.values()).to_csv(index=False))
    metric_columns = [c for c in pd.DataFrame(done.values()).columns if c not in ("run_id", "method", "missing_rate", "seed", "dataset")]
    cells = pd.DataFrame([{**_row(c, {}), **{k: done[c.run_id()][k] for k in metric_columns}} for c in configs])
    summary = summarise(cells, spec.baseline)
    outputs = {"cells": path, "summary": directory / "summary.csv", "table": directory / "table.md"}
    write_text(outputs["summary"], summary.to_csv(index=False))
    write_text(outputs["table"], markdown(summary, spec.baseline))
    if tracker:
        tracker.finish(outputs)
    return {"ran": len(todo), "outputs": outputs, "summary": summary,
            "parent_run_id": tracker.parent if tracker else None}


class _Tracker:
    """One MLflow parent run for the matrix, a child per run with its config and metrics."""

    def __init__(self, spec: KGExperimentSpec) -> None:
        from fedmm.tracking import runs

        self.runs, self.client = runs, runs.client()
        self.experiment = runs.experiment_id(EXPERIMENT)
        self.parent = self.client.create_run(self.experiment, run_name=spec.name,
                                             tags={T.EXPERIMENT: spec.name, T.TASK: TASK,
                                                   T.GIT_COMMIT: runs.git_commit()}).info.run_id

    def child(self, config: KGConfig, row: dict) -> None:
        name = f"{config.dataset}/{config.method}/r={config.missing_rate:g}/seed={config.seed}"
        run_id = self.client.create_run(self.experiment, run_name=name,
                                        tags={"mlflow.parentRunId": self.parent}).info.run_id
        for key, value in self.runs.flatten(config.model_dump(mode="json")).items():
            self.client.log_param(run_id, key, value)
        for key, value in row.items():
            if key not in ("run_id", "dataset", "method", "missing_rate", "seed"):
                self.client.log_metric(run_id, key.replace("@", "_at_"), float(value))
        self.client.set_terminated(run_id, "FINISHED")

    def finish(self, outputs: dict[str, Path]) -> None:
        for output in outputs.values():
            self.client.log_artifact(self.parent, str(output))
        self.client.set_terminated(self.parent, "FINISHED")
