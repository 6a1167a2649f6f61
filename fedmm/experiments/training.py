"""The training matrix's cells: each runs the graph's stages up to evaluation, so ``fedmm run`` with a
cell's overrides trains the same model (``fedmm.graph``: prepare, validate data, partition and mask,
validate partitions, train, evaluate). A cell interrupted mid-training resumes from its last round
checkpoint (the engine's); :mod:`fedmm.experiments.runner` runs the matrix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from fedmm.experiments.matrix import Cell, ExperimentSpec, expand, load_spec
from fedmm.experiments.runner import ExperimentOutcome, Matrix, ParentRun
from fedmm.graph import TRAINING

if TYPE_CHECKING:
    import pandas as pd

EXPERIMENT = "fedmm-experiments"
CELL_STAGES = TRAINING.names[: TRAINING.names.index(TRAINING.producer("evaluation").name) + 1]
"""The graph stages a cell runs: every stage up to the evaluation, both validation gates included."""
SHARED = 2
"""The first stages depend on the data config only: cells sharing it share their outputs."""
DESCRIBED = ("cell_id", "dataset", "strategy", "pattern", "missing_rate", "seed", "overrides")


def run_cell(cell: Cell, shared: dict[str, dict]) -> dict:
    """Run one cell's stages of the graph; returns its metrics and its wall time in seconds.

    A failed validation gate raises before training. Prepared data and its validation are
    computed once per data config and kept in ``shared``.
    """
    start = time.perf_counter()
    config = cell.config
    key = config.hash("data", "seed", "validation")
    artifacts = TRAINING.run_through(config, "evaluation", shared.get(key), progress=False, track=False)
    shared[key] = {stage.output: artifacts[stage.output] for stage in TRAINING.stages[:SHARED]}
    federated = artifacts["federated"]
    return {"num_clients": federated.num_clients, "dropped_samples": federated.report.dropped_samples,
            **artifacts["evaluation"].headline(), "seconds": round(time.perf_counter() - start, 1)}


class TrainingMatrix(Matrix):
    """Datasets x strategies x missing patterns x rates x seeds of the training graph (:mod:`fedmm.experiments.matrix`)."""

    def __init__(self, spec: ExperimentSpec, cells: list[Cell]) -> None:
        self.spec, self.name, self.cells = spec, spec.name, cells

    def cell_id(self, cell: Cell) -> str:
        return cell.cell_id

    def row(self, cell: Cell, metrics: dict) -> dict:
        from fedmm.fl.strategies import STRATEGIES

        return {"cell_id": cell.cell_id, "dataset": cell.dataset, "strategy": cell.strategy, "pattern": cell.pattern,
                "missing_rate": cell.missing_rate, "seed": cell.seed, **metrics,
                "extra_labels": STRATEGIES[cell.config.train.strategy].extra_labels(cell.config.train),
                "overrides": " ".join(cell.overrides)}

    def run(self, cell: Cell, cache: dict) -> tuple[dict, None]:
        return run_cell(cell, cache), None

    def write_outputs(self, cells: pd.DataFrame, directory: Path) -> dict[str, Path]:
        from fedmm.experiments.results import write_outputs

        return write_outputs(cells, directory)

    def tracker(self, directory: Path) -> ParentRun:
        return ParentRun(EXPERIMENT, self.name, {}, directory)

    def log(self, tracker: ParentRun, cell: Cell, row: dict, detail: None) -> None:
        name = f"{row['dataset']}/{row['strategy']}/{row['pattern']}/r={row['missing_rate']:g}/seed={row['seed']}"
        metrics = {k: v for k, v in row.items() if k.endswith(("accuracy", "macro_f1")) or k == "dropped_samples"}
        tracker.child(name, {key: row[key] for key in DESCRIBED}, metrics)

    def listing(self) -> list[str]:
        return [f"{cell.cell_id}  {cell.run_command()}" for cell in self.cells] + [f"{len(self.cells)} cells"]

    def conclusion(self, outcome: ExperimentOutcome) -> list[str]:
        return [outcome.outputs["table"].read_text(),
                f"ran {outcome.ran} cells, {outcome.skipped} already done; results: {outcome.outputs['cells'].parent}",
                f"MLflow parent run: {outcome.parent_run_id}"]


def matrix(path: Path) -> TrainingMatrix:
    """The training matrix of an experiment file, every cell validated."""
    spec, base = load_spec(path)
    return TrainingMatrix(spec, expand(spec, base))
