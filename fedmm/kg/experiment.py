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

from fedmm.artifacts import write_text
from fedmm.config import ConfigError
from fedmm.experiments.runner import ExperimentOutcome, Matrix, ParentRun, run_matrix
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


class KGMatrix(Matrix):
    """Datasets x methods x missing rates x seeds; each run is the FedMKGC graph's stages up to the evaluation."""

    key, unit = "run_id", "run"

    def __init__(self, spec: KGExperimentSpec, configs: list[KGConfig]) -> None:
        self.spec, self.name, self.cells = spec, spec.name, configs

    def cell_id(self, config: KGConfig) -> str:
        return config.run_id()

    def row(self, config: KGConfig, metrics: dict) -> dict:
        return {"run_id": config.run_id(), "dataset": config.dataset, "method": config.method,
                "missing_rate": config.missing_rate, "seed": config.seed, **metrics}

    def start(self, todo: list[KGConfig], directory: Path) -> dict:
        """The datasets still to run on pass the graph's ``kg_triples`` validation before any run starts."""
        from fedmm.kg.run import validated

        return {dataset: validated(dataset) for dataset in dict.fromkeys(c.dataset for c in todo)}

    def run(self, config: KGConfig, cache: dict) -> tuple[dict, None]:
        from fedmm.kg.run import run

        return {k: v for k, v in run(config, cache[config.dataset]).items() if k != "report"}, None

    def write_outputs(self, cells: pd.DataFrame, directory: Path) -> dict[str, Path]:
        summary = summarise(cells, self.spec.baseline)
        outputs = {"summary": directory / "summary.csv", "table": directory / "table.md"}
        write_text(outputs["summary"], summary.to_csv(index=False))
        write_text(outputs["table"], markdown(summary, self.spec.baseline))
        return outputs

    def tracker(self, directory: Path) -> ParentRun:
        return ParentRun(EXPERIMENT, self.name, {T.TASK: TASK}, directory)

    def log(self, tracker: ParentRun, config: KGConfig, row: dict, detail: None) -> None:
        from fedmm.tracking import runs

        name = f"{config.dataset}/{config.method}/r={config.missing_rate:g}/seed={config.seed}"
        metrics = {key.replace("@", "_at_"): value for key, value in row.items() if key not in self.row(config, {})}
        tracker.child(name, runs.flatten(config.model_dump(mode="json")), metrics)

    def listing(self) -> list[str]:
        lines = [f"{c.run_id()}  {c.dataset} {c.method} r={c.missing_rate:g} seed={c.seed}" for c in self.cells]
        return lines + [f"{len(self.cells)} cells, {len({c.run_id() for c in self.cells})} distinct runs"]

    def conclusion(self, outcome: ExperimentOutcome) -> list[str]:
        return [outcome.outputs["table"].read_text(), f"ran {outcome.ran} runs; results: {outcome.outputs['cells'].parent}",
                f"MLflow parent run: {outcome.parent_run_id}"]


def matrix(path: Path) -> KGMatrix:
    """The FedMKGC matrix of a ``task: fedmkgc`` experiment file, every run's config validated."""
    return KGMatrix(*load_kg_spec(path))


def run_kg_experiment(spec: KGExperimentSpec, configs: list[KGConfig], directory: Path, track: bool = True) -> dict:
    """Run every config not yet in ``cells.csv`` (:func:`~fedmm.experiments.runner.run_matrix`), then write
    ``summary.csv`` and ``table.md``; returns what ran, the outputs, the summary and the parent run."""
    outcome = run_matrix(KGMatrix(spec, configs), directory, track)
    return {"ran": outcome.ran, "outputs": outcome.outputs, "summary": summarise(outcome.cells, spec.baseline),
            "parent_run_id": outcome.parent_run_id}
