"""kfp v2 lightweight components generated from ``fedmm.graph``: one per stage of every graph.

Each component runs in the image ``FEDMM_IMAGE``, built from this repository (it has fedmm,
its locked dependencies and kfp installed); ``infra/README.md`` describes building and
pushing it. kfp copies only a component's source into the container, so each component is
generated as source text (registered with :mod:`linecache`, where kfp reads it): its
parameters are the config JSON, its stage's input and output artifacts by the graph's names
(kfp's Dataset, Model or Artifact by the artifact's role), a kfp ``Metrics`` output when the
stage has a ``metrics`` hook, and the MLflow ``tracking_uri``; the graph's result is its
return value. The body is one call of ``fedmm.stages.run_task``, which stores artifacts as
DVC's stages do. A validation component raises when its suite fails, so no downstream task runs.
"""

# No `from __future__ import annotations`: kfp reads the annotations as real types.
import linecache

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from fedmm.graph import Graph, Stage

FEDMM_IMAGE = "fedmm:0.1.0"
"""The image every component runs in: the repository installed over requirements.lock."""

KFP_TYPES = {"data": "Dataset", "model": "Model", "report": "Artifact"}
"""The kfp artifact type of each artifact role."""

component = dsl.component(base_image=FEDMM_IMAGE, install_kfp_package=False)


def file_input(key: str) -> str:
    """The input artifact that carries the file config key ``key`` names (``data.path`` -> ``data_path``)."""
    return key.replace(".", "_")


def function_name(stage: Stage) -> str:
    """A stage's component function (kfp names the task after it: the stage's name)."""
    return stage.name.replace("-", "_")


def component_source(graph: Graph, stage: Stage, import_files: bool = False) -> str:
    """The Python source of ``stage``'s component; with ``import_files``, the files its config keys name
    (``stage.files``) are Dataset inputs too, read in place of the config's paths."""
    final = stage.output == graph.result
    parameters = ["config_json: str"]
    parameters += [f"{name}: Input[{KFP_TYPES[graph.artifact(name).role]}]" for name in stage.inputs]
    paths = [f"{name}={name}.path" for name in stage.inputs]
    if import_files and stage.files:
        parameters += [f"{file_input(key)}: Input[Dataset]" for key in stage.files]
        paths.append("files={" + ", ".join(f"{key!r}: {file_input(key)}.path" for key in stage.files) + "}")
    if not final:
        parameters.append(f"{stage.output}: Output[{KFP_TYPES[graph.artifact(stage.output).role]}]")
        paths.append(f"{stage.output}={stage.output}.path")
    if stage.metrics:
        parameters.append("metrics: Output[Metrics]")
    parameters.append('tracking_uri: str = ""')
    doc = (graph.function(stage).__doc__ or stage.name).strip().splitlines()[0].replace('"', "'")
    metrics = "metrics" if stage.metrics else "None"
    return (f"def {function_name(stage)}({', '.join(parameters)}){' -> dict' if final else ''}:\n"
            f'    """{doc}"""\n'
            "    from fedmm.stages import run_task\n\n"
            f"    {'return ' if final else ''}run_task({graph.name!r}, {stage.name!r}, config_json, tracking_uri, {metrics}, "
            f"{', '.join(paths)})\n")


def make_component(graph: Graph, stage: Stage, import_files: bool = False):
    """``stage``'s kfp component, from :func:`component_source`."""
    source = component_source(graph, stage, import_files)
    filename = f"<fedmm component {graph.name}.{stage.name}{'+files' if import_files else ''}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": __name__, "Input": Input, "Output": Output, "Metrics": Metrics, "Dataset": Dataset,
                 "Model": Model, "Artifact": Artifact}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (source generated from the graph above)
    return component(namespace[function_name(stage)])


COMPONENTS: dict[tuple[str, bool], dict] = {}
"""Each graph's component per stage, without and with imported files (:func:`components_of`)."""


def components_of(graph: Graph, import_files: bool = False) -> dict:
    """``graph``'s component per stage, made once."""
    key = (graph.name, import_files)
    if key not in COMPONENTS:
        COMPONENTS[key] = {stage.name: make_component(graph, stage, import_files) for stage in graph.stages}
    return COMPONENTS[key]
