"""Partitioners: split a training pool across clients (flwr-datasets style, seeded, set once).

Each partitioner assigns every sample of the pool to exactly one client, so partitions are
disjoint and complete by construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from fedmm.config import PartitionConfig
from fedmm.errors import UserError
from fedmm.seeding import rng_for


class PartitionError(UserError, ValueError):
    """A partition cannot be made with these settings on this data."""


class Partitioner(ABC):
    """Assigns samples to ``num_partitions`` clients; ``load_partition(i)`` gives client i's indices."""

    def __init__(self, num_partitions: int | None, seed: int) -> None:
        self._num_partitions = num_partitions
        self.seed = seed
        self._assignment: np.ndarray | None = None

    def fit(self, labels: np.ndarray, subjects: np.ndarray) -> Partitioner:
        """Compute the assignment once for these samples."""
        if self._assignment is not None:
            raise PartitionError("a partitioner is set once; make a new one for other data")
        assignment = self._assign(np.asarray(labels), np.asarray(subjects))
        self._num_partitions = int(assignment.max()) + 1 if self._num_partitions is None else self._num_partitions
        self._assignment = assignment
        return self

    @property
    def num_partitions(self) -> int:
        if self._num_partitions is None:
            raise PartitionError("the number of partitions is known after fit()")
        return self._num_partitions

    @property
    def assignment(self) -> np.ndarray:
        """Client id of every sample of the pool."""
        if self._assignment is None:
            raise PartitionError("call fit() before reading partitions")
        return self._assignment

    def load_partition(self, partition_id: int) -> np.ndarray:
        """Indices (into the pool) of one client's samples."""
        if not 0 <= partition_id < self.num_partitions:
            raise PartitionError(f"partition {partition_id} out of range 0..{self.num_partitions - 1}")
        return np.flatnonzero(self.assignment == partition_id)

    @abstractmethod
    def _assign(self, labels: np.ndarray, subjects: np.ndarray) -> np.ndarray: ...


class NaturalPartitioner(Partitioner):
    """One client per subject, in ascending subject order."""

    def _assign(self, labels: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        unique, assignment = np.unique(subjects, return_inverse=True)
        if len(unique) < 2:
            raise PartitionError("the natural partition needs subject ids for at least 2 subjects")
        return assignment.astype(np.int64)


class IidPartitioner(Partitioner):
    """A uniform random split into near-equal parts."""

    def _assign(self, labels: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        n, k = len(labels), self.num_partitions
        if n < k:
            raise PartitionError(f"{n} samples cannot fill {k} clients")
        order = rng_for(self.seed, "partition", "iid").permutation(n)
        assignment = np.empty(n, dtype=np.int64)
        assignment[order] = np.arange(n) % k
        return assignment


class DirichletPartitioner(Partitioner):
    """Label skew: each class is spread over clients by proportions drawn from Dir(alpha).

    Draws are repeated (each from its own keyed stream) until every client holds at least
    ``min_samples``; too small an alpha or too many clients is an error after
    ``max_attempts`` draws.
    """

    def __init__(self, num_partitions: int, seed: int, alpha: float, min_samples: int, max_attempts: int = 100):
        super().__init__(num_partitions, seed)
        self.alpha, self.min_samples, self.max_attempts = alpha, min_samples, max_attempts

    def _assign(self, labels: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        k = self.num_partitions
        classes = np.unique(labels)
        for attempt in range(self.max_attempts):
            rng = rng_for(self.seed, "partition", "dirichlet", attempt)
            assignment = np.empty(len(labels), dtype=np.int64)
            for label in classes:
                members = rng.permutation(np.flatnonzero(labels == label))
                shares = rng.dirichlet(np.full(k, self.alpha))
                cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
                for client, part in enumerate(np.split(members, cuts)):
                    assignment[part] = client
            if np.bincount(assignment, minlength=k).min() >= self.min_samples:
                return assignment
        raise PartitionError(
            f"no Dirichlet(alpha={self.alpha}) split of {len(labels)} samples gave all {k} clients "
            f">= {self.min_samples} samples in {self.max_attempts} draws: raise alpha or lower num_clients"
        )


class QuantitySkewPartitioner(Partitioner):
    """Quantity skew: client sizes follow Dir(alpha) shares (at least ``min_samples`` each), labels IID."""

    def __init__(self, num_partitions: int, seed: int, alpha: float, min_samples: int):
        super().__init__(num_partitions, seed)
        self.alpha, self.min_samples = alpha, min_samples

    def _assign(self, labels: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        n, k = len(labels), self.num_partitions
        spare = n - k * self.min_samples
        if spare < 0:
            raise PartitionError(f"{n} samples cannot give {k} clients {self.min_samples} samples each")
        rng = rng_for(self.seed, "partition", "quantity")
        extra = np.floor(rng.dirichlet(np.full(k, self.alpha)) * spare).astype(int)
        extra[: spare - extra.sum()] += 1
        sizes = self.min_samples + extra
        assignment = np.empty(n, dtype=np.int64)
        assignment[rng.permutation(n)] = np.repeat(np.arange(k), sizes)
        return assignment


def make_partitioner(config: PartitionConfig, seed: int) -> Partitioner:
    """The partitioner a config names."""
    factories = {
        "natural": lambda: NaturalPartitioner(None, seed),
        "iid": lambda: IidPartitioner(config.num_clients, seed),
        "dirichlet": lambda: DirichletPartitioner(config.num_clients, seed, config.alpha, config.min_samples),
        "quantity": lambda: QuantitySkewPartitioner(config.num_clients, seed, config.alpha, config.min_samples),
    }
    return factories[config.scheme]()
