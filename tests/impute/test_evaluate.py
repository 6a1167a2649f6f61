import numpy as np
import pandas as pd
import pytest

from fedmm.impute.base import ImputationError
from fedmm.impute.clients import random_owners
from fedmm.impute.evaluate import default_patterns, draw_mask, evaluate_imputation
from fedmm.impute.registry import make_imputer
from fedmm.impute.report import ImputationReport
from fedmm.impute_config import ImputeConfig


@pytest.fixture(scope="module")
def report(clients, model, config, test_set):
    imputers = {name: make_imputer(name, config).fit(clients, model, seed=0) for name in ("zero", "mean", "knn")}
    owners = random_owners(len(test_set), [len(c) for c in clients], seed=0)
    return evaluate_imputation(model, test_set, imputers, owners, seed=0, rates=(0.3, 0.9))


def test_masks_follow_pattern_and_rate():
    modalities = ["a", "b"]
    assert default_patterns(modalities) == ["missing:a", "missing:b", "random"]
    mask = draw_mask("missing:b", 0.3, 200, modalities, seed=0)
    assert mask[:, 0].all() and (~mask[:, 1]).sum() == 60
    random = draw_mask("random", 0.5, 200, modalities, seed=0)
    assert (~random.all(1)).sum() == 100 and random.any(1).all()
    np.testing.assert_array_equal(random, draw_mask("random", 0.5, 200, modalities, seed=0))
    views = draw_mask("random", 0.9, 500, [f"v{i}" for i in range(6)], seed=1)
    lost = (~views).sum(1)
    assert views.any(1).all() and set(lost[lost > 0]) == {1, 2, 3, 4, 5}
    with pytest.raises(ImputationError, match="unknown pattern"):
        draw_mask("missing:c", 0.5, 10, modalities, seed=0)


def test_report_rows_floor_and_oracle(report):
    table = report.table
    assert len(table) == 3 * 2 * 3
    zero = table[table.imputer == "zero"]
    np.testing.assert_allclose(zero.macro_f1, zero.floor_macro_f1)
    np.testing.assert_allclose(zero.gap_recovered.dropna(), 0.0)
    assert table.oracle_macro_f1.nunique() == 1
    entries = table.set_index(["rate", "pattern", "imputer"]).missing_entries
    assert (entries.loc[0.9].to_numpy() > entries.loc[0.3].to_numpy()).all()
    assert set(table.space) == {"input", "latent"}
    assert table[["nrmse_own", "nrmse_latent", "impute_seconds_per_1k"]].notna().all().all()


def test_report_save_and_load_round_trip(report, tmp_path):
    report.save(tmp_path)
    for name in ("imputation.csv", "imputation.parquet", "imputation.md", "nrmse_vs_rate.png", "macro_f1_vs_rate.png"):
        assert (tmp_path / name).stat().st_size > 0
    loaded = ImputationReport.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.table, report.table)
    assert loaded.meta == report.meta
    markdown = (tmp_path / "imputation.md").read_text()
    table, legend = markdown.split("\n\n")
    assert table.startswith("| pattern | rate | imputer |") and table.count("\n") == len(report.table) + 1
    assert legend.startswith("gap_recovered = (macro_f1 - floor_macro_f1)") and "below 0 where" in legend
    assert len(loaded.at(0.3)) == 9


def test_the_test_set_must_be_complete(model, test_set, clients):
    incomplete = test_set.take(np.arange(10))
    incomplete.mask[0, 1] = False
    imputer = make_imputer("zero", ImputeConfig())
    with pytest.raises(ImputationError, match="every modality present"):
        evaluate_imputation(model, incomplete, {"zero": imputer}, np.zeros(10, dtype=int), seed=0)
