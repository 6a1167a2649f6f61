"""Run an experiment matrix, resumably, as one MLflow parent run with a child run per cell.

Finished cells are rows of ``cells.csv`` in the output folder and are never rerun; a cell
interrupted mid-training resumes from its last round checkpoint (the engine's). Cells run
the graph's stages up to evaluation (``fedmm.graph``: prepare, validate data, partition and
mask, validate partitions, train, evaluate), so ``fedmm run`` with a cell's overrides trains
the same model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from fedmm.artifacts import read_json, write_json, write_text
from fedmm.experiments.matrix import Cell, ExperimentSpec
from fedmm.experiments.results import write_outputs
from fedmm.fl.strategies import STRATEGIES
from fedmm.graph import TRAINING
from fedmm.tracking import runs
from fedmm.tracking import tags as T

EXPERIMENT = "fedmm-experiments"
CELLS_FILE = "cells.csv"
STATE_FILE = "state.json"


@dataclass
class ExperimentOutcome:
    cells: pd.DataFrame
    ran: int
    skipped: int
    outputs: dict[str, Path]
    parent_run_id: str


CELL_STAGES = TRAINING.names[: TRAINING.names.index(TRAINING.producer("evaluation").name) + 1]
"""The graph stages a cell runs: every stage up to the evaluation, both validation gates included."""
SHARED = 2
"""The first stages depend on the data config only: cells sharing it share their outputs."""


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


def _row(cell: Cell, metrics: dict) -> dict:
    return {
        "cell_id": cell.cell_id,
        "dataset": cell.dataset,
        "strategy": cell.strategy,
        "pattern": cell.pattern,
        "missing_rate": cell.missing_rate,
        "seed": cell.seed,
        **metrics,
        "extra_labels": STRATEGIES[cell.config.train.strategy].extra_labels(cell.config.train),
        "overrides": " ".join(cell.overrides),
    }


def _parent_run(directory: Path, spec: ExperimentSpec) -> str:
    state_path = directory / STATE_FILE
    if state_path.is_file():
        return read_json(state_path)["parent_run_id"]
    run = runs.client().create_run(runs.experiment_id(EXPERIMENT), run_name=spec.name,
                                   tags={T.EXPERIMENT: spec.name, T.GIT_COMMIT: runs.git_commit()})
    write_json(state_path, {"parent_run_id": run.info.run_id, "experiment": spec.name})
    return run.info.run_id


def _log_child(parent: str, row: dict) -> None:
    client = runs.client()
    name = f"{row['dataset']}/{row['strategy']}/{row['pattern']}/r={row['missing_rate']:g}/seed={row['seed']}"
    run = client.create_run(runs.experiment_id(EXPERIMENT), run_name=name, tags={"mlflow.parentRunId": parent})
    for key in ("cell_id", "dataset", "strategy", "pattern", "missing_rate", "seed", "overrides"):
        client.log_param(run.info.run_id, key, str(row[key])[:6000])
    for key, value in row.items():
        if key.endswith(("accuracy", "macro_f1")) or key == "dropped_samples":
            client.log_metric(run.info.run_id, key, float(value))
    client.set_terminated(run.info.run_id, "FINISHED")


def run_experiment(spec: ExperimentSpec, cells: list[Cell], directory: Path) -> ExperimentOutcome:
    """Run every cell not yet in ``cells.csv``; then write the table and plots and log them.

    Cells with the same resolved config (every pattern at rate 0) are trained once.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parent = _parent_run(directory, spec)
    path = directory / CELLS_FILE
    metric_columns = lambda frame: [c for c in frame.columns if c not in Cell.__dataclass_fields__ and c != "cell_id"]
    results: dict[str, dict] = {}
    if path.is_file():
        done = pd.read_csv(path).drop_duplicates("cell_id")
        results = {row["cell_id"]: {c: row[c] for c in metric_columns(done)} for row in done.to_dict("records")}
    todo = list({cell.cell_id: cell for cell in cells if cell.cell_id not in results}.values())
    table = lambda: pd.DataFrame([_row(cell, results[cell.cell_id]) for cell in cells if cell.cell_id in results])
    shared: dict[str, dict] = {}
    for cell in tqdm(todo, desc=spec.name, unit="cell"):
        results[cell.cell_id] = run_cell(cell, shared)
        row = _row(cell, results[cell.cell_id])
        _log_child(parent, row)
        write_text(path, table().to_csv(index=False))
    outputs = {"cells": path, **write_outputs(table(), directory)}
    client = runs.client()
    for output in outputs.values():
        client.log_artifact(parent, str(output), artifact_path="plots" if output.suffix == ".png" else None)
    client.set_terminated(parent, "FINISHED")
    return ExperimentOutcome(table(), ran=len(todo), skipped=len(set(c.cell_id for c in cells)) - len(todo),
                             outputs=outputs, parent_run_id=parent)
