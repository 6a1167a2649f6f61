"""The stage graph over folders of artifacts: what ``fedmm stage NAME`` runs for DVC, what kfp components call.

Each stage reads its inputs' files and writes its output's (paths from ``fedmm.graph``),
so DVC tracks them as deps and outs. A stage that does nothing for a config (no imputation
evaluation unless configured) writes an explicit ``skipped.json`` record in its output folder
instead. The MLflow run is opened by the
``register`` stage, which logs the validation reports, results and audit before registering.

:func:`dvc_pipeline` is ``dvc.yaml`` generated from the graph; ``fedmm dvc`` writes it
(and a full ``params.yaml``) for any config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedmm import graph, runtime
from fedmm.artifacts import read_json, write_json, write_text
from fedmm.config import Config, config_from_dict
from fedmm.progress import RoundProgress
from fedmm.report import write_summary

SKIPPED = "skipped.json"
WORKDIR = "artifacts"
METRICS, ROUNDS = "evaluation/metrics.json", "evaluation/rounds.csv"


def save(name: str, value: Any, path: str | Path) -> None:
    """Write artifact ``name`` to ``path`` the way the graph stores it."""
    artifact = graph.ARTIFACTS[name]
    if artifact.kind == "folder":
        value.save(path)
    else:
        write_json(path, value.to_dict() if artifact.type else value)


def load(name: str, path: str | Path) -> Any:
    """Read artifact ``name`` from ``path``; None when its stage was skipped."""
    artifact, path = graph.ARTIFACTS[name], Path(path)
    if (path / SKIPPED).is_file():
        return None
    if artifact.kind == "folder":
        return artifact.cls().load(path)
    payload = read_json(path)
    return artifact.cls().from_dict(payload) if artifact.type else payload


@contextmanager
def _progress(stage: graph.Stage, config: Config, inputs: dict) -> Iterator[dict]:
    """The progress callbacks of the stages that report rounds."""
    if stage.name == "train":
        with RoundProgress(config.train.rounds, config.train.strategy) as progress:
            yield {"on_round": progress.update}
    elif stage.name == "audit":
        with RoundProgress(len(inputs["result"].history), "audit") as progress:
            yield {"on_round": progress.step}
    else:
        yield {}


def run(name: str, config: Config, paths: Mapping[str, str | Path], run_name: str | None = None) -> Any:
    """Run stage ``name`` over artifact files: ``paths`` maps its inputs and output to where they are
    (an output without a path is only returned, as kfp's register returns its summary).

    Returns the output (None when skipped); a failed gate raises after its report is written.
    """
    stage = graph.stage(name)
    target = paths.get(stage.output)
    reason = graph.skip_reason(stage, config)
    if reason is not None:
        write_json(Path(target) / SKIPPED, {"stage": name, "reason": reason})
        return None
    inputs = {key: load(key, paths[key]) for key in stage.inputs}
    with _progress(stage, config, inputs) as callbacks:
        value = graph.execute(stage, config, inputs, run_name=run_name, **callbacks)
    if target is not None:
        save(stage.output, value, target)
    if stage.gate:
        value.raise_if_failed()
    return value


def run_json(name: str, config_json: str, **paths: str) -> Any:
    """A kfp component's body: configure the runtime, parse the config, :func:`run` over the task's paths."""
    runtime.configure()
    return run(name, config_from_dict(json.loads(config_json)), paths, run_name="kfp")


def workdir_paths(workdir: Path) -> dict[str, Path]:
    """Every artifact's path under one folder (the DVC layout)."""
    return {name: Path(workdir) / artifact.path for name, artifact in graph.ARTIFACTS.items()}


def run_in(name: str, config: Config, workdir: Path) -> None:
    """``fedmm stage NAME``: run a stage over ``workdir``; evaluate adds DVC's metrics and plots files."""
    value = run(name, config, workdir_paths(workdir), run_name="dvc")
    if name == "evaluate":
        write_json(workdir / METRICS, value.headline())
        result = load("result", workdir_paths(workdir)["result"])
        scores = [(split, metric) for split in result.history[0].scores for metric in ("accuracy", "macro_f1")]
        lines = [",".join(["round", *(f"{split}_{metric}" for split, metric in scores)])]
        lines += [",".join(map(str, [r.round, *(r.scores[split][metric] for split, metric in scores)])) for r in result.history]
        write_text(workdir / ROUNDS, "\n".join(lines) + "\n")
    if name == "register":
        write_summary(value, (workdir / graph.ARTIFACTS["summary"].path).parent)


def dvc_pipeline(config: Config) -> dict:
    """``dvc.yaml`` over ``params.yaml`` holding ``config``, from the graph: deps are a stage's inputs,
    its ``after`` stages' outputs and its data files; params the config keys it reads; outs its output."""
    where = lambda name: f"{WORKDIR}/{graph.ARTIFACTS[name].path}"  # noqa: E731
    stages = {}
    for stage in graph.STAGES:
        deps = [where(key) for key in stage.inputs] + [where(graph.stage(name).output) for name in stage.after]
        deps += [str(value) for key in stage.files if (value := graph.config_value(config, key)) is not None]
        entry: dict[str, Any] = {"cmd": f"fedmm stage {stage.name} --config params.yaml --workdir {WORKDIR}"}
        if deps:
            entry["deps"] = deps
        if stage.reads:
            entry["params"] = list(stage.reads)
        entry["outs"] = [where(stage.output) if stage.cacheable else {where(stage.output): {"cache": False}}]
        if stage.name == "evaluate":
            entry["metrics"] = [{f"{WORKDIR}/{METRICS}": {"cache": False}}]
            entry["plots"] = [{f"{WORKDIR}/{ROUNDS}": {"cache": False, "x": "round"}}]
        stages[stage.name] = entry
    return {"stages": stages}


def write_dvc_project(config: Config, directory: Path) -> dict[str, Path]:
    """Write ``params.yaml`` (the full config, its data file relative to ``directory``) and ``dvc.yaml`` there."""
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config.data.path is not None:
        relative = os.path.relpath(Path(config.data.path).resolve(), directory.resolve())
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": relative})})
    paths = {"params": directory / "params.yaml", "dvc": directory / "dvc.yaml"}
    write_text(paths["params"], "# The config of this DVC pipeline (fedmm config --config params.yaml checks it).\n"
               + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_text(paths["dvc"], "# Generated from fedmm/graph.py by `fedmm dvc`: edit the graph, not this file.\n"
               + yaml.safe_dump(dvc_pipeline(config), sort_keys=False))
    return paths
