"""ZenML pipelines generated from ``fedmm.graph``: each graph's pipeline is a loop over its stages.

A stage the graph skips for a config is left out and its artifact is None. ``after``
gates order the stages after them, so cached steps read only the artifacts they use;
each step gets the config as its stage sees it (``Graph.stage_config``: the keys it
reads), so a change elsewhere reuses its cached output. A gate sees the whole config:
when it fails it records the failed run in MLflow. Tracking is the graph's own (the last
stage's tracker), the same as under DVC and kfp.

The analysis pipeline re-runs one stage with an ``attach`` hook over a past run's
artifacts (``pipelines.past_run``) and attaches its output to that run.
"""

from __future__ import annotations

from zenml import Model, pipeline
from zenml.config import ResourceSettings
from zenml.enums import ExecutionMode

from fedmm.graph import GRAPHS, Graph
from fedmm_pipelines.pipelines.past_run import past_artifacts
from fedmm_pipelines.steps.graph import attach_steps_of, step_name, steps_of


def make_pipeline(graph: Graph):
    """The ZenML pipeline of ``graph``: one step per stage, wired by its artifacts and gates."""
    steps = steps_of(graph)

    def entrypoint(config) -> None:
        outputs: dict = {}
        for stage in graph.stages:
            if graph.skip_reason(stage, config) is not None:
                outputs[stage.output] = None
                continue
            after = [outputs[graph.stage(name).output] for name in stage.after]
            seen = config if stage.gate else graph.stage_config(stage, config)
            outputs[stage.output] = steps[stage.name](seen, **{name: outputs[name] for name in stage.inputs},
                                                      after=[a for a in after if a is not None] or None)

    entrypoint.__name__ = entrypoint.__qualname__ = f"{graph.name}_pipeline"
    entrypoint.__module__ = __name__
    # Fail fast: the first failed step stops the run and its own error (e.g. which expectations
    # failed) reaches the caller, instead of a generic "step(s) failed".
    made = globals()[entrypoint.__name__] = pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)(entrypoint)
    return made


def make_analysis(graph: Graph, name: str):
    """The pipeline re-running stage ``name`` over a past run of ``graph`` and attaching its output to it."""
    stage = graph.stage(name)

    def entrypoint(config, training_run_id: str) -> None:
        found = past_artifacts(graph, training_run_id, (*stage.inputs, graph.result))
        value = steps_of(graph)[name](config, **{key: found[key] for key in stage.inputs},
                                            show=False, forced=True)
        attach_steps_of(graph)[name](value, found[graph.result])

    entrypoint.__name__ = entrypoint.__qualname__ = f"{graph.name}_{stage.function}_pipeline"
    entrypoint.__module__ = __name__
    made = globals()[entrypoint.__name__] = pipeline(enable_cache=False, execution_mode=ExecutionMode.FAIL_FAST)(entrypoint)
    return made


PIPELINES = {graph.name: make_pipeline(graph) for graph in GRAPHS.values()}
"""Each declared graph's pipeline (also this module's attribute ``<graph>_pipeline``)."""
ANALYSES = {graph.name: {name: make_analysis(graph, name) for name in attach_steps_of(graph)} for graph in GRAPHS.values()}
"""Each graph's analysis pipeline per stage with an ``attach`` hook."""


def configured_pipeline(graph: Graph, config):
    """``graph``'s pipeline with its ZenML model and resource settings for this config.

    ``train.gpus`` (read only where the graph has a GPU stage) becomes the GPU stages' ``ResourceSettings(gpu_count=...)`` (the local
    orchestrator ignores it; Kubeflow turns it into a GPU limit).
    """
    options: dict = {"model": Model(name=config.registry.model_name, description=f"fedmm {graph.name} model")}
    gpu_stages = [stage for stage in graph.stages if stage.gpu]
    if gpu_stages and config.train.gpus:
        resources = ResourceSettings(gpu_count=config.train.gpus)
        options["step_configurations"] = {step_name(stage): {"settings": {"resources": resources}} for stage in gpu_stages}
    return PIPELINES[graph.name].with_options(**options)


def output(run, graph: Graph, artifact: str):
    """The value of ``artifact`` in a finished run of ``graph``'s pipeline (or of an analysis of it)."""
    found = run.steps[step_name(graph.producer(artifact))].outputs[artifact]
    return (found[0] if isinstance(found, list) else found).load()


def run_analysis(graph: Graph, name: str, config, training_run_id: str):
    """Re-run stage ``name`` over a past run (its MLflow run and model version get the output); returns the run."""
    return ANALYSES[graph.name][name](config, training_run_id)
