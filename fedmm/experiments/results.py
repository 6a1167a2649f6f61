"""Results of an experiment matrix: the per-cell CSV, the summary table against FedAvg, and plots.

Every strategy is compared with FedAvg on the same seeds (the same data split, partition and
mask): the table gives mean and sd over seeds, the mean paired difference to FedAvg with its
t confidence interval and the paired t-test's p-value, and marks the settings that give the
method labels FedAvg never sees (a labelled server proxy set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fedmm.artifacts import write_text
from fedmm.plotting import pyplot, save_figure

KEYS = ["dataset", "pattern", "strategy", "missing_rate"]
GROUP = ["dataset", "pattern", "missing_rate"]
VIEWS = {
    "test": "complete test inputs",
    "test_missing": "test inputs under the training mask",
}
METRICS = [f"{view}_{metric}" for view in VIEWS for metric in ("accuracy", "macro_f1")]
REFERENCE = "fedavg"
CENTRALIZED = "centralized"
CONFIDENCE = 0.95
CENTRALIZED_COLUMNS = {
    "centralized_accuracy": "test_accuracy", "centralized_macro_f1": "test_macro_f1",
    "centralized_test_missing_accuracy": "test_missing_accuracy",
    "centralized_test_missing_macro_f1": "test_missing_macro_f1",
}


def with_centralized(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells plus a ``centralized`` row per (dataset, pattern, rate, seed) where a cell trained the reference.

    The centralized model pools the clients' data under the same mask; it sees no proxy set.
    """
    present = [c for c in CENTRALIZED_COLUMNS if c in cells.columns]
    if "centralized_macro_f1" not in present:
        return cells
    central = cells.dropna(subset=["centralized_macro_f1"]).drop_duplicates(GROUP + ["seed"])
    central = central[GROUP + ["seed", *present]].rename(columns=CENTRALIZED_COLUMNS)
    central["strategy"], central["extra_labels"] = CENTRALIZED, False
    return pd.concat([cells, central], ignore_index=True)


def paired_difference(values: pd.Series, reference: pd.Series, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean of ``values - reference`` over the seeds both have, its t interval and the paired t-test's p."""
    diff = (values - reference).dropna()
    n = len(diff)
    out = {"diff": diff.mean() if n else np.nan, "diff_low": np.nan, "diff_high": np.nan, "p": np.nan, "pairs": n}
    if n >= 2:
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)
        out.update(diff_low=out["diff"] - half, diff_high=out["diff"] + half)
        out["p"] = stats.ttest_1samp(diff, 0.0).pvalue
    return out


def aggregate(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, pattern, strategy, missing rate): mean, sd and seeds of each metric, and the paired
    difference to FedAvg (``<metric>_diff``, ``_diff_low``, ``_diff_high``, ``_p``, ``_pairs``).

    A cell without ``test_missing`` metrics (missing rate 0: the mask removes nothing) takes
    its complete-input metrics there.
    """
    cells = with_centralized(cells.copy())
    if "extra_labels" not in cells.columns:
        cells["extra_labels"] = False
    for metric in ("accuracy", "macro_f1"):
        column = cells.get(f"test_missing_{metric}", pd.Series(index=cells.index, dtype=float))
        cells[f"test_missing_{metric}"] = column.fillna(cells[f"test_{metric}"])
    rows = []
    for group, setting in cells.groupby(GROUP):
        reference = setting[setting["strategy"] == REFERENCE].set_index("seed")
        for strategy, part in setting.groupby("strategy"):
            row = {**dict(zip(GROUP, group)), "strategy": strategy, "seeds": len(part),
                   "extra_labels": bool(part["extra_labels"].astype(bool).any())}
            mine = part.set_index("seed")
            for metric in METRICS:
                row[f"{metric}_mean"], row[f"{metric}_std"] = part[metric].mean(), part[metric].std()
                if len(reference):
                    paired = paired_difference(mine[metric], reference[metric].reindex(mine.index))
                    row.update({f"{metric}_{name}": value for name, value in paired.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame) -> str:
    """Markdown tables per dataset, pattern and view: rows are strategies, columns missing rates."""
    lines = []
    level = f"{CONFIDENCE:.0%}"
    for (dataset, pattern), part in summary.groupby(["dataset", "pattern"]):
        rates = sorted(part["missing_rate"].unique())
        for view, description in VIEWS.items():
            lines += [
                f"### {dataset}, {pattern.replace('_', ' ')}, {description}",
                "",
                f"Macro-F1 mean ± sd over seeds (n); Δ: mean paired difference to {REFERENCE} on the same seeds "
                f"[{level} t interval], p of the paired t-test. Extra labels: the method trains on labels "
                f"{REFERENCE} never sees (the server's labelled proxy set).",
                "",
                "| strategy | extra labels | " + " | ".join(f"r = {r:g}" for r in rates) + " |",
                "| --- | --- |" + " --- |" * len(rates),
            ]
            for strategy, rows in part.groupby("strategy"):
                by_rate = rows.set_index("missing_rate")
                cells = [_cell(by_rate.loc[r], view) if r in by_rate.index else "" for r in rates]
                extra = "yes" if rows["extra_labels"].any() else ""
                lines.append(f"| {strategy} | {extra} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _cell(row: pd.Series, view: str) -> str:
    f1 = f"{view}_macro_f1"
    text = f"{row[f1 + '_mean']:.3f} ± {_num(row[f1 + '_std'])} ({int(row['seeds'])})"
    if row["strategy"] == REFERENCE or pd.isna(row.get(f1 + "_diff", np.nan)):
        return text
    return (f"{text}; Δ {row[f1 + '_diff']:+.3f} [{_num(row[f1 + '_diff_low'], '+')}, "
            f"{_num(row[f1 + '_diff_high'], '+')}], p {_num(row[f1 + '_p'])}")


def _num(value: float, sign: str = "") -> str:
    return "n/a" if pd.isna(value) else f"{value:{sign}.3f}"


def plot_metric_vs_rate(summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """``metric`` against the missing rate, one line per strategy, one panel per dataset x pattern."""
    plt = pyplot()
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
