"""A graph over folders of artifacts: what ``fedmm stage NAME`` runs for DVC, what kfp components call.

Each stage reads its inputs' files and writes its output's (paths from the graph), so DVC
tracks them as deps and outs, plus its hooks' metrics and report files. A stage that does
nothing for a config (no imputation evaluation unless configured) writes an explicit
``skipped.json`` record in its output folder instead.

:func:`dvc_pipeline` is ``dvc.yaml`` generated from a graph; ``fedmm dvc`` writes it
(and a full ``params.yaml``) for any config.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmm import runtime
from fedmm.artifacts import read_json, write_json, write_text
from fedmm.graph import GRAPHS, Graph, Stage, config_value, resolve

REPOSITORY = Path(__file__).resolve().parents[1]
"""The source checkout (for an editable install): its tracked ``dvc.yaml`` calls plain ``fedmm``."""
SKIPPED = "skipped.json"
WORKDIR = "artifacts"
METRICS = "metrics.json"


def save(graph: Graph, name: str, value: Any, path: str | Path) -> None:
    """Write artifact ``name`` to ``path`` the way the graph stores it."""
    artifact = graph.artifact(name)
    if artifact.kind == "folder":
        value.save(path)
    else:
        write_json(path, value.to_dict() if artifact.type else value)


def load(graph: Graph, name: str, path: str | Path) -> Any:
    """Read artifact ``name`` from ``path``; None when its stage was skipped."""
    artifact, path = graph.artifact(name), Path(path)
    if (path / SKIPPED).is_file():
        return None
    if artifact.kind == "folder":
        return artifact.cls().load(path)
    payload = read_json(path)
    return artifact.cls().from_dict(payload) if artifact.type else payload


def metrics_path(graph: Graph, stage: Stage) -> str:
    """Where a stage's ``metrics`` hook's numbers go: beside its output."""
    return str(Path(graph.artifact(stage.output).path).parent / METRICS)


def run(graph: Graph, name: str, config, paths: Mapping[str, str | Path], run_name: str | None = None) -> Any:
    """Run stage ``name`` over artifact files: ``paths`` maps its inputs and output to where they are
    (an output without a path is only returned, as kfp's last task returns the graph's result).

    Returns the output (None when skipped); a failed gate raises after its report is written.
    """
    return run_with_inputs(graph, name, config, paths, run_name)[0]


def run_with_inputs(graph: Graph, name: str, config, paths: Mapping[str, str | Path],
                    run_name: str | None = None) -> tuple[Any, dict]:
    """:func:`run`, returning the output and the inputs it read."""
    stage = graph.stage(name)
    target = paths.get(stage.output)
    reason = graph.skip_reason(stage, config)
    if reason is not None:
        write_json(Path(target) / SKIPPED, {"stage": name, "reason": reason})
        return None, {}
    inputs = {key: load(graph, key, paths[key]) for key in stage.inputs}
    keep = None if target is None else (lambda report: save(graph, stage.output, report, target))
    value = graph.execute(stage, config, inputs, keep=keep, run_name=run_name)
    if target is not None:
        save(graph, stage.output, value, target)
    return value, inputs


def with_files(payload: dict, files: Mapping[str, str]) -> dict:
    """A config's JSON with the file keys of ``files`` (``data.path``, ...) set to the given paths."""
    for key, path in files.items():
        *parents, last = key.split(".")
        section = payload
        for part in parents:
            section = section[part]
        section[last] = str(path)
    return payload


def run_task(graph_name: str, name: str, config_json: str, tracking_uri: str = "", metrics=None,
             files: Mapping[str, str] | None = None, **paths: str) -> Any:
    """A kfp component's body: configure the runtime (MLflow at ``tracking_uri`` when given), parse the
    config (its file keys replaced by ``files``, the local paths of imported artifacts), :func:`run` over
    the task's paths, log the stage's ``metrics`` hook to ``metrics`` (an object with ``log_metric``,
    kfp's Metrics). Returns the graph's result as a dict, other outputs as they are."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    runtime.configure()
    graph = GRAPHS[graph_name]
    stage = graph.stage(name)
    config = graph.config_class().model_validate(with_files(json.loads(config_json), files or {}))
    value = run(graph, name, config, paths, run_name="kfp")
    if metrics is not None and value is not None:
        for key, number in resolve(stage.metrics)(value).items():
            metrics.log_metric(key, number)
    return value.to_dict() if stage.output == graph.result else value


def workdir_paths(graph: Graph, workdir: Path) -> dict[str, Path]:
    """Every artifact's path under one folder (the DVC layout)."""
    return {artifact.name: Path(workdir) / artifact.path for artifact in graph.artifacts}


