"""The fedmm training pipeline for Kubeflow Pipelines, and its compiler entry point.

    python -m components.pipeline --config configs/default.yaml --output kfp/fedmm_training.yaml

compiles the pipeline to IR YAML with the config's JSON baked in as the default of the
``config_json`` parameter (a run may still override it). The training task always requests
one NVIDIA GPU: that is the point of the Kubeflow path; inside, ``train.device: auto`` uses it.
"""

# No `from __future__ import annotations`: kfp reads the annotations as real types.
import argparse
import json
from pathlib import Path

from kfp import compiler, dsl

from components import stages
from fedmm.config import Config, load_config

PIPELINE_NAME = "fedmm-training"
GPU_RESOURCE = "nvidia.com/gpu"
TRAIN_CPU, TRAIN_MEMORY = "4", "16Gi"


@dsl.pipeline(name=PIPELINE_NAME, description="prepare -> validate -> partition/mask -> validate -> train -> evaluate -> register")
def fedmm_training(config_json: str, tracking_uri: str = "") -> dict:
    prepared = stages.prepare(config_json=config_json)
    data_report = stages.validate_data(config_json=config_json, prepared=prepared.output)
    partitions = stages.partition(config_json=config_json, prepared=prepared.output).after(data_report)
    partition_report = stages.validate_partitions(config_json=config_json, partitions=partitions.output)
    training = stages.train(
        config_json=config_json, prepared=prepared.output, partitions=partitions.output
    ).after(partition_report)
    training.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    training.set_cpu_request(TRAIN_CPU).set_memory_request(TRAIN_MEMORY)
    evaluation = stages.evaluate(
        prepared=prepared.output, partitions=partitions.output, training=training.outputs["training"]
    )
    registered = stages.register(
        config_json=config_json,
        prepared=prepared.output,
        partitions=partitions.output,
        training=training.outputs["training"],
        evaluation=evaluation.outputs["evaluation"],
        data_report=data_report.output,
        partition_report=partition_report.output,
        tracking_uri=tracking_uri,
    ).set_caching_options(False)
    return registered.output


def config_json(config: Config) -> str:
    """The config as the JSON string every component parses."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def compile_pipeline(output: Path, config: Config) -> Path:
    """Compile ``fedmm_training`` to IR YAML with ``config`` as the default ``config_json``."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        fedmm_training, str(output), pipeline_parameters={"config_json": config_json(config)}
    )
    return output


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m components.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML config (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.rounds=5 (repeatable)")
    parser.add_argument("--output", type=Path, default=Path("kfp/fedmm_training.yaml"), help="where to write the YAML")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, load_config(args.config, args.overrides)))


if __name__ == "__main__":
    main()
