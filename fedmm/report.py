"""The run summary: machine-readable JSON, a Markdown job summary and JUnit XML for CI, a table for people.

Each run's go to ``$FEDMM_HOME/reports/<run-id>/`` (``summary.json``, ``job_summary.md``,
``gates.xml``; the run id is the ZenML pipeline run's), and ``reports/latest`` links to the
newest. On GitHub Actions the Markdown is also appended to ``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedmm.artifacts import write_json, write_text
from fedmm.runtime import state_dir
from fedmm.summary import RunSummary

HEADLINE = (
    ("test_accuracy", "accuracy, held-out recordings"),
    ("test_macro_f1", "macro-F1, held-out recordings"),
    ("centralized_macro_f1", "centralized macro-F1, held-out recordings"),
    ("test_gap_macro_f1", "gap to centralized (macro-F1)"),
    ("test_complete_accuracy", "accuracy, held-out recordings with every modality"),
    ("test_complete_macro_f1", "macro-F1, held-out recordings with every modality"),
    ("test_missing_accuracy", "accuracy, held-out recordings under the training mask"),
    ("test_missing_macro_f1", "macro-F1, held-out recordings under the training mask"),
    ("test_subjects_accuracy", "accuracy, held-out subjects"),
    ("test_subjects_macro_f1", "macro-F1, held-out subjects"),
    ("centralized_test_subjects_macro_f1", "centralized macro-F1, held-out subjects"),
)


def summary_dir() -> Path:
    """The latest run's reports: ``$FEDMM_HOME/reports/latest`` (a link to its ``reports/<run-id>``)."""
    return state_dir() / "reports" / "latest"


def write_run_reports(summary: RunSummary) -> dict[str, Path]:
    """:func:`write_summary` into ``reports/<run-id>/`` (the ZenML run id, else the MLflow run's), then point
    ``reports/latest`` at it; returns the files' paths under ``reports/<run-id>/``."""
    run_id = summary.zenml_pipeline_run or summary.mlflow_run_id
    paths = write_summary(summary, summary_dir().parent / run_id)
    latest = summary_dir()
    if latest.is_dir() and not latest.is_symlink():  # a copy written before runs kept their own folder
        shutil.rmtree(latest)
    staged = latest.with_name(f".latest.{os.getpid()}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(run_id, target_is_directory=True)
    os.replace(staged, latest)
    return paths


def run_links(summary: RunSummary) -> list[tuple[str, str]]:
    """Where to find a run: its ZenML run id, its MLflow run and model version URIs, the audit's page."""
    from mlflow.utils.file_utils import local_file_uri_to_path  # lazy: MLflow

    from fedmm.tracking.runs import AUDIT_REPORT, client

    links = [("ZenML run", summary.zenml_pipeline_run)] if summary.zenml_pipeline_run else []
    links += [("MLflow run", f"runs:/{summary.mlflow_run_id}"),
              ("model version", f"models:/{summary.model_name}/{summary.model_version}")]
    if summary.audit and summary.audit.get("audit_rounds"):
        uri = f"{client().get_run(summary.mlflow_run_id).info.artifact_uri}/{AUDIT_REPORT}"
        links.append(("audit report", str(local_file_uri_to_path(uri)) if uri.startswith("file:") else uri))
    return links


def job_summary(summary: RunSummary) -> str:
    """The run as Markdown for a CI job summary: outcome, gates, headline metrics, lineage."""
    outcome = "promoted to champion" if summary.promoted else "not promoted"
    lines = [
        f"## fedmm: {summary.model_name} v{summary.model_version} {outcome}",
        "",
        "| gate | result | evidence |",
        "| --- | --- | --- |",
        *(f"| {g.name} | {'pass' if g.passed else '**FAIL**'} | {g.detail} |" for g in summary.gates),
        "",
        "| metric | value |",
        "| --- | ---: |",
        *(f"| {label} | {summary.metrics[key]:.4f} |" for key, label in HEADLINE if key in summary.metrics),
        "",
        f"aliases: {', '.join(summary.aliases) or 'none'}; strategy {summary.strategy}, "
        f"{summary.num_clients} clients, {summary.rounds} rounds, {summary.test_samples} test samples; "
        f"data sha256 `{summary.data_sha256[:12]}`, config hash `{summary.config_hash[:12]}`, "
        f"tracking `{summary.tracking_uri}`",
    ]
    return "\n".join(lines) + "\n"


def gates_junit(summary: RunSummary) -> str:
    """The promotion gates as a JUnit XML test suite (one test case per gate)."""
    gates = summary.gates
    suite = ET.Element("testsuite", name=f"fedmm.gates.{summary.model_name}", tests=str(len(gates)),
                       failures=str(sum(not g.passed for g in gates)), errors="0")
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname=f"{summary.model_name}.v{summary.model_version}",
                             name=gate.name)
        if not gate.passed:
            ET.SubElement(case, "failure", message=gate.detail).text = gate.detail
        else:
            ET.SubElement(case, "system-out").text = gate.detail
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"


