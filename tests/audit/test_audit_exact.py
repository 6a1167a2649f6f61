import itertools
import math

import numpy as np
import pytest

from fedmm.audit.exact import (
    exact_banzhaf,
    exact_from_table,
    exact_shapley,
    exact_shapley_banzhaf,
    exact_values_from_table,
    leave_one_out,
    utility_table,
)
from fedmm.audit.game import AdditiveGame, GloveGame, QuadraticGame, RandomGame, WeightedVotingGame


def value_of(game, members, n):
    row = np.zeros((1, n), dtype=bool)
    row[0, list(members)] = True
    return float(game(row)[0])


def brute_shapley(game, n):
    """Average marginal contribution over all n! orderings, one coalition at a time."""
    memo = {}

    def u(members):
        key = frozenset(members)
        if key not in memo:
            memo[key] = value_of(game, key, n)
        return memo[key]

    values = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        before = []
        for p in perm:
            values[p] += u(before + [p]) - u(before)
            before.append(p)
    return values / len(perms)


def brute_banzhaf(game, n):
    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            for s in itertools.combinations(others, r):
                values[i] += value_of(game, list(s) + [i], n) - value_of(game, s, n)
    return values / 2 ** (n - 1)


@pytest.mark.parametrize("n,seed", [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5)])
def test_exact_matches_brute_force(n, seed):
    g = RandomGame(n, seed=seed)
    np.testing.assert_allclose(exact_shapley(g, n).values, brute_shapley(g, n), atol=1e-10)
    np.testing.assert_allclose(exact_banzhaf(g, n).values, brute_banzhaf(g, n), atol=1e-10)


def test_additive_values_are_weights():
    w = np.random.default_rng(0).normal(size=9)
    res = exact_shapley(AdditiveGame(w, intercept=3.0), 9)
    np.testing.assert_allclose(res.values, w, atol=1e-12)
    np.testing.assert_array_equal(res.stderr, 0)
    assert res.evaluations == 2**9 and res.method == "exact_shapley"
    np.testing.assert_allclose(exact_banzhaf(AdditiveGame(w), 9).values, w, atol=1e-12)


def test_quadratic_closed_form():
    rng = np.random.default_rng(1)
    q = QuadraticGame(rng.normal(size=8), rng.normal(size=(8, 8)))
    np.testing.assert_allclose(exact_shapley(q, 8).values, q.shapley_values(), atol=1e-10)


def test_glove_game_known_values():
    res = exact_shapley(GloveGame(left=[0], right=[1, 2]), 3)
    np.testing.assert_allclose(res.values, [2 / 3, 1 / 6, 1 / 6], atol=1e-12)


def test_weighted_voting_banzhaf_and_shapley():
    g = WeightedVotingGame([2, 1, 1], quota=3)
    shap, banz = exact_shapley_banzhaf(g, 3)
    np.testing.assert_allclose(banz.values, [3 / 4, 1 / 4, 1 / 4], atol=1e-12)
    np.testing.assert_allclose(shap.values, [2 / 3, 1 / 6, 1 / 6], atol=1e-12)
    assert "efficiency" not in banz.residuals and "efficiency" in shap.residuals


def test_leave_one_out_additive():
    w = np.array([0.5, -1.0, 2.0, 0.0])
    calls = []

    def u(c):
        calls.append(c.shape)
        return AdditiveGame(w)(c)

    res = leave_one_out(u, 4)
    np.testing.assert_allclose(res.values, w)
    assert res.evaluations == 5 and calls == [(5, 4)]


def test_leave_one_out_differs_from_shapley_on_glove():
    g = GloveGame([0], [1, 2])
    np.testing.assert_allclose(leave_one_out(g, 3).values, [1, 0, 0])


@pytest.mark.parametrize("chunk", [1, 7, 100, 1000, 1024, 5000])
def test_chunking_identical_and_batched(chunk):
    n = 10
    g = RandomGame(n, seed=7)
    shapes = []

    def u(c):
        assert c.dtype == bool and c.ndim == 2
        shapes.append(c.shape[0])
        return g(c)

    res = exact_shapley(u, n, chunk_size=chunk)
    ref = exact_shapley(g, n, chunk_size=2**n)
    np.testing.assert_array_equal(res.values, ref.values)
    assert len(shapes) == math.ceil(2**n / chunk)
    assert sum(shapes) == 2**n and max(shapes) <= chunk


def test_values_from_table_shared():
    g = RandomGame(7, seed=2)
    table = utility_table(g, 7)
    shap, banz = exact_values_from_table(table, 7)
    np.testing.assert_array_equal(shap, exact_shapley(g, 7).values)
    np.testing.assert_array_equal(banz, exact_banzhaf(g, 7).values)
    rs, rb = exact_from_table(table, 7)
    np.testing.assert_array_equal(rs.values, shap)
    with pytest.raises(ValueError):
        exact_values_from_table(table[:-1], 7)


def test_n16_runs_vectorised():
    w = np.linspace(-1, 1, 16)
    calls = []

    def u(c):
        calls.append(c.shape[0])
        return c @ w

    res = exact_shapley(u, 16, chunk_size=16384)
    np.testing.assert_allclose(res.values, w, atol=1e-12)
    assert calls == [16384] * 4


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        exact_shapley(RandomGame(3), 25)
    with pytest.raises(ValueError):
        exact_shapley(lambda c: np.zeros(1), 3)  # wrong number of values
