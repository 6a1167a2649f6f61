"""Federated moments: each client sends counts, sums, sums of squares and ranges of its present values.

The server adds the payloads; no value leaves a client on its own. Mean fill and the
latent imputers' embedding scaler are built from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Client -> server payload: per-feature count, sum, sum of squares, minimum and maximum of present values."""

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, present: np.ndarray) -> Moments:
        """Moments of (n, D) ``values`` over the rows where ``present`` (n,) is True."""
        rows = np.asarray(values, dtype=np.float64)[np.asarray(present, dtype=bool)]
        return cls(
            np.full(rows.shape[1], len(rows), dtype=np.int64), rows.sum(0), (rows**2).sum(0),
            rows.min(0, initial=np.inf), rows.max(0, initial=-np.inf),
        )

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.count + other.count, self.total + other.total, self.squares + other.squares,
            np.minimum(self.low, other.low), np.maximum(self.high, other.high),
        )

    @property
    def mean(self) -> np.ndarray:
        """Per-feature mean; zero where no client saw the feature."""
        return np.divide(self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0)

    @property
    def std(self) -> np.ndarray:
        """Per-feature population std; one where it is undefined or (near) zero."""
        variance = np.divide(self.squares, self.count, out=np.zeros_like(self.squares), where=self.count > 0)
        std = np.sqrt(np.maximum(variance - self.mean**2, 0.0))
        return np.where(std > 1e-6, std, 1.0)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature observed range; the mean where no client saw the feature."""
        seen = self.count > 0
        return np.where(seen, self.low, self.mean), np.where(seen, self.high, self.mean)


def aggregate(payloads: list[Moments]) -> Moments:
    """The server's sum of the clients' moments."""
    if not payloads:
        raise ValueError("no client moments to aggregate")
    total = payloads[0]
    for payload in payloads[1:]:
        total = total + payload
    return total
