"""The run summary: what a training run registered and decided (the content of ``summary.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Gate:
    """One promotion gate's outcome and its evidence."""

    name: str
    passed: bool
    detail: str


@dataclass
class RunSummary:
    """The register stage's output.

    ``metrics`` are the evaluation's headline numbers (``EvaluationReport.headline``),
    ``audit`` the audit's scalars (``AuditReport.summary``) and ``audit_flags`` its flagged
    clients, both None without an audit; ``zenml_pipeline_run`` is set by the ZenML runner.
    In JSON, metrics and audit scalars are top-level keys beside the other fields.
    """

    model_name: str
    model_version: str
    aliases: list[str]
    promoted: bool
    gates: list[Gate]
    tracking_uri: str
    mlflow_run_id: str
    config_hash: str
    data_sha256: str
    num_clients: int
    rounds: int
    strategy: str
    transport: str
    served_imputer: str | None
    test_samples: int
    dropped_samples: int
    metrics: dict[str, float]
    audit: dict[str, float] | None = None
    audit_flags: dict[str, list[dict]] | None = None
    zenml_pipeline_run: str | None = None

    @property
    def test_macro_f1(self) -> float:
        return self.metrics["test_macro_f1"]

    def gate(self, name: str) -> Gate:
        """The gate called ``name``."""
        return next(g for g in self.gates if g.name == name)

    def to_dict(self) -> dict:
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NESTED}
        if self.zenml_pipeline_run is None:
            del plain["zenml_pipeline_run"]
        audit = {"audit_flags": self.audit_flags, **self.audit} if self.audit is not None else {}
        return {**self.metrics, **plain, "gates": [asdict(g) for g in self.gates], **audit}

    @classmethod
    def from_dict(cls, payload: dict) -> RunSummary:
        names = {f.name for f in fields(cls)} - _NESTED
        rest = {k: v for k, v in payload.items() if k not in names and k != "gates"}
        audit = {k: v for k, v in rest.items() if k.startswith(AUDIT_PREFIX)}  # AuditReport.summary's names
        flags = audit.pop("audit_flags", None)
        return cls(**{k: v for k, v in payload.items() if k in names}, gates=[Gate(**g) for g in payload["gates"]],
                   metrics={k: v for k, v in rest.items() if not k.startswith(AUDIT_PREFIX)},
                   audit=audit or None, audit_flags=flags)


_NESTED = {"metrics", "audit", "audit_flags", "gates"}
AUDIT_PREFIX = "audit_"
"""The audit's scalars and flags are stored under names starting with this."""
