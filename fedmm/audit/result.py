"""Valuation results: values with standard errors, sample counts, axiom residuals and, for a round, its evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["ValuationResult"]


def _encode(a: np.ndarray) -> list:
    """Float array -> JSON-safe list (non-finite numbers as the strings 'inf', '-inf', 'nan')."""
    return [float(x) if math.isfinite(x) else str(float(x)) for x in np.asarray(a, float).tolist()]


def _decode(xs) -> np.ndarray:
    return np.array([float(x) for x in xs], dtype=float)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x



def normal_interval(values, stderr, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal-approximation confidence interval ``values +- z * stderr`` at ``level``."""
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * np.asarray(stderr, dtype=float)
    return np.asarray(values, dtype=float) - half, np.asarray(values, dtype=float) + half

@dataclass
class ValuationResult:
    """Per-player values of one estimator run.

    ``stderr`` is the Monte Carlo standard error (zero for exact methods); ``counts`` are
    samples per player (equal to the number of coalitions enumerated for exact methods);
    ``evaluations`` is the number of distinct utility evaluations used; ``residuals`` holds
    axiom self-check residuals and ``info`` JSON-serialisable extras (stop reason, cluster
    labels, ...). A round valued per validation sample (:mod:`fedmm.audit.samplewise`) also
    carries its ``evidence`` ``(n, M)`` (per-sample or per-replicate values), the full utility
    ``table`` of an exact round and the sampler's convergence ``trace``.
    """

    values: np.ndarray
    stderr: np.ndarray
    evaluations: int
    method: str
    counts: np.ndarray
    residuals: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    evidence: np.ndarray | None = None
    table: np.ndarray | None = None
    trace: dict | None = None

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=float).reshape(-1)
        n = self.values.size
        self.stderr = np.broadcast_to(np.asarray(self.stderr, dtype=float), (n,)).copy()
        self.counts = np.broadcast_to(np.asarray(self.counts, dtype=np.int64), (n,)).copy()
        self.evaluations = int(self.evaluations)
        self.residuals = {str(k): float(v) for k, v in self.residuals.items()}

    @property
    def mc_variance(self) -> np.ndarray:
        """Monte Carlo variance of the values (``stderr**2``)."""
        return self.stderr**2

    @property
    def n_players(self) -> int:
        return self.values.size

    def __len__(self) -> int:
        return self.values.size

    def ci(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Normal-approximation confidence interval ``values +- z * stderr``."""
        return normal_interval(self.values, self.stderr, level)

    def ranking(self) -> np.ndarray:
        """Player indices from highest to lowest value (stable)."""
        return np.argsort(-self.values, kind="stable")

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": _encode(self.values),
            "stderr": _encode(self.stderr),
            "evaluations": self.evaluations,
            "method": self.method,
            "counts": [int(c) for c in self.counts],
            "residuals": {k: _encode([v])[0] for k, v in self.residuals.items()},
            "info": _jsonable(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValuationResult:
        return cls(
            values=_decode(d["values"]),
            stderr=_decode(d["stderr"]),
            evaluations=int(d["evaluations"]),
            method=str(d["method"]),
            counts=np.asarray(d["counts"], dtype=np.int64),
            residuals={k: float(v) for k, v in d.get("residuals", {}).items()},
            info=dict(d.get("info", {})),
        )
