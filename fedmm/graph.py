"""The training pipeline's stage graph, declared once.

Every orchestrator follows this declaration: DVC's ``dvc.yaml`` and the kfp pipeline are
generated from it, the ZenML pipeline and the experiment runner are checked against it by
tests. A stage names its ``fedmm.workflow`` function, the artifacts it reads and writes,
the config keys it reads (DVC reruns it when one changes), whether an orchestrator may
cache it and whether it gets the ``train.gpus`` GPUs. This module imports nothing heavy:
the ``fedmm`` command lists stages from it without loading torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

SECTIONS = ("seed", "data", "partition", "mask", "corruption", "model", "train", "flower", "validation",
            "registry", "audit", "impute")
"""Every top-level config key (a test keeps this equal to ``Config``'s fields)."""


@dataclass(frozen=True)
class Artifact:
    """What flows between stages: its path under a stage folder and how it is stored.

    ``kind`` is ``folder`` (the object's own ``save``/``load``, class ``type``) or ``json``
    (a dict, or an object with ``to_dict``/``from_dict`` when ``type`` is set).
    """

    name: str
    path: str
    kind: str
    type: str | None = None

    def cls(self) -> type | None:
        if self.type is None:
            return None
        module, _, name = self.type.rpartition(".")
        return getattr(importlib.import_module(module), name)


ARTIFACTS = {a.name: a for a in (
    Artifact("prepared", "prepared", "folder", "fedmm.data.prepare.PreparedData"),
    Artifact("data_report", "validation/data.json", "json", "fedmm.data.validation.ValidationReport"),
    Artifact("federated", "partitions", "folder", "fedmm.data.federated.FederatedData"),
    Artifact("partition_report", "validation/partitions.json", "json", "fedmm.data.validation.ValidationReport"),
    Artifact("result", "training", "folder", "fedmm.fl.result.TrainResult"),
    Artifact("evaluation", "evaluation/report.json", "json", "fedmm.evaluation.EvaluationReport"),
    Artifact("audit", "audit", "folder", "fedmm.audit.report.AuditReport"),
    Artifact("imputation", "imputation", "folder", "fedmm.impute.report.ImputationReport"),
    Artifact("summary", "registry/summary.json", "json", "fedmm.summary.RunSummary"),
)}


@dataclass(frozen=True)
class Stage:
    """One stage: ``function`` (in ``fedmm.workflow``) maps ``inputs`` to its one output.

    ``after``: stages that must pass first though their output is not read (the validation
    gates). ``skip``: a ``fedmm.workflow`` function of the config giving why the stage does
    nothing for it (None: it runs); a skipped stage's output is an explicit "skipped" record.
    ``gate``: the output is a validation report that stops the run when it fails.
    ``files``: config keys whose value, when set, is a file the stage reads (your own data).
    ``transport``: the config key choosing how the stage runs (the same function either way).
    """

    name: str
    function: str
    inputs: tuple[str, ...]
    output: str
    reads: tuple[str, ...]
    after: tuple[str, ...] = ()
    cacheable: bool = True
    gpu: bool = False
    gate: bool = False
    skip: str | None = None
    files: tuple[str, ...] = ()
    transport: str | None = None


STAGES = (
    Stage("prepare", "prepare_data", (), "prepared", ("seed", "data"), files=("data.path",)),
    Stage("validate-data", "validate_data", ("prepared",), "data_report", ("validation",), gate=True),
    Stage("partition", "make_partitions", ("prepared",), "federated", ("seed", "partition", "mask", "corruption"),
          after=("validate-data",)),
    Stage("validate-partitions", "check_partitions", ("federated",), "partition_report", ("validation",), gate=True),
    Stage("train", "train_models", ("prepared", "federated"), "result",
          ("seed", "model", "train", "flower", "validation.value_bounds", "impute.serve", "impute.generator",
           "impute.diffusion", "partition", "mask", "corruption"),
          after=("validate-partitions",), gpu=True, transport="train.transport"),
    Stage("evaluate", "evaluate_models", ("prepared", "federated", "result"), "evaluation", ()),
    Stage("audit", "audit_contributions", ("prepared", "federated", "result"), "audit",
          ("seed", "audit", "train.device")),
    Stage("evaluate-imputation", "evaluate_imputation", ("prepared", "federated", "result"), "imputation",
          ("seed", "impute"), skip="imputation_not_configured"),
    Stage("register", "record_and_register",
          ("prepared", "federated", "result", "evaluation", "data_report", "partition_report", "audit", "imputation"),
          "summary", SECTIONS, cacheable=False),
)
"""prepare -> validate data -> partition + mask -> validate partitions -> train -> evaluate ->
contribution audit -> imputation evaluation -> register + promote. Train reads the partition, mask
and corruption sections too: over Flower each site redraws its own mask and corruption from them.
Register reads every section: the registered version records the whole config's hash."""

NAMES = tuple(stage.name for stage in STAGES)


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no stage {name!r}; the stages are {list(NAMES)}")


def producer(artifact: str) -> Stage:
    """The stage whose output ``artifact`` is."""
    return next(s for s in STAGES if s.output == artifact)


def upstream(stage_: Stage) -> tuple[str, ...]:
    """The stages that must finish before ``stage_``: producers of its inputs, then its ``after``."""
    names = [producer(name).name for name in stage_.inputs]
    return tuple(dict.fromkeys([*names, *stage_.after]))


def function(stage_: Stage) -> Callable:
    return getattr(importlib.import_module("fedmm.workflow"), stage_.function)


def skip_reason(stage_: Stage, config) -> str | None:
    """Why ``stage_`` does nothing for ``config``, or None when it runs."""
    if stage_.skip is None:
        return None
    return getattr(importlib.import_module("fedmm.workflow"), stage_.skip)(config)


def config_value(config, key: str):
    """The value at a dotted config key."""
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def stage_config(stage_: Stage, config):
    """The config as ``stage_`` sees it: the keys it reads, defaults everywhere else.

    An orchestrator that caches by a step's parameters (ZenML hashes them into the cache key)
    passes this instead of the whole config, so a change outside what a stage reads reuses
    its output.
    """
    payload, given = type(config)().model_dump(mode="json"), config.model_dump(mode="json")
    for key in stage_.reads:
        *parents, last = key.split(".")
        target, source = payload, given
        for part in parents:
            target, source = target[part], source[part]
        target[last] = source[last]
    return type(config).model_validate(payload)


def execute(stage_: Stage, config, artifacts: dict, **callbacks):
    """Run a stage in-process: its function over the named artifacts, plus the config and those
    ``callbacks`` it takes. Returns the output (a gate's caller raises when the report failed)."""
    call = function(stage_)
    accepted = inspect.signature(call).parameters
    kwargs = {name: artifacts[name] for name in stage_.inputs}
    kwargs.update({key: value for key, value in callbacks.items() if key in accepted})
    if "config" in accepted:
        kwargs["config"] = config
    return call(**kwargs)
