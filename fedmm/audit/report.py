"""The audit's record and its persistence: tables, ``audit.json``, plots and ``report.html``.

:class:`AuditReport` holds the per-round and per-client tables and the JSON record
(:class:`AuditMeta`); ``save`` writes them (Parquet and CSV, JSON, PNG plots and the HTML
page) and ``load`` reads them back. The audit itself runs in :mod:`fedmm.audit.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedmm.artifacts import read_json, write_json
from fedmm.config import AuditConfig

from . import plots as audit_plots
from .flags import AuditFlags
from .html import render_html, render_not_auditable

__all__ = ["AUDITED", "NOT_AUDITABLE", "AuditMeta", "AuditReport"]

ROUNDS_FILE, CLIENTS_FILE, META_FILE = "rounds", "clients", "audit.json"
AUDITED, NOT_AUDITABLE = "audited", "not_auditable"  # an audit's state
CLIENT_FIELDS = (
    "client", "value", "stderr", "val_stderr", "mc_stderr", "ci_low", "ci_high", "ci_half_width", "p_value", "p_holm", "mde", "verdict",
    "flags", "rounds", "median_norm_ratio", "rms_cosine_others", "p_independent", "median_cosine",
    "median_cosine_high", "p_opposed", "top_group", "top_group_share",
    "rank", "share", "suggested_weight",
)
PLOTS = {"heatmap": "values_heatmap.png", "cumulative": "cumulative_values.png", "convergence": "convergence.png"}
HTML_FILE = "report.html"


@dataclass
class AuditMeta:
    """The audit's JSON record (``audit.json``), from which its page is rendered.

    ``rounds`` and ``clients`` hold the per-round records and per-client rows; ``game``
    describes the cooperative game and its inference (None when nothing was audited, and
    ``reason`` says why); ``convergence`` traces one round's estimate. The training and
    partition hashes, the partition's corruption ground truth and the detection quality are
    filled in by the stage that audits a training run.
    """

    state: str
    config: AuditConfig
    seed: int
    rounds: list[dict]
    clients: list[dict]
    flags: AuditFlags
    game: dict | None = None
    convergence: dict | None = None
    reason: str | None = None
    training_fingerprint: str | None = None
    partition_sha256: str | None = None
    corruption_ground_truth: list[dict] | None = None
    detection: dict | None = None

    def to_dict(self) -> dict:
        payload = {"state": self.state, "config": self.config.model_dump(mode="json"), "seed": self.seed,
                   "rounds": self.rounds, "clients": self.clients, "flags": self.flags.to_dict()}
        if self.state == AUDITED:
            payload.update(game=self.game, convergence=self.convergence)
        for name in _META_OPTIONAL:
            if getattr(self, name) is not None:
                payload[name] = getattr(self, name)
        return payload

    @classmethod
    def from_dict(cls, payload: dict) -> AuditMeta:
        return cls(payload.get("state", AUDITED), AuditConfig.model_validate(payload["config"]), payload["seed"],
                   payload["rounds"], payload["clients"], AuditFlags.from_dict(payload["flags"]), payload.get("game"),
                   payload.get("convergence"), **{name: payload.get(name) for name in _META_OPTIONAL})


_META_OPTIONAL = ("reason", "training_fingerprint", "partition_sha256", "corruption_ground_truth", "detection")


@dataclass
class AuditReport:
    """The audit's tables (per round and client; per client over the run) and its JSON record."""

    rounds: pd.DataFrame
    clients: pd.DataFrame
    meta: AuditMeta

    @classmethod
    def not_auditable(cls, reason: str, config: AuditConfig = AuditConfig(), seed: int = 0) -> AuditReport:
        """The record of a run with nothing to value (e.g. its clients send no parameter deltas), and why."""
        meta = AuditMeta(NOT_AUDITABLE, config, seed, [], [], AuditFlags({}, {}, 0.0), reason=reason)
        return cls(rounds=pd.DataFrame(), clients=pd.DataFrame(columns=list(CLIENT_FIELDS)), meta=meta)

    @property
    def state(self) -> str:
        """``audited``, or ``not_auditable`` (``meta.reason`` says why)."""
        return self.meta.state

    @property
    def flags(self) -> dict[str, list[dict]]:
        """Flagged clients (id as string) -> ``[{"flag", "evidence"}, ...]``."""
        return self.meta.flags.clients

    def suggested_weights(self) -> dict[int, float]:
        return dict(zip(self.clients["client"].astype(int), self.clients["suggested_weight"].astype(float)))

    def summary(self) -> dict[str, float]:
        """Scalars for tracking: total gain, flagged clients, worst axiom residuals, evaluations."""
        res = [r["residuals"] for r in self.meta.rounds]
        worst = lambda key: max((float(x[key]) for x in res if key in x), default=0.0)
        return {
            "audit_rounds": float(len(self.meta.rounds)),
            "audit_total_gain": float(self.meta.flags.total_gain),
            "audit_flagged_clients": float(len(self.flags)),
            "audit_efficiency_residual_max": worst("efficiency"),
            "audit_symmetry_residual_max": worst("symmetry"),
            "audit_null_player_residual_max": worst("null_player"),
            "audit_evaluations": float(sum(r["evaluations"] for r in self.meta.rounds)),
        }

    def save(self, directory: str | Path, plots: bool = True) -> Path:
        """Write tables (Parquet and CSV), ``audit.json`` and, with ``plots``, the PNG plots and ``report.html``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in ((ROUNDS_FILE, self.rounds), (CLIENTS_FILE, self.clients)):
            frame.to_parquet(directory / f"{name}.parquet", index=False)
            frame.to_csv(directory / f"{name}.csv", index=False)
        if plots and self.state == NOT_AUDITABLE:
            (directory / HTML_FILE).write_text(render_not_auditable(self.meta.to_dict()), encoding="utf-8")
        elif plots:
            audit_plots.values_heatmap(self.rounds, directory / PLOTS["heatmap"])
            level = self.meta.config.ci_level
            audit_plots.cumulative_values(self.clients, level, directory / PLOTS["cumulative"])
            images = {"Shapley value per round": directory / PLOTS["heatmap"],
                      "Cumulative value per client": directory / PLOTS["cumulative"]}
            if self.meta.convergence:
                audit_plots.convergence(self.meta.convergence, directory / PLOTS["convergence"], level)
                images["Convergence of the sampled estimate"] = directory / PLOTS["convergence"]
            (directory / HTML_FILE).write_text(render_html(self.meta.to_dict(), images), encoding="utf-8")
        write_json(directory / META_FILE, self.meta.to_dict())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AuditReport:
        directory = Path(directory)
        return cls(
            rounds=pd.read_parquet(directory / f"{ROUNDS_FILE}.parquet"),
            clients=pd.read_parquet(directory / f"{CLIENTS_FILE}.parquet"),
            meta=AuditMeta.from_dict(read_json(directory / META_FILE)),
        )
