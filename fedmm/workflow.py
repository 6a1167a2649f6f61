"""The pipeline's stages as plain functions: ZenML steps, kfp components and DVC stages call these.

``fedmm.graph`` declares how they connect (prepare -> validate data -> partition/mask ->
validate partitions -> train -> evaluate -> contribution audit -> imputation evaluation ->
register/promote). Each stage takes and returns artifacts (objects with ``save``/``load``)
or typed records stored as JSON (``to_dict``/``from_dict``), so every adapter stays a few lines.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType

import numpy as np

from fedmm.audit.detection import detection_quality
from fedmm.audit.report import NOT_AUDITABLE, AuditReport, audit_updates, audit_validation, federated_modalities
from fedmm.config import Config, ConfigError
from fedmm.data.federated import FederatedData, partition_and_mask, split_tensors
from fedmm.data.prepare import PreparedData, holdout_count, prepare
from fedmm.data.sources import SOURCES, source_info
from fedmm.data.validation import DataValidationError, ValidationReport, validate_dataset, validate_partitions
from fedmm.evaluation import EvaluationReport, evaluate_training
from fedmm.fl.history import RoundRecord
from fedmm.fl.result import ServedImputer, TrainResult
from fedmm.fl.strategies import STRATEGIES
from fedmm.fl.training import train
from fedmm.impute.clients import client_datasets, split_owners
from fedmm.impute.registry import make_imputer
from fedmm.impute.report import ImputationReport
from fedmm.impute.select import evaluate_selected, selection_tags
from fedmm.runtime import resolve_device, tracking_uri
from fedmm.summary import RunSummary


def _on_first_use(name: str) -> ModuleType:
    """Module ``name``, executed when an attribute is first read: MLflow's import (~5 s) is paid only by
    the stages that track or register, not by every DVC stage or kfp task."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock, registry, runs = (_on_first_use(f"fedmm.tracking.{name}") for name in ("lock", "registry", "runs"))


def preflight(config: Config) -> list[str]:
    """Checks that need no work: the data's description, the device, and whether the data can fill the config.

    Raises on what would fail later (a modality the data lacks, CUDA without a GPU, a
    bring-your-own-data file that is corrupt or unusable, more clients than the data can
    fill); returns warnings with numbers for what would only disappoint (a test set too
    small for promotion).
    """
    info = source_info(config.data)
    named = {m for group in config.mask.client_modalities for m in group.modalities} | set(config.mask.missing_rate)
    named |= set(config.validation.value_bounds)
    named |= {c.modality for c in config.corruption.clients if c.modality is not None}
    unknown = named - set(info.modalities)
    if unknown:
        raise DataValidationError(
            f"the config names modalities {sorted(unknown)} that data source {info.name!r} lacks; "
            f"it has {list(info.modalities)}"
        )
    try:
        resolve_device(config.train.device)
        lock.check_supported(tracking_uri())
    except (ValueError, lock.LockError) as error:
        raise ConfigError(str(error)) from None
    if config.data.source != "npz":
        return []
    dataset = SOURCES["npz"].load(config.data, info)
    return data_fit(config, dataset.subject, dataset.recording)


def data_fit(config: Config, subject: np.ndarray, recording: np.ndarray) -> list[str]:
    """Whether the configured split and partition fit a dataset of this size (estimates, before any work)."""
    data, partition = config.data, config.partition
    subjects = np.unique(subject)
    holdout = holdout_count(data.holdout_subjects, len(subjects))
    if holdout >= len(subjects):
        raise ConfigError(
            f"data.holdout_subjects={holdout} but the data has {len(subjects)} subject(s); "
            "set data.holdout_subjects=0 or auto"
        )
    kept = len(subject) * (1 - holdout / len(subjects))
    recordings = len(np.unique(recording))
    pool = int(kept * (1 - data.test_fraction - data.val_fraction) * (1 - partition.proxy_fraction))
    test = int(kept * data.test_fraction)
    where = (f"{len(subject)} samples in {recordings} recordings, {len(subjects)} subject(s), "
             f"{holdout} held out, {data.test_fraction:.0%} test, {data.val_fraction:.0%} validation")
    if partition.scheme == "natural":
        clients = len(subjects) - holdout
    else:
        clients = partition.num_clients
    needed = max(partition.min_samples, config.validation.min_samples_per_client)
    if clients * needed > pool:
        raise ConfigError(
            f"{clients} clients of at least {needed} samples need {clients * needed} training samples, but the "
            f"data leaves about {pool} ({where}); use fewer clients or lower partition.min_samples"
        )
    warnings = []
    held = len(subject) - kept
    if holdout and held > 0.25 * len(subject):
        warnings.append(
            f"data.holdout_subjects={holdout} holds out about {held:.0f} of {len(subject)} samples "
            f"({holdout} of {len(subjects)} subjects) as a second test set; set "
            "data.holdout_subjects=0 to train on them"
        )
    if partition.scheme == "natural" and clients < 3:
        warnings.append(f"only {clients} clients (one per subject not held out): {where}")
    if test < config.registry.min_test_samples:
        warnings.append(
            f"about {test} test samples ({where}): below registry.min_test_samples="
            f"{config.registry.min_test_samples}, so the model will not be promoted"
        )
    return warnings


