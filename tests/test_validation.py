"""Tests for fedmm.data.validation (real Great Expectations runs on small data)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fedmm.data import validation
from fedmm.data.validation import (
    DataValidationError,
    ExpectationOutcome,
    ValidationReport,
    validate_dataset,
    validate_partitions,
)

N = 40
NUM_CLASSES = 4
SHAPES = {"acc": (3, 16), "gyr": (6,)}
BOUNDS = {"acc": (-16.0, 16.0), "gyr": (-10.0, 10.0)}


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    mods = {
        "acc": rng.normal(size=(N, *SHAPES["acc"])).astype(np.float32),
        "gyr": rng.normal(size=(N, *SHAPES["gyr"])),
    }
    labels = rng.integers(0, NUM_CLASSES, size=N)
    return mods, labels


def outcome(report: ValidationReport, expectation: str, column: str) -> ExpectationOutcome:
    hits = [o for o in report.outcomes if o.expectation == expectation and o.column == column]
    assert len(hits) == 1, (expectation, column, report.outcomes)
    return hits[0]


def test_module_import_is_lazy():
    # load the module file on its own so that package __init__ files do not matter
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('v', {validation.__file__!r}); "
        "mod = sys.modules['v'] = importlib.util.module_from_spec(spec); "
        "spec.loader.exec_module(mod); "
        "print('great_expectations' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_clean_data_passes_and_is_quiet(capsys):
    mods, labels = make_data()
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert report.suite == "prepared_data"
    assert report.success, report.failed()
    assert report.failed() == ()
    report.raise_if_failed()  # no exception
    cols = {o.column for o in report.outcomes}
    assert {"acc", "gyr", "label", "acc_nonfinite", "acc_min", "acc_max", "gyr_nonfinite"} <= cols
    assert outcome(report, "expect_column_values_to_be_between", "acc_nonfinite").element_count == N
    captured = capsys.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out


def test_gx_debug_logging_is_silenced(caplog):
    caplog.set_level(logging.DEBUG)
    level_before = logging.getLogger("great_expectations").level
    mods, labels = make_data()
    assert validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS).success
    gx_records = [r for r in caplog.records if r.name.startswith("great_expectations")]
    assert gx_records == []
    assert logging.getLogger("great_expectations").level == level_before  # restored


def test_nan_in_three_samples_is_reported():
    mods, labels = make_data()
    mods["acc"][[2, 7, 11], 1, 5] = np.nan
    mods["acc"][7, 0, 0] = np.inf  # second bad value in an already bad sample
    mods["acc"][11] = np.nan  # a sample with no finite value at all
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert not report.success
    bad = outcome(report, "expect_column_values_to_be_between", "acc_nonfinite")
    assert not bad.success
    assert bad.unexpected_count == 3
    assert bad.element_count == N
    # NaN does not break the range checks: finite values are still within bounds
    assert outcome(report, "expect_column_values_to_be_between", "acc_min").success
    assert outcome(report, "expect_column_values_to_be_between", "acc_max").success
    assert [o.column for o in report.failed()] == ["acc_nonfinite"]
    with pytest.raises(DataValidationError) as exc:
        report.raise_if_failed()
    msg = str(exc.value)
    assert msg.startswith("prepared_data validation failed: 1 of ")
    assert "expect_column_values_to_be_between(acc_nonfinite): 3 of 40 rows unexpected" in msg


def test_absent_modality_values_are_not_checked():
    mods, labels = make_data()
    mods["gyr"][[4, 9]] = np.nan
    presence = np.ones((N, 2), dtype=bool)  # columns follow modalities order: acc, gyr
    presence[[4, 9], 1] = False
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS, presence=presence)
    assert report.success, report.failed()
    presence[9, 1] = True
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS, presence=presence)
    assert (
        outcome(report, "expect_column_values_to_be_between", "gyr_nonfinite").unexpected_count == 1
    )


def test_unknown_label_fails_with_count():
    mods, labels = make_data()
    labels[[0, 3]] = NUM_CLASSES
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert not report.success
    bad = outcome(report, "expect_column_values_to_be_in_set", "label")
    assert not bad.success and bad.unexpected_count == 2 and bad.element_count == N
    with pytest.raises(
        DataValidationError, match=r"expect_column_values_to_be_in_set\(label\): 2 of 40"
    ):
        report.raise_if_failed()


def test_out_of_range_values_fail():
    mods, labels = make_data()
    mods["acc"][5, 2, 3] = 40.0
    mods["acc"][6, 0, 0] = -99.0
    mods["acc"][8, 1, 1] = 17.0
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert not report.success
    hi = outcome(report, "expect_column_values_to_be_between", "acc_max")
    lo = outcome(report, "expect_column_values_to_be_between", "acc_min")
    assert (hi.success, hi.unexpected_count) == (False, 2)
    assert (lo.success, lo.unexpected_count) == (False, 1)
    assert "not within [-16, 16]" in hi.details and "max=40" in hi.details
    assert outcome(report, "expect_column_values_to_be_between", "acc_nonfinite").success
    # no bounds for a modality -> no range expectations for it
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, {"gyr": BOUNDS["gyr"]})
    assert report.success
    assert not any(o.column.startswith("acc_m") for o in report.outcomes)


def test_wrong_shape_fails_without_gx_crash():
    mods, labels = make_data()
    mods["acc"] = mods["acc"][:, :2]  # (N, 2, 16) instead of (N, 3, 16)
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert not report.success
    bad = outcome(report, "expect_modality_shape_to_equal", "acc")
    assert not bad.success and bad.unexpected_count == N
    assert "(2, 16)" in bad.details and "(3, 16)" in bad.details
    assert not any(o.column.startswith("acc_") for o in report.outcomes)  # not sent to GX
    assert outcome(report, "expect_column_values_to_be_between", "gyr_nonfinite").success
    with pytest.raises(DataValidationError, match=r"expect_modality_shape_to_equal\(acc\)"):
        report.raise_if_failed()


def test_missing_extra_and_misaligned_modalities_fail():
    mods, labels = make_data()
    extra = {"gyr": mods["gyr"], "mag": mods["gyr"]}  # acc missing, mag unexpected
    report = validate_dataset(extra, labels, NUM_CLASSES, SHAPES, {})
    failed = {o.column for o in report.failed()}
    assert failed == {"acc", "mag"}
    short = {"acc": mods["acc"][:-1], "gyr": mods["gyr"]}  # one sample fewer than labels
    report = validate_dataset(short, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert [o.column for o in report.failed()] == ["acc"]


def partition_table(n_samples=(30, 25, 40), realised_acc=(1.0, 0.52, 0.48)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "client": [0, 1, 2],
            "n_samples": list(n_samples),
            "requested_rate_acc": [1.0, 0.5, 0.5],
            "realised_rate_acc": list(realised_acc),
            "requested_rate_gyr": [0.8, 0.8, 0.8],
            "realised_rate_gyr": [0.8, 0.75, 0.9],
        }
    )


def test_passing_partition_table_passes():
    report = validate_partitions(partition_table(), min_samples=20, tolerance=0.1)
    assert report.suite == "partitions"
    assert report.success, report.failed()
    cols = {o.column for o in report.outcomes}
    assert {"n_samples", "excess_deviation_acc", "excess_deviation_gyr"} <= cols


def test_client_below_min_samples_fails():
    report = validate_partitions(
        partition_table(n_samples=(30, 5, 40)), min_samples=20, tolerance=0.1
    )
    assert not report.success
    bad = [o for o in report.failed()]
    assert len(bad) == 1
    assert (bad[0].expectation, bad[0].column) == (
        "expect_column_values_to_be_between",
        "n_samples",
    )
    assert (bad[0].unexpected_count, bad[0].element_count) == (1, 3)
    with pytest.raises(
        DataValidationError, match=r"partitions validation failed: 1 of \d+ expectations"
    ):
        report.raise_if_failed()


def test_realised_rate_off_by_more_than_tolerance_fails():
    report = validate_partitions(
        partition_table(realised_acc=(1.0, 0.75, 0.5)), min_samples=20, tolerance=0.1, sampling_z=0
    )
    assert [o.column for o in report.failed()] == ["excess_deviation_acc"]
    assert report.failed()[0].unexpected_count == 1
    # a deviation equal to the tolerance (up to float rounding: |0.7 - 0.8| > 0.1) is allowed
    table = partition_table(realised_acc=(1.0, 0.6, 0.4))
    table.loc[1, "realised_rate_gyr"] = 0.7
    report = validate_partitions(table, min_samples=20, tolerance=0.1, sampling_z=0)
    assert report.success, report.failed()
    # a missing (NaN) realised rate is a violation, not silently skipped
    table.loc[2, "realised_rate_gyr"] = np.nan
    report = validate_partitions(table, min_samples=20, tolerance=0.1)
    assert [(o.column, o.unexpected_count) for o in report.failed()] == [("excess_deviation_gyr", 1)]


def test_small_clients_get_a_binomial_allowance():
    # 20 draws at rate 0.5 have sd 0.11: realising 0.65 is sampling noise, 0.95 is not
    table = partition_table(n_samples=(20, 14, 20), realised_acc=(1.0, 0.65, 0.5))
    table["n_dropped"] = [0, 6, 0]
    assert not validate_partitions(table, min_samples=10, tolerance=0.05, sampling_z=0).success
    assert validate_partitions(table, min_samples=10, tolerance=0.05, sampling_z=3).success
    table.loc[1, "realised_rate_acc"] = 0.95
    report = validate_partitions(table, min_samples=10, tolerance=0.05, sampling_z=3)
    assert [(o.column, o.unexpected_count) for o in report.failed()] == [("excess_deviation_acc", 1)]


def test_empty_partition_table_fails():
    report = validate_partitions(partition_table().iloc[:0], min_samples=1, tolerance=0.1)
    assert [o.expectation for o in report.failed()] == ["expect_table_row_count_to_be_between"]


def test_report_round_trip_is_lossless_and_json():
    mods, labels = make_data()
    mods["acc"][1, 0, 0] = np.nan
    labels[2] = -1
    report = validate_dataset(mods, labels, NUM_CLASSES, SHAPES, BOUNDS)
    assert not report.success
    d = report.to_dict()
    back = ValidationReport.from_dict(json.loads(json.dumps(d)))
    assert back == report
    assert back.to_dict() == d
    assert isinstance(back.outcomes, tuple)
