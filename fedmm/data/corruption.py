"""Deliberately corrupted clients, injected so the contribution audit's detection is measurable.

A :class:`CorruptionPlan` is part of the partition artifact (its config is in the report,
with the seed), so the ground truth travels with the data. Data corruptions are applied
where client inputs are built (:func:`fedmm.data.federated.client_arrays`); update
corruptions are applied by the round engine to what a client sends. Every draw comes from
a stream keyed by (seed, "corrupt", kind, client[, round]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmm.config import ClientCorruption, CorruptionConfig
from fedmm.data.partition import PartitionError
from fedmm.seeding import rng_for, torch_generator

DATA_KINDS = frozenset({"label_flip", "feature_noise", "drop_modality"})
FREE_RIDER_KINDS = frozenset({"free_rider_zero", "free_rider_noise"})


@dataclass(frozen=True)
class CorruptionPlan:
    """Which clients are corrupted and how; applies the corruptions deterministically."""

    config: CorruptionConfig
    seed: int

    def _of(self, client: int) -> ClientCorruption | None:
        return next((c for c in self.config.clients if c.client == client), None)

    def check(self, num_clients: int, modalities: list[str]) -> None:
        """Raise a PartitionError when a corruption names a client or modality that does not exist."""
        for c in self.config.clients:
            if c.client >= num_clients:
                raise PartitionError(f"corruption of client {c.client}, but the partition has {num_clients} clients")
            if c.modality is not None and c.modality not in modalities:
                raise PartitionError(f"corruption drops modality {c.modality!r}; the data has {modalities}")

    def ground_truth(self, num_clients: int) -> list[dict]:
        """One row per client: whether and how it is corrupted (what the audit should find)."""
        rows = []
        for k in range(num_clients):
            c = self._of(k)
            rows.append({"client": k, "corrupted": c is not None, **({"kind": c.kind} if c else {"kind": None})})
        return rows

    def corrupt_data(
        self, client: int, inputs: dict[str, np.ndarray], labels: np.ndarray, num_classes: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A client's training inputs and labels after its data corruption (unchanged if none)."""
        c = self._of(client)
        if c is None or c.kind not in DATA_KINDS:
            return inputs, labels
        rng = rng_for(self.seed, "corrupt", c.kind, client)
        if c.kind == "label_flip":
            labels = labels.copy()
            chosen = rng.random(len(labels)) < c.fraction
            shift = rng.integers(1, num_classes, size=len(labels))
            labels[chosen] = (labels[chosen] + shift[chosen]) % num_classes
            return inputs, labels
        if c.kind == "feature_noise":
            noisy = {}
            for name, array in inputs.items():
                spread = float(array.std()) or 1.0
                noisy[name] = (array + c.noise_std * spread * rng.standard_normal(array.shape)).astype(array.dtype)
            return noisy, labels
        return {**inputs, c.modality: np.zeros_like(inputs[c.modality])}, labels

    def tampers_update(self, client: int) -> bool:
        """Whether what the client sends differs from its honest update (free riders and scaled updates)."""
        c = self._of(client)
        return c is not None and c.kind not in DATA_KINDS

    def free_rides(self, client: int) -> bool:
        """Whether the client skips training and sends a fabricated update."""
        c = self._of(client)
        return c is not None and c.kind in FREE_RIDER_KINDS

    def corrupt_update(self, client: int, server_round: int, delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the client sends instead of ``delta`` (its honest update, or zeros for free riders)."""
        c = self._of(client)
        if c is None or c.kind in DATA_KINDS:
            return delta
        if c.kind == "free_rider_zero":
            return {name: torch.zeros_like(value) for name, value in delta.items()}
        if c.kind == "free_rider_noise":
            generator = torch_generator(self.seed, "corrupt", c.kind, client, server_round)
            return {
                name: (c.noise_std * torch.randn(value.shape, generator=generator)).to(value)
                for name, value in delta.items()
            }
        return {name: value * c.scale for name, value in delta.items()}
