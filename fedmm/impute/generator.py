"""FedMobile's cross-modal generator: latent reconstruction of missing modalities from the available ones.

Trained where modalities co-occur (masked supervision: hide some present modalities, predict
them from the rest) with two terms: feature regression towards the frozen encoders' true
embeddings and logit distillation, the KL divergence between the frozen model's prediction
on the true and on the generated embeddings. Its weights are FedAvg-aggregated across
clients. :class:`CrossModalGenerator` and :func:`train_generator_locally` are what a
FedMobile strategy reuses with its own encoders and head.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.impute.base import Imputer
from fedmm.impute.latent import (
    LatentData,
    Scaler,
    client_latents,
    masked_targets,
    prefixed,
    scaler_from,
    train_federated,
    unprefixed,
)
from fedmm.impute_config import GeneratorConfig, GeneratorImputerConfig
from fedmm.models.multimodal import ModelSpec, MultimodalNet
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData, distillation_kl, frozen, seeded_module


class CrossModalGenerator(nn.Module):
    """Every modality's scaled embedding (B, M, E) from the visible ones (zero elsewhere) and the visibility mask."""

    def __init__(self, num_modalities: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        width = num_modalities * embed_dim
        self.net = nn.Sequential(
            nn.Linear(width + num_modalities, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, width),
        )

    @classmethod
    def from_state(cls, state: State, spec: ModelSpec) -> CrossModalGenerator:
        """A generator for ``spec``'s embeddings holding ``state`` (its hidden width read from it), in eval mode."""
        generator = cls(len(spec.modalities), spec.embed_dim, state["net.0.weight"].shape[0])
        generator.load_state_dict(state)
        return generator.eval()

    def forward(self, scaled: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([(scaled * visible.unsqueeze(-1)).flatten(1), visible.to(scaled.dtype)], dim=1)
        return self.net(inputs).reshape(scaled.shape)

    def generate(self, scaler: Scaler, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Every modality's embedding (B, M, E) generated from the present ones, in the embedding space."""
        return scaler.inverse(self(scaler(embeddings, present), present))


class GeneratedFeaturesNet(nn.Module):
    """A model whose missing modalities' embeddings come from a generator (flagged present to the fusion).

    This is how FedMobile's global model trains (gradients reach the present modalities'
    encoders through the generator) and predicts.
    """

    def __init__(self, model: MultimodalNet, generator: CrossModalGenerator, scaler: Scaler) -> None:
        super().__init__()
        self.model, self.generator, self.scaler = model, generator, scaler

    def complete(self, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings with every absent modality generated from the present ones, and the all-present mask."""
        generated = self.generator.generate(self.scaler, embeddings, mask)
        return torch.where(mask.unsqueeze(-1), embeddings, generated), torch.ones_like(mask)

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        embeddings, completed = self.complete(self.model.embed(inputs, mask), mask)
        return self.model.head(self.model.fuse(embeddings, completed))


def generator_loss(
    generator: CrossModalGenerator,
    scaler: Scaler,
    model: MultimodalNet,
    embeddings: torch.Tensor,
    present: torch.Tensor,
    targets: torch.Tensor,
    config: GeneratorConfig,
) -> torch.Tensor:
    """Regression on the hidden modalities' scaled embeddings plus ``distill_weight`` x logit KL."""
    scaled = scaler(embeddings, present)
    predicted = generator(scaled, present & ~targets)
    loss = ((predicted - scaled) ** 2).mean(-1)[targets].mean()
    if config.distill_weight > 0:
        generated = torch.where(targets.unsqueeze(-1), scaler.inverse(predicted), embeddings)
        temperature = config.temperature
        with torch.no_grad():
            soft_targets = F.softmax(model.head(model.fuse(embeddings, present)) / temperature, dim=-1)
        student = model.head(model.fuse(generated, present))
        loss = loss + config.distill_weight * distillation_kl(student, soft_targets, temperature)
    return loss


def train_generator_locally(
    generator: CrossModalGenerator,
    scaler: Scaler,
    model: MultimodalNet,
    data: LatentData,
    config: GeneratorConfig,
    seed: int,
    keys: tuple,
) -> None:
    """One client's local epochs (fresh Adam, seeded shuffles and masks keyed by ``keys``)."""
    optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
    for epoch in range(config.local_epochs):
        stream = torch_generator(seed, *keys, epoch)
        for embeddings, present in data.batches(config.batch_size, stream):
            targets = masked_targets(present, stream)
            loss = generator_loss(generator, scaler, model, embeddings, present, targets, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class GeneratorImputer(Imputer):
    """Latent-space imputation by the federated cross-modal generator."""

    name = "generator"
    space = "latent"

    def __init__(self, config: GeneratorImputerConfig) -> None:
        super().__init__()
        self.config = config

    def _fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> None:
        latents = client_latents(model, clients)
        self.scaler = Scaler.federated(latents).to(latents[0].embeddings.device)
        num_modalities, dim = latents[0].embeddings.shape[1:]
        generator = seeded_module(
            lambda: CrossModalGenerator(num_modalities, dim, self.config.hidden), seed, "impute", "generator", "init"
        ).to(latents[0].embeddings.device)
        with frozen(model):
            self.generator = train_federated(
                generator, latents,
                lambda module, data, r, k: train_generator_locally(
                    module, self.scaler, model, data, self.config, seed, ("impute", "generator", r, k)
                ),
                self.config.rounds, "fit generator imputer",
            )

    def _impute(self, values: torch.Tensor, mask: torch.Tensor, owners: np.ndarray | None) -> torch.Tensor:
        return self.generator.generate(self.scaler, values, mask)

    def state(self) -> State:
        return {**prefixed("generator.", self.generator.state_dict()), **prefixed("scaler.", self.scaler.state_dict())}

    def restore(self, state: State, model: MultimodalNet) -> GeneratorImputer:
        self.generator = CrossModalGenerator.from_state(unprefixed("generator.", state), model.spec)
        self.scaler = scaler_from(unprefixed("scaler.", state))
        return self
