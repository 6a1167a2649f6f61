"""A deployed run's coordinator: it holds only its own evaluation data, the sites hold theirs.

The coordinator's data is two bring-your-own-data files, its validation and its test
samples (``deployed.validation``, ``deployed.test``). From them come the model's input shapes,
classes and normalisation (the validation samples' statistics: no training sample is ever
here), the evaluation sets, and the proxy set of strategies that need one. Each site is told
the run (:class:`~fedmm.fl.site.RunSpec`) and trains on its own file; the ServerApp runs on
the coordinator (``flower.superexec_secret``), so checkpoints and the client-update store are
written here, as in-process training writes them.

:func:`export_sites` cuts one dataset into site files and the coordinator's two files, to
rehearse a deployment on one machine (and :func:`in_process_reference` trains the same sites
in this process, the check that a deployed run computes what the engine computes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmm.artifacts import write_json, write_npz
from fedmm.config import Config
from fedmm.data.corruption import CorruptionPlan
from fedmm.data.dataset import MultimodalDataset, load_npz, require_multimodal
from fedmm.data.federated import site_arrays
from fedmm.data.prepare import normalisation_stats
from fedmm.errors import UserError
from fedmm.fl.bundle import ServerBundle
from fedmm.fl.engine import UPDATES_DIR, InProcessClients, run_federated
from fedmm.fl.federation import query_sites, run_bundle
from fedmm.fl.result import TrainResult
from fedmm.fl.site import RunSpec, sample_hashes
from fedmm.fl.strategies import make_strategy
from fedmm.fl.strategy import ServerContext
from fedmm.models.multimodal import ModelSpec
from fedmm.tensors import TensorData

NOT_AVAILABLE = "not available in a deployed run"
"""What a deployed run reports for the centralized reference (no party holds the pooled data)."""


class DeployedRunError(UserError, ValueError):
    """The coordinator's data or the deployed run's settings do not fit."""


@dataclass(frozen=True)
class CoordinatorData:
    """The coordinator's own samples: validation (audit, normalisation, proxy) and test (evaluation)."""

    validation: MultimodalDataset
    test: MultimodalDataset

    @classmethod
    def from_files(cls, validation: str | Path, test: str | Path) -> CoordinatorData:
        """The coordinator's two bring-your-own-data files, checked to hold the same modalities and classes.

        The validation file names the model's modalities; the test file may leave out one its samples never have.
        """
        own = load_npz(validation)
        require_multimodal(own, str(validation))
        test_data = load_npz(test)
        if set(test_data.modalities) <= set(own.modalities):
            test_data = test_data.aligned(own.sample_shapes(), str(test))
        data = cls(own, test_data)
        if data.validation.sample_shapes() != data.test.sample_shapes():
            raise DeployedRunError(f"{validation} and {test} hold different modalities or shapes: "
                                   f"{data.validation.sample_shapes()} vs {data.test.sample_shapes()}")
        if data.validation.class_names != data.test.class_names:
            raise DeployedRunError(f"{validation} and {test} name different classes")
        return data

    def save(self, directory: str | Path) -> None:
        for name in ("validation", "test"):
            write_npz(Path(directory) / f"{name}.npz", getattr(self, name).to_arrays())

    @classmethod
    def load(cls, directory: str | Path) -> CoordinatorData:
        return cls.from_files(Path(directory) / "validation.npz", Path(directory) / "test.npz")

    @property
    def modalities(self) -> list[str]:
        return self.validation.modality_names

    def tensors(self, which: str) -> TensorData:
        dataset = getattr(self, which)
        return TensorData.from_numpy(dataset.modalities, dataset.presence, dataset.labels)

    def content_hash(self) -> str:
        return hashlib.sha256((self.validation.content_hash() + self.test.content_hash()).encode()).hexdigest()


def deployed_spec(config: Config, data: CoordinatorData) -> ModelSpec:
    stats = normalisation_stats(data.validation, np.arange(len(data.validation)))
    return ModelSpec.build(data.validation.sample_shapes(), data.validation.num_classes, config.model, stats)


def deployed_run(config: Config, data: CoordinatorData) -> tuple[RunSpec, ModelSpec]:
    """What every site is told, and the model: from the config and the coordinator's own data only."""
    if config.flower.num_sites is None or config.flower.superlink is None or config.flower.superexec_secret is None:
        raise DeployedRunError("a deployed run needs flower.num_sites (how many sites train), flower.superlink (the "
                               "SuperLink's operator address) and flower.superexec_secret (the ServerApp runs here)")
    spec = deployed_spec(config, data)
    fingerprint = hashlib.sha256(
        f"{data.content_hash()}|{config.hash('model', 'train', 'seed', 'mask', 'partition')}".encode()
    ).hexdigest()
    bounds = {name: list(b) for name, b in config.validation.value_bounds.items()}
    held_out = [h for d in (data.validation, data.test)
                for h in sample_hashes({m: d.modalities[m] for m in data.modalities})]
    run = RunSpec(config.model_dump(mode="json"), spec.to_dict(), data.modalities, config.flower.num_sites,
                  fingerprint, bounds, held_out)
    return run, spec


def query_federation(config: Config, data: CoordinatorData, workdir: Path) -> dict:
    """Each site validates its own file against this run and answers with its report only (``sites.json``)."""
    run, _ = deployed_run(config, data)
    evaluation = {"val": data.tensors("validation"), "test": data.tensors("test")}
    return query_sites(config, ServerBundle(run, evaluation, evaluation["val"]), workdir)


