"""The imputation evaluation's artifact: one row per (pattern, rate, imputer), as CSV, Parquet,
Markdown and plots of error and macro-F1 against the missing rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedmm.artifacts import read_json, write_json
from fedmm.plotting import pyplot, save_figure

TABLE = "imputation"
META_FILE = "imputation.json"
ERROR_PLOT = "nrmse_vs_rate.png"
F1_PLOT = "macro_f1_vs_rate.png"
PANELS_PER_ROW = 4
MARKDOWN_COLUMNS = (
    "pattern", "rate", "imputer", "space", "nrmse_own", "nrmse_latent", "cosine_latent", "macro_f1",
    "macro_f1_absent", "floor_macro_f1", "oracle_macro_f1", "gap_recovered", "fit_seconds", "impute_seconds_per_1k",
)
LEGEND = (
    "gap_recovered = (macro_f1 - floor_macro_f1) / (oracle_macro_f1 - floor_macro_f1): the share of the "
    "zero-fill-to-true-values gap an imputer closes. It is nan where there is no gap (the model loses nothing "
    "when the modality is absent), below 0 where the imputer does worse than leaving the modality absent, "
    "and above 1 where it beats the true values (usually noise on a small gap: compare the gap with one "
    "test sample's share of macro-F1)."
)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table (numbers rounded to ``digits``)."""
    cell = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


@dataclass
class ImputationReport:
    """The evaluation table and what produced it (modalities, patterns, rates, seed, imputers)."""

    table: pd.DataFrame
    meta: dict

    def at(self, rate: float) -> pd.DataFrame:
        """The rows at one missing rate."""
        return self.table[(self.table["rate"] - rate).abs() < 1e-9].reset_index(drop=True)

    def markdown(self) -> str:
        """The table, how to read ``gap_recovered``, and the settings chosen on the validation split (if any)."""
        text = markdown_table(self.table[list(MARKDOWN_COLUMNS)]) + "\n" + LEGEND + "\n"
        complete = self.meta.get("complete_samples")
        if complete and complete["samples"] < complete["of"]:
            text += (f"\nScored on the {complete['samples']} of {complete['of']} test samples that have every "
                     "modality (the ground truth); the others lack one in the data itself.\n")
        if self.meta.get("selection"):
            text += ("\nSettings chosen on the validation split (candidates of impute.select, scored by the mean "
                     "gap recovered there; the test split scores only the chosen ones):\n\n"
                     + markdown_table(pd.DataFrame(self.meta["selection"])))
            text += "".join(f"\nWarning: {note}.\n" for note in self.meta.get("selection_notes", []))
        return text

    def plot(self, metric: str, path: Path, reference: str | None = None) -> Path:
        """``metric`` against the rate, one panel per pattern, one line per imputer."""
        plt = pyplot()
        patterns = self.meta["patterns"]
        cols = min(len(patterns), PANELS_PER_ROW)
        lines = -(-len(patterns) // cols)
        fig, axes = plt.subplots(lines, cols, figsize=(4 * cols, 3.4 * lines), sharey=True, squeeze=False)
        for ax in axes.flat[len(patterns):]:
            ax.set_visible(False)
        for ax, pattern in zip(axes.flat, patterns):
            rows = self.table[self.table["pattern"] == pattern]
            for imputer, group in rows.groupby("imputer", sort=False):
                ax.plot(group["rate"], group[metric], marker="o", label=imputer)
            if reference is not None:
                ref = rows.groupby("rate")[reference].first()
                ax.plot(ref.index, ref.values, "k--", lw=0.8, label=reference.replace("_", " "))
            ax.set_title(pattern)
            ax.set_xlabel("missing rate")
            ax.set_ylabel(metric.replace("_", " "))
        axes.flat[len(patterns) - 1].legend(fontsize=7)
        return save_figure(fig, path)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(directory / f"{TABLE}.csv", index=False)
        self.table.to_parquet(directory / f"{TABLE}.parquet", index=False)
        (directory / f"{TABLE}.md").write_text(self.markdown())
        write_json(directory / META_FILE, self.meta)
        self.plot("nrmse_latent", directory / ERROR_PLOT)
        self.plot("macro_f1", directory / F1_PLOT, reference="oracle_macro_f1")

    @classmethod
    def load(cls, directory: str | Path) -> ImputationReport:
        directory = Path(directory)
        return cls(pd.read_parquet(directory / f"{TABLE}.parquet"), read_json(directory / META_FILE))
