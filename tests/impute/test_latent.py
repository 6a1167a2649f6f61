import numpy as np
import torch

from fedmm.impute.latent import LatentData, Scaler, masked_targets
from fedmm.moments import Moments, aggregate
from fedmm.seeding import torch_generator
from fedmm.tensors import fedavg_states


def test_masked_targets_hide_a_proper_nonempty_subset_of_present():
    present = torch.rand((500, 4), generator=torch.Generator().manual_seed(0)) < 0.7
    present = present[present.sum(1) >= 2]
    targets = masked_targets(present, torch_generator(0, "test"))
    assert not (targets & ~present).any()
    assert targets.any(1).all()
    assert ((present & ~targets).any(1)).all()
    assert torch.equal(targets, masked_targets(present, torch_generator(0, "test")))


def test_fedavg_is_the_weighted_mean():
    states = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 4.0])}]
    torch.testing.assert_close(fedavg_states(states, [3, 1])["w"], torch.tensor([0.75, 1.0]))


def test_federated_moments_equal_pooled_statistics():
    rng = np.random.default_rng(0)
    parts = [(rng.normal(2, 3, (n, 5)), rng.random(n) < 0.6) for n in (30, 50, 7)]
    moments = aggregate([Moments.of(values, present) for values, present in parts])
    pooled = np.concatenate([values[present] for values, present in parts])
    np.testing.assert_allclose(moments.mean, pooled.mean(0))
    np.testing.assert_allclose(moments.std, pooled.std(0))
    np.testing.assert_allclose(moments.bounds[0], pooled.min(0))
    np.testing.assert_allclose(moments.bounds[1], pooled.max(0))


def test_scaler_zeroes_absent_and_clips_to_the_observed_range():
    embeddings = torch.tensor([[[1.0, 2.0], [3.0, 5.0]], [[3.0, 4.0], [0.0, 0.0]]])
    present = torch.tensor([[True, True], [True, False]])
    scaler = Scaler.federated([LatentData(embeddings, present)])
    scaled = scaler(embeddings, present)
    assert scaled[1, 1].abs().sum() == 0
    torch.testing.assert_close(scaler.inverse(scaled)[present], embeddings[present])
    torch.testing.assert_close(scaler.inverse(torch.full((1, 2, 2), 100.0))[0, 0], torch.tensor([3.0, 4.0]))
