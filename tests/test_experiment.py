"""The experiment matrix: cells, patterns, a resumable run with its table, plots and MLflow runs."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import REPO
from scipy import stats

from fedmm.artifacts import read_json
from fedmm.cli import main
from fedmm.config import ConfigError, load_config
from fedmm.experiments.matrix import expand, load_spec, pattern_overrides
from fedmm.experiments.results import aggregate, markdown_table
from fedmm.tracking import runs

CI_MATRIX = REPO / "configs" / "experiments" / "ci.yaml"


def test_patterns_become_valid_mask_configs():
    modalities = ["acc", "gyro"]
    one = load_config(None, pattern_overrides("one_modality", 0.7, modalities, None))
    assert one.mask.missing_rate == {"gyro": 0.7}
    random = load_config(None, pattern_overrides("random_modality", 0.9, modalities, None))
    assert random.mask.random_missing_rate == 0.9
    mixed = load_config(None, pattern_overrides("heterogeneous_clients", 0.3, modalities, None))
    groups = {tuple(g.modalities): g.fraction for g in mixed.mask.client_modalities}
    assert groups == pytest.approx({("acc", "gyro"): 0.7, ("acc",): 0.15, ("gyro",): 0.15})
    assert pattern_overrides("heterogeneous_clients", 0.0, modalities, None) == []


def test_every_cell_is_a_fedmm_run_command():
    spec, base = load_spec(CI_MATRIX)
    cells = expand(spec, base)
    assert len(cells) == 2 * 3 * 2
    for cell in cells:
        assert load_config(base, list(cell.overrides)) == cell.config
        assert cell.run_command().startswith(f"fedmm run --config {base}")
    # rate 0 is one config whatever the pattern
    assert len({c.cell_id for c in cells if c.missing_rate == 0}) == 2


def test_a_bad_cell_fails_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CI_MATRIX.read_text().replace("strategies: [fedavg]", "strategies: [fedavg, nosuch]")
                   .replace("base: ../tiny.yaml", f"base: {REPO / 'configs' / 'tiny.yaml'}"))
    spec, base = load_spec(bad)
    with pytest.raises(ConfigError, match="cell smartwatch/nosuch"):
        expand(spec, base)


def test_matrix_runs_resumably_into_table_plots_and_mlflow(tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["experiment", "-c", str(CI_MATRIX), "--output", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ran 8 cells, 0 already done" in result.output
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 12
    # rate 0 masks nothing: one cell (one training) per seed serves all three patterns
    at_zero = cells[cells["missing_rate"] == 0].groupby("seed")
    assert (at_zero["cell_id"].nunique() == 1).all() and (at_zero["test_macro_f1"].nunique() == 1).all()
    assert cells[cells["missing_rate"] == 0.5]["cell_id"].nunique() == 6
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["pattern"]) == {"one_modality", "random_modality", "heterogeneous_clients"}
    assert (summary["seeds"] == 2).all()
    assert "| fedavg |" in (out / "table.md").read_text()
    assert (out / "plots" / "test_macro_f1_vs_missing_rate.png").stat().st_size > 0
    again = CliRunner().invoke(main, ["experiment", "-c", str(CI_MATRIX), "--output", str(out)], catch_exceptions=False)
    assert "ran 0 cells, 8 already done" in again.output
    parent_id = read_json(out / "state.json")["parent_run_id"]
    children = runs.client().search_runs(
        [runs.experiment_id("fedmm-experiments")], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(children) == 8
    assert {a.path for a in runs.client().list_artifacts(parent_id)} >= {"cells.csv", "summary.csv", "table.md", "plots"}


def test_named_strategy_variants_are_rows_with_their_own_overrides(tmp_path):
    spec_file = tmp_path / "variants.yaml"
    spec_file.write_text(CI_MATRIX.read_text().replace("base: ../tiny.yaml", f"base: {REPO / 'configs' / 'tiny.yaml'}")
                         .replace("strategies: [fedavg]", "strategies: [fedavg, {name: fedavg-e3, strategy: fedavg, "
                                  "set: [train.local_epochs=3]}]"))
    cells = expand(*load_spec(spec_file))
    variant = [c for c in cells if c.strategy == "fedavg-e3"]
    assert len(variant) == 12 and all(c.config.train.local_epochs == 3 for c in variant)
    assert all(c.config.train.strategy == "fedavg" for c in variant)


def test_results_pair_each_strategy_with_fedavg_on_the_same_seeds():
    seeds = [0, 1, 2, 3]
    fedavg = np.array([0.80, 0.82, 0.78, 0.81])
    other = np.array([0.83, 0.82, 0.80, 0.85])
    rows = [
        {"dataset": "d", "pattern": "one_modality", "missing_rate": 0.9, "seed": seed, "strategy": name,
         "test_accuracy": f1, "test_macro_f1": f1, "test_missing_accuracy": f1 - 0.1, "test_missing_macro_f1": f1 - 0.1,
         "extra_labels": name == "proxy_only", "centralized_macro_f1": 0.9 if name == "fedavg" else np.nan,
         "centralized_accuracy": 0.9 if name == "fedavg" else np.nan}
        for name, values in (("fedavg", fedavg), ("proxy_only", other)) for seed, f1 in zip(seeds, values)
    ]
    summary = aggregate(pd.DataFrame(rows[::-1])).set_index("strategy")  # pairing is by seed, not by order
    diff = other - fedavg
    half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
    row = summary.loc["proxy_only"]
    assert row["test_macro_f1_diff"] == pytest.approx(diff.mean())
    assert (row["test_macro_f1_diff_low"], row["test_macro_f1_diff_high"]) == pytest.approx(
        (diff.mean() - half, diff.mean() + half))
    assert row["test_macro_f1_p"] == pytest.approx(stats.ttest_rel(other, fedavg).pvalue)
    assert row["test_macro_f1_std"] == pytest.approx(other.std(ddof=1)) and row["extra_labels"]
    assert summary.loc["fedavg", "test_macro_f1_diff"] == 0 and not summary.loc["fedavg", "extra_labels"]
    central = summary.loc["centralized"]
    assert central["seeds"] == 4 and central["test_macro_f1_diff"] == pytest.approx(0.9 - fedavg.mean())
    table = markdown_table(summary.reset_index())
    assert "| proxy_only | yes | 0.825 ± 0.021 (4); Δ +0.022 [-0.005, +0.050], p 0.078 |" in table
    assert "| fedavg |  | 0.802 ± 0.017 (4) |" in table
