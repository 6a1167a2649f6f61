"""Pipeline configuration: one validated schema for the CLI, ZenML, kfp and DVC.

A config is YAML; ``--set key.path=value`` overrides are applied before validation, so a
bad value (unknown key, a missing rate of 1.5, zero clients) fails before any work starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from fedmm.errors import UserError
from fedmm.fl.params import DECLARED as STRATEGY_INFO
from fedmm.fl.params import sections as strategy_sections
from fedmm.impute_config import ImputeConfig


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the data comes from and how it is windowed and split."""

    source: str = Field("smartwatch", description="built-in dataset name, or 'npz' for your own file")
    path: str | None = Field(None, description="the .npz file when source is 'npz'")
    window: int = Field(100, ge=8, description="window length in time steps (time-series sources)")
    stride: int = Field(50, ge=1, description="step between window starts")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of recordings held out for test")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="share of recordings held out for validation")
    max_samples: int | None = Field(
        None, ge=20, description="a seeded subsample of at most this many samples (tabular sources: clothing)"
    )
    text_encoder: Literal["tfidf", "minilm"] = Field(
        "tfidf", description="how text modalities are embedded (clothing): TF-IDF + SVD, 64-d and fast, or "
        "all-MiniLM-L6-v2 from its wheel, 384-d (about 50 texts/s on 2 CPU threads, cached under $FEDMM_HOME)",
    )
    square_images: bool = Field(
        False, exclude_if=lambda on: not on,
        description="the pix view (uci_mfeat, or a file holding UCI's 240 pixel averages) as 16x16 images in "
        "[0, 1], the format of FedMMKT's generator; applied as the source loads and at each site to its own "
        "file (a task: fedmmkt run sets it). Left out of the config's dump when false",
    )
    holdout_subjects: int | Literal["auto"] = Field(
        "auto",
        description="whole subjects held out as a second test set; 'auto' holds out one per five subjects, "
        "at most 2 (none below five subjects)",
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.source == "npz" and not self.path:
            raise ValueError("data.path is required when data.source is 'npz'")
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("data.test_fraction + data.val_fraction must be below 1")
        if self.stride > self.window:
            raise ValueError("data.stride must not exceed data.window (windows would skip samples)")
        if self.holdout_subjects != "auto" and self.holdout_subjects < 0:
            raise ValueError(f"data.holdout_subjects={self.holdout_subjects} must be 'auto' or at least 0")
        return self


class PartitionConfig(_Section):
    """How the training pool is split across clients."""

    scheme: Literal["natural", "iid", "dirichlet", "quantity"] = Field(
        "natural",
        description="natural: one client per subject; iid: uniform shares; dirichlet: label skew (alpha); "
        "quantity: size skew (alpha)",
    )
    num_clients: int | None = Field(None, ge=1, description="required unless scheme is natural")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (dirichlet, quantity)")
    min_samples: int = Field(10, ge=1, description="smallest client the partitioner may produce")
    proxy_fraction: float = Field(
        0.0, ge=0, lt=0.5,
        description="share of the training pool the server holds as a labelled proxy set (every modality "
        "present, given to no client); the knowledge-transfer strategies need it",
    )
    proxy_from: Literal["pool", "subjects"] = Field(
        "pool", description="pool: a class-stratified proxy_fraction of the training rows; subjects: every row of "
        "a proxy_fraction of the training subjects (at least one), who then hold no client data",
    )
    label_fraction: float = Field(
        1.0, gt=0, le=1, description="share of each client's samples that keep their label (semi-supervised below 1)"
    )

    @model_validator(mode="after")
    def _check(self) -> PartitionConfig:
        if self.scheme != "natural" and self.num_clients is None:
            raise ValueError(f"partition.num_clients is required for scheme {self.scheme!r}")
        if self.scheme == "natural" and self.num_clients is not None:
            raise ValueError("partition.num_clients must be unset for the natural scheme (one client per subject)")
        return self


class ModalityGroup(_Section):
    """A share of the clients that hold exactly these modalities."""

    modalities: tuple[str, ...] = Field(min_length=1, description="the modalities every client of this group holds")
    fraction: float = Field(gt=0, le=1, description="share of the clients in this group (the groups sum to 1)")


class MaskConfig(_Section):
    """Which modalities are missing: whole modalities per client and single samples."""

    client_modalities: tuple[ModalityGroup, ...] = Field(
        default=(), description="client groups by the modalities they hold; empty: every client holds all"
    )
    missing_rate: dict[str, float] = Field(
        default_factory=dict, description="per-sample missing rate per modality, each in [0, 1)"
    )
    random_missing_rate: float = Field(
        0.0, ge=0, lt=1, description="share of samples that lose one modality chosen at random (never their last)"
    )

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        for name, rate in self.missing_rate.items():
            if not 0 <= rate < 1:
                raise ValueError(f"mask.missing_rate.{name}={rate} must be in [0, 1)")
        if self.client_modalities:
            total = sum(group.fraction for group in self.client_modalities)
            if abs(total - 1) > 1e-6:
                raise ValueError(f"mask.client_modalities fractions sum to {total:g}, not 1")
        if self.random_missing_rate and any(self.missing_rate.values()):
            raise ValueError("use either mask.missing_rate (per modality) or mask.random_missing_rate, not both")
        return self


CORRUPTION_KINDS = (
    "label_flip", "feature_noise", "drop_modality", "free_rider_zero", "free_rider_noise", "scaled_update",
)


class ClientCorruption(_Section):
    """One deliberately corrupted client, to measure how well the contribution audit finds it.

    Data corruptions change what the client trains on: ``label_flip`` (``fraction`` of its
    labels moved to another class), ``feature_noise`` (Gaussian noise of ``noise_std`` times
    each modality's spread), ``drop_modality`` (``modality`` silently zeroed while the mask
    still says present). Update corruptions change what it sends: ``free_rider_zero`` (no
    training, a zero update), ``free_rider_noise`` (no training, Gaussian noise of std
    ``noise_std`` per parameter), ``scaled_update`` (an honest update times ``scale``).
    """

    client: int = Field(ge=0, description="index of the corrupted client")
    kind: Literal[CORRUPTION_KINDS] = Field(description="what goes wrong (see the kinds above)")
    fraction: float = Field(0.5, gt=0, le=1, description="label_flip: share of labels flipped")
    noise_std: float = Field(1.0, gt=0, description="feature_noise: x modality std; free_rider_noise: per parameter")
    modality: str | None = Field(None, description="drop_modality: which modality")
    scale: float = Field(10.0, description="scaled_update: factor on the honest update")

    @model_validator(mode="after")
    def _check(self) -> ClientCorruption:
        if self.kind == "drop_modality" and self.modality is None:
            raise ValueError("a drop_modality corruption needs a modality")
        return self


class CorruptionConfig(_Section):
    """Corrupted clients injected by the partition stage (none by default); the ground truth is recorded."""

    clients: tuple[ClientCorruption, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> CorruptionConfig:
        ids = [c.client for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError(f"corruption.clients names a client twice: {sorted(ids)}")
        return self


class ModelConfig(_Section):
    """Per-modality encoders, masked fusion and a classifier head."""

    embed_dim: int = Field(64, ge=1, le=4096, description="size of each modality's embedding")
    channels: int = Field(32, ge=1, le=4096, description="conv channels of the 1D CNN encoders (MLP width for views)")
    fusion_dim: int = Field(64, ge=1, le=4096, description="size of the fused representation the head classifies")


class TrainSchedule(_Section):
    """What every strategy shares: :data:`TrainConfig` adds each strategy's own section after these fields."""

    strategy: Literal[tuple(STRATEGY_INFO)] = Field(
        "fedavg", description="the federated strategy (its settings: the section of the same name)"
    )
    transport: Literal["inprocess", "flower"] = Field(
        "inprocess",
        description="inprocess: every client simulated in this process; flower: a Flower SuperLink and one "
        "SuperNode per site (real processes; settings in the flower section)",
    )
    rounds: int = Field(20, ge=1, le=100_000, description="federated rounds")
    client_fraction: float = Field(1.0, gt=0, le=1, description="share of the clients selected each round")
    local_epochs: int = Field(1, ge=1, le=10_000, description="epochs over its own data each client trains per round")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="local mini-batch size")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="the clients' local optimizer")
    lr: float = Field(0.003, gt=0, le=10, description="the local optimizer's learning rate (above 10 every optimizer here diverges)")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA when PyTorch sees a GPU, else the CPU",
    )
    gpus: int = Field(0, ge=0, le=8, description="GPUs the orchestrator requests for the training step")
    centralized: bool = Field(True, description="also train the pooled-data upper reference")
    engine: Literal["auto", "loop", "vmap"] = Field(
        "auto",
        description="in-process client training: loop (one client after another), vmap (a round's clients "
        "together with torch.func, where the strategy's client side allows it; else the loop), auto: vmap",
    )
    eval_every: int = Field(
        0, ge=0,
        description="rounds between scoring the test splits (validation is scored every round); 0: after the last "
        "round only",
    )

    @property
    def needs_proxy(self) -> bool:
        """Whether the strategy uses the server's proxy set: the config's early check, before torch loads.

        Read from the strategy's declaration (:mod:`fedmm.fl.params`), as the strategy class reads it.
        """
        info = STRATEGY_INFO[self.strategy]
        return info.needs_proxy(getattr(self, info.section) if info.section else None)


