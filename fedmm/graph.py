"""Pipelines as values: a :class:`Graph` of :class:`Stage` s over :class:`Artifact` s, declared once.

A graph is the only thing that runs stages (:meth:`Graph.execute`). Every orchestrator is
a loop over a graph's stages: DVC's ``dvc.yaml`` and the folder runner (``fedmm.stages``),
the kfp components and pipeline (``fedmm_pipelines/components/``), the ZenML steps and pipeline
(``fedmm_pipelines/steps/``, ``fedmm_pipelines/pipelines/``) and the experiment runner. An adapter never names a stage:
what differs between stages is data on the stage (its inputs, gates, GPU, caching) or a
hook it carries (progress, reports, metrics, what it tracks to MLflow, how a re-run of it
attaches to a past run). Hooks and functions are dotted names, so this module imports
nothing heavy: the ``fedmm`` command lists stages from it without loading torch.

``TRAINING`` is the sensor-data training graph; further graphs go into :data:`GRAPHS` and
``fedmm run`` picks the first whose ``when`` predicate accepts the config (:func:`for_config`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any


def resolve(path: str) -> Any:
    """The object at a dotted path ``package.module.attribute``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def config_value(config, key: str):
    """The value at a dotted config key."""
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class Artifact:
    """What flows between stages: its path under a stage folder and how it is stored.

    ``kind`` is ``folder`` (the object's own ``save``/``load``, class ``type``) or ``json``
    (a dict, or an object with ``to_dict``/``from_dict`` when ``type`` is set). ``role`` is
    what orchestrators call it: ``data``, ``model`` or ``report``.
    """

    name: str
    path: str
    kind: str
    type: str | None = None
    role: str = "report"

    def cls(self) -> type | None:
        return None if self.type is None else resolve(self.type)


@dataclass(frozen=True)
class Report:
    """A file a stage writes beside its artifact in the folder layout (DVC): ``write(value, inputs, path)``.

    With ``plot_x`` set it is a CSV that ``dvc.yaml`` declares as a plot over that column.
    """

    path: str
    write: str
    plot_x: str | None = None


