import numpy as np
import pytest
from scipy.stats import spearmanr

from fedmm.audit.exact import exact_banzhaf, exact_shapley
from fedmm.audit.game import AdditiveGame, CachedUtility, QuadraticGame, RandomGame
from fedmm.audit.sampling import (
    AllOf,
    AnyOf,
    MaxEvaluations,
    MaxPermutations,
    RunningMoments,
    SamplerState,
    StandardErrorBelow,
    msr_banzhaf,
    permutation_shapley,
)

N = 16
BUDGET = (2**N) // 10  # 6553: 10% of the exact evaluation count


@pytest.fixture(scope="module")
def big_game():
    rng = np.random.default_rng(123)
    weights = rng.normal(size=N)
    interactions = rng.normal(scale=0.05, size=(N, N))
    return QuadraticGame(weights, interactions, intercept=0.2)


@pytest.fixture(scope="module")
def big_exact(big_game):
    shap = exact_shapley(big_game, N)
    banz = exact_banzhaf(big_game, N)
    return shap, banz


class Saturating:
    """u(S) = 1 - prod_{i in S}(1 - p_i): prefixes get close to u(N) early."""

    def __init__(self, p):
        self.p = np.asarray(p)
        self.n_players = self.p.size
        self.shapes = []

    def __call__(self, c):
        self.shapes.append(c.shape)
        return 1.0 - np.prod(np.where(c, 1.0 - self.p, 1.0), axis=1)


@pytest.mark.parametrize("tol", [0.0, 0.01])
def test_permutation_shapley_n16_spearman(big_game, big_exact, tol):
    res = permutation_shapley(big_game, N, MaxEvaluations(BUDGET), truncation_tol=tol, seed=0)
    assert res.evaluations <= BUDGET
    assert spearmanr(res.values, big_exact[0].values)[0] >= 0.95
    assert res.method == "permutation_shapley" and np.all(res.counts == res.counts[0])
    assert np.all(np.isfinite(res.stderr)) and np.all(res.stderr > 0)


def test_msr_banzhaf_n16_spearman(big_game, big_exact):
    res = msr_banzhaf(big_game, N, MaxEvaluations(BUDGET), seed=0)
    assert res.evaluations <= BUDGET
    assert spearmanr(res.values, big_exact[1].values)[0] >= 0.95
    lo, hi = res.ci(0.99)
    assert np.mean((lo <= big_exact[1].values) & (big_exact[1].values <= hi)) >= 0.75


def test_deterministic_given_seed():
    g = RandomGame(8, seed=0)
    for est in (permutation_shapley, msr_banzhaf):
        a = est(g, 8, MaxEvaluations(120), seed=42)
        b = est(g, 8, MaxEvaluations(120), seed=42)
        c = est(g, 8, MaxEvaluations(120), seed=43)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.stderr, b.stderr)
        assert a.evaluations == b.evaluations
        assert not np.array_equal(a.values, c.values)
    ss = np.random.SeedSequence(5)
    a = permutation_shapley(g, 8, MaxPermutations(10), seed=ss)
    b = permutation_shapley(g, 8, MaxPermutations(10), seed=np.random.SeedSequence(5))
    np.testing.assert_array_equal(a.values, b.values)


def test_stopping_rules_compose_or_stops_at_cap():
    g = RandomGame(N, seed=1)
    rule = MaxEvaluations(100) | StandardErrorBelow(1e-9)
    assert isinstance(rule, AnyOf)
    res = permutation_shapley(g, N, rule, seed=0)
    assert 100 - (N - 1) < res.evaluations <= 100
    assert "MaxEvaluations(100)" in res.info["stop_reason"]
    res = msr_banzhaf(g, N, rule, seed=0)
    assert res.evaluations == 100


def test_stopping_rules_and():
    g = RandomGame(8, seed=2)
    rule = MaxPermutations(20) & MaxEvaluations(10)
    assert isinstance(rule, AllOf)
    res = permutation_shapley(g, 8, rule, batch_size=4, seed=0)
    assert res.info["permutations"] >= 20 and res.evaluations >= 10
    rule = MaxPermutations(20) & MaxPermutations(40)
    res = permutation_shapley(g, 8, rule, batch_size=4, seed=0)
    assert res.info["permutations"] == 40
    # flattening and precedence: a | b | c is one AnyOf with three rules
    r3 = MaxPermutations(1) | MaxEvaluations(2) | MaxPermutations(3)
    assert len(r3.criteria) == 3


def test_standard_error_stop_on_additive_game():
    w = np.arange(6.0)
    res = permutation_shapley(
        AdditiveGame(w),
        6,
        StandardErrorBelow(1e-9, min_samples=40) | MaxPermutations(400),
        batch_size=8,
        seed=0,
    )
    np.testing.assert_allclose(res.values, w, atol=1e-12)
    assert res.counts.min() >= 40 and np.all(res.stderr < 1e-9)
    assert res.info["stop_reason"].startswith("StandardErrorBelow")
    assert res.info["permutations"] < 400


