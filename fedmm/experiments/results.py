"""Results of an experiment matrix: the per-cell CSV, the mean ± std table, and plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedmm.artifacts import write_text
from fedmm.plotting import plt, save_figure

KEYS = ["dataset", "pattern", "strategy", "missing_rate"]
VIEWS = {
    "test": "complete test inputs",
    "test_missing": "test inputs under the training mask",
}
METRICS = [f"{view}_{metric}" for view in VIEWS for metric in ("accuracy", "macro_f1")]


def aggregate(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count of each metric per (dataset, pattern, strategy, missing rate).

    A cell without ``test_missing`` metrics (missing rate 0: the mask removes nothing) takes
    its complete-input metrics there.
    """
    cells = cells.copy()
    for metric in ("accuracy", "macro_f1"):
        column = cells.get(f"test_missing_{metric}", pd.Series(index=cells.index, dtype=float))
        cells[f"test_missing_{metric}"] = column.fillna(cells[f"test_{metric}"])
    grouped = cells.groupby(KEYS)[METRICS]
    table = grouped.agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = grouped.size()
    return table.reset_index()


def markdown_table(summary: pd.DataFrame) -> str:
    """Markdown tables per dataset, pattern and view: rows are strategies, columns missing rates."""
    lines = []
    for (dataset, pattern), part in summary.groupby(["dataset", "pattern"]):
        rates = sorted(part["missing_rate"].unique())
        for view, description in VIEWS.items():
            lines += [
                f"### {dataset}, {pattern.replace('_', ' ')}, {description} "
                "(macro-F1 / accuracy, mean ± std over seeds)",
                "",
                "| strategy | " + " | ".join(f"r = {r:g}" for r in rates) + " |",
                "| --- |" + " --- |" * len(rates),
            ]
            for strategy, rows in part.groupby("strategy"):
                by_rate = rows.set_index("missing_rate")
                cells = [_cell(by_rate.loc[r], view) if r in by_rate.index else "" for r in rates]
                lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _cell(row: pd.Series, view: str) -> str:
    f1, accuracy = f"{view}_macro_f1", f"{view}_accuracy"
    return (f"{row[f1 + '_mean']:.3f} ± {_std(row[f1 + '_std'])} / "
            f"{row[accuracy + '_mean']:.3f} ± {_std(row[accuracy + '_std'])}")


def _std(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3f}"


def plot_metric_vs_rate(summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """``metric`` against the missing rate, one line per strategy, one panel per dataset x pattern."""
    panels = list(summary.groupby(["dataset", "pattern"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, ((dataset, pattern), part) in zip(axes[0], panels):
        for strategy, rows in part.groupby("strategy"):
            rows = rows.sort_values("missing_rate")
            ax.errorbar(rows["missing_rate"], rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"].fillna(0),
                        marker="o", capsize=3, label=strategy)
        ax.set_title(f"{dataset}: {pattern.replace('_', ' ')}", fontsize=9)
        ax.set_xlabel("missing rate")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path)


def write_outputs(cells: pd.DataFrame, directory: Path) -> dict[str, Path]:
    """summary.csv, table.md and one plot per metric, next to cells.csv."""
    summary = aggregate(cells)
    outputs = {"summary": directory / "summary.csv", "table": directory / "table.md"}
    write_text(outputs["summary"], summary.to_csv(index=False))
    write_text(outputs["table"], markdown_table(summary))
    for metric in METRICS:
        outputs[metric] = plot_metric_vs_rate(summary, metric, directory / "plots" / f"{metric}_vs_missing_rate.png")
    return outputs