def start_tracking(config: Config, run_name: str | None = None) -> str:
    """Open the MLflow run that every later stage logs to."""
    return runs.start_run(config, run_name)


def prepare_data(config: Config) -> PreparedData:
    return prepare(config.data, config.seed)


def validate_data(config: Config, prepared: PreparedData) -> ValidationReport:
    """The Great Expectations suite over the prepared data."""
    dataset = prepared.dataset
    bounds = {k: tuple(v) for k, v in prepared.manifest["value_bounds"].items()}
    bounds.update(config.validation.value_bounds)
    return validate_dataset(
        modalities=dataset.modalities,
        labels=dataset.labels,
        num_classes=dataset.num_classes,
        expected_shapes={name: tuple(shape) for name, shape in prepared.manifest["modalities"].items()},
        value_bounds=bounds,
    )


def make_partitions(config: Config, prepared: PreparedData) -> FederatedData:
    return partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)


def check_partitions(config: Config, federated: FederatedData) -> ValidationReport:
    """The Great Expectations suite over client sizes and realised missing rates."""
    return validate_partitions(
        federated.client_table(), config.validation.min_samples_per_client, config.validation.missing_rate_tolerance
    )


def record_validation(run_id: str, report: ValidationReport) -> None:
    """Log a validation report to MLflow; on failure mark the run failed and raise."""
    runs.log_validation(run_id, report)
    if not report.success:
        runs.end_run(run_id, "FAILED")
        report.raise_if_failed()


def train_models(
    config: Config, prepared: PreparedData, federated: FederatedData, on_round: Callable[[RoundRecord], None] | None = None
) -> TrainResult:
    """Train the federation; with ``impute.serve``, fit that imputer federatedly.

    The result then predicts through the served imputer.
    """
    result = train(config, prepared, federated, on_round)
    if config.impute.serve != "none":
        device = resolve_device(config.train.device)
        model, clients = result.model(device), client_datasets(prepared, federated, device)
        imputer = make_imputer(config.impute.serve, config.impute).fit(clients, model, config.seed)
        state = {k: v.cpu() for k, v in imputer.state().items()}
        settings = config.impute.model_dump(mode="json", include={"serve", *SERVED_SETTINGS})
        result = replace(result, imputer=ServedImputer(config.impute.serve, settings, state))
    return result


SERVED_SETTINGS = ("generator", "diffusion")
"""The ``impute`` sub-sections a served imputer reads (the train stage's config keys say so too)."""


def evaluate_models(prepared: PreparedData, federated: FederatedData, result: TrainResult) -> EvaluationReport:
    """Score both test protocols, the centralized gap and each client."""
    return evaluate_training(prepared, federated, result)


def log_results(run_id: str, result: TrainResult, evaluation: EvaluationReport) -> None:
    """Log per-round history, final metrics, the evaluation report and plots to MLflow."""
    runs.log_training(run_id, result.history, result.centralized_history)
    runs.log_evaluation(run_id, evaluation, result.history, result.centralized_history)


def imputation_not_configured(config: Config) -> str | None:
    """Why a config's run evaluates no imputers (``impute.evaluate`` is off), or None."""
    return None if config.impute.evaluate else "impute.evaluate is false"


