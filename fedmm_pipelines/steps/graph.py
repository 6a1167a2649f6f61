"""ZenML steps generated from ``fedmm.graph``: one step per stage of every graph, one attach step per
stage with an ``attach`` hook. No step is written by hand.

A stage's step is named after its function and its output after its artifact; it takes
the stage's config view (``config``), its input artifacts by name, and ``show`` (whether
the stage's ``show`` hook prints its output) and ``forced`` (run it though the config skips it: an
analysis asked for it). The body is :meth:`Graph.execute`; a failed
gate's report is kept as an artifact of its name before the step fails. The graph's last
stage (its result, the run summary) gets the ZenML model version and pipeline run as tags
and mirrors the registry's aliases into ZenML's Model Control Plane.

Each step is a top-level attribute of this module (``<graph>__<function>``), where ZenML's
source resolution finds it.
"""

from __future__ import annotations

import inspect
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, save_artifact, step
from zenml.config.cache_policy import CachePolicy
from zenml.steps import BaseStep

import fedmm
from fedmm.artifacts import directory_sha256
from fedmm.graph import GRAPHS, Artifact, Graph, Stage, resolve
from fedmm.tracking import tags as T
from fedmm_pipelines.pipelines.model_control_plane import mirror_aliases
from fedmm_pipelines.steps.materializers import FolderArtifactMaterializer, JsonArtifactMaterializer

SUMMARY_METADATA = ("model_version", "aliases", "promoted", "test_macro_f1", "test_mrr", "data_sha256")
"""The run summary's fields logged as the ZenML model version's metadata."""


@cache
def fedmm_code_version() -> str:
    """fedmm's own source hash: part of every step's cache key, so a cached step output computed by other code
    (an upgrade, a local edit) is not reused (ZenML's key covers the step body, not the library it calls)."""
    return directory_sha256(Path(fedmm.__file__).parent, "*.py")


CACHE_POLICY = CachePolicy(cache_func=f"{__name__}.{fedmm_code_version.__name__}")  # a source: resolved when a step runs


def step_name(stage: Stage) -> str:
    """A stage's step name (and the key of its step in a ZenML run's ``steps``)."""
    return stage.function


def materializer(artifact: Artifact) -> type | None:
    """How ZenML stores an artifact: through its own save/load, as typed JSON, or ZenML's default."""
    if artifact.kind == "folder":
        return FolderArtifactMaterializer
    return JsonArtifactMaterializer if artifact.type else None


def artifact_type(graph: Graph, name: str, read: bool = False) -> Any:
    """An artifact's Python type in a step signature; ``read`` by a later stage, None when its stage may be skipped."""
    cls = graph.artifact(name).cls() or dict
    return cls | None if read and graph.producer(name).skip else cls


def finish(summary, config) -> None:
    """After the graph's result: mirror the registry's aliases in ZenML and log the summary as model metadata."""
    mirror_aliases(config.registry.model_name)
    found = summary if isinstance(summary, dict) else summary.to_dict()
    get_step_context().model.log_metadata({key: found[key] for key in SUMMARY_METADATA if key in found})


def stage_body(graph: Graph, stage: Stage):
    """The body every stage's step runs."""
    output = graph.artifact(stage.output)

    def keep(report) -> None:
        save_artifact(report, name=output.name, materializer=materializer(output))

    def body(config, show: bool = True, forced: bool = False, **inputs):
        if stage.output != graph.result:
            return graph.execute(stage, config, inputs, keep=keep, show=show, forced=forced)
        context = get_step_context()
        extra = {T.ZENML_MODEL_VERSION: str(context.model.id), T.ZENML_PIPELINE_RUN: str(context.pipeline_run.id)}
        value = graph.execute(stage, config, inputs, keep=keep, show=show, extra_tags=extra)
        finish(value, config)
        return value

    return body


def require_own_name(graph: Graph) -> None:
    """Steps are module attributes named after their graph: a graph may not take a declared graph's name, or
    its steps would replace the declared graph's ones (which ZenML loads by that name when a run executes)."""
    declared = GRAPHS.get(graph.name)
    if declared is not None and declared != graph:
        raise ValueError(f"graph {graph.name!r} differs from the declared graph of that name: give it a name of its own")


def make_step(graph: Graph, stage: Stage) -> BaseStep:
    """The ZenML step of ``stage``."""
    require_own_name(graph)
    body = stage_body(graph, stage)
    parameters = [inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=graph.config_class())]
    parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=artifact_type(graph, name, read=True))
                   for name in stage.inputs]
    parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=bool)
                   for name, default in (("show", True), ("forced", False))]
    returns = Annotated[artifact_type(graph, stage.output), stage.output]
    return publish(body, f"{graph.name}__{stage.function}", inspect.Signature(parameters, return_annotation=returns),
                   graph.function(stage).__doc__, name=step_name(stage), enable_cache=stage.cacheable,
                   cache_policy=CACHE_POLICY, output_materializers=materializer(graph.artifact(stage.output)))


def make_attach_step(graph: Graph, stage: Stage) -> BaseStep:
    """The step attaching a re-run of ``stage`` over a past run to that run (its ``attach`` hook)."""
    require_own_name(graph)
    attach = resolve(stage.attach)

    def body(value, run_summary) -> None:
        attach(value, run_summary)

    signature = inspect.Signature([
        inspect.Parameter("value", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=artifact_type(graph, stage.output)),
        inspect.Parameter("run_summary", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=artifact_type(graph, graph.result)),
    ], return_annotation=None)
    return publish(body, f"{graph.name}__attach_{stage.function}", signature, attach.__doc__,
                   name=f"attach_{stage.function}", enable_cache=False)


def publish(body, attribute: str, signature: inspect.Signature, doc: str | None, **options) -> BaseStep:
    """Make ``body`` a step with ``signature``, as this module's attribute ``attribute``."""
    body.__name__ = body.__qualname__ = attribute
    body.__module__, body.__doc__, body.__signature__ = __name__, doc, signature
    body.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    body.__annotations__["return"] = signature.return_annotation
    made = globals()[attribute] = step(**options)(body)
    return made


STEPS: dict[str, dict[str, BaseStep]] = {}
"""Each graph's step per stage (:func:`steps_of`)."""
ATTACH_STEPS: dict[str, dict[str, BaseStep]] = {}
"""Each graph's attach step per stage that has an ``attach`` hook (:func:`attach_steps_of`)."""


def steps_of(graph: Graph) -> dict[str, BaseStep]:
    """``graph``'s step per stage, made once."""
    if graph.name not in STEPS:
        STEPS[graph.name] = {stage.name: make_step(graph, stage) for stage in graph.stages}
    return STEPS[graph.name]


def attach_steps_of(graph: Graph) -> dict[str, BaseStep]:
    """``graph``'s attach step per stage with an ``attach`` hook, made once."""
    if graph.name not in ATTACH_STEPS:
        ATTACH_STEPS[graph.name] = {stage.name: make_attach_step(graph, stage) for stage in graph.stages if stage.attach}
    return ATTACH_STEPS[graph.name]


for _graph in GRAPHS.values():  # every declared graph's steps are attributes of this module at import
    steps_of(_graph), attach_steps_of(_graph)
