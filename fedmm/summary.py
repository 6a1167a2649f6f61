"""The run summary: what a training run registered and decided (the content of ``summary.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedmm.audit.report import AuditReport
    from fedmm.config import Config
    from fedmm.data.federated import FederatedData
    from fedmm.data.prepare import PreparedData
    from fedmm.evaluation import EvaluationReport
    from fedmm.fl.result import TrainResult


@dataclass(frozen=True)
class Gate:
    """One promotion gate's outcome and its evidence."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Registration:
    """What registering a model produced: its version, its MLflow run, the promotion's outcome, its aliases."""

    model_name: str
    version: str
    mlflow_run_id: str
    promoted: bool
    gates: list[Gate]
    aliases: list[str]


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

    @classmethod
    def from_registration(cls, registration: Registration, config: Config, prepared: PreparedData,
                          federated: FederatedData, result: TrainResult, evaluation: EvaluationReport,
                          audit: AuditReport | None) -> RunSummary:
        """The summary of a registered training run: the registration, and what it was trained and scored on."""
        from fedmm.runtime import tracking_uri

        return cls(
            model_name=registration.model_name, model_version=registration.version, aliases=registration.aliases,
            promoted=registration.promoted, gates=registration.gates, tracking_uri=tracking_uri(),
            mlflow_run_id=registration.mlflow_run_id, config_hash=config.hash(), data_sha256=prepared.data_sha256,
            num_clients=federated.num_clients, rounds=len(result.history), strategy=result.strategy,
            transport=config.train.transport, served_imputer=result.imputer.name if result.imputer is not None else None,
            test_samples=int(len(prepared.indices("test"))), dropped_samples=int((~federated.kept).sum()),
            metrics=evaluation.headline(), audit=audit.summary() if audit is not None else None,
            audit_flags=audit.flags if audit is not None else None,
        )

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