def audit_contributions(
    config: Config, prepared: PreparedData, federated: FederatedData, result: TrainResult,
    on_round: Callable[[dict], None] | None = None,
) -> AuditReport:
    """Shapley audit of every stored round on the validation split (:func:`~fedmm.audit.report.audit_validation`),
    stamped with the training fingerprint and the partition's hash.

    When the partition injected corrupted clients, their ground truth and the audit's
    detection quality (AUROC per corruption kind) go into the report.
    """
    if not STRATEGIES[result.strategy].sends_deltas():
        return AuditReport.not_auditable(f"strategy {result.strategy!r} sends no parameter deltas", config.audit,
                                         config.seed)
    val, groups, key = audit_validation(prepared, config.audit, resolve_device(config.train.device))
    report = audit_updates(
        result.updates_dir, result.spec, val, config.audit, groups=groups, group_key=key,
        client_modalities=federated_modalities(federated), seed=config.seed, on_round=on_round,
    )
    report.meta.training_fingerprint = result.fingerprint
    report.meta.partition_sha256 = federated.content_hash
    truth = federated.report.corruption.ground_truth
    report.meta.corruption_ground_truth = truth
    if any(row["corrupted"] for row in truth):
        report.meta.detection = detection_quality(report.clients, truth)
    return report


def record_audit(run_id: str, report: AuditReport) -> None:
    """Log the audit to the pipeline run's MLflow run."""
    runs.log_audit(run_id, report)


def audit_tags(report: AuditReport, run_id: str | None = None) -> dict[str, str]:
    """Model-version tags of an audit: flags, their tests and thresholds (the clean-audit gate reads these),
    the game and, given the MLflow run it was logged to, where its report is."""
    if report.state == NOT_AUDITABLE:
        return {registry.TAG_AUDIT_STATE: report.state, registry.TAG_AUDIT_REASON: report.meta.reason}
    harmful = sorted(int(c) for c, found in report.flags.items() if any(f["flag"] == "harmful" for f in found))
    game = report.meta.game
    thresholds = report.meta.flags.thresholds
    clients = report.clients.set_index("client")
    short = lambda x: float(f"{x:.4g}")  # noqa: E731  (a tag value holds at most 5,000 characters)
    tests = {str(int(c)): {"p_holm": short(clients.loc[c, "p_holm"]), "ci": [short(clients.loc[c, "ci_low"]),
             short(clients.loc[c, "ci_high"])], "verdict": clients.loc[c, "verdict"]} for c in clients.index}
    tags = {
        registry.TAG_AUDIT_STATE: report.state,
        registry.TAG_AUDIT_HARMFUL: json.dumps(harmful),
        registry.TAG_AUDIT_FLAGS: json.dumps({c: list(dict.fromkeys(f["flag"] for f in found))
                                              for c, found in report.flags.items()}),
        registry.TAG_AUDIT_GATE_FLAGS: json.dumps(list(report.meta.config.gate_flags)),
        "fedmm.audit.thresholds": json.dumps(thresholds),
        "fedmm.audit.tests": json.dumps(tests),
        "fedmm.audit.game": f"{game['weighting']} weights, {game['metric']}, validation sha256 {game['validation_sha256']}",
    }
    if run_id is not None:
        tags["fedmm.audit.report"] = f"runs:/{run_id}/{runs.AUDIT_REPORT}"
    return tags


def _tag_version(run_summary: RunSummary, tags: dict[str, str]) -> None:
    """Set tags on the model version a training run registered."""
    mlflow_client = registry.client()
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(run_summary.model_name, run_summary.model_version, key, value)


def attach_audit(report: AuditReport, run_summary: RunSummary) -> None:
    """Log an audit of a past training run to its MLflow run and tag its registered model version.

    The version keeps its earlier audits' tags (``fedmm.audit.history.<n>.*``).
    """
    runs.log_audit(run_summary.mlflow_run_id, report)
    registry.record_audit(run_summary.model_name, run_summary.model_version,
                          audit_tags(report, run_summary.mlflow_run_id))


def evaluate_imputation(
    config: Config, prepared: PreparedData, federated: FederatedData, result: TrainResult
) -> ImputationReport:
    """Fit the configured imputers federatedly on the clients, with ``impute.select``'s settings chosen on the
    validation split, and score them on the complete test split."""
    split = lambda name: (split_tensors(prepared, name, "cpu"), split_owners(prepared, federated, name, config.seed))  # noqa: E731
    report, _ = evaluate_selected(config.impute, client_datasets(prepared, federated), result.model(), split("val"),
                                  split("test"), config.seed)
    return report