def write_summary(summary: RunSummary, directory: Path | None = None) -> dict[str, Path]:
    """Write ``summary.json``, ``job_summary.md`` and ``gates.xml`` atomically; returns their paths."""
    directory = Path(directory) if directory is not None else summary_dir()
    paths = {"summary": directory / "summary.json", "job_summary": directory / "job_summary.md",
             "junit": directory / "gates.xml"}
    write_json(paths["summary"], summary.to_dict())
    markdown = job_summary(summary)
    write_text(paths["job_summary"], markdown)
    write_text(paths["junit"], gates_junit(summary))
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as handle:
            handle.write(markdown)
    return paths


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    """A compact table of the headline metrics and the registry outcome."""
    console = console or Console()
    table = Table(title=f"fedmm run: {summary.strategy}, {summary.num_clients} clients, {summary.rounds} rounds")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in HEADLINE:
        if key in summary.metrics:
            table.add_row(label, f"{summary.metrics[key]:.4f}")
    if summary.served_imputer:
        table.add_row("imputes missing modalities with", summary.served_imputer)
    aliases = ", ".join(summary.aliases) or "none"
    table.add_row("registered", f"{summary.model_name} v{summary.model_version} ({aliases})")
    table.add_row("promoted", "yes" if summary.promoted else "no")
    for gate in summary.gates:
        table.add_row(f"gate {gate.name}", ("pass: " if gate.passed else "FAIL: ") + gate.detail)
    if summary.audit_flags is not None:
        flags = {c: [f["flag"] for f in found] for c, found in summary.audit_flags.items()}
        table.add_row("audit flags", ", ".join(f"client {c}: {'+'.join(f)}" for c, f in flags.items()) or "none")
    console.print(table)


def conclude(summary: RunSummary, echo: Callable[[str], None]) -> str | None:
    """Write the run's reports, print the table and where the run lives; the warning line when the version was
    not promoted."""
    paths = write_run_reports(summary)
    print_summary(summary)
    for label, where in run_links(summary):
        echo(f"{label}: {where}")
    echo(f"summary: {paths['summary']} (the newest run's: {summary_dir() / 'summary.json'})")
    return None if summary.promoted else f"{summary.model_name} v{summary.model_version} was not promoted (a gate failed)"


def print_audit(report, console: Console | None = None) -> None:
    """Per-client contribution over the run: value with its interval, Holm-adjusted p, verdict and flags."""
    from fedmm.audit.report import NOT_AUDITABLE  # lazy: torch

    console = console or Console()
    if report.state == NOT_AUDITABLE:
        console.print(f"contribution audit: nothing to audit ({report.meta.reason})")
        return
    game = report.meta.game
    inference = game["inference"]
    config = report.meta.config
    level = config.ci_level
    table = Table(title=f"contribution audit: Shapley values ({game['metric']}, {game['weighting']} weights)")
    for column in ("client", "value", f"{level:.0%} CI", "p (Holm)", "verdict; flags"):
        table.add_column(column, justify="left" if column.startswith("verdict") else "right")
    for row in report.clients.sort_values("rank").itertuples():
        verdict = "; ".join([row.verdict, *([row.flags.replace(",", ", ")] if row.flags else [])])
        table.add_row(str(int(row.client)), f"{row.value:+.3f}", f"{row.ci_low:+.3f}..{row.ci_high:+.3f}",
                      f"{row.p_holm:.3f}", verdict)
    console.print(table)
    why = f"; {inference['group_reason']}" if inference.get("group_reason") else ""
    console.print(f"intervals: {inference['method']} over {inference['n_groups']} {inference['group_key']} clusters "
                  f"(t on {inference['df']} df{why}); harmful needs Holm p < {config.alpha} and the "
                  f"interval below -{config.min_effect}")
    for kind, quality in (report.meta.detection or {}).get("kinds", {}).items():
        console.print(f"detection of {kind} clients {quality['corrupted_clients']}: AUROC {quality['auroc']:.3f}")