def train_deployed(config: Config, data: CoordinatorData, workdir: Path, on_round=None) -> TrainResult:
    """Train over the federation at ``flower.superlink`` (resuming from ``workdir``): the deployed training stage."""
    run, spec = deployed_run(config, data)
    evaluation = {"val": data.tensors("validation"), "test": data.tensors("test")}
    bundle = ServerBundle(run, evaluation, evaluation["val"])
    outcome = run_bundle(config, bundle, spec, workdir, None, on_round)
    return _result(config, spec, run, outcome, workdir)


def in_process_reference(
    config: Config, data: CoordinatorData, site_files: list[Path], workdir: Path, on_round=None,
) -> TrainResult:
    """The same run in this process over the sites' files (client id = position): what a deployed run must equal."""
    run, spec = deployed_run(config, data)
    clients = []
    for client, path in enumerate(site_files):
        own = load_npz(path).aligned(spec.sample_shapes, str(path))
        inputs, presence, labels = site_arrays(
            own.modalities, own.labels, client, run.num_clients, config.mask, config.partition.label_fraction,
            CorruptionPlan(config.corruption, config.seed), config.seed, spec.num_classes, own.presence,
        )
        clients.append(TensorData.from_numpy(inputs, presence, labels))
    evaluation = {"val": data.tensors("validation"), "test": data.tensors("test")}
    strategy = make_strategy(config.train, config.seed, ServerContext(spec, "cpu", evaluation["val"]))
    pool = InProcessClients(spec, clients, config.seed, "cpu", workdir, CorruptionPlan(config.corruption, config.seed))
    outcome = run_federated(spec, pool, evaluation, strategy, config.train.rounds, config.seed, workdir, "cpu",
                            on_round)
    return _result(config, spec, run, outcome, workdir)


def _result(config: Config, spec: ModelSpec, run: RunSpec, outcome, workdir: Path) -> TrainResult:
    return TrainResult(
        spec=spec, state={k: v.cpu() for k, v in outcome.model.state_dict().items()}, history=outcome.history,
        strategy=config.train.strategy, fingerprint=run.fingerprint, updates_dir=Path(workdir) / UPDATES_DIR,
        server_state={k: v.cpu() for k, v in outcome.server_state.items()},
    )


def export_sites(config: Config, directory: str | Path) -> dict[str, list[Path]]:
    """Cut the config's dataset into ``sites/site_K.npz`` (raw samples) and ``coordinator/{validation,test}.npz``.

    The sites are the partition's clients (the proxy set stays with nobody); the coordinator
    gets the validation and test splits. Returns the written paths by party.
    """
    from fedmm.data.federated import partition_and_mask
    from fedmm.data.prepare import prepare
    from fedmm.fl.site import export_site_files

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise DeployedRunError(f"{directory} is not empty: give a new folder")
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
    sites = export_site_files(prepared, federated, directory / "sites")
    coordinator = []
    for split, name in (("val", "validation"), ("test", "test")):
        path = directory / "coordinator" / f"{name}.npz"
        write_npz(path, prepared.dataset.subset(prepared.indices(split)).to_arrays())
        coordinator.append(path)
    write_json(directory / "sites.json", {"num_sites": len(sites), "sites": [p.name for p in sites]})
    return {"sites": sites, "coordinator": coordinator}


def evaluate_deployed(data: CoordinatorData, result: TrainResult):
    """The global model on the coordinator's test samples; no per-client scores (their data stays at the sites)
    and no centralized reference (:data:`NOT_AVAILABLE`)."""
    from fedmm.evaluation import EvaluationReport, ProtocolScores
    from fedmm.metrics import confusion, evaluate

    model, test = result.predictor(), data.tensors("test")
    scores = ProtocolScores("the coordinator's test samples", len(test), evaluate(model, test))
    matrix = confusion(model, test, data.test.num_classes).tolist()
    return EvaluationReport({"test": scores}, data.test.class_names, matrix)


def audit_deployed(config: Config, data: CoordinatorData, result: TrainResult, sites: dict[int, dict] | None = None,
                   on_round=None):
    """The contribution audit of every stored round on the coordinator's validation samples.

    ``sites``: what each site reported (``modalities``: the share of its samples holding each), else every
    site holds all.
    """
    from fedmm.audit import AuditReport, audit_updates
    from fedmm.audit.inference import grouping_reason, validation_groups
    from fedmm.fl.strategies import STRATEGIES

    if not STRATEGIES[result.strategy].sends_deltas():
        return AuditReport.not_auditable(f"strategy {result.strategy!r} sends no parameter deltas", config.audit,
                                         config.seed)
    recording, subject = data.validation.recording, data.validation.subject
    key, groups = validation_groups(recording, subject)
    held = {int(k): [m for m, share in site["modalities"].items() if share > 0] for k, site in (sites or {}).items()}
    report = audit_updates(
        result.updates_dir, result.spec, data.tensors("validation"), config.audit, groups=groups, group_key=key,
        group_reason=grouping_reason(key, recording, subject),
        client_modalities=held or {k: data.modalities for k in range(config.flower.num_sites or 0)}, seed=config.seed,
        on_round=on_round,
    )
    report.meta.training_fingerprint = result.fingerprint
    return report
