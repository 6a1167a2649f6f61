"""Imputers and the partition artifact: each client's masked data, and which client owns a test sample."""

from __future__ import annotations

import numpy as np

from fedmm.data.federated import FederatedData, client_arrays
from fedmm.data.prepare import PreparedData
from fedmm.seeding import rng_for
from fedmm.tensors import TensorData


def client_datasets(prepared: PreparedData, federated: FederatedData, device: str = "cpu") -> list[TensorData]:
    """Every client's training inputs (absent modalities zeroed), presence mask and labels."""
    return [
        TensorData.from_numpy(*client_arrays(prepared, federated, k), device=device)
        for k in range(federated.num_clients)
    ]


def random_owners(num_samples: int, client_sizes: list[int], seed: int) -> np.ndarray:
    """A seeded owner per sample, drawn in proportion to the clients' sizes."""
    sizes = np.asarray(client_sizes, dtype=float)
    if not sizes.sum():
        raise ValueError("every client is empty")
    return rng_for(seed, "impute", "owners").choice(len(sizes), size=num_samples, p=sizes / sizes.sum())


def split_owners(prepared: PreparedData, federated: FederatedData, split: str, seed: int) -> np.ndarray:
    """The client each sample of a split lives on.

    Under the natural partition a held-out recording belongs to its subject's client; a
    sample whose subject is no client (and every sample under other schemes) gets a seeded
    owner drawn in proportion to client sizes.
    """
    sizes = [len(federated.client_rows(k)) for k in range(federated.num_clients)]
    subjects = prepared.dataset.subject[prepared.indices(split)]
    owners = random_owners(len(subjects), sizes, seed)
    if federated.report.scheme == "natural":
        client_of = {row.subject: row.client for row in federated.report.clients if sizes[row.client]}
        known = np.array([s in client_of for s in subjects], dtype=bool)
        owners[known] = [client_of[s] for s in subjects[known]]
    return owners
