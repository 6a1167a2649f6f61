"""FedMMKT settings: the server generator, what a round exchanges, how the server fine-tunes, and evaluation.

The federation itself (data source, Dirichlet partition, modality mask, task model, FedAvg
rounds, registry gates) is an ordinary fedmm :class:`~fedmm.config.Config` read from
``base`` with ``set`` overrides, so it is validated by the same rules as ``fedmm run``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fedmm.fl.params.fedmmkt import FedMMKTConfig

TASK = "fedmmkt"
METHODS = ("fedavg", "fedavg_frozen", "fedmmkt")
"""FedAvg; FedAvg plus prompted images from the frozen (pretrained) generator; FedMMKT (the generator co-enhanced)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorConfig(_Section):
    """The server's text-conditioned diffusion model of 16x16 images, pretrained on ``load_digits``."""

    hidden: int = Field(384, ge=8, description="width of the denoiser MLP")
    timesteps: int = Field(100, ge=2, description="diffusion steps of the noise schedule")
    sampling_steps: int = Field(20, ge=2, description="DDIM steps (eta = 0)")
    guidance: float = Field(2.0, ge=1.0, description="classifier-free guidance weight")
    condition_dropout: float = Field(0.15, ge=0.0, lt=1.0, description="share of training samples without their prompt")
    pretrain_steps: int = Field(4000, ge=1, description="optimiser steps of pretraining on load_digits")
    batch_size: int = Field(128, ge=1, description="pretraining batch size")
    lr: float = Field(2e-3, gt=0, description="pretraining learning rate (Adam, cosine schedule)")
    seed: int = Field(0, description="seed of the generator's initialisation, projection and pretraining")

    def key(self) -> str:
        """The cache key of the pretrained weights: these settings and the text model's hash."""
        from fedmm.kg.text import MINILM_SHA256

        payload = json.dumps([self.model_dump(mode="json"), MINILM_SHA256["model.safetensors"]], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class FinetuneConfig(_Section):
    """How the server adapts the generator to the clients' feedback each round."""

    steps: int = Field(20, ge=0, description="optimiser steps per round")
    lr: float = Field(1e-3, gt=0, description="the server's Adam learning rate")
    batch_size: int = Field(64, ge=1, description="synthetic images (and prior digits) per fine-tuning step")
    reward_weight: float = Field(3.0, ge=0, description="weight of the ensemble-weighted class term")
    reward_temperature: float = Field(0.2, gt=0, description="image weights: ensemble probability of the prompted class to 1/T")
    align_weight: float = Field(1.0, ge=0, description="weight of the prototype alignment term")
    prior_weight: float = Field(1.0, ge=0, description="weight of the diffusion loss on the server's own digits")
    max_noise: float = Field(0.5, gt=0, le=1, description="largest share of the schedule a sample is re-noised to")


class MMKTConfig(_Section):
    """One FedMMKT run: a method, a seed, the federation config and the FedMMKT sections."""

    method: Literal[METHODS] = "fedmmkt"
    seed: int = 0
    base: str = "configs/uci_mfeat.yaml"
    set: list[str] = Field(default_factory=list, description="overrides of the base federation config")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    images_per_class: int = Field(20, ge=1, description="prompted images per class the server sends each round")
    eval_images_per_class: int = Field(50, ge=2, description="generated images per class for the server-side metrics")

    def run_id(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @property
    def strategy(self) -> str:
        """The registered strategy of the method: FedAvg, or FedMMKT with the generator co-enhanced or frozen."""
        return "fedavg" if self.method == "fedavg" else "fedmmkt"

    def strategy_section(self) -> FedMMKTConfig:
        """The ``train.fedmmkt`` section of this run (:class:`~fedmm.fl.params.fedmmkt.FedMMKTConfig`)."""
        from fedmm.fl.params.fedmmkt import FedMMKTConfig

        return FedMMKTConfig(generator=self.generator, finetune=self.finetune, images_per_class=self.images_per_class,
                             co_enhance=self.method == "fedmmkt")


class MMKTRegistryConfig(_Section):
    """Where a ``fedmm run`` of FedMMKT registers: the client task model and the co-enhanced generator."""

    model_name: str = Field("fedmm-mmkt-client", min_length=1, description="the client task model (replaces the "
                            "federation config's registry.model_name; its gates stay the federation config's)")
    generator_model_name: str = Field("fedmm-mmkt-generator", min_length=1)


class MMKTRunConfig(_Section):
    """A ``task: fedmmkt`` file for ``fedmm run``: one FedMMKT run (``run``) and where it registers."""

    task: Literal[TASK] = TASK
    run: MMKTConfig = Field(default_factory=MMKTConfig)
    registry: MMKTRegistryConfig = Field(default_factory=MMKTRegistryConfig)

    def cell(self) -> MMKTConfig:
        """The run as one FedMMKT cell, registering the client model under ``registry.model_name``."""
        return self.run.model_copy(update={"set": [*self.run.set, f"registry.model_name={self.registry.model_name}"]})