TrainConfig = create_model(  # the registry's sections, assembled: a strategy's parameters live in its own module
    "TrainConfig", __base__=TrainSchedule, __module__=__name__,
    __doc__="Federated rounds, local training and the centralized reference.",
    **{section: (model, model()) for section, model in strategy_sections().items()},
)


class FlowerConfig(_Section):
    """The Flower deployment runtime (``train.transport: flower``).

    Without ``superlink`` fedmm starts a SuperLink and one SuperNode per client on loopback,
    each SuperNode holding only its own site file, and stops them all afterwards. With
    ``superlink`` (``HOST:PORT`` of a SuperLink that sites have joined) it starts nothing and
    trains with the SuperNodes connected there.
    """

    superlink: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-\[\]:]+:\d+$", description="HOST:PORT of an existing SuperLink (none: loopback)",
    )
    num_sites: int | None = Field(None, ge=1, description="with superlink: SuperNodes to wait for (default: the partition's clients)")
    round_timeout: float = Field(120.0, gt=0, description="seconds a round waits for its clients' replies")
    min_clients: int | None = Field(
        None, ge=1, description="replies a round needs to go on (default: half its selected clients, rounded up)",
    )
    connect_timeout: float = Field(120.0, gt=0, description="seconds to wait for every site to connect")
    tls: bool = Field(False, description="loopback: TLS with a CA and certificates generated in the state folder")
    node_auth: bool = Field(False, description="loopback: SuperNode authentication with generated, registered keys")
    root_certificates: str | None = Field(None, description="with superlink: the CA certificate (PEM) to verify it by")
    insecure: bool = Field(False, description="with superlink: connect without TLS (refused unless it is loopback)")
    superexec_secret: str | None = Field(
        None, description="with superlink: run the ServerApp here (flower-superexec) with this SuperExec secret file; "
        "the SuperLink runs none (fedmm superlink --pki)",
    )
    validation_data: str | None = Field(
        None, description="a deployed run: the coordinator's own validation samples (.npz); with test_data, the "
        "deployed graph runs (no training data here: the sites hold it)",
    )
    test_data: str | None = Field(None, description="a deployed run: the coordinator's own test samples (.npz)")
    threads_per_site: int = Field(1, ge=1, description="torch threads of each site and of the ServerApp")
    validate_sites: bool = Field(True, description="each site runs the data suite on its own file before training")
    venv: str = Field(".venv-site", description="the Flower virtual environment (make install-site builds it)")

    @model_validator(mode="after")
    def _check(self) -> FlowerConfig:
        if self.superlink is None and (self.root_certificates or self.insecure or self.superexec_secret):
            raise ValueError("flower.root_certificates, flower.insecure and flower.superexec_secret apply only with "
                             "flower.superlink")
        if self.superlink is not None and not self.insecure and not self.root_certificates:
            raise ValueError(f"flower.superlink {self.superlink!r} needs flower.root_certificates (or flower.insecure on loopback)")
        if self.superlink is not None and self.insecure and not is_loopback(self.superlink):
            raise ValueError(f"flower.insecure is allowed only on loopback, not {self.superlink!r}: give flower.root_certificates")
        deployed = {"validation_data": self.validation_data, "test_data": self.test_data}
        if any(deployed.values()):
            missing = [f"flower.{k}" for k, v in {**deployed, "superlink": self.superlink, "num_sites": self.num_sites,
                                                   "superexec_secret": self.superexec_secret}.items() if v is None]
            if missing:
                raise ValueError(f"a deployed run (flower.validation_data, flower.test_data) also needs {', '.join(missing)}")
        return self


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` names this machine's loopback interface."""
    import ipaddress

    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ValidationConfig(_Section):
    """Data-quality gates checked before training."""

    min_samples_per_client: int = Field(10, ge=1, description="gate: every client holds at least this many samples")
    missing_rate_tolerance: float = Field(
        0.05, ge=0, le=1, description="gate: how far a realised missing rate may stray from the configured one",
    )
    value_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="plausible [low, high] per modality; the source's when empty"
    )

    @model_validator(mode="after")
    def _check(self) -> ValidationConfig:
        for name, (low, high) in self.value_bounds.items():
            if low > high:
                raise ValueError(f"validation.value_bounds.{name}: low {low:g} is above high {high:g}")
        return self


class RegistryConfig(_Section):
    """Model registration and promotion gates."""

    model_name: str = Field(
        "fedmm-smartwatch", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="the registered model's name",
    )
    min_macro_f1: float = Field(0.5, ge=0, le=1, description="test macro-F1 floor for promotion")
    champion_margin: float = Field(0.0, ge=0, le=1, description="how much the challenger must beat the champion by")
    require_clean_audit: bool = Field(
        True, description="gate: promote only if the contribution audit flagged no client with one of audit.gate_flags"
    )
    min_test_samples: int = Field(30, ge=1, description="gate: a version tested on fewer samples is not promoted")
    confidence: float = Field(
        0.95, gt=0, lt=1,
        description="level of the paired bootstrap interval of (challenger - champion) macro-F1; the challenger "
        "is promoted when its lower bound is at least champion_margin",
    )
    bootstrap_resamples: int = Field(1000, ge=100, le=100000, description="resamples of that interval (by recording)")


class AuditConfig(_Section):
    """Contribution audit: one cooperative game per stored round, valued per client.

    The utility of a coalition is the validation ``metric`` of the round's start model plus
    the coalition's updates (no retraining). ``weighting: fixed`` (default) keeps each
    client's FedAvg weight among all of the round's participants: the grand coalition is the
    model FedAvg produced, values sum to its gain over the start model, and a client sending
    a zero update is an exact null player. With ``renormalised`` each coalition is a FedAvg
    of its own members, so a zero update dilutes the others and is not null.

    Uncertainty: per-sample values (log-loss, accuracy) or a cluster bootstrap (macro-F1),
    clustered by recording, else subject, else sample; CR1 standard errors with t quantiles
    on G - 1 degrees of freedom, plus the Monte Carlo variance of sampled rounds
    (:mod:`fedmm.audit.inference`). ``estimator: sampled`` draws antithetic permutation pairs
    until each Monte Carlo SE is at most ``mc_rel_tol`` x the validation SE (after
    ``min_samples`` pairs, within ``max_evaluations``); ``exact`` enumerates all 2^n
    coalitions up to ``exact_max_players`` clients. Rounds of ``scale_from`` clients or more
    draw ``scale_permutations`` permutations, and one more cut into blocks of ``scale_block_size``
    clients for their Monte Carlo error, with leave-one-out to first order
    (:mod:`fedmm.audit.rounds`).

    Flags per client over the run: ``harmful`` (Holm-adjusted one-sided p < ``alpha`` and the
    CI's upper bound < -``min_effect``, in metric units; otherwise the verdict is
    ``insufficient evidence`` while the CI reaches below -``min_effect``, with the minimum
    detectable effect at power ``mde_power``), ``free_rider`` (a zero update: median norm
    ratio <= ``free_rider_norm``; or a noise update: root-mean-square cosine over rounds to
    the other clients' aggregate update below ``min_cosine``, where a random direction in P
    dimensions has about 1/sqrt(P)), ``anomalous`` (median update norm / the round's median
    above ``anomalous_norm_ratio``; small clients legitimately send small updates; or updates
    opposed to the others': per-round median cosine to each other client's update, one-sided
    t-test over rounds Holm-adjusted below ``alpha`` and its CI below -``min_cosine``).
    ``gate_flags`` are the flags that fail the ``clean_audit`` promotion gate.
    ``linearised`` values a first-order approximation of each game instead (far cheaper; its
    error against the true game on ``linearised_check`` random coalitions is reported).
    """

    weighting: Literal["fixed", "renormalised"] = Field(
        "fixed", description="fixed: members keep their FedAvg weight among all participants; renormalised: a "
        "coalition is a FedAvg of its own members",
    )
    metric: Literal["accuracy", "macro_f1", "neg_log_loss"] = Field(
        "neg_log_loss", description="the validation metric that is a coalition's utility",
    )
    estimator: Literal["sampled", "exact"] = Field("sampled", description="sampled coalitions, or all 2^n")
    exact_max_players: int = Field(10, ge=1, le=20, description="estimator exact: 2^n evaluations up to this many")
    max_evaluations: int = Field(2000, ge=16, description="sampled rounds: distinct coalitions evaluated at most")
    mc_rel_tol: float = Field(0.1, gt=0, description="sampled rounds: stop at Monte Carlo SE <= this x validation SE")
    min_samples: int = Field(6, ge=2, description="sampled rounds: permutation samples (antithetic pairs) at least")
    antithetic: bool = Field(True, description="sampled rounds: pair each permutation with its reverse")
    scale_from: int = Field(50, ge=2, description="rounds of this many clients or more are sampled at scale")
    scale_permutations: int = Field(1, ge=1, description="at scale: full permutations valued per round")
    scale_block_size: int = Field(6, ge=1, description="at scale: clients per block of the permutation that measures the error")
    validation_windows: Literal["non_overlapping", "all"] = Field(
        "non_overlapping", description="score every ceil(window/stride)-th window of a recording, or all windows"
    )
    bootstrap_replicates: int = Field(200, ge=20, description="macro_f1: cluster-bootstrap replicates")
    banzhaf_evaluations: int = Field(0, ge=0, description="sampled rounds: MSR Banzhaf budget (0: exact rounds only)")
    clusters: int = Field(0, ge=0, description="clustered Shapley (FedMobile) with this many clusters (0: off)")
    ci_level: float = Field(0.95, gt=0, lt=1, description="level of the reported intervals")
    alpha: float = Field(0.05, gt=0, lt=1, description="family-wise error rate of the harmful flags (Holm)")
    min_effect: float = Field(0.01, ge=0, description="harmful: the CI must lie below -min_effect (metric units)")
    mde_power: float = Field(0.8, gt=0, lt=1, description="power at which the minimum detectable effect is reported")
    free_rider_norm: float = Field(0.05, ge=0, description="zero-update free rider: update norm / the round's median")
    min_cosine: float = Field(0.05, gt=0, lt=1, description="noise free rider: RMS cosine to the others below this")
    anomalous_norm_ratio: float = Field(3.0, gt=1, description="anomalous: median update norm ratio above this")
    gate_flags: tuple[Literal["harmful", "free_rider", "anomalous"], ...] = Field(
        ("harmful", "anomalous"), description="flags that fail the clean_audit promotion gate"
    )
    workers: int = Field(0, ge=0, description="rounds audited in parallel on CPU, one torch thread each (0: one per core)")
    memory_mb: float = Field(256.0, gt=0, description="memory one batched evaluation may use")
    backend: Literal["auto", "vmap", "sequential"] = Field("auto", description="auto: vmap on CUDA, else sequential")
    linearised: bool = Field(False, description="value a first-order approximation of each round's game (fast)")
    linearised_check: int = Field(32, ge=0, description="random coalitions per round checked against the true game")


class Config(_Section):
    """The whole pipeline configuration."""

    seed: int = Field(0, ge=0, le=2**63 - 1, description="fits in 64 bits (torch, NumPy and SQL stores take it)")
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    mask: MaskConfig = MaskConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    flower: FlowerConfig = FlowerConfig()
    validation: ValidationConfig = ValidationConfig()
    registry: RegistryConfig = RegistryConfig()
    audit: AuditConfig = AuditConfig()
    impute: ImputeConfig = ImputeConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.train.needs_proxy and self.partition.proxy_fraction == 0:
            raise ValueError(
                f"train.strategy {self.train.strategy!r} needs a server proxy set: set partition.proxy_fraction > 0"
            )
        if self.train.strategy == "fedmobile" and self.impute.serve != "none":
            raise ValueError(
                "impute.serve must be 'none' for train.strategy 'fedmobile' (it predicts with its own generator)"
            )
        selected = [name for name in self.impute.imputers if self.impute.select.get(name)]
        if self.impute.evaluate and selected and self.data.val_fraction == 0:
            raise ValueError(f"impute.select chooses {', '.join(selected)} settings on the validation split: "
                             "set data.val_fraction > 0 or impute.select={}")
        return self

    def hash(self, *sections: str) -> str:
        """SHA-256 of the canonical JSON of the given sections (all when none given)."""
        payload = self.model_dump(mode="json")
        if sections:
            payload = {name: payload[name] for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as error:
        reason = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({reason})") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides to a raw config mapping (unknown keys surface in validation)."""
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_number(annotation: Any) -> bool:
    """Whether a field holds an int or a float (optionally None) and never a bool."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = set(typing.get_args(annotation)) - {type(None)}
    else:
        members = {annotation}
    return bool(members) and members <= {int, float}


def _scalar_problems(model: type[BaseModel], raw: Any, where: str = "") -> list[str]:
    """Values pydantic would coerce silently: a YAML boolean for a number (``rounds: true`` is not 1)."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        return problems
    for name, value in raw.items():
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            continue
        section = _model_type(field.annotation)
        if section is not None:
            problems += _scalar_problems(section, value, f"{where}{name}.")
        elif isinstance(value, bool) and _is_number(field.annotation):
            problems.append(f"  {where}{name}: expected a number, got the boolean {value}")
    return problems


def _nonfinite(raw: Any, where: str = "config") -> list[str]:
    """Every infinite or NaN number in a raw config (no setting takes one)."""
    if isinstance(raw, float) and not math.isfinite(raw):
        return [f"  {where}: {raw} is not a finite number"]
    if isinstance(raw, dict):
        return [p for key, value in raw.items() for p in _nonfinite(value, f"{where}.{key}" if where != "config" else str(key))]
    if isinstance(raw, (list, tuple)):
        return [p for i, value in enumerate(raw) for p in _nonfinite(value, f"{where}.{i}")]
    return []


def config_from_dict(raw: dict | None, overrides: list[str] | None = None) -> Config:
    """Validate a raw mapping (plus overrides) into a :class:`Config`, or raise ConfigError."""
    raw = apply_overrides(copy.deepcopy(raw or {}), list(overrides or []))
    problems = _scalar_problems(Config, raw) + _nonfinite(raw)
    if problems:
        raise ConfigError(_invalid(problems))
    return validated(Config, raw)


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], raw: dict) -> Model:
    """``raw`` validated as ``model`` (a config file's schema), or a ConfigError: one line per problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_invalid(_describe(error).split("\n"))) from None


def _invalid(problems: list[str]) -> str:
    """One line for one problem, one line per problem for several."""
    if len(problems) == 1:
        return "invalid configuration: " + problems[0].strip()
    return "invalid configuration:\n" + "\n".join(problems)


def read_config_file(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file, or ConfigError naming what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (defaults when None) and apply overrides."""
    return config_from_dict(read_config_file(path) if path is not None else {}, overrides)
