"""The training graph's stage bodies (``fedmm.graph.TRAINING`` wires them; every orchestrator runs them).

Each stage takes and returns artifacts (objects with ``save``/``load``) or typed records
stored as JSON (``to_dict``/``from_dict``). MLflow is imported inside the stages that
register (its import takes seconds), so a DVC stage or kfp task that does not track never
pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fedmm.audit.detection import detection_quality
from fedmm.audit.inference import grouping_reason
from fedmm.audit.report import NOT_AUDITABLE, AuditReport
from fedmm.audit.run import audit_updates, audit_validation, federated_modalities
from fedmm.config import Config
from fedmm.data.federated import FederatedData, partition_and_mask, split_tensors
from fedmm.data.prepare import PreparedData, prepare
from fedmm.data.validation import ValidationReport, validate_dataset, validate_partitions
from fedmm.evaluation import EvaluationReport, evaluate_training
from fedmm.fl.history import RoundRecord
from fedmm.fl.result import ServedImputer, TrainResult
from fedmm.fl.strategies import STRATEGIES
from fedmm.fl.training import train
from fedmm.impute.clients import client_datasets, split_owners
from fedmm.impute.registry import make_imputer
from fedmm.impute.report import ImputationReport
from fedmm.impute.select import evaluate_selected, selection_tags
from fedmm.runtime import resolve_device
from fedmm.summary import Registration, RunSummary
from fedmm.tracker import Tracker
from fedmm.tracking import tags as T


def start_tracking(config: Config, run_name: str | None = None) -> str:
    """Open an MLflow run for a training run (what the register stage's tracker does first)."""
    from fedmm.tracking import runs

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
        presence=dataset.presence,
    )


def make_partitions(config: Config, prepared: PreparedData) -> FederatedData:
    return partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)


def check_partitions(config: Config, federated: FederatedData) -> ValidationReport:
    """The Great Expectations suite over client sizes and realised missing rates."""
    return validate_partitions(
        federated.client_table(), config.validation.min_samples_per_client, config.validation.missing_rate_tolerance
    )


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


def imputation_not_configured(config: Config) -> str | None:
    """Why a config's run evaluates no imputers (``impute.evaluate`` is off), or None."""
    return None if config.impute.evaluate else "impute.evaluate is false"


def audit_contributions(
    config: Config, prepared: PreparedData, federated: FederatedData, result: TrainResult,
    on_round: Callable[[dict], None] | None = None,
) -> AuditReport:
    """Shapley audit of every stored round on the validation split (:func:`~fedmm.audit.run.audit_validation`),
    stamped with the training fingerprint and the partition's hash.

    When the partition injected corrupted clients, their ground truth and the audit's
    detection quality (AUROC per corruption kind) go into the report.
    """
    if not STRATEGIES[result.strategy].sends_deltas():
        return AuditReport.not_auditable(f"strategy {result.strategy!r} sends no parameter deltas", config.audit,
                                         config.seed)
    val, groups, key = audit_validation(prepared, config.audit, resolve_device(config.train.device))
    index = prepared.indices("val")
    report = audit_updates(
        result.updates_dir, result.spec, val, config.audit, groups=groups, group_key=key,
        group_reason=grouping_reason(key, prepared.dataset.recording[index], prepared.dataset.subject[index]),
        client_modalities=federated_modalities(federated), seed=config.seed, on_round=on_round,
    )
    report.meta.training_fingerprint = result.fingerprint
    report.meta.partition_sha256 = federated.content_hash
    truth = federated.report.corruption.ground_truth
    report.meta.corruption_ground_truth = truth
    if any(row["corrupted"] for row in truth):
        report.meta.detection = detection_quality(report.clients, truth)
    return report


def audit_tags(report: AuditReport, run_id: str | None = None) -> dict[str, str]:
    """Model-version tags of an audit: flags, their tests and thresholds (the clean-audit gate reads these),
    the game and, given the MLflow run it was logged to, where its report is."""
    if report.state == NOT_AUDITABLE:
        return {T.AUDIT_STATE: report.state, T.AUDIT_REASON: report.meta.reason}
    harmful = sorted(int(c) for c, found in report.flags.items() if any(f["flag"] == "harmful" for f in found))
    game = report.meta.game
    clients = report.clients.set_index("client")
    short = lambda x: float(f"{x:.4g}")  # noqa: E731  (a tag value holds at most 5,000 characters)
    tests = {str(int(c)): {"p_holm": short(clients.loc[c, "p_holm"]), "ci": [short(clients.loc[c, "ci_low"]),
             short(clients.loc[c, "ci_high"])], "verdict": clients.loc[c, "verdict"]} for c in clients.index}
    tags = {
        T.AUDIT_STATE: report.state,
        T.AUDIT_HARMFUL: T.AUDIT_HARMFUL.text(harmful),
        T.AUDIT_FLAGS: T.AUDIT_FLAGS.text({c: list(dict.fromkeys(f["flag"] for f in found))
                                           for c, found in report.flags.items()}),
        T.AUDIT_GATE_FLAGS: T.AUDIT_GATE_FLAGS.text(list(report.meta.config.gate_flags)),
        T.AUDIT_THRESHOLDS: T.AUDIT_THRESHOLDS.text(report.meta.flags.thresholds),
        T.AUDIT_TESTS: T.AUDIT_TESTS.text(tests),
        T.AUDIT_GAME: f"{game['weighting']} weights, {game['metric']}, validation sha256 {game['validation_sha256']}",
    }
    if run_id is not None:
        from fedmm.tracking.runs import AUDIT_REPORT

        tags[T.AUDIT_REPORT] = f"runs:/{run_id}/{AUDIT_REPORT}"
    return tags