@dataclass(frozen=True)
class Stage:
    """One stage: ``function`` (in the graph's ``module``) maps ``inputs`` to its one ``output``.

    Wiring: ``after`` are stages that must pass first though their output is not read (the
    validation gates); ``reads`` the config keys it reads (DVC reruns it when one changes, a
    ZenML step's cache key holds them); ``files`` config keys naming a file it reads;
    ``transport`` the config key choosing how it runs (the same function either way).
    Behaviour: ``skip`` (a function of the config in ``module``) says why the stage does
    nothing for a config (its output is then an explicit "skipped" record); ``gate``: the
    output is a validation report that stops the run when it fails; ``cacheable``, ``gpu``.

    Hooks (dotted paths, all optional):
    ``progress(config, inputs)``: a context manager yielding the callbacks the function takes
    (``on_round``); ``metrics(value)``: headline numbers (DVC metrics file, kfp Metrics);
    ``reports``: extra files of the folder layout; ``track(run_id, value, inputs)``: logs the
    output to the graph run's MLflow run (:class:`fedmm.tracker.Tracker`); ``show(value)``:
    prints it for the user; ``attach(value, summary)``: attaches a re-run of the stage over a
    past run to that run's MLflow run and model version.
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
    progress: str | None = None
    metrics: str | None = None
    reports: tuple[Report, ...] = ()
    track: str | None = None
    show: str | None = None
    attach: str | None = None


@dataclass(frozen=True)
class Graph:
    """A pipeline: its stages in run order over its artifacts, for configs of class ``config``.

    ``module`` holds the stage functions and skip predicates; ``sections`` are the config's
    top-level keys; ``when`` (dotted, of the config) says whether ``fedmm run`` runs this graph.
    The last stage's output is the graph's ``result`` (a run summary). Hooks of the whole run
    (dotted): ``preflight(config)`` checks it before any work and returns warnings;
    ``conclude(result, echo)`` prints the result for the user and returns the warning line when
    the registered version was not promoted (None when it was); ``experiment(path)`` reads an
    experiment file of the graph's task (``task: <name>``) into the
    :class:`~fedmm.experiments.runner.Matrix` that ``fedmm experiment`` runs.
    """

    name: str
    module: str
    config: str
    sections: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    stages: tuple[Stage, ...]
    when: str | None = None
    preflight: str | None = None
    conclude: str | None = None
    experiment: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    @property
    def result(self) -> str:
        return self.stages[-1].output

    @property
    def description(self) -> str:
        return " -> ".join(self.names)

    def artifact(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise KeyError(f"graph {self.name!r} has no artifact {name!r}")

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for candidate in self.stages:
            if candidate.name == name:
                return candidate
        raise KeyError(f"no stage {name!r}; the stages of {self.name!r} are {list(self.names)}")

    def producer(self, artifact: str) -> Stage:
        """The stage whose output ``artifact`` is."""
        return next(s for s in self.stages if s.output == artifact)

    def upstream(self, stage: Stage) -> tuple[str, ...]:
        """The stages that must finish before ``stage``: producers of its inputs, then its ``after``."""
        names = [self.producer(name).name for name in stage.inputs]
        return tuple(dict.fromkeys([*names, *stage.after]))

    def function(self, stage: Stage) -> Callable:
        return resolve(f"{self.module}.{stage.function}")

    def skip_reason(self, stage: Stage, config) -> str | None:
        """Why ``stage`` does nothing for ``config``, or None when it runs."""
        return None if stage.skip is None else resolve(f"{self.module}.{stage.skip}")(config)

    def config_class(self) -> type:
        return resolve(self.config)

    def stage_config(self, stage: Stage, config):
        """The config as ``stage`` sees it: the keys it reads, defaults everywhere else.

        An orchestrator that caches by a step's parameters (ZenML hashes them into the cache
        key) passes this instead of the whole config, so a change outside what a stage reads
        reuses its output.
        """
        payload, given = type(config)().model_dump(mode="json"), config.model_dump(mode="json")
        for key in stage.reads:
            *parents, last = key.split(".")
            target, source = payload, given
            for part in parents:
                target, source = target[part], source[part]
            target[last] = source[last]
        return type(config).model_validate(payload)

    def execute(self, stage: Stage, config, artifacts: dict, *, keep: Callable | None = None, progress: bool = True,
                show: bool = False, track: bool = True, forced: bool = False, **callbacks):
        """Run ``stage`` in-process over the named ``artifacts`` (None when the config skips it).

        The function gets its inputs, the config, a :class:`~fedmm.tracker.Tracker` of this
        graph run, its progress hook's callbacks (unless not ``progress``) and those
        ``callbacks`` it takes (e.g. ``run_name``, ``extra_tags``). A failed gate's report is
        handed to ``keep`` and (with ``track``) recorded as a failed MLflow run, then raises;
        ``show`` prints the output through the stage's ``show`` hook; ``forced`` runs a stage the config
        skips (an analysis asked for by name).
        """
        if not forced and self.skip_reason(stage, config) is not None:
            return None
        from fedmm.tracker import Tracker

        call = self.function(stage)
        accepted = inspect.signature(call).parameters
        inputs = {name: artifacts[name] for name in stage.inputs}
        tracker = Tracker(self, config, callbacks.get("run_name"))
        hook = resolve(stage.progress)(config, inputs) if progress and stage.progress else nullcontext({})
        with hook as progress_callbacks:
            offered = {**callbacks, **progress_callbacks, "config": config, "tracker": tracker}
            value = call(**inputs, **{key: item for key, item in offered.items() if key in accepted})
        if stage.gate and not value.success:
            if keep is not None:
                keep(value)
            if track and stage.track:
                tracker.failed(stage, value, inputs)
            value.raise_if_failed()
        if show and stage.show:
            resolve(stage.show)(value)
        return value

    def run_through(self, config, until: str, artifacts: dict | None = None, **options) -> dict:
        """Run in-process, in order, every stage up to the one producing ``until`` (:meth:`execute` with
        ``options``), except those whose output ``artifacts`` already holds; returns every artifact.

        The experiment runners' cells are such runs: a cell stops at its metrics, and cells sharing
        early stages pass their outputs in.
        """
        artifacts = dict(artifacts or {})
        for stage in self.stages[: self.names.index(self.producer(until).name) + 1]:
            if stage.output not in artifacts:
                artifacts[stage.output] = self.execute(stage, config, artifacts, **options)
        return artifacts


SECTIONS = ("seed", "data", "partition", "mask", "corruption", "model", "train", "flower", "validation",
            "registry", "audit", "impute")
"""Every top-level key of the training config (a test keeps this equal to ``Config``'s fields)."""

HOOKS = "fedmm.hooks"

SENSOR = {"config": "fedmm.config.Config", "sections": SECTIONS, "preflight": "fedmm.preflight.preflight",
          "conclude": "fedmm.report.conclude"}
"""What the sensor-data graphs (training and deployed) share: their config, its checks and how a run ends."""

TRAINING = Graph(
    name="training",
    module="fedmm.workflow",
    **SENSOR,
    experiment="fedmm.experiments.training.matrix",
    artifacts=(
        Artifact("prepared", "prepared", "folder", "fedmm.data.prepare.PreparedData", "data"),
        Artifact("data_report", "validation/data.json", "json", "fedmm.data.validation.ValidationReport"),
        Artifact("federated", "partitions", "folder", "fedmm.data.federated.FederatedData", "data"),
        Artifact("partition_report", "validation/partitions.json", "json", "fedmm.data.validation.ValidationReport"),
        Artifact("result", "training", "folder", "fedmm.fl.result.TrainResult", "model"),
        Artifact("evaluation", "evaluation/report.json", "json", "fedmm.evaluation.EvaluationReport"),
        Artifact("audit", "audit", "folder", "fedmm.audit.report.AuditReport"),
        Artifact("imputation", "imputation", "folder", "fedmm.impute.report.ImputationReport"),
        Artifact("summary", "registry/summary.json", "json", "fedmm.summary.RunSummary"),
    ),
    stages=(
        Stage("prepare", "prepare_data", (), "prepared", ("seed", "data"), files=("data.path",)),
        Stage("validate-data", "validate_data", ("prepared",), "data_report", ("validation",), gate=True,
              track=f"{HOOKS}.track_validation"),
        Stage("partition", "make_partitions", ("prepared",), "federated", ("seed", "partition", "mask", "corruption"),
              after=("validate-data",)),
        Stage("validate-partitions", "check_partitions", ("federated",), "partition_report", ("validation",),
              gate=True, track=f"{HOOKS}.track_validation"),
        Stage("train", "train_models", ("prepared", "federated"), "result",
              ("seed", "model", "train", "flower", "validation.value_bounds", "impute.serve", "impute.generator",
               "impute.diffusion", "partition", "mask", "corruption"),
              after=("validate-partitions",), gpu=True, transport="train.transport",
              progress=f"{HOOKS}.training_progress"),
        Stage("evaluate", "evaluate_models", ("prepared", "federated", "result"), "evaluation", (),
              metrics=f"{HOOKS}.headline", reports=(Report("evaluation/rounds.csv", f"{HOOKS}.write_rounds", "round"),),
              track=f"{HOOKS}.track_results"),
        Stage("audit", "audit_contributions", ("prepared", "federated", "result"), "audit",
              ("seed", "audit", "train.device"), progress=f"{HOOKS}.audit_progress", track=f"{HOOKS}.track_audit",
              show=f"{HOOKS}.show_audit", attach="fedmm.workflow.attach_audit"),
        Stage("evaluate-imputation", "evaluate_imputation", ("prepared", "federated", "result"), "imputation",
              ("seed", "impute"), skip="imputation_not_configured", track=f"{HOOKS}.track_imputation",
              attach="fedmm.workflow.attach_imputation"),
        Stage("register", "record_and_register",
              ("prepared", "federated", "result", "evaluation", "data_report", "partition_report", "audit", "imputation"),
              "summary", SECTIONS, cacheable=False, reports=(Report("registry", f"{HOOKS}.write_summary_files"),)),
    ),
)
"""prepare -> validate data -> partition + mask -> validate partitions -> train -> evaluate ->
contribution audit -> imputation evaluation -> register + promote. Train reads the partition, mask
and corruption sections too: over Flower each site redraws its own mask and corruption from them.
Register reads every section: the registered version records the whole config's hash."""

DEPLOYED = Graph(
    name="deployed",
    module="fedmm.deployed",
    when="fedmm.deployed.is_deployed",
    **SENSOR,
    artifacts=(
        Artifact("coordinator", "coordinator", "folder", "fedmm.fl.deployed.CoordinatorData", "data"),
        Artifact("coordinator_report", "validation/coordinator.json", "json", "fedmm.data.validation.ValidationReport"),
        Artifact("sites", "validation/sites.json", "json"),
        Artifact("result", "training", "folder", "fedmm.fl.result.TrainResult", "model"),
        Artifact("evaluation", "evaluation/report.json", "json", "fedmm.evaluation.EvaluationReport"),
        Artifact("audit", "audit", "folder", "fedmm.audit.report.AuditReport"),
        Artifact("summary", "registry/summary.json", "json", "fedmm.summary.RunSummary"),
    ),
    stages=(
        Stage("prepare", "prepare_coordinator", (), "coordinator", ("flower",),
              files=("flower.validation_data", "flower.test_data")),
        Stage("validate-data", "validate_coordinator", ("coordinator",), "coordinator_report", ("validation",),
              gate=True, track=f"{HOOKS}.track_validation"),
        Stage("query-sites", "query_federation", ("coordinator",), "sites",
              ("seed", "model", "train", "flower", "validation", "partition", "mask", "corruption"),
              after=("validate-data",), cacheable=False),
        Stage("train", "train_over_sites", ("coordinator", "sites"), "result",
              ("seed", "model", "train", "flower", "validation.value_bounds", "partition", "mask", "corruption"),
              cacheable=False, progress=f"{HOOKS}.training_progress"),
        Stage("evaluate", "evaluate_on_coordinator", ("coordinator", "result"), "evaluation", (),
              metrics=f"{HOOKS}.headline", reports=(Report("evaluation/rounds.csv", f"{HOOKS}.write_rounds", "round"),),
              track=f"{HOOKS}.track_results"),
        Stage("audit", "audit_on_coordinator", ("coordinator", "result", "sites"), "audit",
              ("seed", "audit", "flower.num_sites"), progress=f"{HOOKS}.audit_progress",
              track=f"{HOOKS}.track_audit", show=f"{HOOKS}.show_audit"),
        Stage("register", "register_deployed",
              ("coordinator", "coordinator_report", "sites", "result", "evaluation", "audit"),
              "summary", SECTIONS, cacheable=False, reports=(Report("registry", f"{HOOKS}.write_summary_files"),)),
    ),
)
"""A deployed run (``flower.validation_data`` and ``flower.test_data`` set): the coordinator holds only its
own evaluation data and the sites their own files. prepare and validate the coordinator's data -> query
the sites (each validates its own file, only the report comes back) -> train over Flower (the ServerApp
on the coordinator) -> evaluate on its test samples -> audit on its validation samples -> register +
promote with the same gates. No partition, no centralized reference; the federation is not cached."""

FEDMKGC = Graph(
    name="fedmkgc",
    module="fedmm.kg.stages",
    config="fedmm.kg.config.KGRunConfig",
    sections=("task", "run", "registry"),
    conclude="fedmm.kg.stages.conclude",
    experiment="fedmm.kg.experiment.matrix",
    artifacts=(
        Artifact("kg_validation_report", "validation/triples.json", "json", "fedmm.data.validation.ValidationReport"),
        Artifact("kg_federation", "federation", "folder", "fedmm.kg.artifacts.Federation", "data"),
        Artifact("kg_model", "model", "folder", "fedmm.kg.artifacts.TrainedKG", "model"),
        Artifact("kg_evaluation", "evaluation/report.json", "json"),
        Artifact("kg_summary", "registry/summary.json", "json"),
    ),
    stages=(
        Stage("validate-triples", "validate_triples", (), "kg_validation_report", ("run",), gate=True,
              cacheable=False),
        Stage("federate", "federate_triples", (), "kg_federation", ("run",), after=("validate-triples",)),
        Stage("train", "train_kg", ("kg_federation",), "kg_model", ("run",)),
        Stage("evaluate", "evaluate_kg", ("kg_federation", "kg_model"), "kg_evaluation", ("run",)),
        Stage("register", "register_kg",
              ("kg_validation_report", "kg_federation", "kg_model", "kg_evaluation"), "kg_summary",
              ("task", "run", "registry"), cacheable=False),
    ),
)
"""FedMKGC (a ``task: fedmkgc`` file): validate the triples -> federate the relations and draw the missing
modalities -> train -> filtered MRR and Hits@k -> register + promote on MRR. The validation gate orders
federation after it; the registered version records the run's config."""

FEDMMKT = Graph(
    name="fedmmkt",
    module="fedmm.mmkt.stages",
    config="fedmm.mmkt.config.MMKTRunConfig",
    sections=("task", "run", "registry"),
    preflight="fedmm.mmkt.stages.preflight",
    conclude="fedmm.mmkt.stages.conclude",
    experiment="fedmm.mmkt.experiment.matrix",
    artifacts=(
        Artifact("mmkt_prepared", "prepared", "folder", "fedmm.data.prepare.PreparedData", "data"),
        Artifact("mmkt_data_report", "validation/data.json", "json", "fedmm.data.validation.ValidationReport"),
        Artifact("mmkt_federated", "partitions", "folder", "fedmm.data.federated.FederatedData", "data"),
        Artifact("mmkt_partition_report", "validation/partitions.json", "json",
                 "fedmm.data.validation.ValidationReport"),
        Artifact("mmkt_result", "training", "folder", "fedmm.fl.result.TrainResult", "model"),
        Artifact("mmkt_evaluation", "evaluation/metrics.json", "json"),
        Artifact("mmkt_summary", "registry/summary.json", "json"),
    ),
    stages=(
        Stage("prepare", "prepare_digits", (), "mmkt_prepared", ("run",)),
        Stage("validate-data", "validate_digits", ("mmkt_prepared",), "mmkt_data_report", ("run",), gate=True),
        Stage("partition", "partition_digits", ("mmkt_prepared",), "mmkt_federated", ("run",),
              after=("validate-data",)),
        Stage("validate-partitions", "validate_digit_partitions", ("mmkt_federated",), "mmkt_partition_report",
              ("run",), gate=True),
        Stage("train", "train_digits", ("mmkt_prepared", "mmkt_federated"), "mmkt_result", ("run",),
              after=("validate-partitions",), progress="fedmm.mmkt.stages.training_progress"),
        Stage("evaluate", "evaluate_digits", ("mmkt_prepared", "mmkt_federated", "mmkt_result"), "mmkt_evaluation",
              ("run",)),
        Stage("register", "register_digits",
              ("mmkt_data_report", "mmkt_partition_report", "mmkt_prepared", "mmkt_federated", "mmkt_result",
               "mmkt_evaluation"), "mmkt_summary", ("task", "run", "registry"), cacheable=False),
    ),
)
"""FedMMKT (a ``task: fedmmkt`` file): prepare UCI Multiple Features -> validate -> partition and mask (pix as
16x16 images) -> validate the partitions -> the method's rounds on the round engine (checkpointed; the
co-enhanced generator in the strategy's server state) -> task-model and generator metrics -> register the
task model and the generator, promoting the generator only with the task model."""

GRAPHS: dict[str, Graph] = {TRAINING.name: TRAINING, DEPLOYED.name: DEPLOYED, FEDMKGC.name: FEDMKGC,
                            FEDMMKT.name: FEDMMKT}
"""Every graph by name (declare a new one in this module, beside ``TRAINING``): ``fedmm run`` picks one,
DVC, kfp and ZenML build theirs from it."""

EXPERIMENTS: dict[str, str] = {graph.name: graph.experiment for graph in GRAPHS.values() if graph.experiment}
"""How an experiment file of each task (its ``task:``, the graph's name; none: ``training``) becomes a matrix."""

STAGE_NAMES = tuple(dict.fromkeys(name for graph in GRAPHS.values() for name in graph.names))
"""Every stage name of every graph (``fedmm stage`` takes one)."""


def for_config(config) -> Graph:
    """The graph ``fedmm run`` runs for ``config``: the first of :data:`GRAPHS` of its config class whose
    ``when`` accepts it; a graph without ``when`` is its class's default."""
    mine = [g for g in GRAPHS.values() if isinstance(config, g.config_class())]
    chosen = [g for g in mine if g.when is not None and resolve(g.when)(config)]
    chosen += [g for g in mine if g.when is None]
    if not chosen:
        raise KeyError(f"no graph runs a {type(config).__name__}")
    return chosen[0]


def load_run_config(path, overrides=()):
    """The config of a run: a ``task: <name>`` file validated by that graph's config class (a graph whose
    config has a ``task`` key), any other file (or none: the defaults) as the training config."""
    from fedmm.config import ConfigError, apply_overrides, load_config, read_config_file, validated

    raw = read_config_file(path) if path is not None else {}
    if "task" not in raw:
        return load_config(path, list(overrides))
    tasks = {graph.name: graph for graph in GRAPHS.values() if "task" in graph.sections}
    task = raw["task"]
    if not isinstance(task, str) or task not in tasks:
        raise ConfigError(f"config file {path}: task {task!r} is not one of {', '.join(tasks)}")
    return validated(tasks[task].config_class(), apply_overrides(raw, list(overrides)))


def experiment_matrix(path):
    """The :class:`~fedmm.experiments.runner.Matrix` of an experiment file, read by its task's graph
    (:data:`EXPERIMENTS`); a ConfigError names a task no graph runs."""
    from fedmm.config import ConfigError
    from fedmm.experiments.matrix import spec_task

    task = spec_task(path) or TRAINING.name
    if not isinstance(task, str) or task not in EXPERIMENTS:
        raise ConfigError(f"experiment file {path}: task {task!r} is not one of {', '.join(EXPERIMENTS)}")
    return resolve(EXPERIMENTS[task])(path)
