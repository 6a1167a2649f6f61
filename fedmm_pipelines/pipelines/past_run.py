"""The artifacts of a finished pipeline run, for pipelines that analyse it later."""

from __future__ import annotations

from uuid import UUID

from zenml.client import Client

from fedmm.errors import PastRunError
from fedmm.graph import Graph


def past_artifacts(graph: Graph, training_run_id: str, names: tuple[str, ...]) -> dict:
    """The artifact versions ``names`` of a finished run of ``graph``'s pipeline, by artifact name."""
    from fedmm_pipelines.steps.graph import step_name

    try:
        run = Client().get_pipeline_run(UUID(training_run_id))
    except (KeyError, ValueError):
        raise PastRunError(f"no ZenML pipeline run {training_run_id!r}") from None
    found = {}
    for name in names:
        step = step_name(graph.producer(name))
        if step not in run.steps or name not in run.steps[step].outputs:
            raise PastRunError(
                f"pipeline run {training_run_id} has no {step}.{name}: only finished {graph.name} runs can be analysed"
            )
        found[name] = run.steps[step].outputs[name][0]
    return found
