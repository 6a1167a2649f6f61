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
    aliases = ", ".join(summary["aliases"]) or "none"
    table.add_row("registered", f"{summary['model_name']} v{summary['model_version']} ({aliases})")
    table.add_row("promoted", "yes" if summary["promoted"] else "no")
    for gate in summary["gates"]:
        table.add_row(f"gate {gate['name']}", ("pass: " if gate["passed"] else "FAIL: ") + gate["detail"])
    console.print(table)
