"""Launch a graph's pipeline and fetch its summary artifact."""

from __future__ import annotations

from dataclasses import replace

from fedmm.runtime import state_dir
from fedmm.tracking.lock import file_lock


def ensure_store() -> None:
    """Create and migrate the local ZenML store once, under a lock: concurrent first runs wait for it."""
    from zenml.client import Client

    with file_lock(state_dir() / "zenml.init.lock", what="ZenML store lock"):
        Client().zen_store  # noqa: B018 (reading the property creates and migrates the store)


def run_pipeline(config, echo=print):
    """Check the config (its graph's ``preflight``), sweep what crashed runs left, run the config's graph on ZenML.

    Preflight warnings and what was swept are passed to ``echo``. Returns the run summary, with
    the ZenML pipeline run's id in ``zenml_pipeline_run``.
    """
    from fedmm.graph import for_config, resolve

    graph = for_config(config)
    for warning in resolve(graph.preflight)(config) if graph.preflight else ():
        echo(f"warning: {warning}")
    from fedmm.tracking.registry import sweep
    from fedmm_pipelines.pipelines.graph import configured_pipeline, output

    for line in sweep():
        echo(f"swept: {line}")
    ensure_store()
    run = configured_pipeline(graph, config)(config)
    summary = output(run, graph, graph.result)
    if isinstance(summary, dict):
        return {**summary, "zenml_pipeline_run": str(run.id)}
    return replace(summary, zenml_pipeline_run=str(run.id))
