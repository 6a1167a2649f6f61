import numpy as np
import pytest

from fedmm.audit.clustered import aggregation_weights, cluster_players, clustered_shapley
from fedmm.audit.exact import exact_shapley, utility_table
from fedmm.audit.game import QuadraticGame, RandomGame


def grouped_setup(seed=0):
    """Players in identical groups: block-constant interactions, identical features per group."""
    rng = np.random.default_rng(seed)
    groups = np.array([0, 0, 1, 2, 2, 2, 3, 1, 0, 3])
    k = groups.max() + 1
    gw = rng.normal(size=k)
    block = rng.normal(scale=0.3, size=(k, k))
    block = block + block.T
    game = QuadraticGame(gw[groups], block[groups][:, groups])
    centers = rng.normal(scale=5.0, size=(k, 20))
    features = centers[groups] + 1e-3 * rng.normal(size=(groups.size, 20))
    return game, features, groups


def test_clustered_equals_exact_for_identical_groups():
    game, features, groups = grouped_setup()
    seen = []

    def u(c):
        seen.append(c)
        return game(c)

    res, labels = clustered_shapley(u, features, n_clusters=4, seed=0)
    exact = exact_shapley(game, groups.size)
    np.testing.assert_allclose(res.values, exact.values, atol=1e-10)
    # labels recover the groups up to renaming (canonical: order of first appearance)
    np.testing.assert_array_equal(labels, [0, 0, 1, 2, 2, 2, 3, 1, 0, 3])
    assert res.evaluations == 16 and res.method == "clustered_shapley"
    # the utility saw player-level matrices where whole clusters join together
    c = np.vstack(seen)
    assert c.shape[1] == 10
    for g in range(4):
        cols = c[:, labels == g]
        assert np.all(cols == cols[:, :1])
    assert res.residuals["efficiency"] < 1e-9


def test_clustered_error_on_random_game():
    n = 10
    game = RandomGame(n, seed=5)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(n, 6))
    exact = exact_shapley(game, n)
    res, labels = clustered_shapley(game, features, n_clusters=4, seed=0)
    err = np.abs(res.values - exact.values)
    print(f"clustered vs exact on RandomGame(10): mean abs err {err.mean():.3f}, max {err.max():.3f}")
    assert res.evaluations == 2**4 < exact.evaluations
    t = utility_table(game, game.n_players)
    assert np.isclose(res.values.sum(), t[-1] - t[0])  # efficiency holds at player level
    assert err.mean() > 0  # an approximation, not exact, on a generic game
    assert len(set(labels.tolist())) == 4


def test_cluster_players_deterministic_and_representatives():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(loc=c, size=(5, 3)) for c in (0.0, 10.0, 20.0)])
    a = cluster_players(x, 3, seed=1)
    b = cluster_players(x, 3, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    labels, reps = a
    for c, r in enumerate(reps):
        members = np.flatnonzero(labels == c)
        d = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
        assert r == members[np.argmin(d)]
    # more clusters than distinct points is capped
    lab, _ = cluster_players(np.zeros((4, 2)), 3)
    np.testing.assert_array_equal(lab, 0)


def test_representative_mode_uses_only_representatives():
    game, features, groups = grouped_setup()
    seen = []

    def u(c):
        seen.append(c)
        return game(c)

    res, labels = clustered_shapley(u, features, n_clusters=4, expand="representative")
    c = np.vstack(seen)
    reps = res.info["representatives"]
    others = np.setdiff1d(np.arange(10), reps)
    assert not c[:, others].any() and c[:, reps].any()


def test_labels_given_directly():
    game, _, groups = grouped_setup()
    res, labels = clustered_shapley(game, labels=groups + 7)
    np.testing.assert_allclose(res.values, exact_shapley(game, 10).values, atol=1e-10)
    with pytest.raises(ValueError):
        clustered_shapley(game)


def test_aggregation_weights():
    w = aggregation_weights([0.5, -1.0, 1.5, 0.0])
    np.testing.assert_allclose(w, [0.25, 0.0, 0.75, 0.0])
    np.testing.assert_allclose(aggregation_weights([-1.0, -2.0]), [0.5, 0.5])
    np.testing.assert_allclose(aggregation_weights([0.0, 0.0, 0.0]), [1 / 3] * 3)
    w = aggregation_weights([1.0, -1.0], floor=0.25)
    np.testing.assert_allclose(w, [0.8, 0.2])
    assert np.isclose(aggregation_weights(np.random.default_rng(0).normal(size=9)).sum(), 1.0)
    with pytest.raises(ValueError):
        aggregation_weights([1.0], floor=-1)
