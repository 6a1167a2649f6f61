from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from fedmm.audit.inference import (
    BootstrapStatistic,
    MeanStatistic,
    cr1_variance,
    holm,
    min_detectable_effect,
    non_overlapping,
    t_interval,
    validation_groups,
)


def test_cr1_with_one_sample_per_cluster_is_the_classic_standard_error():
    x = np.random.default_rng(0).normal(size=(3, 50))
    np.testing.assert_allclose(cr1_variance(x, np.arange(50)), x.var(axis=1, ddof=1) / 50)


def test_cr1_matches_the_sandwich_formula_and_ignores_copies_within_a_cluster():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 7, 40)
    x = rng.normal(size=40) + groups
    e = x - x.mean()
    g = np.unique(groups)
    expect = len(g) / (len(g) - 1) * sum(e[groups == k].sum() ** 2 for k in g) / 40**2
    assert cr1_variance(x, groups) == pytest.approx(expect)
    # one value per cluster repeated five times: the clustered variance is the per-cluster one
    per = rng.normal(size=12)
    assert cr1_variance(np.repeat(per, 5), np.repeat(np.arange(12), 5)) == pytest.approx(per.var(ddof=1) / 12)
    with pytest.raises(ValueError, match="two clusters"):
        cr1_variance(x, np.zeros(40))


def test_clustered_intervals_cover_and_per_sample_ones_do_not():
    """14 clusters of 30 strongly correlated samples: the CR1 t interval keeps its level."""
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(14), 30)
    sims = rng.normal(size=(2000, 14))[:, groups] + 0.3 * rng.normal(size=(2000, 420))
    mean = sims.mean(axis=1)
    lo, hi = t_interval(mean, np.sqrt(cr1_variance(sims, groups)), 13, 0.95)
    naive_lo, naive_hi = t_interval(mean, sims.std(axis=1, ddof=1) / np.sqrt(420), 419, 0.95)
    assert 0.92 <= np.mean((lo < 0) & (0 < hi)) <= 0.98
    assert np.mean((naive_lo < 0) & (0 < naive_hi)) < 0.5


def test_holm_step_down():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, made monotone
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.9, 0.8])).max() == 1.0


def test_min_detectable_effect_is_detected_with_the_stated_power():
    rng = np.random.default_rng(3)
    se, df, alpha = 0.1, 13, 0.05
    mde = float(min_detectable_effect(se, df, alpha, 0.8))
    # a true harm of mde, estimated with noise se (t-distributed studentised), is rejected ~80% of the time
    t = (-mde + se * rng.standard_t(df, 20000)) / se
    assert np.mean(stats.t.cdf(t, df) < alpha) == pytest.approx(0.8, abs=0.02)


def test_grouping_key_and_non_overlapping_windows():
    assert validation_groups(np.array([4, 4, 5]), np.array([1, 1, 1]))[0] == "recording"
    key, groups = validation_groups(np.arange(6), np.array([1, 1, 2, 2, 3, 3]))
    assert key == "subject" and groups.tolist() == [1, 1, 2, 2, 3, 3]
    key, groups = validation_groups(np.arange(4), np.zeros(4))
    assert key == "sample" and groups.tolist() == [0, 1, 2, 3]
    assert validation_groups(np.zeros(4), np.array([1, 1, 2, 2]))[0] == "subject"  # one recording: no clusters
    recording = np.array([7, 7, 7, 7, 7, 9, 9, 9])
    assert non_overlapping(recording, 100, 50).tolist() == [0, 2, 4, 5, 7]
    assert non_overlapping(recording, 100, 100).tolist() == list(range(8))
    assert non_overlapping(recording, 100, 30).tolist() == [0, 4, 5]


def test_mean_statistic_splits_a_value_by_cluster():
    stat = MeanStatistic(np.array([0, 0, 1, 1, 1]), "recording")
    phi = np.array([[1.0, 1.0, 0.0, 0.0, 3.0]])
    parts, ids = stat.group_contributions(phi)
    np.testing.assert_allclose(parts, [[0.4, 0.6]])
    assert ids.tolist() == [0, 1] and stat.describe()["df"] == 1


def test_bootstrap_statistic_rescoring_is_weighted_macro_f1():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 60)
    groups = np.repeat(np.arange(12), 5)
    stat = BootstrapStatistic(groups, labels, 3, replicates=50, seed=0)
    preds = np.where(rng.random((4, 60)) < 0.7, labels, rng.integers(0, 3, (4, 60)))
    point = stat.utilities(preds)
    for j in range(4):
        assert point[j] == pytest.approx(f1_score(labels, preds[j], labels=[0, 1, 2], average="macro", zero_division=0))
    reps = stat.expand(preds)
    assert reps.shape == (4, 50)
    # a replicate is whole clusters drawn with replacement: its weights are cluster multiplicities
    w = stat.weights[0]
    assert (w.reshape(12, 5) == w.reshape(12, 5)[:, :1]).all() and w.sum() == 60
    expect = f1_score(labels, preds[1], labels=[0, 1, 2], average="macro", sample_weight=w, zero_division=0)
    assert reps[1, 0] == pytest.approx(expect)
    assert (stat.variance(reps) > 0).all()


def test_audit_validation_keeps_non_overlapping_smartwatch_windows_clustered_by_recording():
    from fedmm.audit.run import audit_validation
    from fedmm.config import AuditConfig, load_config
    from fedmm.data.prepare import prepare

    prepared = prepare(load_config(Path(__file__).parents[2] / "configs" / "default.yaml").data, 0)
    index = prepared.indices("val")
    every, groups_all, key_all = audit_validation(prepared, AuditConfig(validation_windows="all"))
    thin, groups, key = audit_validation(prepared, AuditConfig())
    assert key == key_all == "recording" and len(every) == len(index)
    assert len(np.unique(groups)) == len(np.unique(groups_all)) == len(np.unique(prepared.dataset.recording[index]))
    # window 100, stride 50: every second window of each recording, so about half of them
    assert len(index) / 2 <= len(thin) <= len(index) / 2 + len(np.unique(groups))
    kept = non_overlapping(prepared.dataset.recording[index], 100, 50)
    np.testing.assert_array_equal(thin.labels.numpy(), prepared.dataset.labels[index][kept])
