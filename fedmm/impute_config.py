"""Settings of the imputers and of the imputation evaluation (the pipeline config's ``impute`` section).

A leaf beside :mod:`fedmm.config`, which reads it, outside :mod:`fedmm.impute`: parsing a config loads no imputer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IMPUTER_NAMES = ("zero", "mean", "knn", "iterative", "generator", "diffusion")
SERVABLE = ("zero", "mean", "generator", "diffusion")
"""Imputers that can serve a model at inference (client-local kNN / iterative need the sample's owner)."""
RATES = (0.1, 0.3, 0.5, 0.7, 0.9)
SELECTABLE = ("knn", "iterative", "generator", "diffusion")
"""Imputers with a settings section, so ``impute.select`` can give them candidate settings."""
RANDOM = "random"
MISSING = "missing:"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KnnConfig(_Section):
    """scikit-learn ``KNNImputer`` on flattened standardised inputs, one per client."""

    n_neighbors: int = Field(5, ge=1, description="neighbours KNNImputer averages")


class IterativeConfig(_Section):
    """scikit-learn ``IterativeImputer`` (BayesianRidge) on per-modality PCA coefficients, one per client."""

    components: int = Field(8, ge=1, description="PCA components per modality (client-local basis)")
    max_iter: int = Field(10, ge=1, description="IterativeImputer's rounds of imputation")


class LatentTrainConfig(_Section):
    """Local training of a latent-space network on a client: epochs per round, batches, Adam's step, width."""

    local_epochs: int = Field(5, ge=1, description="epochs each client trains per round")
    batch_size: int = Field(64, ge=1, description="local mini-batch size")
    lr: float = Field(0.001, gt=0, description="local learning rate")
    hidden: int = Field(256, ge=1, description="width of the network's hidden layers")


class GeneratorConfig(LatentTrainConfig):
    """FedMobile's cross-modal generator: regression plus logit distillation from the frozen model."""

    distill_weight: float = Field(0.5, ge=0, description="weight of the KL term between true and generated logits")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of the distillation")


class DiffusionConfig(LatentTrainConfig):
    """HidE's conditional denoising diffusion over the missing modalities' embeddings."""

    timesteps: int = Field(200, ge=2, description="diffusion steps of the training schedule")
    sampling_steps: int = Field(10, ge=1, description="DDIM steps at imputation (deterministic, eta=0)")
    samples: int = Field(16, ge=1, description="DDIM samples averaged per imputation")

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.sampling_steps > self.timesteps:
            raise ValueError("impute.diffusion.sampling_steps must not exceed impute.diffusion.timesteps")
        return self


class GeneratorImputerConfig(GeneratorConfig):
    """The generator imputer, trained after the model by FedAvg over its own rounds."""

    rounds: int = Field(20, ge=1, description="federated rounds fitting the generator")


class DiffusionImputerConfig(DiffusionConfig):
    """The diffusion imputer, trained after the model by FedAvg over its own rounds."""

    rounds: int = Field(30, ge=1, description="federated rounds fitting the diffusion model")


Candidate = dict[str, int | float]
DEFAULT_CANDIDATES: dict[str, tuple[Candidate, ...]] = {
    "generator": ({"distill_weight": 0.5}, {"distill_weight": 0.0}, {"distill_weight": 2.0}),
    "diffusion": ({"samples": 16, "sampling_steps": 10}, {"samples": 64, "sampling_steps": 10},
                  {"samples": 16, "sampling_steps": 25}, {"samples": 64, "sampling_steps": 25}),
}


class ImputeConfig(_Section):
    """Which imputers to fit and how the evaluation masks held-out samples."""

    evaluate: bool = Field(False, description="run the evaluate_imputation step in the training pipeline")
    serve: Literal[("none", *SERVABLE)] = Field(
        "none", description="fit this imputer after training and register the model predicting through it",
    )
    imputers: tuple[Literal[IMPUTER_NAMES], ...] = Field(IMPUTER_NAMES, min_length=1, description="which to fit")
    patterns: tuple[str, ...] = Field(
        (), description="'missing:<modality>' or 'random'; empty: one per modality plus 'random'",
    )
    rates: tuple[float, ...] = Field(RATES, min_length=1, description="shares of test samples that lose something")
    knn: KnnConfig = KnnConfig()
    iterative: IterativeConfig = IterativeConfig()
    generator: GeneratorImputerConfig = GeneratorImputerConfig()
    diffusion: DiffusionImputerConfig = DiffusionImputerConfig()
    select: dict[Literal[SELECTABLE], tuple[Candidate, ...]] = Field(
        default_factory=lambda: dict(DEFAULT_CANDIDATES),
        description="candidate overrides of an imputer's section, chosen on the validation split by the mean "
                    "share of the gap recovered (never on the test split); {} keeps the sections as set",
    )

    def with_candidate(self, imputer: str, candidate: Candidate) -> ImputeConfig:
        """This config with ``candidate`` applied to ``imputer``'s section (validated)."""
        section = getattr(self, imputer)
        return self.model_copy(update={imputer: type(section).model_validate({**section.model_dump(), **candidate})})

    @model_validator(mode="after")
    def _check(self) -> ImputeConfig:
        for rate in self.rates:
            if not 0 < rate <= 1:
                raise ValueError(f"impute.rates: {rate} must be in (0, 1]")
        for pattern in self.patterns:
            if pattern != RANDOM and not (pattern.startswith(MISSING) and len(pattern) > len(MISSING)):
                raise ValueError(f"impute.patterns: {pattern!r} is neither 'random' nor 'missing:<modality>'")
        if len(set(self.imputers)) != len(self.imputers):
            raise ValueError(f"impute.imputers names an imputer twice: {list(self.imputers)}")
        for imputer, candidates in self.select.items():
            for candidate in candidates:
                try:
                    self.with_candidate(imputer, candidate)
                except ValidationError as error:
                    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                    raise ValueError(f"impute.select.{imputer}: candidate {candidate} is invalid ({problems})") from None
        return self
