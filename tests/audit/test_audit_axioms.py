import numpy as np
import pytest

from fedmm.audit.axioms import axiom_residuals, efficiency_residual, null_players, symmetric_pairs, symmetry_residual
from fedmm.audit.exact import enumerate_coalitions, exact_banzhaf, exact_shapley, utility_table
from fedmm.audit.game import AdditiveGame, RandomGame, TableGame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_efficiency_random_n10(seed):
    g = RandomGame(10, seed=seed)
    res = exact_shapley(g, 10)
    assert res.residuals["efficiency"] <= 1e-6
    t = utility_table(g, g.n_players)
    total = t[-1] - t[0]
    assert abs(res.values.sum() - total) <= 1e-6 * max(abs(total), 1e-12)


def symmetric_table(n, seed):
    """Random game where players 0 and 1 are interchangeable (value depends on how many of them)."""
    rng = np.random.default_rng(seed)
    lookup = rng.normal(size=(3, 2 ** (n - 2)))
    m = np.arange(2**n)
    return lookup[(m & 1) + ((m >> 1) & 1), m >> 2]


def test_symmetric_players_equal():
    g = TableGame(symmetric_table(7, 3))
    res = exact_shapley(g, 7)
    assert abs(res.values[0] - res.values[1]) <= 1e-6
    assert (0, 1) in symmetric_pairs(utility_table(g, g.n_players), 7)
    assert res.residuals["symmetry"] <= 1e-9 and res.residuals["n_symmetric_pairs"] == 1.0


def test_duplicated_player_in_additive_game():
    w = np.array([0.3, 1.2, 0.3, -0.5, 1.2])
    res = exact_shapley(AdditiveGame(w), 5)
    assert abs(res.values[0] - res.values[2]) <= 1e-6 and abs(res.values[1] - res.values[4]) <= 1e-6
    assert res.residuals["n_symmetric_pairs"] == 2.0


def test_null_player_gets_zero():
    n = 6
    base = utility_table(RandomGame(n - 1, seed=4), n - 1)
    m = np.arange(2**n)
    # player 2 is null: drop its bit before looking up the base game
    table = base[(m & 0b11) | ((m >> 3) << 2)]
    g = TableGame(table)
    res = exact_shapley(g, n)
    assert abs(res.values[2]) <= 1e-12
    assert null_players(table, n) == [2]
    assert res.residuals["null_player"] <= 1e-12 and res.residuals["n_null_players"] == 1.0
    assert exact_banzhaf(g, n).residuals["null_player"] <= 1e-12


def test_residuals_detect_violations():
    t = symmetric_table(5, 0)
    v = exact_shapley(TableGame(t), 5).values
    bad = v.copy()
    bad[0] += 0.1
    r = axiom_residuals(bad, t, 5)
    assert r["efficiency"] > 1e-3 and r["symmetry"] >= 0.1 - 1e-9
    assert efficiency_residual(v, t[-1], t[0]) < 1e-9
    assert symmetry_residual(v, []) == 0.0


def test_no_false_symmetry_on_random_game():
    t = utility_table(RandomGame(8, seed=9), 8)
    assert symmetric_pairs(t, 8) == [] and null_players(t, 8) == []
    assert len(enumerate_coalitions(8)) == t.size


def test_symmetry_needs_every_coalition():
    # players 0 and 1 agree on singletons and on N - i, but differ once in the middle
    n = 5
    t = symmetric_table(n, 1)
    t[0b00101] += 0.5  # {0, 2} no longer matches {1, 2}
    assert (0, 1) not in symmetric_pairs(t, n)
    assert (0, 1) in symmetric_pairs(symmetric_table(n, 1), n)
