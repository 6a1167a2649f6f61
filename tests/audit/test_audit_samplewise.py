import numpy as np
import pytest

from fedmm.audit.exact import enumerate_coalitions, exact_shapley
from fedmm.audit.game import TableGame
from fedmm.audit.inference import MeanStatistic
from fedmm.audit.samplewise import exact_round, sampled_round

N_PLAYERS, N_SAMPLES = 7, 40


class SampleGame:
    """Per-sample games: sample s has an additive part plus random interactions of every order;
    the utility is their mean."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        coalitions = enumerate_coalitions(N_PLAYERS).astype(float)
        self.table = coalitions @ rng.normal(size=(N_PLAYERS, N_SAMPLES)) + 0.3 * rng.normal(size=(2**N_PLAYERS, N_SAMPLES))
        self.pow = 1 << np.arange(N_PLAYERS)

    def rows(self, coalitions):
        return self.table[coalitions.astype(np.int64) @ self.pow]

    def mean(self, coalitions):
        return self.rows(coalitions).mean(axis=1)


@pytest.fixture
def stat():
    return MeanStatistic(np.repeat(np.arange(10), 4), "recording")


def test_exact_round_gives_per_sample_shapley_values(stat):
    game = SampleGame()
    est = exact_round(game.rows, stat, N_PLAYERS)
    per_sample = np.stack([exact_shapley(TableGame(game.table[:, s]), N_PLAYERS).values for s in range(N_SAMPLES)], 1)
    np.testing.assert_allclose(est.evidence, per_sample, atol=1e-12)
    np.testing.assert_allclose(est.values, exact_shapley(game.mean, N_PLAYERS).values, atol=1e-12)
    np.testing.assert_allclose(est.evidence.mean(axis=1), est.values, atol=1e-12)
    assert est.evaluations == 2**N_PLAYERS and (est.mc_variance == 0).all()
    assert est.residuals["efficiency"] < 1e-12


def test_sampled_round_stops_by_its_rule_and_its_error_matches_its_monte_carlo_se(stat):
    exact = exact_round(SampleGame().rows, stat, N_PLAYERS)
    z = []
    for seed in range(30):
        est, store = sampled_round(SampleGame().rows, stat, N_PLAYERS, rel_tol=0.5, min_pairs=20,
                                   max_evaluations=10**6, batch_pairs=1, seed=seed)
        assert est.method == "permutation_shapley" and store.size == est.evaluations < 2**N_PLAYERS
        assert np.all(np.sqrt(est.mc_variance) <= 0.5 * np.sqrt(stat.variance(est.evidence)))
        assert len(est.info["samples"]) >= 20
        ends = store.point[store.lookup(np.array([[False] * N_PLAYERS, [True] * N_PLAYERS]))]
        assert est.values.sum() == pytest.approx(ends[1] - ends[0], abs=1e-12)  # efficiency holds exactly
        np.testing.assert_allclose(est.evidence.mean(axis=1), est.values, atol=1e-12)
        z.append((est.values - exact.values) / np.sqrt(est.mc_variance))
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.3 and 0.7 < z.std() < 1.4  # unbiased, and the Monte Carlo SE is honest


def test_sampled_round_respects_its_budget_and_turns_exact_when_everything_is_evaluated(stat):
    est, store = sampled_round(SampleGame().rows, stat, N_PLAYERS, rel_tol=1e-9, max_evaluations=40, seed=0)
    assert store.size <= 40 and "budget" in est.info["stop_reason"]
    small = 3
    game = SampleGame()
    rows = lambda c: game.rows(np.pad(c, ((0, 0), (0, N_PLAYERS - small))))  # noqa: E731
    est, _ = sampled_round(rows, stat, small, rel_tol=1e-9, max_evaluations=100, seed=0)
    assert est.method == "exact_shapley" and est.evaluations == 2**small
    np.testing.assert_allclose(est.values, exact_round(rows, stat, small).values, atol=1e-12)
    assert enumerate_coalitions(small).shape == (8, small)
