"""An experiment matrix: datasets x strategies x missing patterns x missing rates x seeds.

Every cell is a base config plus ``key.path=value`` overrides, the same strings ``fedmm run
--set`` takes, so any cell can be rerun alone through the training pipeline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedmm.config import Config, ConfigError, load_config
from fedmm.data.sources import source_info

PATTERNS = ("one_modality", "random_modality", "heterogeneous_clients")


class DatasetEntry(BaseModel):
    """One dataset of the matrix: overrides on the base config, and which modality goes missing."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(None, description="this dataset's base config (default: the experiment's)")
    set: list[str] = Field(default_factory=list, description="overrides, as for fedmm run --set")
    missing_modality: str | None = Field(None, description="one_modality pattern: which one (default: the last)")


class StrategyEntry(BaseModel):
    """A named variant of a strategy: its overrides go after the cell's, so one matrix compares settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$", description="the row name in the results table")
    strategy: str = Field(description="train.strategy of the variant")
    set: list[str] = Field(default_factory=list, description="overrides, as for fedmm run --set")


class ExperimentSpec(BaseModel):
    """The matrix as written in ``configs/experiments/*.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: str | None = Field(None, description="base config, relative to the experiment file")
    set: list[str] = Field(default_factory=list, description="overrides applied to every cell")
    datasets: dict[str, DatasetEntry] = Field(min_length=1)
    strategies: list[str | StrategyEntry] = Field(min_length=1, description="names, or named variants")
    patterns: list[Literal[PATTERNS]] = Field(min_length=1)
    missing_rates: list[float] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        for rate in self.missing_rates:
            if not 0 <= rate < 1:
                raise ValueError(f"missing rate {rate} must be in [0, 1)")
        names = [entry.name for entry in self.variants()]
        if len(names) != len(set(names)):
            raise ValueError(f"strategies name a row twice: {names}")
        return self

    def variants(self) -> list[StrategyEntry]:
        """Every strategy entry as a named variant (a bare name is the strategy with no overrides)."""
        return [StrategyEntry(name=s, strategy=s) if isinstance(s, str) else s for s in self.strategies]


@dataclass(frozen=True)
class Cell:
    """One run of the matrix."""

    dataset: str
    strategy: str
    pattern: str
    missing_rate: float
    seed: int
    overrides: tuple[str, ...]
    config: Config
    base: Path | None

    @property
    def cell_id(self) -> str:
        """Stable id: a hash of the full resolved config."""
        return hashlib.sha256(json.dumps(self.config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

    def run_command(self) -> str:
        """The ``fedmm run`` command that trains this cell alone."""
        parts = ["fedmm run"] + ([f"--config {self.base}"] if self.base else [])
        return " ".join(parts + [f"--set '{item}'" for item in self.overrides])


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


def pattern_overrides(pattern: str, rate: float, modalities: list[str], missing: str | None) -> list[str]:
    """Mask overrides for a missing pattern at a rate.

    - ``one_modality``: ``missing`` (default: the last modality) is missing per sample at ``rate``;
    - ``random_modality``: each sample loses one randomly chosen modality with probability ``rate``;
    - ``heterogeneous_clients``: a share ``rate`` of the clients hold a single modality (split
      evenly across modalities), the others hold all of them.
    """
    if pattern == "one_modality":
        return [f"mask.missing_rate={_flow({missing or modalities[-1]: rate})}"] if rate else []
    if pattern == "random_modality":
        return [f"mask.random_missing_rate={rate}"] if rate else []
    if not rate:
        return []
    groups = [{"modalities": list(modalities), "fraction": round(1 - rate, 12)}]
    groups += [{"modalities": [m], "fraction": round(rate / len(modalities), 12)} for m in modalities]
    groups[0]["fraction"] = round(1 - sum(g["fraction"] for g in groups[1:]), 12)
    return [f"mask.client_modalities={_flow(groups)}"]


def spec_task(path: str | Path) -> str | None:
    """The ``task:`` an experiment file declares (``fedmkgc``, ``fedmmkt``), None for a strategy matrix or an unreadable file."""
    try:
        payload = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return payload.get("task") if isinstance(payload, dict) else None


def load_spec(path: str | Path) -> tuple[ExperimentSpec, Path | None]:
    """Read an experiment file; returns the spec (dataset bases resolved) and its base config path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        spec = ExperimentSpec.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"experiment file {path} is invalid:\n{error}") from None
    resolve = lambda relative: str((path.parent / relative).resolve())
    datasets = {
        name: entry.model_copy(update={"base": resolve(entry.base)}) if entry.base else entry
        for name, entry in spec.datasets.items()
    }
    base = Path(resolve(spec.base)) if spec.base else None
    return spec.model_copy(update={"datasets": datasets}), base


def expand(spec: ExperimentSpec, base: Path | None) -> list[Cell]:
    """Every cell of the matrix with its validated config (a bad cell fails before any runs)."""
    cells = []
    for dataset, entry in spec.datasets.items():
        dataset_base = Path(entry.base) if entry.base else base
        data_config = load_config(dataset_base, spec.set + entry.set)
        modalities = list(source_info(data_config.data).modalities)
        if entry.missing_modality is not None and entry.missing_modality not in modalities:
            raise ConfigError(f"dataset {dataset}: missing_modality {entry.missing_modality!r} is not in {modalities}")
        for variant in spec.variants():
            strategy = variant.name
            for pattern in spec.patterns:
                for rate in spec.missing_rates:
                    for seed in spec.seeds:
                        overrides = (
                            *spec.set, *entry.set, f"train.strategy={variant.strategy}", f"seed={seed}",
                            *pattern_overrides(pattern, rate, modalities, entry.missing_modality), *variant.set,
                        )
                        try:
                            config = load_config(dataset_base, list(overrides))
                        except ConfigError as error:
                            raise ConfigError(f"cell {dataset}/{strategy}/{pattern}/{rate}/{seed}: {error}") from None
                        cells.append(Cell(dataset, strategy, pattern, rate, seed, overrides, config, dataset_base))
    return cells
