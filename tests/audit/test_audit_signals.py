import numpy as np

from fedmm.audit.signals import aggregate_update, cosine_to_aggregate, median_cosine_to_others, update_norms, update_signals


def cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na * nb == 0 else float(a @ b / (na * nb))


def test_cosine_and_norms_match_loops():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4))
    w = rng.random(6)
    flat = x.reshape(6, -1)
    agg = w @ flat / w.sum()
    np.testing.assert_allclose(aggregate_update(x, w), agg)
    np.testing.assert_allclose(cosine_to_aggregate(x, w), [cos(f, agg) for f in flat])
    np.testing.assert_allclose(update_norms(x), [np.linalg.norm(f) for f in flat])
    others = [cos(flat[i], np.delete(w, i) @ np.delete(flat, i, 0)) for i in range(6)]
    np.testing.assert_allclose(cosine_to_aggregate(x, w, exclude_self=True), others, atol=1e-12)


def test_signals_edge_cases_and_list_input():
    ups = [np.array([1.0, 0.0]), np.array([0.0, 0.0]), np.array([-1.0, 0.0]), np.array([2.0, 0.0])]
    s = update_signals(ups)
    np.testing.assert_allclose(s["norm"], [1, 0, 1, 2])
    np.testing.assert_allclose(s["cosine"], [1, 0, -1, 1])
    # an opposing update is flagged against the others' aggregate
    c = cosine_to_aggregate(ups, exclude_self=True)
    assert c[2] < 0 < c[0]
    # a single client has no "others": cosine 0
    np.testing.assert_allclose(cosine_to_aggregate(np.ones((1, 3)), exclude_self=True), [0.0])


def test_median_cosine_is_robust_to_a_reversed_minority():
    rng = np.random.default_rng(0)
    step = rng.normal(size=50)
    honest = [step + 0.5 * rng.normal(size=50) for _ in range(7)]
    ups = np.stack([*honest, *(-2 * h for h in honest[:3])])  # three clients send their update x-2
    flat = ups.reshape(10, -1)
    loops = [np.median([cos(flat[i], flat[j]) for j in range(10) if j != i]) for i in range(10)]
    med = median_cosine_to_others(ups)
    np.testing.assert_allclose(med, loops, atol=1e-12)
    assert med[7:].max() < 0 < med[:7].min()
    assert cosine_to_aggregate(ups, exclude_self=True)[:7].min() < 0  # the others' aggregate is dragged against some
    assert np.isnan(median_cosine_to_others(np.ones((1, 3)))).all()
