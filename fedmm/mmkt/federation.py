"""FedMMKT's rounds over UCI Multiple Features clients: FedAvg task models and a co-enhanced server generator.

Each round (``fedmmkt``):

1. the server generates :class:`SyntheticBatch` (``images_per_class`` images per class from
   its prompt, fresh noise each round) and sends it with the global task model;
2. each client trains the global model on its own data plus the synthetic images (which
   hold only the image view, labelled with their prompt's class) and returns FedAvg's
   :class:`~fedmm.fl.messages.ClientUpdate` and a :class:`ClientFeedback` computed on the
   synthetic images alone;
3. the server averages the updates (FedAvg) and fine-tunes the generator for
   ``finetune.steps`` steps. Its images are re-noised and denoised in one differentiable
   step (DRaFT-1's last-step gradient, Clark et al. 2023) and scored by the aggregated task
   model, the server's differentiable stand-in for the clients: a cross-entropy for the
   prompted class, each image weighted by the client ensemble's probability of that class
   (to the ``1 / reward_temperature``, normalised per class); the cosine distance of their
   representation to the clients' mass-weighted prototypes of the class; and the diffusion
   loss on the server's own ``load_digits`` (the prior, so the generator keeps its prompts).

A reward-weighted diffusion loss on the round's own images (reward-weighted regression)
was tried first and dropped: refitting the generator to its own samples amplified their
pixel noise round after round until the images were noise.

The task models are averaged because one architecture is shared here (fedmm's network);
the paper's heterogeneous client models are not reproduced. ``fedavg_frozen`` runs the same
rounds with the pretrained generator never fine-tuned; ``fedavg`` sends no images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.artifacts import sha256_arrays
from fedmm.config import Config, load_config
from fedmm.data.federated import FederatedData, client_arrays, partition_and_mask
from fedmm.data.prepare import PreparedData, normalisation_stats, prepare
from fedmm.fl.client import Worker, train_client, trainable_state
from fedmm.fl.history import ClientRecord, RoundRecord
from fedmm.fl.messages import cross_entropy
from fedmm.fl.strategy import FedAvg
from fedmm.fl.training import evaluation_sets, model_spec
from fedmm.metrics import evaluate
from fedmm.mmkt.config import FinetuneConfig, MMKTConfig
from fedmm.mmkt.generator import TEMPLATES, WORDS, TextToImage, generate, prompt_embeddings, resample, server_digits
from fedmm.mmkt.messages import ClientFeedback, SyntheticBatch
from fedmm.models.multimodal import ModelSpec, MultimodalNet, build_model
from fedmm.progress import RoundProgress
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData, frozen_copy

IMAGE_VIEW = "pix"
PIX_SHAPE = (16, 15)
"""UCI ``pix``: 240 pixel averages (0-6) of a 15-wide, 16-tall image, row by row."""
PIX_MAX = 6.0


def square_images(prepared: PreparedData) -> PreparedData:
    """The prepared data with ``pix`` as 16x16 images in [0, 1] (the generator's format), stats and hashes redone."""
    dataset = prepared.dataset
    pix = resample(dataset.modalities[IMAGE_VIEW].reshape(-1, *PIX_SHAPE) / PIX_MAX)
    dataset = replace(dataset, modalities={**dataset.modalities, IMAGE_VIEW: pix})
    stats = normalisation_stats(dataset, prepared.indices("train"))
    square = PreparedData(dataset, prepared.split, stats, dict(prepared.manifest))
    square.manifest.update(
        modalities={**prepared.manifest["modalities"], IMAGE_VIEW: [pix.shape[1]]},
        value_bounds={**prepared.manifest["value_bounds"], IMAGE_VIEW: [0.0, 1.0]},
        data_sha256=sha256_arrays(square.to_arrays()),
        test_sha256=dataset.subset(prepared.indices("test")).content_hash(),
        image_view=f"{IMAGE_VIEW} resampled from {PIX_SHAPE[1]}x{PIX_SHAPE[0]} to 16x16, divided by {PIX_MAX:g}",
    )
    return square


@dataclass
class Federation:
    """The clients' training data, the evaluation sets and the task model's spec."""

    config: Config
    prepared: PreparedData
    federated: FederatedData
    clients: list[TensorData]
    evaluation: dict[str, TensorData]
    spec: ModelSpec

    @classmethod
    def build(cls, config: Config, prepared: PreparedData) -> Federation:
        """Partition and mask ``prepared`` (already square) by the config's rules."""
        federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
        clients = [TensorData.from_numpy(*client_arrays(prepared, federated, k)) for k in range(federated.num_clients)]
        return cls(config, prepared, federated, clients, evaluation_sets(prepared, "cpu", federated),
                   model_spec(config, prepared))

    def image_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Real 16x16 images and labels of a split (server-side evaluation only)."""
        index = self.prepared.indices(split)
        return self.prepared.dataset.modalities[IMAGE_VIEW][index], self.prepared.dataset.labels[index]


def federation_config(config: MMKTConfig) -> Config:
    """The base fedmm config with the run's overrides and seed."""
    return load_config(config.base, [*config.set, f"seed={config.seed}"])


def load_federation(config: Config) -> tuple[PreparedData, Federation]:
    """Prepare the source (as loaded, for validation) and the square-image federation."""
    prepared = prepare(config.data, config.seed)
    return prepared, Federation.build(config, square_images(prepared))


def synthetic_batch(generator: TextToImage, images_per_class: int, seed: int, server_round: int) -> SyntheticBatch:
    classes = torch.arange(len(WORDS)).repeat_interleave(images_per_class)
    return SyntheticBatch(server_round, generate(generator, classes, seed, "round", server_round), classes)


def synthetic_data(batch: SyntheticBatch, spec: ModelSpec) -> TensorData:
    """The batch as task-model inputs: only the image view present, labelled with the prompted class."""
    inputs = {name: torch.zeros((len(batch.images), *shape)) for name, shape in spec.sample_shapes.items()}
    inputs[IMAGE_VIEW] = batch.images
    mask = torch.zeros((len(batch.images), len(spec.modalities)), dtype=torch.bool)
    mask[:, spec.modalities.index(IMAGE_VIEW)] = True
    return TensorData(inputs, mask, batch.prompted.clone())


@torch.no_grad()
def client_feedback(client_id: int, model: MultimodalNet, batch: SyntheticBatch, num_classes: int) -> ClientFeedback:
    """The client's logits and confidence-weighted class prototypes on the synthetic images (model and batch only)."""
    model.eval()
    data = synthetic_data(batch, model.spec)
    representation = model.represent(data.inputs, data.mask)
    logits = model.head(representation)
    weight = torch.softmax(logits, 1).gather(1, batch.prompted.unsqueeze(1)).squeeze(1)
    onehot = F.one_hot(batch.prompted, num_classes).float() * weight.unsqueeze(1)
    mass = onehot.sum(0)
    prototypes = onehot.T @ representation / mass.clamp(min=1e-12).unsqueeze(1)
    return ClientFeedback(client_id, logits, prototypes, mass)


def reward_weights(feedback: list[ClientFeedback], prompted: torch.Tensor, temperature: float) -> torch.Tensor:
    """Resampling weights (N,): ensemble probability of the prompted class to the 1/temperature, each class summing to 1."""
    ensemble = torch.stack([torch.softmax(f.logits, 1) for f in feedback]).mean(0)
    reward = ensemble.gather(1, prompted.unsqueeze(1)).squeeze(1).clamp(min=1e-12) ** (1 / temperature)
    per_class = torch.zeros(int(prompted.max()) + 1).index_add_(0, prompted, reward)
    return reward / per_class[prompted]


def aggregate_prototypes(feedback: list[ClientFeedback]) -> torch.Tensor:
    """(K, F) prototypes: the clients' per class, weighted by their mass."""
    mass = torch.stack([f.mass for f in feedback])
    total = (mass.unsqueeze(-1) * torch.stack([f.prototypes for f in feedback])).sum(0)
    return total / mass.sum(0).clamp(min=1e-12).unsqueeze(1)


class Server:
    """The generator, its optimiser and the server's own digits (the prior)."""

    def __init__(self, generator: TextToImage, config: FinetuneConfig, seed: int) -> None:
        self.generator, self.config, self.seed = generator, config, seed
        self.optimizer = torch.optim.Adam(generator.denoiser.parameters(), lr=config.lr)
        images, labels = server_digits()
        self.prior_images, self.prior_labels = torch.as_tensor(images), torch.as_tensor(labels)
        self.text = prompt_embeddings(range(len(TEMPLATES)))

    def finetune(self, batch: SyntheticBatch, feedback: list[ClientFeedback], model: MultimodalNet) -> dict[str, float]:
        """``steps`` optimiser steps on the ensemble-weighted class, prototype-alignment and prior terms; their last values."""
        config, generator = self.config, self.generator
        weights = reward_weights(feedback, batch.prompted, config.reward_temperature)
        prototypes = aggregate_prototypes(feedback)
        stream = torch_generator(self.seed, "mmkt", "finetune", batch.server_round)
        prompt_text = self.text[0]
        generator.train()
        terms = {}
        for _ in range(config.steps):
            rows = torch.randint(0, len(batch.images), (config.batch_size,), generator=stream)
            images, classes = batch.images[rows], batch.prompted[rows]
            fraction = torch.rand(len(rows), generator=stream) * config.max_noise
            noise = torch.randn(images.shape, generator=stream)
            denoised = synthetic_data(SyntheticBatch(batch.server_round, generator.denoised(
                images, prompt_text[classes], fraction, noise), classes), model.spec)
            represented = model.represent(denoised.inputs, denoised.mask)
            reward = (F.cross_entropy(model.head(represented), classes, reduction="none") * weights[rows]).sum() \
                / weights[rows].sum()
            align = (1 - F.cosine_similarity(represented, prototypes[classes], dim=1)).mean()
            prior_rows = torch.randint(0, len(self.prior_images), (config.batch_size,), generator=stream)
            template = torch.randint(0, len(TEMPLATES), (config.batch_size,), generator=stream)
            prior = generator.loss(self.prior_images[prior_rows], self.text[template, self.prior_labels[prior_rows]],
                                   stream)
            loss = config.reward_weight * reward + config.align_weight * align + config.prior_weight * prior
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            terms = {"reward_loss": reward.item(), "align_loss": align.item(), "prior_loss": prior.item()}
        generator.eval()
        return terms


@dataclass
class RunOutcome:
    """The global task model, its per-round history and, for ``fedmmkt``, the generator's fine-tuning losses
    per round (a fine-tuned generator stays in the caller's object)."""

    model: MultimodalNet
    state: State
    history: list[RoundRecord]
    generator_losses: list[dict[str, float]]


def run_rounds(config: MMKTConfig, federation: Federation, generator: TextToImage | None) -> RunOutcome:
    """FedAvg rounds; with a generator its prompted images join every client's data, fine-tuned for ``fedmmkt``."""
    train, seed = federation.config.train, config.seed
    strategy = FedAvg(train, seed)
    worker = Worker(build_model(federation.spec, seed))
    state = trainable_state(worker.model)
    server = Server(generator, config.finetune, seed) if config.method == "fedmmkt" else None
    num_classes = federation.spec.num_classes
    history, generator_losses = [], []
    with RoundProgress(train.rounds, f"{config.method} seed {seed}") as progress:
        for server_round in range(train.rounds):
            batch = synthetic_batch(generator, config.images_per_class, seed, server_round) if generator else None
            updates, feedback = [], []
            for instruction in strategy.configure_train(server_round, federation.federated.num_clients):
                data = federation.clients[instruction.client_id]
                if batch is not None:
                    data = TensorData.concat([data, synthetic_data(batch, federation.spec)])
                worker.load(state)
                update, _ = train_client(worker, state, data, instruction, cross_entropy, lambda kept: None, seed)
                updates.append(update)
                if server is not None:
                    feedback.append(client_feedback(instruction.client_id, worker.model, batch, num_classes))
            state = strategy.aggregate_train(server_round, state, updates)
            if server is not None:
                generator_losses.append(server.finetune(batch, feedback, frozen_copy(worker.model, state)))
            model = frozen_copy(worker.model, state)
            record = RoundRecord(server_round + 1, {"test": evaluate(model, federation.evaluation["test"])},
                                 [ClientRecord(u.client_id, u.num_examples) for u in updates])
            history.append(record)
            progress.update(record)
    return RunOutcome(frozen_copy(worker.model, state), state, history, generator_losses)
