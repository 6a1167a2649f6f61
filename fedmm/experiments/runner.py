"""One resumable experiment runner for every task: a :class:`Matrix` of cells, one MLflow parent run.

Finished cells are rows of ``cells.csv`` in the results folder and are never rerun (cells with
the same id run once); ``state.json`` keeps the parent run, so a resumed folder logs into it.
After the last cell the task writes its tables and plots, which the parent run carries. What
differs per task is a :class:`Matrix`: its cells, how one runs (a graph's stages up to its
metrics), a row of the table, what a child run logs, and the outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmm.artifacts import read_json, write_json, write_text
from fedmm.tracking import tags as T

if TYPE_CHECKING:
    import pandas as pd

CELLS_FILE = "cells.csv"
STATE_FILE = "state.json"


@dataclass
class ExperimentOutcome:
    """The table of every cell (matrix order), the cells run now and skipped, the output files and the parent run."""

    cells: pd.DataFrame
    ran: int
    skipped: int
    outputs: dict[str, Path]
    parent_run_id: str | None


class ParentRun:
    """The matrix's MLflow parent run (reused when the folder is resumed) and a child run per cell."""

    def __init__(self, experiment: str, name: str, tags: dict[str, str], directory: Path) -> None:
        from fedmm.tracking import runs

        self.client, self.experiment = runs.client(), runs.experiment_id(experiment)
        state = directory / STATE_FILE
        if state.is_file():
            self.parent = read_json(state)["parent_run_id"]
        else:
            tags = {T.EXPERIMENT: name, **tags, T.GIT_COMMIT: runs.git_commit()}
            self.parent = self.client.create_run(self.experiment, run_name=name, tags=tags).info.run_id
            write_json(state, {"parent_run_id": self.parent, "experiment": name})

    def child(self, name: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """A finished child run with these params (values cut at 6,000 characters) and metrics."""
        run_id = self.client.create_run(self.experiment, run_name=name,
                                        tags={"mlflow.parentRunId": self.parent}).info.run_id
        for key, value in params.items():
            self.client.log_param(run_id, key, str(value)[:6000])
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))
        self.client.set_terminated(run_id, "FINISHED")

    def finish(self, paths: list[Path]) -> None:
        """Attach the output files to the parent run (images under ``plots/``) and end it."""
        for path in paths:
            self.client.log_artifact(self.parent, str(path), artifact_path="plots" if path.suffix == ".png" else None)
        self.client.set_terminated(self.parent, "FINISHED")


class Matrix(ABC):
    """What an experiment of one task is: its validated ``cells`` (a bad one failed before any runs) and hooks.

    ``name`` names the parent run and the progress bar; ``key`` is the id column of ``cells.csv``.
    """

    name: str
    cells: list
    key: str = "cell_id"
    unit: str = "cell"

    @abstractmethod
    def cell_id(self, cell) -> str:
        """The cell's id: a hash of its resolved config (equal configs run once)."""

    @abstractmethod
    def row(self, cell, metrics: dict) -> dict:
        """The cell's row of ``cells.csv``: its id, what identifies it in the table, ``metrics``."""

    @abstractmethod
    def run(self, cell, cache: dict) -> tuple[dict, Any]:
        """Run one cell: its metrics and what :meth:`log` needs besides (``cache`` is shared by the cells)."""

    @abstractmethod
    def write_outputs(self, cells: pd.DataFrame, directory: Path) -> dict[str, Path]:
        """Write the task's tables and plots from every finished cell; returns them by name."""

    @abstractmethod
    def tracker(self, directory: Path):
        """The parent run (a :class:`ParentRun`, or the task's own with ``parent`` and ``finish``)."""

    @abstractmethod
    def log(self, tracker, cell, row: dict, detail: Any) -> None:
        """Log a finished cell as a child run of ``tracker``'s parent run."""

    def start(self, todo: list, directory: Path) -> dict:
        """Check the cells still to run before the first one does; returns what the cells share (default: nothing)."""
        return {}

    @abstractmethod
    def listing(self) -> list[str]:
        """``fedmm experiment --dry-run``: a line per cell and a count."""

    @abstractmethod
    def conclusion(self, outcome: ExperimentOutcome) -> list[str]:
        """What ``fedmm experiment`` prints after the run (the table first)."""


def finished(matrix: Matrix, directory: Path) -> dict[str, dict]:
    """The metrics of the cells ``cells.csv`` already holds, by id."""
    import pandas as pd

    path = directory / CELLS_FILE
    if not path.is_file():
        return {}
    rows = pd.read_csv(path, dtype={matrix.key: str}).to_dict("records")
    described = set(matrix.row(matrix.cells[0], {})) if matrix.cells else {matrix.key}
    return {row[matrix.key]: {k: v for k, v in row.items() if k not in described} for row in rows}


def run_matrix(matrix: Matrix, directory: Path, track: bool = True) -> ExperimentOutcome:
    """Run every cell of ``matrix`` not yet in ``directory``'s ``cells.csv``; then write and log the outputs."""
    import pandas as pd
    from tqdm import tqdm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    results = finished(matrix, directory)
    todo = list({matrix.cell_id(c): c for c in matrix.cells if matrix.cell_id(c) not in results}.values())
    table = lambda: pd.DataFrame([matrix.row(c, results[matrix.cell_id(c)]) for c in matrix.cells
                                  if matrix.cell_id(c) in results])
    tracker = matrix.tracker(directory) if track else None
    cache = matrix.start(todo, directory)
    for cell in tqdm(todo, desc=matrix.name, unit=matrix.unit):
        metrics, detail = matrix.run(cell, cache)
        results[matrix.cell_id(cell)] = metrics
        if tracker is not None:
            matrix.log(tracker, cell, matrix.row(cell, metrics), detail)
        write_text(directory / CELLS_FILE, table().to_csv(index=False))
    outputs = {"cells": directory / CELLS_FILE, **matrix.write_outputs(table(), directory)}
    if tracker is not None:
        tracker.finish(list(outputs.values()))
    distinct = len({matrix.cell_id(c) for c in matrix.cells})
    return ExperimentOutcome(table(), ran=len(todo), skipped=distinct - len(todo), outputs=outputs,
                             parent_run_id=tracker.parent if tracker is not None else None)
