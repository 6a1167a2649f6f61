"""The one permutation sampler, stopping rules passed to a round's sampler, and a round audited at scale."""

import numpy as np
import pytest
import torch
from test_audit_report import Linear

from fedmm.audit.inference import MeanStatistic
from fedmm.audit.rounds import audit_round
from fedmm.audit.samplewise import sampled_round, scale_round
from fedmm.audit.sampling import MaxEvaluations, MaxPermutations, PermutationSampler, RelativeStandardErrorBelow
from fedmm.audit.utility import RoundGame, conv1d_as_conv2d
from fedmm.config import AuditConfig
from fedmm.tensors import TensorData

N_CLIENTS = 60


@pytest.fixture(scope="module")
def game():
    """A round of 60 clients, each a noisy step towards a decent linear classifier of three blobs."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    data = TensorData.from_numpy({"x": 1.5 * np.eye(3, 4)[labels] + rng.normal(size=(200, 4))}, np.ones((200, 1), bool),
                                 labels)
    good = np.concatenate([1.5 * np.eye(3, 4).ravel(), -0.75 * np.ones(3)])
    deltas = 0.5 * good + rng.normal(scale=0.5, size=(N_CLIENTS, 15))
    layout = [("head.weight", (3, 4)), ("head.bias", (3,))]
    return RoundGame(Linear(), layout, np.zeros(15), deltas, rng.integers(5, 50, N_CLIENTS), data, server_round=0)


def test_the_sampler_pairs_a_permutation_with_its_reverse_and_averages_the_pair():
    sampler = PermutationSampler(5, antithetic=True, seed=0)
    perms, pos = sampler.draw(3)  # rounded up to two pairs
    assert perms.shape == (4, 5) and (perms[1::2] == perms[0::2, ::-1]).all()
    assert (np.take_along_axis(perms, pos, axis=1) == np.arange(5)).all()
    marginals = np.arange(20.0).reshape(4, 5)
    np.testing.assert_array_equal(sampler.samples(marginals), [marginals[:2].mean(0), marginals[2:].mean(0)])
    again, _ = PermutationSampler(5, antithetic=True, seed=0).draw(4)
    assert (again == perms).all()


def test_a_rounds_sampler_stops_by_the_rule_it_is_given(game):
    statistic = MeanStatistic(np.arange(len(game.data)), "sample")
    est, store = sampled_round(game.rows, statistic, N_CLIENTS, MaxPermutations(3), antithetic=False, batch_pairs=1,
                               seed=0)
    assert est.counts.min() == 3 and est.info["stop_reason"] == "MaxPermutations(3)" and store.size == 3 * (N_CLIENTS - 1) + 2
    rule = MaxEvaluations(10**6) | RelativeStandardErrorBelow(0.5, min_samples=4)
    est, _ = sampled_round(game.rows, statistic, N_CLIENTS, rule, seed=0)
    assert len(est.info["samples"]) >= 4 and "Monte Carlo SE <= 0.5" in est.info["stop_reason"]
    assert np.all(est.stderr <= 0.5 * np.sqrt(statistic.variance(est.evidence)))


def test_a_round_at_scale_costs_one_permutation_and_block_boundaries_and_its_error_is_within_its_monte_carlo_se(game):
    statistic = MeanStatistic(np.repeat(np.arange(40), 5), "recording")
    audit = audit_round(game, AuditConfig(), statistic)
    rows = audit.rows.set_index("client")
    assert audit.record["evaluations"] == (N_CLIENTS - 1) + 2 + 9  # one permutation, 9 inner boundaries of 6-client blocks
    assert audit.record["stop_reason"] == "1 permutation(s) and 10 blocks" and audit.record["permutations"] == 1
    assert (rows["mc_stderr"] > 0).all() and np.allclose(rows["stderr"] ** 2, rows["val_stderr"] ** 2 + rows["mc_stderr"] ** 2)
    reference = audit_round(game, AuditConfig(scale_permutations=200), statistic, seed=1).rows.set_index("client")
    err = (rows["value"] - reference["value"]).abs()
    assert (err <= 4 * np.hypot(rows["mc_stderr"], reference["mc_stderr"])).mean() >= 0.95
    ones = np.ones((1, N_CLIENTS), bool)
    exact_loo = game(ones)[0] - game(~np.eye(N_CLIENTS, dtype=bool))
    np.testing.assert_allclose(rows["loo"], exact_loo, rtol=0.05, atol=0.05 * np.abs(exact_loo).max())
    small = audit_round(game, AuditConfig(scale_from=N_CLIENTS + 1), statistic)
    assert small.record["evaluations"] > audit.record["evaluations"]  # below scale_from: antithetic pairs, the MC rule


def test_the_block_permutation_measures_the_variance_of_one_clients_marginal_drift_included():
    """A concave game of weighted updates (marginals shrink along a permutation) with pairwise noise: the pooled
    variance per unit scale^2, averaged over seeds, is the brute-force variance of a client's marginal."""
    n, rng = 80, np.random.default_rng(3)
    weight = rng.uniform(0.5, 1.5, n) / n
    noise = np.triu(rng.normal(scale=0.02, size=(n, n)), 1) * np.outer(weight, weight) * n

    def rows(coalitions):
        c = coalitions.astype(float)
        u = np.log1p(c @ weight) + np.einsum("ki,ij,kj->k", c, noise, c)
        return u[:, None] + np.zeros((1, 3))  # three identical "validation samples"

    statistic = MeanStatistic(np.arange(3), "sample")
    perms = np.array([rng.permutation(n) for _ in range(400)])
    prefixes = np.argsort(perms, axis=1)[:, None, :] < np.arange(n + 1)[None, :, None]
    marginals = np.take_along_axis(np.diff(rows(prefixes.reshape(-1, n))[:, 0].reshape(400, n + 1), axis=1),
                                   np.argsort(perms, axis=1), axis=1)
    truth = np.mean(marginals.var(axis=0, ddof=1) / weight**2)
    pooled = [scale_round(rows, statistic, n, weight, seed=s)[0].info["pooled_variance"] for s in range(60)]
    assert 0.75 * truth < np.mean(pooled) < 1.25 * truth
    est, store = scale_round(rows, statistic, n, weight, permutations=3, seed=0)
    assert est.info["pooled_dof"] == 14 + 2 * n and store.size == 3 * (n - 1) + 2 + 13
    assert np.all(est.stderr**2 * 3 >= est.info["pooled_variance"] * weight**2 * (1 - 1e-12))


def test_conv1d_as_conv2d_keeps_the_parameters_and_the_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv1d(8, 4, 3, stride=2))
    x = torch.randn(7, 3, 40)
    expected, names = net(x), list(net.state_dict())
    fast = conv1d_as_conv2d(net)
    assert list(fast.state_dict()) == names and type(fast[0]).__name__ == "Conv1dAs2d"
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-6)
