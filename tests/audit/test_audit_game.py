import numpy as np
import pytest

from fedmm.audit.exact import enumerate_coalitions, utility_table
from fedmm.audit.game import (
    AdditiveGame,
    CachedUtility,
    GloveGame,
    QuadraticGame,
    RandomGame,
    TableGame,
    WeightedVotingGame,
    coalitions_to_masks,
    masks_to_coalitions,
)


class Counting:
    def __init__(self, game):
        self.game = game
        self.n_players = game.n_players
        self.batches = []

    def __call__(self, c):
        self.batches.append(np.array(c))
        return self.game(c)


def test_masks_round_trip():
    c = enumerate_coalitions(5)
    m = coalitions_to_masks(c)
    np.testing.assert_array_equal(m, np.arange(32))
    np.testing.assert_array_equal(masks_to_coalitions(m, 5), c)


def test_cached_utility_batches_unseen_once():
    g = RandomGame(6, seed=1)
    cu = Counting(g)
    cached = CachedUtility(cu)
    c = enumerate_coalitions(6)[[3, 5, 3, 7]]
    np.testing.assert_allclose(cached(c), g(c))
    assert cached.evaluations == 3 and cached.calls == 1 and cached.hits == 1
    assert cu.batches[0].shape == (3, 6)
    c2 = enumerate_coalitions(6)[[5, 7, 9]]
    np.testing.assert_allclose(cached(c2), g(c2))
    assert cached.evaluations == 4 and cached.calls == 2
    assert cu.batches[1].shape == (1, 6)  # only coalition 9 was new
    cached(c2)
    assert cached.calls == 2 and cached.count_unseen(enumerate_coalitions(6)) == 60


def test_cached_utility_many_players_uses_byte_keys():
    w = np.arange(70.0)
    cached = CachedUtility(AdditiveGame(w))
    rng = np.random.default_rng(0)
    c = rng.random((20, 70)) < 0.5
    c = np.vstack([c, c[:5]])
    np.testing.assert_allclose(cached(c), c @ w)
    assert cached.evaluations == 20


def test_games_values():
    c = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(GloveGame([0], [1, 2])(c), [0, 1, 1, 0])
    np.testing.assert_array_equal(WeightedVotingGame([2, 1, 1], 3)(c), [0, 1, 1, 0])
    np.testing.assert_allclose(AdditiveGame([1, 2, 4], 0.5)(c), [1.5, 3.5, 7.5, 6.5])
    q = QuadraticGame([1, 0, 0], [[0, 2, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(q(c), [1, 3, 3, 0])


def test_random_and_table_game():
    a, b = RandomGame(5, seed=3), RandomGame(5, seed=3)
    np.testing.assert_array_equal(utility_table(a, a.n_players), utility_table(b, b.n_players))
    assert not np.allclose(utility_table(a, a.n_players), utility_table(RandomGame(5, seed=4), 5))
    t = TableGame(utility_table(a, a.n_players))
    c = enumerate_coalitions(5)
    np.testing.assert_array_equal(t(c), utility_table(a, a.n_players))
    with pytest.raises(ValueError):
        TableGame(np.zeros(6))
    with pytest.raises(ValueError):
        a(np.zeros((2, 4), dtype=bool))
