"""kfp pipelines generated from ``fedmm.graph``, and the compiler entry point.

    python -m fedmm_pipelines.components.pipeline --config configs/default.yaml --output kfp/fedmm_training.yaml

compiles the config's graph (a ``task: fedmkgc`` file: the FedMKGC graph) to IR YAML with the config's JSON baked in as the default of
the ``config_json`` parameter (a run may still override it); ``--import-data`` makes the
config's data files input artifacts imported from URI parameters (``data_path_uri``). GPU stages request the
config's ``train.gpus`` NVIDIA GPUs (none when 0); inside, ``train.device: auto`` uses them.
"""

# No `from __future__ import annotations`: kfp reads the annotations as real types.
import argparse
import inspect
import json
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Dataset

from fedmm.config import ConfigError
from fedmm.errors import EXIT_USER_ERROR, UserError
from fedmm.graph import Graph, config_value, for_config, load_run_config
from fedmm_pipelines.components.stages import components_of, file_input

GPU_RESOURCE = "nvidia.com/gpu"
TRAIN_CPU, TRAIN_MEMORY = "4", "16Gi"


def imported_files(graph: Graph, config) -> dict[str, str]:
    """Each file config key the graph's stages read (``data.path``, ...) -> its absolute path in ``config``."""
    keys = dict.fromkeys(key for stage in graph.stages for key in stage.files)
    unset = [key for key in keys if config_value(config, key) is None]
    if not keys or unset:
        raise ConfigError(f"--import-data imports the files a config names, but {', '.join(unset) or 'no file key'} "
                          "is not set: use a bring-your-own-data config (data.source: npz, data.path)")
    return {key: str(Path(config_value(config, key)).resolve()) for key in keys}


def graph_pipeline(graph: Graph, config, import_files: bool = False):
    """The pipeline of ``graph``: one task per stage, wired by the graph's artifacts and ``after`` gates.

    Resource requests are fixed at compile time, so they come from ``config`` (``train.gpus``).
    With ``import_files`` every data file the config names is a Dataset imported from a URI
    parameter ``<key>_uri`` (``data_path_uri``; default: the file's local path), and the
    stages read the imported copy: a run points it at ``gs://``, ``s3://`` or ``minio://``.
    """
    gpus = config.train.gpus if any(stage.gpu for stage in graph.stages) else 0
    files = imported_files(graph, config) if import_files else {}
    components = components_of(graph, import_files)

    def pipeline(config_json: str, tracking_uri: str = "", *uris: str) -> dict:
        tasks, outputs = {}, {}
        imported = {file_input(key): dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False).output
                    for key, uri in zip(files, uris)}
        for stage in graph.stages:
            task = components[stage.name](config_json=config_json, tracking_uri=tracking_uri,
                                          **{k: outputs[k] for k in stage.inputs},
                                          **{file_input(k): imported[file_input(k)] for k in stage.files if files})
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

    signature = inspect.signature(pipeline)
    fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_POSITIONAL]
    uri_parameters = [inspect.Parameter(f"{file_input(key)}_uri", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=path, annotation=str) for key, path in files.items()]
    pipeline.__signature__ = signature.replace(parameters=[*fixed, *uri_parameters])  # kfp reads the signature
    return dsl.pipeline(name=f"fedmm-{graph.name}", description=graph.description)(pipeline)


def training_pipeline(config, import_files: bool = False):
    """The pipeline of the graph ``fedmm run`` runs for ``config``."""
    return graph_pipeline(for_config(config), config, import_files)


def config_json(config) -> str:
    """The config as the JSON string every component parses."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def compile_pipeline(output: Path, config, import_files: bool = False) -> Path:
    """Compile the config's graph to IR YAML with ``config`` as the default ``config_json`` (with
    ``import_files``, its data files as imported artifacts: :func:`graph_pipeline`)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        training_pipeline(config, import_files), str(output), pipeline_parameters={"config_json": config_json(config)}
    )
    return output


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedmm_pipelines.components.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML config (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.rounds=5 (repeatable)")
    parser.add_argument("--output", type=Path, default=Path("kfp/fedmm_training.yaml"), help="where to write the YAML")
    parser.add_argument("--import-data", action="store_true",
                        help="the config's data files become input artifacts imported from URI parameters "
                             "(data_path_uri, ...), so a run can point them at object storage")
    args = parser.parse_args(argv)
    try:
        print(compile_pipeline(args.output, load_run_config(args.config, args.overrides), args.import_data))
    except UserError as error:
        parser.exit(EXIT_USER_ERROR, f"error: {error}\n")


if __name__ == "__main__":
    main()
