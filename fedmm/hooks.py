"""The training graph's stage hooks (``fedmm.graph.TRAINING`` names them): progress bars, DVC reports,
what each stage tracks to MLflow and what it prints. Heavy imports stay inside the hooks."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from fedmm.artifacts import write_text
from fedmm.progress import RoundProgress


@contextmanager
def training_progress(config, inputs: dict):
    """A bar over the training rounds."""
    with RoundProgress(config.train.rounds, config.train.strategy) as progress:
        yield {"on_round": progress.update}


@contextmanager
def audit_progress(config, inputs: dict):
    """A bar over the audited rounds."""
    with RoundProgress(len(inputs["result"].history), "audit") as progress:
        yield {"on_round": progress.step}


def headline(evaluation) -> dict[str, float]:
    """The evaluation's headline metrics (DVC's metrics file, kfp's Metrics)."""
    return evaluation.headline()


def write_rounds(evaluation, inputs: dict, path: Path) -> None:
    """Per-round accuracy and macro-F1 of every split, as CSV (DVC's plots)."""
    history = inputs["result"].history
    scores = [(split, metric) for split in history[-1].scores for metric in ("accuracy", "macro_f1")]
    lines = [",".join(["round", *(f"{split}_{metric}" for split, metric in scores)])]
    lines += [",".join(map(str, [r.round, *(r.score(split, metric, "") for split, metric in scores)]))
              for r in history]  # the test splits: every train.eval_every rounds and the last
    write_text(path, "\n".join(lines) + "\n")


def write_summary_files(summary, inputs: dict, path: Path) -> None:
    """The run summary's job summary and gates report beside it."""
    from fedmm.report import write_summary

    write_summary(summary, path)


def track_validation(run_id: str, report, inputs: dict) -> None:
    from fedmm.tracking import runs

    runs.log_validation(run_id, report)


def track_results(run_id: str, evaluation, inputs: dict) -> None:
    """Per-round history, final metrics, the evaluation report and plots."""
    from fedmm.tracking import runs

    result = inputs["result"]
    runs.log_training(run_id, result.history, result.centralized_history)
    runs.log_evaluation(run_id, evaluation, result.history, result.centralized_history)


def track_audit(run_id: str, report, inputs: dict) -> None:
    from fedmm.tracking import runs

    runs.log_audit(run_id, report)


def track_imputation(run_id: str, report, inputs: dict) -> None:
    from fedmm.tracking import runs

    runs.log_imputation(run_id, report)


def show_audit(report) -> None:
    from fedmm.report import print_audit

    print_audit(report)
