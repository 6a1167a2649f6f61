"""One MLflow run per graph run, the same under every orchestrator.

The stage that registers opens the run through :meth:`Tracker.start`, which logs every
earlier stage's output through that stage's ``track`` hook; a failed validation gate is
logged as a run marked FAILED (:meth:`Tracker.failed`). ZenML, kfp, DVC and the in-process
runners all reach MLflow only this way, so a run's MLflow record does not depend on which
orchestrator ran it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedmm.graph import Graph, Stage


class Tracker:
    """The MLflow run of one run of ``graph`` with ``config`` (named ``run_name``)."""

    def __init__(self, graph: Graph, config, run_name: str | None = None) -> None:
        self.graph, self.config, self.run_name = graph, config, run_name

    def open(self) -> str:
        """Create the MLflow run (tags and the config's parameters); returns its id."""
        from fedmm.tracking import runs

        return runs.start_run(self.config, self.run_name)

    def log(self, run_id: str, stage: Stage, artifacts: dict) -> None:
        """Log ``stage``'s output, when it has one here, through its ``track`` hook."""
        from fedmm.graph import resolve

        value = artifacts.get(stage.output)
        if stage.track is not None and value is not None:
            resolve(stage.track)(run_id, value, {name: artifacts.get(name) for name in stage.inputs})

    def start(self, artifacts: dict) -> str:
        """Open the run and log the tracked outputs among ``artifacts``, in graph order; returns the run id."""
        run_id = self.open()
        for stage in self.graph.stages:
            self.log(run_id, stage, artifacts)
        return run_id

    def failed(self, stage: Stage, value, inputs: dict) -> str:
        """Record a stage that stopped the run (a failed gate): its output logged, the run marked FAILED."""
        from fedmm.tracking import runs

        run_id = self.open()
        self.log(run_id, stage, {**inputs, stage.output: value})
        runs.end_run(run_id, "FAILED")
        return run_id
