"""The server model: a text-to-image diffusion model of 16x16 digits, conditioned on MiniLM prompt embeddings.

It is HidE's denoiser (:mod:`fedmm.impute.diffusion`) with two "modalities": the image to
generate (the target) and the prompt's embedding (the visible condition). The 384-d MiniLM
embedding enters through a fixed seeded orthonormal projection to the image's 256 dims;
hiding the prompt (the denoiser's visibility mask) is classifier-free guidance's null
condition, so one network learns both and sampling mixes them (Ho & Salimans 2022).
Sampling is HidE's DDIM. Pretraining uses scikit-learn's ``load_digits`` (8x8, upsampled):
another domain than the clients' UCI ``pix`` images. Pretrained weights are cached under
``$FEDMM_HOME/mmkt/generator`` by :meth:`GeneratorConfig.key`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.artifacts import read_npz, write_npz
from fedmm.data.images import SIDE, resample
from fedmm.fl.codec import arrays_state, state_arrays
from fedmm.impute.diffusion import Denoiser, cosine_alpha_bar, ddim_sample, diffusion_loss
from fedmm.impute.latent import Scaler
from fedmm.kg.text import TEXT_DIM, text_embeddings
from fedmm.mmkt.config import GeneratorConfig
from fedmm.progress import RoundProgress
from fedmm.runtime import state_dir
from fedmm.seeding import torch_generator
from fedmm.tensors import seeded_module

IMAGE_DIM = SIDE * SIDE
IMAGE, TEXT = 0, 1
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten digit {word}",
    "the number {word} written by hand",
    "a scanned image of the digit {digit}",
    "a sketch of the numeral {word}",
)
"""Training prompts; the first is the one the server sends and evaluates with."""


def prompt(digit: int, template: int = 0) -> str:
    return TEMPLATES[template].format(word=WORDS[digit], digit=digit)


def server_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1,797 8x8 images, values 0-16) as (N, 256) in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return resample(digits.images / 16.0), digits.target.astype(np.int64)


class TextToImage(nn.Module):
    """Prompt embedding (B, 384) -> 16x16 image (B, 256) in [0, 1], by conditional diffusion."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.denoiser = seeded_module(
            lambda: Denoiser(2, IMAGE_DIM, config.hidden, config.timesteps), config.seed, "mmkt", "generator", "init"
        )
        gaussian = torch.randn((TEXT_DIM, IMAGE_DIM), generator=torch_generator(config.seed, "mmkt", "projection"))
        self.register_buffer("projection", torch.linalg.qr(gaussian)[0] * IMAGE_DIM ** 0.5)
        self.register_buffer("alpha_bar", cosine_alpha_bar(config.timesteps))
        half, wide = torch.full((IMAGE_DIM,), 0.5), torch.full((IMAGE_DIM,), 1e6)
        self.scaler = Scaler(torch.stack([half, torch.zeros(IMAGE_DIM)]), torch.stack([half, torch.ones(IMAGE_DIM)]),
                             torch.stack([torch.zeros(IMAGE_DIM), -wide]), torch.stack([torch.ones(IMAGE_DIM), wide]))

    def _scaled(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, 2, 256): the scaled image and the projected unit-norm prompt embedding."""
        condition = F.normalize(text, dim=1) @ self.projection
        present = torch.ones((len(text), 2), dtype=torch.bool, device=text.device)
        return self.scaler(torch.stack([images, condition], dim=1), present)

    def loss(self, images: torch.Tensor, text: torch.Tensor, stream: torch.Generator) -> torch.Tensor:
        """Diffusion loss (v-error) of images given their prompts, a ``condition_dropout`` share unprompted."""
        present = torch.ones((len(images), 2), dtype=torch.bool)
        present[:, TEXT] = torch.rand(len(images), generator=stream) >= self.config.condition_dropout
        targets = torch.zeros_like(present)
        targets[:, IMAGE] = True
        return diffusion_loss(self.denoiser, self.alpha_bar, self._scaled(images, text), present, targets, stream)

    def denoised(self, images: torch.Tensor, text: torch.Tensor, fraction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The one-step clean estimate (B, 256) in [0, 1] of ``images`` re-noised to ``fraction`` of the schedule.

        Differentiable in the denoiser's weights (the last-step gradient of DRaFT-1, Clark et al. 2023).
        """
        t = (fraction * (self.config.timesteps - 1)).round().long()
        scaled = self._scaled(images, text)
        a = self.alpha_bar[t].reshape(-1, 1)
        noisy = a.sqrt() * scaled[:, IMAGE] + (1 - a).sqrt() * noise
        visible = torch.tensor([False, True]).expand(len(images), 2)
        x = torch.stack([noisy, torch.zeros_like(noisy)], dim=1)
        v = self.denoiser(x, t, scaled, visible, ~visible)[:, IMAGE]
        clean = a.sqrt() * noisy - (1 - a).sqrt() * v
        return (clean * 0.5 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def sample(self, text: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Images (B, 256) in [0, 1] for prompt embeddings (B, 384) from starting noise (B, 256), guided DDIM."""
        scaled = self._scaled(torch.zeros(len(text), IMAGE_DIM), text)
        visible = torch.tensor([False, True]).expand(len(text), 2)
        start = torch.stack([noise, torch.zeros_like(noise)], dim=1).unsqueeze(0)
        guided = Guided(self.denoiser, self.config.guidance)
        out = ddim_sample(guided, self.alpha_bar, self.scaler, scaled, visible, self.config.sampling_steps, start)
        return self.scaler.inverse(out)[:, IMAGE]


class Guided(nn.Module):
    """Classifier-free guidance around a denoiser: unprompted + w (prompted - unprompted)."""

    def __init__(self, denoiser: Denoiser, weight: float) -> None:
        super().__init__()
        self.denoiser, self.weight, self.timesteps = denoiser, weight, denoiser.timesteps

    def forward(self, noisy, t, condition, visible, targets):
        prompted = self.denoiser(noisy, t, condition, visible, targets)
        unprompted = self.denoiser(noisy, t, condition, torch.zeros_like(visible), targets)
        return unprompted + self.weight * (prompted - unprompted)


def prompt_embeddings(templates: range | tuple[int, ...] = (0,)) -> torch.Tensor:
    """(len(templates), 10, 384) MiniLM embeddings of every class's prompt per template."""
    texts = [prompt(d, t) for t in templates for d in range(len(WORDS))]
    return torch.as_tensor(text_embeddings(texts)).reshape(len(templates), len(WORDS), TEXT_DIM)


def generate(model: TextToImage, classes: torch.Tensor, seed: int, *keys) -> torch.Tensor:
    """Images (N, 256) for the server's prompt of each class in ``classes`` (N,), from keyed noise."""
    noise = torch.randn((len(classes), IMAGE_DIM), generator=torch_generator(seed, "mmkt", "noise", *keys))
    return model.sample(prompt_embeddings()[0][classes], noise)


def pretrain(config: GeneratorConfig) -> TextToImage:
    """Train from scratch on ``load_digits`` with every training template (seeded, one thread's work)."""
    images, labels = (torch.as_tensor(a) for a in server_digits())
    text = prompt_embeddings(range(len(TEMPLATES)))
    model = TextToImage(config)
    optimizer = torch.optim.Adam(model.denoiser.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.pretrain_steps)
    stream = torch_generator(config.seed, "mmkt", "pretrain")
    with RoundProgress(config.pretrain_steps, "pretrain generator on load_digits", unit="step") as progress:
        for _ in range(config.pretrain_steps):
            rows = torch.randint(0, len(images), (config.batch_size,), generator=stream)
            template = torch.randint(0, len(TEMPLATES), (config.batch_size,), generator=stream)
            loss = model.loss(images[rows], text[template, labels[rows]], stream)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.step()
    return model.eval()


def pretrained(config: GeneratorConfig) -> TextToImage:
    """The pretrained generator, from the cache when these settings were trained before."""
    path = state_dir() / "mmkt" / "generator" / f"{config.key()}.npz"
    model = TextToImage(config)
    if path.is_file():
        model.load_state_dict(arrays_state(read_npz(path)))
        return model.eval()
    model = pretrain(config)
    write_npz(path, state_arrays(model.state_dict()))
    return model
