"""Explicit, keyed random streams: every draw comes from (seed, purpose, client, ...)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _entropy(key: int | str) -> int:
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    return int(key)


def seed_sequence(seed: int, *keys: int | str) -> np.random.SeedSequence:
    """The SeedSequence for a seed and a key path such as ("mask", client, modality)."""
    return np.random.SeedSequence([int(seed), *(_entropy(key) for key in keys)])


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """An independent numpy generator for a seed and a key path."""
    return np.random.default_rng(seed_sequence(seed, *keys))


def torch_generator(seed: int, *keys: int | str) -> torch.Generator:
    """An independent CPU torch generator for a seed and a key path."""
    state = seed_sequence(seed, *keys).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
