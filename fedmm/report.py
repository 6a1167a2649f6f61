"""The run summary: machine-readable JSON for CI and a short table for people."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedmm.artifacts import write_json

SUMMARY_DIR = Path("reports") / "latest"
HEADLINE = (
    ("test_accuracy", "accuracy, held-out recordings"),
    ("test_macro_f1", "macro-F1, held-out recordings"),
    ("centralized_macro_f1", "centralized macro-F1, held-out recordings"),
    ("test_gap_macro_f1", "gap to centralized (macro-F1)"),
    ("test_missing_accuracy", "accuracy, held-out recordings under the training mask"),
    ("test_missing_macro_f1", "macro-F1, held-out recordings under the training mask"),
    ("test_subjects_accuracy", "accuracy, held-out subjects"),
    ("test_subjects_macro_f1", "macro-F1, held-out subjects"),
    ("centralized_test_subjects_macro_f1", "centralized macro-F1, held-out subjects"),
)


def write_summary(summary: dict, directory: Path = SUMMARY_DIR) -> Path:
    """Write ``summary.json`` atomically and return its path."""
    path = Path(directory) / "summary.json"
    write_json(path, summary)
    return path


def print_summary(summary: dict, console: Console | None = None) -> None:
    """A compact table of the headline metrics and the registry outcome."""
    console = console or Console()
    table = Table(title=f"fedmm run: {summary['strategy']}, {summary['num_clients']} clients, {summary['rounds']} rounds")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in HEADLINE:
        if key in summary:
            table.add_row(label, f"{summary[key]:.4f}")
    if summary.get("served_imputer"):
        table.add_row("imputes missing modalities with", summary["served_imputer"])
    aliases = ", ".join(summary["aliases"]) or "none"
    table.add_row("registered", f"{summary['model_name']} v{summary['model_version']} ({aliases})")
    table.add_row("promoted", "yes" if summary["promoted"] else "no")
    for gate in summary["gates"]:
        table.add_row(f"gate {gate['name']}", ("pass: " if gate["passed"] else "FAIL: ") + gate["detail"])
    if "audit_flags" in summary:
        flags = {c: [f["flag"] for f in found] for c, found in summary["audit_flags"].items()}
        table.add_row("audit flags", ", ".join(f"client {c}: {'+'.join(f)}" for c, f in flags.items()) or "none")
    console.print(table)


def print_audit(report, console: Console | None = None) -> None:
    """Per-client contribution over the run: value with its interval, Holm-adjusted p, verdict and flags."""
    console = console or Console()
    game = report.meta["game"]
    inference = game["inference"]
    level = report.meta["config"]["ci_level"]
    table = Table(title=f"contribution audit: Shapley values ({game['metric']}, {game['weighting']} weights)")
    for column in ("client", "value", f"{level:.0%} CI", "p (Holm)", "verdict; flags"):
        table.add_column(column, justify="left" if column.startswith("verdict") else "right")
    for row in report.clients.sort_values("rank").itertuples():
        verdict = "; ".join([row.verdict, *([row.flags.replace(",", ", ")] if row.flags else [])])
        table.add_row(str(int(row.client)), f"{row.value:+.3f}", f"{row.ci_low:+.3f}..{row.ci_high:+.3f}",
                      f"{row.p_holm:.3f}", verdict)
    console.print(table)
    console.print(f"intervals: {inference['method']} over {inference['n_groups']} {inference['group_key']} clusters "
                  f"(t on {inference['df']} df); harmful needs Holm p < {report.meta['config']['alpha']} and the "
                  f"interval below -{report.meta['config']['min_effect']}")
    for kind, quality in report.meta.get("detection", {}).get("kinds", {}).items():
        console.print(f"detection of {kind} clients {quality['corrupted_clients']}: AUROC {quality['auroc']:.3f}")
