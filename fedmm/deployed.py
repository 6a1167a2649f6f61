"""The deployed graph's stage bodies: a coordinator that holds only its own evaluation data.

prepare and validate the coordinator's data -> query the federation (each site validates its
own file and returns only its report) -> train over Flower -> evaluate on the coordinator's
test samples -> audit on its validation samples -> register and promote with the same gates.
No partition (the sites are the partition) and no centralized reference. The graph is
declared in :mod:`fedmm.graph` (``DEPLOYED``); the logic lives in :mod:`fedmm.fl.deployed`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedmm.audit.report import AuditReport
from fedmm.config import Config
from fedmm.data.validation import ValidationReport, validate_dataset
from fedmm.evaluation import EvaluationReport
from fedmm.fl import deployed
from fedmm.fl.deployed import NOT_AVAILABLE, CoordinatorData
from fedmm.fl.history import RoundRecord
from fedmm.fl.result import TrainResult
from fedmm.runtime import state_dir
from fedmm.summary import Registration, RunSummary
from fedmm.tracker import Tracker
from fedmm.tracking import tags as T


def is_deployed(config: Config) -> bool:
    """Whether ``config`` is a deployed run (it names the coordinator's own validation and test data)."""
    return config.flower.validation_data is not None and config.flower.test_data is not None


def _workdir(config: Config, coordinator: CoordinatorData, stage: str) -> Path:
    run, _ = deployed.deployed_run(config, coordinator)
    return state_dir() / "deployed" / run.key / stage


def prepare_coordinator(config: Config) -> CoordinatorData:
    """The coordinator's validation and test files (``flower.validation_data``, ``flower.test_data``)."""
    return CoordinatorData.from_files(config.flower.validation_data, config.flower.test_data)


def validate_coordinator(config: Config, coordinator: CoordinatorData) -> ValidationReport:
    """The prepared-data suite over the coordinator's validation and test samples."""
    reports = []
    for dataset in (coordinator.validation, coordinator.test):
        reports.append(validate_dataset(
            modalities=dataset.modalities, labels=dataset.labels, num_classes=dataset.num_classes,
            expected_shapes=coordinator.validation.sample_shapes(),
            value_bounds={name: tuple(b) for name, b in config.validation.value_bounds.items()},
        ))
    return ValidationReport("coordinator_data", all(r.success for r in reports),
                            tuple(o for r in reports for o in r.outcomes))


def query_federation(config: Config, coordinator: CoordinatorData) -> dict:
    """Every site's own report (samples, class histogram, modality presence, validation verdict), and refusals."""
    return deployed.query_federation(config, coordinator, _workdir(config, coordinator, "query"))


def train_over_sites(config: Config, coordinator: CoordinatorData, sites: dict,
                     on_round: Callable[[RoundRecord], None] | None = None) -> TrainResult:
    """Train over the federation; checkpoints and the update store stay on the coordinator (resumable)."""
    if not any(s["validation"] is None or s["validation"]["success"] for s in sites["sites"].values()):
        raise deployed.DeployedRunError(f"no site passed its validation: {sites['refused']}")
    return deployed.train_deployed(config, coordinator, _workdir(config, coordinator, "train"), on_round)


def evaluate_on_coordinator(coordinator: CoordinatorData, result: TrainResult) -> EvaluationReport:
    """The global model on the coordinator's test samples; the centralized reference is not available."""
    return deployed.evaluate_deployed(coordinator, result)


def audit_on_coordinator(config: Config, coordinator: CoordinatorData, result: TrainResult, sites: dict,
                         on_round: Callable[[dict], None] | None = None) -> AuditReport:
    """The contribution audit on the coordinator's validation samples."""
    return deployed.audit_deployed(config, coordinator, result, sites["sites"], on_round)


def register_deployed(
    config: Config, tracker: Tracker, coordinator: CoordinatorData, coordinator_report: ValidationReport, sites: dict,
    result: TrainResult, evaluation: EvaluationReport, audit: AuditReport, extra_tags: dict[str, str] | None = None,
) -> RunSummary:
    """Open the MLflow run (every stage's tracked output goes to it), register the model, gate and promote it."""
    from fedmm.runtime import tracking_uri
    from fedmm.tracking import registry, runs
    from fedmm.tracking.runs import git_commit
    from fedmm.workflow import audit_tags

    run_id = tracker.start({"coordinator": coordinator, "coordinator_report": coordinator_report, "sites": sites,
                            "result": result, "evaluation": evaluation, "audit": audit})
    tags = {
        T.DATA_SHA256: coordinator.content_hash(), T.TEST_SHA256: coordinator.test.content_hash(),
        T.PARTITION_SHA256: NOT_AVAILABLE, T.PARTITION_CONFIG_HASH: config.hash("partition", "mask", "seed"),
        T.CONFIG_HASH: config.hash(), T.GIT_COMMIT: git_commit(), T.STRATEGY: result.strategy,
        T.TRAINING_FINGERPRINT: result.fingerprint, T.MLFLOW_RUN_ID: run_id,
        T.TEST_MACRO_F1: T.TEST_MACRO_F1.text(evaluation.test_macro_f1),
        T.VALIDATION_PASSED: T.VALIDATION_PASSED.text(coordinator_report.success),
        **registry.audit_record_tags({}, audit_tags(audit, run_id)), **(extra_tags or {}),
    }
    name = config.registry.model_name
    version = registry.register_model(run_id, name, result, coordinator.test, tags)
    decision = registry.promote(name, version, registry.GatePolicy.from_config(config.registry), coordinator.test)
    runs.log_dict(run_id, decision.to_dict(), "registry/promotion.json")
    registration = Registration(name, version, run_id, decision.promoted, list(decision.gates),
                                registry.version_aliases(name, version))
    return RunSummary(
        model_name=name, model_version=version, aliases=registration.aliases, promoted=decision.promoted,
        gates=registration.gates, tracking_uri=tracking_uri(), mlflow_run_id=run_id, config_hash=config.hash(),
        data_sha256=coordinator.content_hash(), num_clients=len(sites["sites"]), rounds=len(result.history),
        strategy=result.strategy, transport="flower (deployed)", served_imputer=None,
        test_samples=len(coordinator.test), dropped_samples=0, metrics=evaluation.headline(),
        audit=audit.summary(), audit_flags=audit.flags,
    )
