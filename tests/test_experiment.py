"""The experiment matrix: cells, patterns, a resumable run with its table, plots and MLflow runs."""

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import REPO
from fedmm.artifacts import read_json
from fedmm.cli import main
from fedmm.config import ConfigError, load_config
from fedmm.experiments.matrix import expand, load_spec, pattern_overrides
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
    assert len(cells) == 12 and cells["test_macro_f1"].between(0, 1).all()
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
