"""The FedMMKT results table: methods x seeds, run resumably, one MLflow parent run.

Finished cells are rows of ``cells.csv`` and are never rerun. Each seed's federation (data
split, Dirichlet partition, modality mask) is validated once by the pipeline's own gates
(the prepared-data suite and the partition suite) before any of its cells trains. The
table gives mean and sd over seeds and paired differences with 95% t intervals
(:func:`fedmm.experiments.results.paired_difference`): each method's task-model macro-F1
minus FedAvg's and minus FedAvg-with-frozen-generator's on the same seed, and the
generator's metrics after minus before co-enhancement. A ``fedmmkt`` cell also writes its
image grid (before / after) and registers the client task model and the generator as
model versions with lineage tags; the task model is promoted by the registry's gates on
its test macro-F1, the generator only with it (:mod:`fedmm.mmkt.tracking`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedmm.artifacts import write_text
from fedmm.config import ConfigError
from fedmm.experiments.results import CONFIDENCE, paired_difference
from fedmm.experiments.runner import ExperimentOutcome, Matrix, run_matrix
from fedmm.graph import FEDMMKT
from fedmm.mmkt.config import METHODS, MMKTConfig, MMKTRunConfig
from fedmm.mmkt.evaluate import generator_images, plot_grids
from fedmm.mmkt.federation import federation_config
from fedmm.mmkt.generator import WORDS
from fedmm.mmkt.stages import federation
from fedmm.mmkt.strategy import generator_of

TASK = "fedmmkt"
REFERENCES = ("fedavg", "fedavg_frozen")
CLIENT_METRICS = {"test_macro_f1": "complete test inputs", "test_missing_macro_f1": "test inputs under the training mask"}
SERVER_METRICS = {
    "synthetic_to_real_accuracy": "accuracy on real held-out pix of a classifier trained only on generated images",
    "fidelity": "share of generated images a fixed real-pix classifier assigns to the prompted class",
}
KEYS = ("run_id", "method", "seed")
SHARED = 4
"""The graph stages before training (prepare, validate, partition, validate): one run per seed's federation."""


class MMKTExperimentSpec(BaseModel):
    """``configs/experiments/fedmmkt*.yaml``: shared :class:`MMKTConfig` fields, the methods and the seeds."""

    model_config = ConfigDict(extra="forbid")

    task: Literal[TASK]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    config: dict = Field(default_factory=dict, description="MMKTConfig fields shared by every cell")
    methods: list[Literal[METHODS]] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    generator_model_name: str = "fedmm-mmkt-generator"


def load_mmkt_spec(path: str | Path) -> tuple[MMKTExperimentSpec, list[MMKTConfig]]:
    """The spec and every cell's validated config, its federation config included (a bad one fails first)."""
    try:
        spec = MMKTExperimentSpec.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        configs = [MMKTConfig(**{**spec.config, "method": m, "seed": s}) for s in spec.seeds for m in spec.methods]
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"experiment file {path} is invalid:\n{error}") from None
    for config in configs[:: len(spec.methods)]:
        try:
            federation_config(config)
        except ConfigError as error:
            raise ConfigError(f"experiment file {path}, seed {config.seed}: {error}") from None
    return spec, configs


