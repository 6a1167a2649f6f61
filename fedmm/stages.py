"""Pipeline stages over a folder of artifacts: what ``fedmm stage NAME`` runs for DVC.

Each stage reads the previous stages' folders under ``workdir`` and writes its own, so DVC
can track them as outs. The MLflow run is opened by the ``register`` stage, which logs the
validation reports, the training history and the evaluation before registering.
"""

from __future__ import annotations

from pathlib import Path

from fedmm import workflow
from fedmm.artifacts import read_json, write_json
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.data.validation import ValidationReport
from fedmm.fl.result import TrainResult
from fedmm.progress import RoundProgress
from fedmm.report import write_summary

PREPARED, PARTITIONS, TRAINING = "prepared", "partitions", "training"
DATA_REPORT, PARTITION_REPORT = "validation/data.json", "validation/partitions.json"
EVALUATION, METRICS, ROUNDS = "evaluation/report.json", "evaluation/metrics.json", "evaluation/rounds.csv"


def prepare(config: Config, workdir: Path) -> None:
    workflow.prepare_data(config).save(workdir / PREPARED)


def _validate(report: ValidationReport, path: Path) -> None:
    write_json(path, report.to_dict())
    report.raise_if_failed()


def validate_data(config: Config, workdir: Path) -> None:
    _validate(workflow.validate_data(config, PreparedData.load(workdir / PREPARED)), workdir / DATA_REPORT)


def partition(config: Config, workdir: Path) -> None:
    workflow.make_partitions(config, PreparedData.load(workdir / PREPARED)).save(workdir / PARTITIONS)


def validate_partitions(config: Config, workdir: Path) -> None:
    federated = FederatedData.load(workdir / PARTITIONS)
    _validate(workflow.check_partitions(config, federated), workdir / PARTITION_REPORT)


def train(config: Config, workdir: Path) -> None:
    prepared, federated = PreparedData.load(workdir / PREPARED), FederatedData.load(workdir / PARTITIONS)
    with RoundProgress(config.train.rounds, config.train.strategy) as progress:
        workflow.train_models(config, prepared, federated, progress.update).save(workdir / TRAINING)


def evaluate(config: Config, workdir: Path) -> None:
    prepared, federated = PreparedData.load(workdir / PREPARED), FederatedData.load(workdir / PARTITIONS)
    result = TrainResult.load(workdir / TRAINING)
    report = workflow.evaluate_models(prepared, federated, result)
    write_json(workdir / EVALUATION, report)
    write_json(workdir / METRICS, report["summary"])
    columns = ["round", *[k for k in result.history[0] if k.endswith(("_accuracy", "_macro_f1"))]]
    lines = [",".join(columns)] + [",".join(str(record[c]) for c in columns) for record in result.history]
    (workdir / ROUNDS).write_text("\n".join(lines) + "\n")


def register(config: Config, workdir: Path) -> None:
    prepared, federated = PreparedData.load(workdir / PREPARED), FederatedData.load(workdir / PARTITIONS)
    result = TrainResult.load(workdir / TRAINING)
    reports = [ValidationReport.from_dict(read_json(workdir / name)) for name in (DATA_REPORT, PARTITION_REPORT)]
    run_id = workflow.start_tracking(config, run_name="dvc")
    for report in reports:
        workflow.record_validation(run_id, report)
    evaluation = read_json(workdir / EVALUATION)
    workflow.log_results(run_id, result, evaluation)
    summary = workflow.register_and_promote(
        config, run_id, prepared, federated, result, evaluation, all(r.success for r in reports)
    )
    write_summary(summary, workdir / "registry")


STAGES = {
    "prepare": prepare,
    "validate-data": validate_data,
    "partition": partition,
    "validate-partitions": validate_partitions,
    "train": train,
    "evaluate": evaluate,
    "register": register,
}
