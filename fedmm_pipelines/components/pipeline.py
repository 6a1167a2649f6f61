"""kfp pipelines generated from ``fedmm.graph``, and the compiler entry point.

    python -m fedmm_pipelines.components.pipeline --config configs/default.yaml --output kfp/fedmm_training.yaml

compiles the config's graph to IR YAML with the config's JSON baked in as the default of
the ``config_json`` parameter (a run may still override it). GPU stages request the
config's ``train.gpus`` NVIDIA GPUs (none when 0); inside, ``train.device: auto`` uses them.
"""

# No `from __future__ import annotations`: kfp reads the annotations as real types.
import argparse
import json
from pathlib import Path

from kfp import compiler, dsl

from fedmm.config import load_config
from fedmm.graph import Graph, for_config
from fedmm_pipelines.components.stages import components_of

GPU_RESOURCE = "nvidia.com/gpu"
TRAIN_CPU, TRAIN_MEMORY = "4", "16Gi"


def graph_pipeline(graph: Graph, config):
    """The pipeline of ``graph``: one task per stage, wired by the graph's artifacts and ``after`` gates.

    Resource requests are fixed at compile time, so they come from ``config`` (``train.gpus``).
    """
    gpus = config.train.gpus
    components = components_of(graph)

    @dsl.pipeline(name=f"fedmm-{graph.name}", description=graph.description)
    def pipeline(config_json: str, tracking_uri: str = "") -> dict:
        tasks, outputs = {}, {}
        for stage in graph.stages:
            task = components[stage.name](config_json=config_json, tracking_uri=tracking_uri,
                                          **{k: outputs[k] for k in stage.inputs})
            task.after(*(tasks[name] for name in stage.after))
            if stage.gpu:
                task.set_cpu_request(TRAIN_CPU).set_memory_request(TRAIN_MEMORY)
                if gpus:
                    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
            if not stage.cacheable:
                task.set_caching_options(False)
            tasks[stage.name] = task
            outputs[stage.output] = task.outputs[stage.output] if stage.output in task.outputs else task.output
        return outputs[graph.result]

    return pipeline


def training_pipeline(config):
    """The pipeline of the graph ``fedmm run`` runs for ``config``."""
    return graph_pipeline(for_config(config), config)


def config_json(config) -> str:
    """The config as the JSON string every component parses."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def compile_pipeline(output: Path, config) -> Path:
    """Compile the config's graph to IR YAML with ``config`` as the default ``config_json``."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        training_pipeline(config), str(output), pipeline_parameters={"config_json": config_json(config)}
    )
    return output


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedmm_pipelines.components.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML config (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.rounds=5 (repeatable)")
    parser.add_argument("--output", type=Path, default=Path("kfp/fedmm_training.yaml"), help="where to write the YAML")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, load_config(args.config, args.overrides)))


if __name__ == "__main__":
    main()
