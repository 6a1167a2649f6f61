"""HidE: conditional denoising diffusion over missing modalities' embeddings (MMFeD3-HidE).

The denoiser sees the noisy embeddings of the modalities to impute, the scaled embeddings of
the visible ones and both masks. Training is masked supervision: some present modalities are
hidden at random and learned back from the rest (v-prediction, cosine noise schedule), with
local epochs on each client and FedAvg of the denoiser's weights. Imputation is DDIM with
eta = 0 over ``sampling_steps`` steps from seeded starting noise, so a seed fixes the result;
``samples`` draws are averaged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
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
from fedmm.impute_config import DiffusionConfig, DiffusionImputerConfig
from fedmm.models.multimodal import MultimodalNet
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData, seeded_module

TIME_FEATURES = 32


def cosine_alpha_bar(timesteps: int) -> torch.Tensor:
    """Cumulative signal share per step, cosine schedule (Nichol & Dhariwal 2021), index 0 least noisy."""
    s = 0.008
    f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0).float()


def time_features(t: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Sinusoidal features of the step index, (B,) -> (B, TIME_FEATURES)."""
    half = TIME_FEATURES // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = (t.float() * 1000.0 / timesteps).unsqueeze(1) * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Denoiser(nn.Module):
    """v-prediction for the noisy target embeddings given the visible ones, both masks and the step."""

    def __init__(self, num_modalities: int, embed_dim: int, hidden: int, timesteps: int) -> None:
        super().__init__()
        self.timesteps = timesteps
        width = num_modalities * embed_dim
        self.net = nn.Sequential(
            nn.Linear(2 * width + 2 * num_modalities + TIME_FEATURES, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, width),
        )

    def forward(
        self, noisy: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, visible: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        dtype = noisy.dtype
        inputs = torch.cat([
            (noisy * targets.unsqueeze(-1)).flatten(1), (condition * visible.unsqueeze(-1)).flatten(1),
            visible.to(dtype), targets.to(dtype), time_features(t, self.timesteps),
        ], dim=1)
        return self.net(inputs).reshape(noisy.shape) * targets.unsqueeze(-1)


def diffusion_loss(
    denoiser: Denoiser, alpha_bar: torch.Tensor, scaled: torch.Tensor, present: torch.Tensor,
    targets: torch.Tensor, stream: torch.Generator,
) -> torch.Tensor:
    """Mean squared v-error over the hidden modalities at seeded random steps."""
    t = torch.randint(0, denoiser.timesteps, (len(scaled),), generator=stream).to(scaled.device)
    noise = torch.randn(scaled.shape, generator=stream).to(scaled.device)
    a = alpha_bar[t].reshape(-1, 1, 1)
    noisy = a.sqrt() * scaled + (1 - a).sqrt() * noise
    velocity = a.sqrt() * noise - (1 - a).sqrt() * scaled
    predicted = denoiser(noisy, t, scaled, present & ~targets, targets)
    return ((predicted - velocity) ** 2).mean(-1)[targets].mean()


def train_denoiser_locally(
    denoiser: Denoiser, alpha_bar: torch.Tensor, scaler: Scaler, data: LatentData, config: DiffusionConfig,
    seed: int, keys: tuple,
) -> None:
    """One client's local epochs of masked supervision (fresh Adam, streams keyed by ``keys``)."""
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
    for epoch in range(config.local_epochs):
        stream = torch_generator(seed, *keys, epoch)
        for embeddings, present in data.batches(config.batch_size, stream):
            loss = diffusion_loss(
                denoiser, alpha_bar, scaler(embeddings, present), present, masked_targets(present, stream), stream
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser, alpha_bar: torch.Tensor, scaler: Scaler, condition: torch.Tensor, visible: torch.Tensor,
    steps: int, noise: torch.Tensor,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``noise`` (S, B, M, E); the mean over the S draws, targets = ~visible.

    Each step's clean estimate is clipped to the observed range (``scaler.clamp``).
    """
    draws, batch = noise.shape[:2]
    condition = condition.repeat(draws, 1, 1)
    visible = visible.repeat(draws, 1)
    targets = ~visible
    x = noise.flatten(0, 1) * targets.unsqueeze(-1)
    schedule = torch.linspace(denoiser.timesteps - 1, 0, steps).round().long().tolist()
    for i, step in enumerate(schedule):
        a = alpha_bar[step]
        v = denoiser(x, torch.full((len(x),), step, device=x.device), condition, visible, targets)
        clean = scaler.clamp(a.sqrt() * x - (1 - a).sqrt() * v) * targets.unsqueeze(-1)
        if i + 1 == len(schedule):
            x = clean
            break
        eps = (x - a.sqrt() * clean) / (1 - a).sqrt()
        following = alpha_bar[schedule[i + 1]]
        x = following.sqrt() * clean + (1 - following).sqrt() * eps
    return x.reshape(draws, batch, *x.shape[1:]).mean(0)


class DiffusionImputer(Imputer):
    """Latent-space imputation by the federated HidE diffusion model."""

    name = "diffusion"
    space = "latent"
    inference_settings = ("sampling_steps", "samples")

    def __init__(self, config: DiffusionImputerConfig) -> None:
        super().__init__()
        self.config = config

    def _fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> None:
        self.seed = seed
        latents = client_latents(model, clients)
        device = latents[0].embeddings.device
        self.scaler = Scaler.federated(latents).to(device)
        self.alpha_bar = cosine_alpha_bar(self.config.timesteps).to(device)
        num_modalities, dim = latents[0].embeddings.shape[1:]
        denoiser = seeded_module(
            lambda: Denoiser(num_modalities, dim, self.config.hidden, self.config.timesteps),
            seed, "impute", "diffusion", "init",
        ).to(device)
        with torch.enable_grad():
            self.denoiser = train_federated(
                denoiser, latents,
                lambda module, data, r, k: train_denoiser_locally(
                    module, self.alpha_bar, self.scaler, data, self.config, seed, ("impute", "diffusion", r, k)
                ),
                self.config.rounds, "fit diffusion imputer",
            )

    def state(self) -> State:
        return {
            **prefixed("denoiser.", self.denoiser.state_dict()), **prefixed("scaler.", self.scaler.state_dict()),
            "seed": torch.tensor(self.seed),
        }

    def restore(self, state: State, model: MultimodalNet) -> DiffusionImputer:
        spec = model.spec
        self.seed = int(state["seed"])
        self.alpha_bar = cosine_alpha_bar(self.config.timesteps)
        self.denoiser = Denoiser(len(spec.modalities), spec.embed_dim, self.config.hidden, self.config.timesteps)
        self.denoiser.load_state_dict(unprefixed("denoiser.", state))
        self.denoiser.eval()
        self.scaler = scaler_from(unprefixed("scaler.", state))
        return self

    def _impute(self, values: torch.Tensor, mask: torch.Tensor, owners: np.ndarray | None) -> torch.Tensor:
        noise = torch.randn(
            (self.config.samples, *values.shape), generator=torch_generator(self.seed, "impute", "diffusion", "sample")
        ).to(values.device)
        scaled = ddim_sample(
            self.denoiser, self.alpha_bar, self.scaler, self.scaler(values, mask), mask, self.config.sampling_steps,
            noise,
        )
        return self.scaler.inverse(scaled)