def run_in(graph: Graph, name: str, config, workdir: Path) -> None:
    """``fedmm stage NAME``: run a stage over ``workdir``, then write its metrics and report files there."""
    stage, paths = graph.stage(name), workdir_paths(graph, workdir)
    value, inputs = run_with_inputs(graph, name, config, paths, run_name="dvc")
    if value is None:
        return
    if stage.metrics is not None:
        write_json(workdir / metrics_path(graph, stage), resolve(stage.metrics)(value))
    for report in stage.reports:
        resolve(report.write)(value, inputs, workdir / report.path)


def dvc_pipeline(graph: Graph, config, fedmm: str = "fedmm") -> dict:
    """``dvc.yaml`` over ``params.yaml`` holding ``config``, from the graph: deps are a stage's inputs,
    its ``after`` stages' outputs and its data files; params the config keys it reads; outs its output,
    metrics and plots its hooks' files. ``fedmm`` is the command its stages call."""
    where = lambda path: f"{WORKDIR}/{path}"  # noqa: E731
    stages = {}
    for stage in graph.stages:
        deps = [where(graph.artifact(key).path) for key in stage.inputs]
        deps += [where(graph.artifact(graph.stage(name).output).path) for name in stage.after]
        deps += [str(value) for key in stage.files if (value := config_value(config, key)) is not None]
        entry: dict[str, Any] = {"cmd": f"{fedmm} stage {stage.name} --config params.yaml --workdir {WORKDIR}"}
        if deps:
            entry["deps"] = deps
        if stage.reads:
            entry["params"] = list(stage.reads)
        output = where(graph.artifact(stage.output).path)
        entry["outs"] = [output if stage.cacheable else {output: {"cache": False}}]
        if stage.metrics is not None:
            entry["metrics"] = [{where(metrics_path(graph, stage)): {"cache": False}}]
        plots = [{where(r.path): {"cache": False, "x": r.plot_x}} for r in stage.reports if r.plot_x is not None]
        if plots:
            entry["plots"] = plots
        stages[stage.name] = entry
    return {"stages": stages}


def this_fedmm() -> str:
    """The ``fedmm`` command of the running interpreter's environment, as an absolute shell word."""
    script = Path(sys.executable).parent / "fedmm"
    return shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(sys.executable)} -m fedmm.cli"


def write_dvc_project(graph: Graph, config, directory: Path) -> dict[str, Path]:
    """Write ``params.yaml`` (the full config, the files its stages read relative to ``directory``) and
    ``dvc.yaml`` there.

    Its stages call this environment's ``fedmm`` by its absolute path (:func:`this_fedmm`), so
    ``dvc repro`` runs them whatever ``PATH`` holds; the repository's own tracked ``dvc.yaml``
    calls plain ``fedmm`` (``make dvc`` puts the venv on ``PATH``).
    """
    import yaml

    directory = Path(directory)
    fedmm = "fedmm" if directory.resolve() == REPOSITORY else this_fedmm()
    directory.mkdir(parents=True, exist_ok=True)
    relative = {key: os.path.relpath(Path(value).resolve(), directory.resolve())
                for key in dict.fromkeys(key for stage in graph.stages for key in stage.files)
                if (value := config_value(config, key)) is not None}
    config = type(config).model_validate(with_files(config.model_dump(mode="json"), relative))
    paths = {"params": directory / "params.yaml", "dvc": directory / "dvc.yaml"}
    write_text(paths["params"], "# The config of this DVC pipeline (fedmm config --config params.yaml checks it).\n"
               + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_text(paths["dvc"], "# Generated from fedmm/graph.py by `fedmm dvc`: edit the graph, not this file.\n"
               + yaml.safe_dump(dvc_pipeline(graph, config, fedmm), sort_keys=False))
    return paths


def dvc_instructions(dvc_file: Path) -> str:
    """The shell line that runs ``dvc_file``: from the DVC repository holding it, or after making one there
    (``dvc repro`` refuses a ``dvc.yaml`` outside the repository it runs in)."""
    dvc_file = Path(dvc_file).resolve()
    script = Path(sys.executable).parent / "dvc"
    dvc = shlex.quote(str(script)) if script.is_file() else "dvc"
    root = next((folder for folder in dvc_file.parents if (folder / ".dvc").is_dir()), None)
    if root is None:
        return f"cd {shlex.quote(str(dvc_file.parent))} && {dvc} init --no-scm -q && {dvc} repro"
    return f"cd {shlex.quote(str(root))} && {dvc} repro {shlex.quote(str(dvc_file.relative_to(root)))}"
