"""Modality maskers: which modalities each client holds, and which samples lose one.

Two mechanisms, as in the papers: whole-modality absence per client (FedMEKT's
accelerometer-only / gyroscope-only / both clients) and per-sample missingness (FedMobile,
up to 0.9), either at a rate per modality or as one randomly chosen modality lost per
sample at a rate. Every draw has its own stream keyed by
(seed, purpose, client, modality), so changing one client or modality changes no other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmm.config import MaskConfig
from fedmm.errors import UserError
from fedmm.seeding import rng_for


class MaskError(UserError, ValueError):
    """A mask configuration does not fit the data."""


@dataclass(frozen=True)
class ClientMask:
    """One client's presence mask (n, M) and what it took to make it."""

    presence: np.ndarray
    held: np.ndarray
    drawn_missing: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """Samples that keep at least one modality (the rest are dropped)."""
        return self.presence.any(axis=1)


class ModalityMasker:
    """Assigns modality sets to clients and draws per-sample missingness, set once per seed."""

    def __init__(self, modalities: list[str], config: MaskConfig, seed: int) -> None:
        unknown = {name for group in config.client_modalities for name in group.modalities} | set(config.missing_rate)
        unknown -= set(modalities)
        if unknown:
            raise MaskError(f"mask config names unknown modalities {sorted(unknown)}; the data has {modalities}")
        self.modalities = list(modalities)
        self.config = config
        self.seed = seed

    def requested_rates(self, held: np.ndarray) -> np.ndarray:
        """Expected per-sample missing rate of each modality for a client holding ``held``.

        With ``random_missing_rate`` r a sample loses one of its h held modalities with
        probability r, so each held modality is missing at r / h (nothing when h = 1).
        """
        rates = np.array([self.config.missing_rate.get(name, 0.0) for name in self.modalities])
        count = int(held.sum())
        if self.config.random_missing_rate and count >= 2:
            rates = rates + self.config.random_missing_rate / count
        return np.where(held, rates, 0.0)

    def client_modalities(self, num_clients: int) -> np.ndarray:
        """(K, M) bool: which modalities each client holds at all.

        Group sizes follow the configured fractions by largest remainder; which client lands
        in which group is a seeded shuffle.
        """
        held = np.ones((num_clients, len(self.modalities)), dtype=bool)
        groups = self.config.client_modalities
        if not groups:
            return held
        quotas = np.array([group.fraction for group in groups]) * num_clients
        sizes = np.floor(quotas).astype(int)
        sizes[np.argsort(sizes - quotas)[: num_clients - sizes.sum()]] += 1
        order = rng_for(self.seed, "mask", "client-groups").permutation(num_clients)
        start = 0
        for group, size in zip(groups, sizes):
            members = order[start:start + size]
            held[members] = np.isin(self.modalities, group.modalities)
            start += size
        return held

    def mask_client(self, client: int | str, num_samples: int, held: np.ndarray) -> ClientMask:
        """Presence (n, M) for one client (or another keyed stream): absent modalities off, then per-sample draws."""
        drawn = np.zeros((num_samples, len(self.modalities)), dtype=bool)
        for m, name in enumerate(self.modalities):
            rate = self.config.missing_rate.get(name, 0.0)
            if rate > 0 and held[m]:
                drawn[:, m] = rng_for(self.seed, "mask", "sample", client, m).random(num_samples) < rate
        holding = np.flatnonzero(held)
        if self.config.random_missing_rate and len(holding) >= 2:
            rng = rng_for(self.seed, "mask", "random-one", client)
            hit = rng.random(num_samples) < self.config.random_missing_rate
            choice = holding[rng.integers(0, len(holding), size=num_samples)]
            drawn[np.flatnonzero(hit), choice[hit]] = True
        presence = held[None, :] & ~drawn
        return ClientMask(presence=presence, held=held, drawn_missing=drawn)