def summarise(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(client, server): per method the client metrics with paired differences to each reference; per server
    metric (and per prompt's fidelity) before and after co-enhancement with the paired difference."""
    client_rows = []
    by_method = {m: part.set_index("seed") for m, part in cells.groupby("method", sort=False)}
    for method, part in by_method.items():
        row = {"method": method, "seeds": len(part)}
        for metric in CLIENT_METRICS:
            if metric not in part:
                continue
            row[f"{metric}_mean"], row[f"{metric}_sd"] = part[metric].mean(), part[metric].std()
            for reference in REFERENCES:
                if reference in by_method and reference != method:
                    paired = paired_difference(part[metric], by_method[reference][metric].reindex(part.index))
                    row.update({f"{metric}_vs_{reference}_{k}": v for k, v in paired.items()})
        client_rows.append(row)
    server_rows = []
    if "fedmmkt" in by_method:
        part = by_method["fedmmkt"]
        for metric in [*SERVER_METRICS, *(f"fidelity_{d}" for d in range(len(WORDS)))]:
            before, after = part[f"server_before_{metric}"], part[f"server_after_{metric}"]
            server_rows.append({"metric": metric, "before_mean": before.mean(), "before_sd": before.std(),
                                "after_mean": after.mean(), "after_sd": after.std(),
                                **paired_difference(after, before)})
    return pd.DataFrame(client_rows), pd.DataFrame(server_rows)


def _num(value: float, sign: str = "") -> str:
    return "n/a" if pd.isna(value) else f"{value:{sign}.3f}"


def _delta(row: dict, prefix: str) -> str:
    if pd.isna(row.get(f"{prefix}_diff", float("nan"))):
        return "—"
    return (f"{row[f'{prefix}_diff']:+.3f} [{_num(row[f'{prefix}_diff_low'], '+')}, {_num(row[f'{prefix}_diff_high'], '+')}]"
            f" (n={int(row[f'{prefix}_pairs'])})")


def markdown(client: pd.DataFrame, server: pd.DataFrame) -> str:
    """The client table per test view, then the server table (before / after co-enhancement)."""
    level = f"{CONFIDENCE:.0%}"
    lines = []
    for metric, description in CLIENT_METRICS.items():
        if f"{metric}_mean" not in client:
            continue
        lines += [f"### Client task model, macro-F1 on {description}", "",
                  f"Mean ± sd over seeds; Δ: mean paired difference on the same seeds [{level} t interval].", "",
                  "| method | macro-F1 | Δ vs fedavg | Δ vs fedavg_frozen |", "| --- | --- | --- | --- |"]
        for row in client.to_dict("records"):
            lines.append(f"| {row['method']} | {_num(row[f'{metric}_mean'])} ± {_num(row[f'{metric}_sd'])} "
                         f"({int(row['seeds'])}) | {_delta(row, f'{metric}_vs_fedavg')} | "
                         f"{_delta(row, f'{metric}_vs_fedavg_frozen')} |")
        lines.append("")
    if len(server):
        lines += ["### Server generator, before (pretrained on load_digits) and after co-enhancement", "",
                  *(f"- {name}: {text}" for name, text in SERVER_METRICS.items()),
                  "- fidelity_<d>: fidelity of the prompt for digit d", "",
                  f"| metric | before | after | Δ after − before [{level} t interval] |", "| --- | --- | --- | --- |"]
        for row in server.to_dict("records"):
            delta = "—" if pd.isna(row["diff"]) else (
                f"{row['diff']:+.3f} [{_num(row['diff_low'], '+')}, {_num(row['diff_high'], '+')}] (n={int(row['pairs'])})")
            lines.append(f"| {row['metric']} | {_num(row['before_mean'])} ± {_num(row['before_sd'])} | "
                         f"{_num(row['after_mean'])} ± {_num(row['after_sd'])} | {delta} |")
        lines.append("")
    return "\n".join(lines)


class MMKTMatrix(Matrix):
    """Methods x seeds of FedMMKT; each cell runs the FedMMKT graph (``fedmm.graph.FEDMMKT``) up to its evaluation."""

    key = "run_id"

    def __init__(self, spec: MMKTExperimentSpec, configs: list[MMKTConfig]) -> None:
        self.spec, self.name, self.cells = spec, spec.name, configs
        self.plots: Path | None = None

    def cell_id(self, config: MMKTConfig) -> str:
        return config.run_id()

    def row(self, config: MMKTConfig, metrics: dict) -> dict:
        return {"run_id": config.run_id(), "method": config.method, "seed": config.seed, **metrics}

    def start(self, todo: list[MMKTConfig], directory: Path) -> dict:
        torch.set_num_threads(1)
        self.plots = directory / "plots"
        return {}

    def run(self, config: MMKTConfig, cache: dict) -> tuple[dict, tuple]:
        """The cell's metrics: the FedMMKT graph up to its evaluation, the federation's stages (validation gates
        included) shared by the seed's cells; besides, what the tracker logs (training result, generator,
        federation, validation reports, image grid)."""
        start, run = time.perf_counter(), MMKTRunConfig(run=config)
        key = federation_config(config).hash("data", "partition", "mask", "corruption", "seed")
        artifacts = FEDMMKT.run_through(run, "mmkt_evaluation", cache.get(key), track=False)
        cache[key] = {stage.output: artifacts[stage.output] for stage in FEDMMKT.stages[:SHARED]}
        trained, generator, grid = artifacts["mmkt_result"], None, None
        if config.method == "fedmmkt":
            generator = generator_of(trained.server_state, config.strategy_section())
            grid = plot_grids(generator_images(config, generator), self.plots / f"generated_seed{config.seed}.png")
        built = federation(run, artifacts["mmkt_prepared"], artifacts["mmkt_federated"])
        reports = [artifacts["mmkt_data_report"], artifacts["mmkt_partition_report"]]
        metrics = {**artifacts["mmkt_evaluation"], "seconds": round(time.perf_counter() - start, 1)}
        return metrics, (trained, generator, built, reports, grid)

    def write_outputs(self, cells: pd.DataFrame, directory: Path) -> dict[str, Path]:
        client, server = summarise(cells)
        outputs = {"summary_client": directory / "summary_client.csv",
                   "summary_server": directory / "summary_server.csv", "table": directory / "table.md"}
        write_text(outputs["summary_client"], client.to_csv(index=False))
        write_text(outputs["summary_server"], server.to_csv(index=False))
        write_text(outputs["table"], markdown(client, server))
        return {**outputs, **{f"plot {path.stem}": path for path in sorted((directory / "plots").glob("*.png"))}}

    def tracker(self, directory: Path):
        from fedmm.mmkt.tracking import Tracker

        return Tracker(self.spec, directory)

    def log(self, tracker, config: MMKTConfig, row: dict, detail: tuple) -> None:
        tracker.cell(config, row, *detail)

    def listing(self) -> list[str]:
        return [f"{c.run_id()}  {c.method} seed={c.seed}" for c in self.cells] + [f"{len(self.cells)} cells"]

    def conclusion(self, outcome: ExperimentOutcome) -> list[str]:
        plots = ", ".join(str(path) for name, path in outcome.outputs.items() if name.startswith("plot "))
        return [outcome.outputs["table"].read_text(), f"ran {outcome.ran} cells; results: {outcome.outputs['cells'].parent}",
                f"image grids: {plots}", f"MLflow parent run: {outcome.parent_run_id}"]


def matrix(path: Path) -> MMKTMatrix:
    """The FedMMKT matrix of a ``task: fedmmkt`` experiment file, every cell's config validated."""
    return MMKTMatrix(*load_mmkt_spec(path))


def run_mmkt_experiment(spec: MMKTExperimentSpec, configs: list[MMKTConfig], directory: Path, track: bool = True) -> dict:
    """Run every cell not yet in ``cells.csv`` (:func:`~fedmm.experiments.runner.run_matrix`); write
    ``summary_client.csv``, ``summary_server.csv``, ``table.md``; returns what ran, the outputs, the summaries,
    the image grids and the parent run."""
    outcome = run_matrix(MMKTMatrix(spec, configs), directory, track)
    client, server = summarise(outcome.cells)
    plots = [path for name, path in outcome.outputs.items() if name.startswith("plot ")]
    return {"ran": outcome.ran, "outputs": outcome.outputs, "client": client, "server": server, "plots": plots,
            "parent_run_id": outcome.parent_run_id}