def imputation_tags(report: ImputationReport) -> dict[str, str]:
    """The imputers evaluated; the best by mean share of the zero-fill-to-oracle gap recovered."""
    tags = {"fedmm.imputation.imputers": ",".join(report.table["imputer"].unique())}
    recovered = report.table.groupby("imputer")["gap_recovered"].mean().drop("zero", errors="ignore").dropna()
    if not recovered.empty:
        tags["fedmm.imputation.best"] = str(recovered.idxmax())
        tags["fedmm.imputation.best_gap_recovered"] = f"{recovered.max():.4f}"
    return {**tags, **selection_tags(report)}


def attach_imputation(report: ImputationReport, run_summary: RunSummary) -> None:
    """Log an imputation evaluation to the training run's MLflow run and tag its registered model version."""
    runs.log_imputation(run_summary.mlflow_run_id, report)
    _tag_version(run_summary, imputation_tags(report))


def register_and_promote(
    config: Config,
    run_id: str,
    prepared: PreparedData,
    federated: FederatedData,
    result: TrainResult,
    evaluation: EvaluationReport,
    validation_passed: bool,
    extra_tags: dict[str, str] | None = None,
    audit: AuditReport | None = None,
    imputation: ImputationReport | None = None,
) -> RunSummary:
    """Register the global model as ``challenger``, run the gates, promote if they pass.

    The version is tagged with the audit and the imputation evaluation, which is logged.
    Returns the run summary (the content of ``reports/latest/summary.json``).
    """
    if audit is None and not STRATEGIES[result.strategy].sends_deltas():
        audit = audit_contributions(config, prepared, federated, result)  # records that there is nothing to audit
    test_set = prepared.dataset.subset(prepared.indices("test"))
    if imputation is not None:
        runs.log_imputation(run_id, imputation)
    tags = {
        "fedmm.data_sha256": prepared.data_sha256,
        "fedmm.test_sha256": prepared.manifest["test_sha256"],
        "fedmm.partition_sha256": federated.content_hash,
        "fedmm.partition_config_hash": config.hash("partition", "mask", "seed"),
        "fedmm.config_hash": config.hash(),
        "fedmm.git_commit": runs.git_commit(),
        "fedmm.strategy": result.strategy,
        "fedmm.training_fingerprint": result.fingerprint,
        "fedmm.mlflow_run_id": run_id,
        "fedmm.test_macro_f1": f"{evaluation.test_macro_f1:.6f}",
        registry.TAG_VALIDATION: "true" if validation_passed else "false",
        **(registry.audit_record_tags({}, audit_tags(audit, run_id)) if audit is not None else {}),
        **(imputation_tags(imputation) if imputation is not None else {}),
        **(extra_tags or {}),
    }
    version = registry.register_model(run_id, config.registry.model_name, result, test_set, tags)
    decision = registry.promote(
        config.registry.model_name, version, registry.GatePolicy.from_config(config.registry), test_set
    )
    runs.log_dict(run_id, decision.to_dict(), "registry/promotion.json")
    return RunSummary(
        model_name=config.registry.model_name,
        model_version=version,
        aliases=registry.version_aliases(config.registry.model_name, version),
        promoted=decision.promoted,
        gates=list(decision.gates),
        tracking_uri=tracking_uri(),
        mlflow_run_id=run_id,
        config_hash=config.hash(),
        data_sha256=prepared.data_sha256,
        num_clients=federated.num_clients,
        rounds=len(result.history),
        strategy=result.strategy,
        transport=config.train.transport,
        served_imputer=result.imputer.name if result.imputer is not None else None,
        test_samples=int(len(test_set)),
        dropped_samples=int(np.sum(~federated.kept)),
        metrics=evaluation.headline(),
        audit=audit.summary() if audit is not None else None,
        audit_flags=audit.flags if audit is not None else None,
    )


def record_and_register(
    config: Config,
    prepared: PreparedData,
    federated: FederatedData,
    result: TrainResult,
    evaluation: EvaluationReport,
    data_report: ValidationReport,
    partition_report: ValidationReport,
    audit: AuditReport | None,
    imputation: ImputationReport | None,
    run_name: str | None = None,
) -> RunSummary:
    """The register stage of orchestrators that track at the end (DVC, kfp): open the MLflow run, log the
    validation reports, results and audit, then :func:`register_and_promote`."""
    run_id = start_tracking(config, run_name)
    for report in (data_report, partition_report):
        record_validation(run_id, report)
    log_results(run_id, result, evaluation)
    if audit is not None:
        record_audit(run_id, audit)
    return register_and_promote(
        config, run_id, prepared, federated, result, evaluation, data_report.success and partition_report.success,
        audit=audit, imputation=imputation,
    )