def attach_audit(report: AuditReport, run_summary: RunSummary) -> None:
    """Log an audit of a past training run to its MLflow run and tag its registered model version.

    The version keeps its earlier audits' tags (``fedmm.audit.history.<n>.*``).
    """
    from fedmm.tracking import registry, runs

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
    tags = {T.IMPUTATION_IMPUTERS: ",".join(report.table["imputer"].unique())}
    recovered = report.table.groupby("imputer")["gap_recovered"].mean().drop("zero", errors="ignore").dropna()
    if not recovered.empty:
        tags[T.IMPUTATION_BEST] = str(recovered.idxmax())
        tags[T.IMPUTATION_BEST_GAP] = T.IMPUTATION_BEST_GAP.text(float(recovered.max()))
    return {**tags, **selection_tags(report)}


def attach_imputation(report: ImputationReport, run_summary: RunSummary) -> None:
    """Log an imputation evaluation to the training run's MLflow run and tag its registered model version."""
    from fedmm.tracking import registry, runs

    runs.log_imputation(run_summary.mlflow_run_id, report)
    mlflow_client = registry.client()
    for key, value in imputation_tags(report).items():
        mlflow_client.set_model_version_tag(run_summary.model_name, run_summary.model_version, key, value)


def version_tags(config: Config, run_id: str, prepared: PreparedData, federated: FederatedData, result: TrainResult,
                 evaluation: EvaluationReport, validation_passed: bool) -> dict[str, str]:
    """The tags a registered version carries: what produced it, from which data, and how it scored."""
    from fedmm.tracking.runs import git_commit

    return {
        T.DATA_SHA256: prepared.data_sha256,
        T.TEST_SHA256: prepared.manifest["test_sha256"],
        T.PARTITION_SHA256: federated.content_hash,
        T.PARTITION_CONFIG_HASH: config.hash("partition", "mask", "seed"),
        T.CONFIG_HASH: config.hash(),
        T.GIT_COMMIT: git_commit(),
        T.STRATEGY: result.strategy,
        T.TRAINING_FINGERPRINT: result.fingerprint,
        T.MLFLOW_RUN_ID: run_id,
        T.TEST_MACRO_F1: T.TEST_MACRO_F1.text(evaluation.test_macro_f1),
        T.VALIDATION_PASSED: T.VALIDATION_PASSED.text(validation_passed),
    }


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
    """Register the global model as ``challenger`` (tagged with its audit and imputation evaluation), run the
    gates, promote if they pass. Returns the run summary (the content of ``reports/latest/summary.json``)."""
    from fedmm.tracking import registry, runs

    test_set = prepared.dataset.subset(prepared.indices("test"))
    tags = {
        **version_tags(config, run_id, prepared, federated, result, evaluation, validation_passed),
        **(registry.audit_record_tags({}, audit_tags(audit, run_id)) if audit is not None else {}),
        **(imputation_tags(imputation) if imputation is not None else {}),
        **(extra_tags or {}),
    }
    version = registry.register_model(run_id, config.registry.model_name, result, test_set, tags)
    decision = registry.promote(
        config.registry.model_name, version, registry.GatePolicy.from_config(config.registry), test_set
    )
    runs.log_dict(run_id, decision.to_dict(), "registry/promotion.json")
    registration = Registration(config.registry.model_name, version, run_id, decision.promoted, list(decision.gates),
                                registry.version_aliases(config.registry.model_name, version))
    return RunSummary.from_registration(registration, config, prepared, federated, result, evaluation, audit)


def record_and_register(
    config: Config,
    tracker: Tracker,
    prepared: PreparedData,
    federated: FederatedData,
    result: TrainResult,
    evaluation: EvaluationReport,
    data_report: ValidationReport,
    partition_report: ValidationReport,
    audit: AuditReport | None,
    imputation: ImputationReport | None,
    extra_tags: dict[str, str] | None = None,
) -> RunSummary:
    """The register stage: open the run's MLflow run (the tracker logs every stage's tracked output to it),
    then :func:`register_and_promote`."""
    artifacts = {"prepared": prepared, "federated": federated, "result": result, "evaluation": evaluation,
                 "data_report": data_report, "partition_report": partition_report, "audit": audit,
                 "imputation": imputation}
    run_id = tracker.start(artifacts)
    return register_and_promote(
        config, run_id, prepared, federated, result, evaluation, data_report.success and partition_report.success,
        extra_tags=extra_tags, audit=audit, imputation=imputation,
    )
