"""One federated knowledge-graph completion run, validated up front, and the file ``fedmm run`` reads for one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedmm.config import apply_overrides, read_config_file, validated
from fedmm.impute_config import DiffusionConfig
from fedmm.kg.data import KG_NAMES

TASK = "fedmkgc"

# method -> (federated, multimodal, HidE imputation, MMFeD3 dual distillation)
METHODS = {
    "local": (False, False, False, False),
    "fede": (True, False, False, False),
    "fede_text": (True, True, False, False),
    "fede_hide": (True, True, True, False),
    "mmfed3": (True, True, False, True),
    "mmfed3_hide": (True, True, True, True),
    "centralized": (False, True, False, False),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DistillConfig(_Section):
    """MMFeD3's mutual distillation between a client's private model and its copy of the global one."""

    logit_weight: float = Field(0.5, ge=0, description="weight of the KL term between the two score distributions")
    feature_weight: float = Field(0.1, ge=0, description="weight of the squared distance between entity embeddings")
    temperature: float = Field(2.0, gt=0)


class HidEConfig(DiffusionConfig):
    """HidE's denoiser, trained inside each client every round."""

    local_epochs: int = Field(1, ge=1)
    hidden: int = Field(128, ge=1)
    timesteps: int = Field(100, ge=2)
    sampling_steps: int = Field(5, ge=1)
    samples: int = Field(4, ge=1)


class KGConfig(_Section):
    """Dataset, federation, missingness, model and training of one FedMKGC run."""

    dataset: Literal[KG_NAMES] = "umls"
    method: Literal[tuple(METHODS)] = "fede"
    seed: int = 0
    clients: int = Field(5, ge=1, description="clients, each owning a share of the relations (FedE-style)")
    keep: float = Field(0.25, gt=0, le=1, description="share of each client's training triples it keeps")
    missing_rate: float = Field(0.0, ge=0, lt=1, description="chance a (client, entity) lacks a non-structure modality")
    scorer: Literal["complex", "rotate"] = "complex"
    dim: int = Field(64, ge=2, description="complex dimensions of entity and relation embeddings")
    rounds: int = Field(30, ge=1)
    local_epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.03, gt=0, description="Adam step of the embeddings")
    feature_lr: float = Field(0.0001, gt=0, description="Adam step of the modality projections (dense: a step moves every entity)")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    n3_weight: float = Field(0.15, ge=0, description="N3 regularisation of the scored embeddings")
    distill: DistillConfig = DistillConfig()
    hide: HidEConfig = HidEConfig()

    @property
    def federated(self) -> bool:
        return METHODS[self.method][0]

    @property
    def multimodal(self) -> bool:
        return METHODS[self.method][1]

    @property
    def hidden_imputation(self) -> bool:
        return METHODS[self.method][2]

    @property
    def dual_distillation(self) -> bool:
        return METHODS[self.method][3]

    def effective(self) -> KGConfig:
        """The config with the knobs this method ignores reset, so equal runs hash equal."""
        update: dict = {}
        if not self.multimodal:
            update["missing_rate"] = 0.0
        if not self.hidden_imputation:
            update["hide"] = HidEConfig()
        if not self.dual_distillation:
            update["distill"] = DistillConfig()
        return self.model_copy(update=update)

    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.effective().model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


class KGRegistryConfig(_Section):
    """Registration of a FedMKGC model and its promotion gates (filtered test MRR)."""

    model_name: str = Field("fedmm-kg", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    min_mrr: float = Field(0.3, ge=0, le=1, description="gate: filtered test MRR floor")
    champion_margin: float = Field(0.0, ge=0, le=1, description="how much the challenger's MRR must beat the champion's by")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the paired t interval of (challenger - champion) "
                              "reciprocal ranks over the same test queries; promoted when its lower bound is at least the margin")
    min_test_queries: int = Field(100, ge=2, description="gate: a version ranked on fewer test queries is not promoted")


class KGRunConfig(_Section):
    """A ``task: fedmkgc`` file for ``fedmm run``: one run and how its model is registered."""

    task: Literal[TASK] = TASK
    run: KGConfig = KGConfig()
    registry: KGRegistryConfig = KGRegistryConfig()


def load_kg_run_config(path: str | Path, overrides: list[str] | None = None) -> KGRunConfig:
    """Read a ``task: fedmkgc`` run file and apply ``key.path=value`` overrides."""
    return validated(KGRunConfig, apply_overrides(read_config_file(path), list(overrides or [])))
