import pytest
import torch
import torch.nn.functional as F

from fedmm.tensors import distillation_kl, fedavg_states, weighted_mean


def test_weighted_mean_is_the_example_weighted_average():
    values = [torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.5]), torch.tensor([0.0, 3.0])]
    weights = [3, 1, 4]
    expected = (3 * values[0] + 1 * values[1] + 4 * values[2]) / 8
    torch.testing.assert_close(weighted_mean(values, weights), expected)
    torch.testing.assert_close(weighted_mean(values, [0.375, 0.125, 0.5]), expected)  # shares give the same mean
    with pytest.raises(ValueError):
        weighted_mean([], [])


def test_fedavg_states_averages_every_entry():
    states = [{"w": torch.ones(2), "b": torch.zeros(1)}, {"w": torch.zeros(2), "b": torch.full((1,), 2.0)}]
    mean = fedavg_states(states, [1, 3])
    torch.testing.assert_close(mean["w"], torch.full((2,), 0.25))
    torch.testing.assert_close(mean["b"], torch.full((1,), 1.5))


def test_distillation_kl_is_the_tempered_kl_averaged_over_leading_dimensions():
    student, teacher, temperature = torch.randn(5, 3, 7), torch.randn(5, 3, 7), 2.5
    p = F.softmax(teacher / temperature, dim=-1)
    log_q = F.log_softmax(student / temperature, dim=-1)
    expected = temperature**2 * (p * (p.log() - log_q)).sum(-1).mean()
    torch.testing.assert_close(distillation_kl(student, p, temperature), expected)


def test_distillation_kl_vanishes_on_equal_scores_and_trains_only_the_student():
    student = torch.randn(4, 7, requires_grad=True)
    teacher = torch.randn(4, 7, requires_grad=True)
    assert float(distillation_kl(teacher.detach(), F.softmax(teacher.detach() / 2.0, dim=-1), 2.0)) == pytest.approx(0, abs=1e-6)
    distillation_kl(student, F.softmax(teacher / 2.0, dim=-1), 2.0).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
