"""The package's leaf: shared tensor types and generic torch helpers (torch, numpy and the seed streams only).

:class:`TensorData` (a dataset on the training device, batched by index, no per-sample
Python), :data:`State` (named tensors), and helpers every layer uses: seeded module
construction, freezing a module, FedAvg's weighted mean and the distillation KL.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.seeding import seed_sequence

State = dict[str, torch.Tensor]

UNLABELLED = -1
"""The label of a client sample whose label the client does not know (semi-supervised settings)."""


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (intra-op), restored afterwards. This package's models are small and
    its batches tiny: on a loaded 2-core host two intra-op threads spin-wait for each other (measured: 1.6x
    to 8x the wall time of one thread in the audit, over 10x the CPU seconds in training)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TensorData:
    """Per-modality inputs, a presence mask and labels, all on one device."""

    inputs: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_numpy(
        cls, inputs: dict[str, np.ndarray], mask: np.ndarray, labels: np.ndarray, device: str = "cpu"
    ) -> TensorData:
        return cls(
            inputs={name: torch.as_tensor(value, dtype=torch.float32, device=device) for name, value in inputs.items()},
            mask=torch.as_tensor(mask, dtype=torch.bool, device=device),
            labels=torch.as_tensor(labels, dtype=torch.long, device=device),
        )

    @property
    def labelled(self) -> torch.Tensor:
        """Which samples carry a label."""
        return self.labels != UNLABELLED

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> TensorData:
        return TensorData({k: v[index] for k, v in self.inputs.items()}, self.mask[index], self.labels[index])

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield batches in a seeded random order (sequential order without a generator)."""
        n = len(self)
        if generator is None:
            order = torch.arange(n, device=self.labels.device)
        else:
            order = torch.randperm(n, generator=generator).to(self.labels.device)
        for start in range(0, n, batch_size):
            yield self.take(order[start:start + batch_size])

    @staticmethod
    def concat(parts: list[TensorData]) -> TensorData:
        return TensorData(
            inputs={name: torch.cat([p.inputs[name] for p in parts]) for name in parts[0].inputs},
            mask=torch.cat([p.mask for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
        )


def seeded_module(factory: Callable[[], nn.Module], seed: int, *keys: int | str) -> nn.Module:
    """A module initialised from the keyed stream (seed, *keys), leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed_sequence(seed, *keys).generate_state(1)[0]))
        return factory()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Gradients flow through ``model`` to its inputs but never into its parameters."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def frozen_copy(model: nn.Module, state: State) -> nn.Module:
    """A copy of ``model`` holding ``state``, in eval mode and without gradients (a fixed reference)."""
    reference = copy.deepcopy(model)
    reference.load_state_dict(state)
    return reference.requires_grad_(False).eval()


def weighted_mean(values: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_k w_k x_k / sum_k w_k``, FedAvg's aggregation of one tensor (weights: example counts or shares)."""
    if not values:
        raise ValueError("weighted_mean of no values")
    total = float(sum(weights))
    return sum(value * (float(weight) / total) for value, weight in zip(values, weights))


def fedavg_states(states: Sequence[State], weights: Sequence[float]) -> State:
    """The weighted mean of client states, entry by entry (:func:`weighted_mean`)."""
    return {name: weighted_mean([state[name] for state in states], weights) for name in states[0]}


def distillation_kl(student_logits: torch.Tensor, soft_targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge distillation's soft-target term (Hinton et al. 2015): ``T^2 * KL(soft_targets || softmax(student / T))``.

    The KL runs over the last dimension and is averaged over every other. ``soft_targets`` is
    the teacher's tempered distribution (``softmax(teacher_logits / T)``, or a mean of such);
    the term never trains the teacher.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=-1).flatten(0, -2)
    return temperature**2 * F.kl_div(log_student, soft_targets.detach().flatten(0, -2), reduction="batchmean")
