"""The round history: what the engine records after each federated round."""

from __future__ import annotations

from dataclasses import dataclass, field

METRICS = ("accuracy", "macro_f1", "loss")
"""The scores ``fedmm.metrics.evaluate`` gives; in JSON a split's score is the key ``<split>_<metric>``."""


@dataclass
class ClientRecord:
    """What one client reported for a round: its sample count and its strategy's training metrics."""

    client: int
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"client": self.client, "num_examples": self.num_examples, **self.metrics}

    @classmethod
    def from_dict(cls, payload: dict) -> ClientRecord:
        metrics = {k: v for k, v in payload.items() if k not in ("client", "num_examples")}
        return cls(payload["client"], payload["num_examples"], metrics)


@dataclass
class RoundRecord:
    """One round (1-based): the global model's scores per evaluation split (``val``, ``test``, ...), the
    clients that replied and those asked that did not (``dropped``)."""

    round: int
    scores: dict[str, dict[str, float]]
    clients: list[ClientRecord] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def score(self, split: str, metric: str, default: float | None = None) -> float | None:
        """The global model's ``metric`` on ``split`` after this round (``default`` when the split is not scored)."""
        return self.scores.get(split, {}).get(metric, default)

    def to_dict(self) -> dict:
        flat = {f"{split}_{metric}": value for split, scores in self.scores.items() for metric, value in scores.items()}
        return {"round": self.round, **flat, "clients": [c.to_dict() for c in self.clients], "dropped": self.dropped}

    @classmethod
    def from_dict(cls, payload: dict) -> RoundRecord:
        scores: dict[str, dict[str, float]] = {}
        for key, value in payload.items():
            metric = next((m for m in METRICS if key.endswith(f"_{m}")), None)
            if metric is not None:
                scores.setdefault(key.removesuffix(f"_{metric}"), {})[metric] = value
        return cls(payload["round"], scores, [ClientRecord.from_dict(c) for c in payload["clients"]],
                   payload.get("dropped", []))