def test_evaluations_batched_one_call_per_batch():
    g = Saturating(np.linspace(0.05, 0.3, 10))
    res = permutation_shapley(g, 10, MaxPermutations(64), batch_size=16, seed=0)
    assert res.info["iterations"] == 4
    assert len(g.shapes) == 1 + 4  # empty/grand call, then one call per batch
    assert res.info["utility_calls"] == 5
    assert res.residuals["efficiency"] < 1e-12  # untruncated permutations are efficient


def test_truncation_saves_evaluations_and_is_lookahead_invariant():
    p = np.linspace(0.2, 0.6, 12)
    full = permutation_shapley(Saturating(p), 12, MaxPermutations(64), seed=3)
    trunc = [
        permutation_shapley(Saturating(p), 12, MaxPermutations(64), truncation_tol=0.02, lookahead=L, seed=3)
        for L in (1, 3, 11)
    ]
    assert trunc[0].info["truncated_permutations"] > 0
    assert trunc[0].evaluations < full.evaluations
    for r in trunc[1:]:
        np.testing.assert_array_equal(r.values, trunc[0].values)
    assert trunc[0].info["utility_calls"] > trunc[2].info["utility_calls"]
    # truncated marginals are zero, so the estimate differs from the untruncated one
    assert not np.allclose(trunc[0].values, full.values)
    assert trunc[0].residuals["efficiency"] < 0.02 + 1e-9


def test_truncation_unevaluated_marginals_are_zero():
    # u(N) == u(empty) within tolerance: everything truncated, no further evaluations
    g = AdditiveGame([1.0, -1.0, 0.0], intercept=10.0)
    res = permutation_shapley(g, 3, MaxPermutations(10), truncation_tol=0.5, seed=0)
    np.testing.assert_array_equal(res.values, 0.0)
    assert res.evaluations == 2
    # the rule is relative to |u(N)|: with u(N) == 0 nothing is truncated
    res = permutation_shapley(AdditiveGame([1.0, -1.0, 0.0]), 3, MaxPermutations(10), truncation_tol=0.5, seed=0)
    np.testing.assert_allclose(res.values, [1.0, -1.0, 0.0])


def test_antithetic_and_cache_sharing():
    w = np.array([3.0, -1.0, 0.5, 2.0])
    cached = CachedUtility(AdditiveGame(w))
    res = permutation_shapley(cached, 4, MaxPermutations(20), antithetic=True, batch_size=5, seed=1)
    np.testing.assert_allclose(res.values, w, atol=1e-12)
    assert res.info["permutations"] % 2 == 0 and res.counts[0] == res.info["permutations"] // 2
    assert res.evaluations == cached.evaluations <= 16


def test_small_game_cap_above_all_coalitions_terminates():
    res = permutation_shapley(RandomGame(3, seed=0), 3, MaxEvaluations(1000), seed=0)
    assert res.evaluations == 8
    ex = exact_shapley(RandomGame(3, seed=0), 3)
    assert np.isfinite(res.values).all() and ex.values.shape == res.values.shape


def test_running_moments_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    mask = rng.random((50, 4)) < 0.7
    rm = RunningMoments(4)
    for lo, hi in [(0, 1), (1, 13), (13, 14), (14, 50)]:
        rm.update(x[lo:hi], mask[lo:hi])
    for j in range(4):
        col = x[mask[:, j], j]
        assert rm.count[j] == col.size
        assert np.isclose(rm.mean[j], col.mean())
        assert np.isclose(rm.variance[j], col.var(ddof=1))
        assert np.isclose(rm.stderr[j], col.std(ddof=1) / np.sqrt(col.size))


def test_antithetic_pairs_are_reversed():
    # for two players a permutation and its reverse average to the exact Shapley value
    g = RandomGame(2, seed=4)
    res = permutation_shapley(g, 2, MaxPermutations(40), antithetic=True, batch_size=8, seed=0)
    np.testing.assert_allclose(res.values, exact_shapley(g, 2).values, atol=1e-12)
    assert np.all(res.stderr < 1e-12)


def test_standard_error_below_threshold_semantics():
    state = SamplerState(
        n_players=2, evaluations=10, samples=50, counts=np.array([50, 50]),
        values=np.zeros(2), stderr=np.array([0.01, 0.2]), iterations=1, elapsed_s=0.0,
        max_evaluations=4.0,
    )
    assert not StandardErrorBelow(0.1)(state)
    state.stderr = np.array([0.01, 0.05])
    assert StandardErrorBelow(0.1)(state)
    assert not StandardErrorBelow(0.1, min_samples=60)(state)
    g = RandomGame(6, seed=3)
    res = permutation_shapley(g, 6, StandardErrorBelow(0.05) | MaxPermutations(20000), seed=0)
    assert res.stderr.max() < 0.05 and res.info["permutations"] > 100
