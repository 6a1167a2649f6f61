"""FedMMKT (He et al. 2025) as a strategy of the round engine: FedAvg task models and a co-enhanced server generator.

Each round:

1. the server generates a :class:`SyntheticBatch` (``images_per_class`` images per class from
   its prompt, noise keyed by the round) and sends it in its server state with the global model;
2. each client trains the global model on its own data plus the synthetic images (which
   hold only the image view, labelled with their prompt's class) and returns an
   :class:`MMKTUpdate`: FedAvg's delta plus feedback computed on the synthetic images alone;
3. the server averages the deltas (FedAvg) and, with ``co_enhance``, fine-tunes the generator for
   ``finetune.steps`` steps. Its images are re-noised and denoised in one differentiable step
   (DRaFT-1's last-step gradient, Clark et al. 2023) and scored by the aggregated task model, the
   server's differentiable stand-in for the clients: a cross-entropy for the prompted class, each
   image weighted by the client ensemble's probability of that class (to the
   ``1 / reward_temperature``, normalised per class); the cosine distance of their representation
   to the clients' mass-weighted prototypes of the class; and the diffusion loss on the server's
   own ``load_digits`` (the prior, so the generator keeps its prompts).

A reward-weighted diffusion loss on the round's own images (reward-weighted regression) was
tried first and dropped: refitting the generator to its own samples amplified their pixel noise
round after round until the images were noise.

Server state (checkpointed every round, so a resumed run is bit-identical): the co-enhanced
generator's weights, its Adam state and the fine-tuning losses per round; between
``configure_train`` and ``aggregate_train`` also the round's synthetic batch, which alone is what
a Flower site receives (:meth:`FedMMKT.client_state`). The task models are averaged because one architecture is shared here
(fedmm's network); the paper's heterogeneous client models are not reproduced.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fedmm.config import TrainConfig
from fedmm.data.images import IMAGE_VIEW
from fedmm.errors import UserError
from fedmm.fl.client import Worker
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.params.fedmmkt import FEDMMKT, FedMMKTConfig
from fedmm.fl.strategy import FedAvg, ServerContext, StrategyError
from fedmm.mmkt.config import FinetuneConfig, GeneratorConfig
from fedmm.mmkt.generator import IMAGE_DIM, TEMPLATES, WORDS, TextToImage, generate, pretrained, prompt_embeddings, server_digits
from fedmm.mmkt.messages import MMKTUpdate, SyntheticBatch
from fedmm.models.multimodal import ModelSpec, MultimodalNet, build_model
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData

GENERATOR, OPTIMIZER, BATCH = "generator/", "optimizer/", "batch/"
LOSSES = "finetune_losses"
LOSS_NAMES = ("reward_loss", "align_loss", "prior_loss")


class ImageViewError(StrategyError, UserError):
    """The task model has no view the generator's images can stand in for."""


def require_image_view(spec: ModelSpec) -> None:
    """A clear error unless the task model has a ``pix`` view of 16x16 images and one class per prompt."""
    shape, classes = spec.sample_shapes.get(IMAGE_VIEW), spec.num_classes
    if shape != (IMAGE_DIM,) or classes != len(WORDS):
        raise ImageViewError(
            f"strategy 'fedmmkt' needs a {IMAGE_VIEW!r} view of {IMAGE_DIM} pixels (16x16) and {len(WORDS)} classes; "
            f"this data has {IMAGE_VIEW} {shape} and {classes} classes: run FedMMKT from a task: fedmmkt file "
            "(configs/fedmmkt.yaml), which makes UCI Multiple Features' pix square")


def synthetic_batch(generator: TextToImage, images_per_class: int, seed: int, server_round: int) -> SyntheticBatch:
    classes = torch.arange(len(WORDS)).repeat_interleave(images_per_class)
    return SyntheticBatch(server_round, generate(generator, classes, seed, "round", server_round), classes)


def synthetic_data(batch: SyntheticBatch, spec: ModelSpec) -> TensorData:
    """The batch as task-model inputs: only the image view present, labelled with the prompted class."""
    device = batch.images.device
    inputs = {name: torch.zeros((len(batch.images), *shape), device=device) for name, shape in spec.sample_shapes.items()}
    inputs[IMAGE_VIEW] = batch.images
    mask = torch.zeros((len(batch.images), len(spec.modalities)), dtype=torch.bool, device=device)
    mask[:, spec.modalities.index(IMAGE_VIEW)] = True
    return TensorData(inputs, mask, batch.prompted.clone())


@torch.no_grad()
def client_feedback(model: MultimodalNet, batch: SyntheticBatch) -> dict[str, torch.Tensor]:
    """The client's logits and confidence-weighted class prototypes and masses on the synthetic images (model and
    batch only)."""
    model.eval()
    data = synthetic_data(batch, model.spec)
    representation = model.represent(data.inputs, data.mask)
    logits = model.head(representation)
    weight = torch.softmax(logits, 1).gather(1, batch.prompted.unsqueeze(1)).squeeze(1)
    onehot = F.one_hot(batch.prompted, model.spec.num_classes).float() * weight.unsqueeze(1)
    mass = onehot.sum(0)
    prototypes = onehot.T @ representation / mass.clamp(min=1e-12).unsqueeze(1)
    return {"logits": logits, "prototypes": prototypes, "mass": mass}


def reward_weights(feedback: list[MMKTUpdate], prompted: torch.Tensor, temperature: float) -> torch.Tensor:
    """Resampling weights (N,): ensemble probability of the prompted class to the 1/temperature, each class summing to 1."""
    ensemble = torch.stack([torch.softmax(f.logits, 1) for f in feedback]).mean(0)
    reward = ensemble.gather(1, prompted.unsqueeze(1)).squeeze(1).clamp(min=1e-12) ** (1 / temperature)
    per_class = torch.zeros(int(prompted.max()) + 1).index_add_(0, prompted, reward)
    return reward / per_class[prompted]


def aggregate_prototypes(feedback: list[MMKTUpdate]) -> torch.Tensor:
    """(K, F) prototypes: the clients' per class, weighted by their mass."""
    mass = torch.stack([f.mass for f in feedback])
    total = (mass.unsqueeze(-1) * torch.stack([f.prototypes for f in feedback])).sum(0)
    return total / mass.sum(0).clamp(min=1e-12).unsqueeze(1)


class CoEnhancer:
    """The generator's fine-tuning: its Adam optimiser, the server's own digits (the prior) and the prompts."""

    def __init__(self, generator: TextToImage, config: FinetuneConfig, seed: int) -> None:
        self.generator, self.config, self.seed = generator, config, seed
        self.optimizer = torch.optim.Adam(generator.denoiser.parameters(), lr=config.lr)
        images, labels = server_digits()
        self.prior_images, self.prior_labels = torch.as_tensor(images), torch.as_tensor(labels)
        self.text = prompt_embeddings(range(len(TEMPLATES)))

    def optimizer_state(self) -> State:
        return {f"{OPTIMIZER}{index}/{name}": value for index, entry in self.optimizer.state_dict()["state"].items()
                for name, value in entry.items()}

    def load_optimizer_state(self, state: State) -> None:
        entries: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            index, name = key.split("/")
            entries.setdefault(int(index), {})[name] = value.clone()
        self.optimizer.load_state_dict({"state": entries, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def finetune(self, batch: SyntheticBatch, feedback: list[MMKTUpdate], model: MultimodalNet) -> dict[str, float]:
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


def section(state: State, prefix: str) -> State:
    return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}


class FedMMKT(FedAvg[MMKTUpdate]):
    """FedMMKT: clients train on the server generator's prompted images too; their feedback co-enhances it.

    Client contract, each round: read the round's :class:`SyntheticBatch` from the client state;
    train the global model with cross-entropy on local data plus those images (image view only,
    labelled with the prompted class); send an :class:`MMKTUpdate`: the delta and example count
    (synthetic images included), and the trained model's logits, class prototypes and masses on
    the synthetic images (:func:`client_feedback`). A free rider sends a zero delta and no feedback.

    Parameters (config: ``train.fedmmkt``): ``generator`` (the pretrained text-to-image model's
    settings, :class:`~fedmm.mmkt.config.GeneratorConfig`), ``finetune`` (the server's fine-tuning),
    ``images_per_class`` and ``co_enhance`` (false: the pretrained generator stays frozen, the
    ``fedavg_frozen`` ablation). The task model needs a ``pix`` view (16x16 images) and 10 classes.
    """

    info = FEDMMKT

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, generator: GeneratorConfig,
        finetune: FinetuneConfig, images_per_class: int, co_enhance: bool,
    ) -> None:
        super().__init__(train, seed, server)
        self.config = self.checked(generator=generator, finetune=finetune, images_per_class=images_per_class,
                                   co_enhance=co_enhance)
        if server is not None:
            require_image_view(server.spec)
        self.batch: SyntheticBatch | None = None
        self.enhancer: CoEnhancer | None = None
        self.frozen_generator: TextToImage | None = None
        self.losses: list[list[float]] = []
        self.restored: State = {}

    def generator(self) -> TextToImage:
        """The server's generator: restored from the server state, else the pretrained one (cached by its settings)."""
        if not self.config.co_enhance:
            if self.frozen_generator is None:
                self.frozen_generator = pretrained(self.config.generator)
            return self.frozen_generator
        if self.enhancer is None:
            weights = section(self.restored, GENERATOR)
            model = self.generator_from(weights, self.config.generator) if weights else pretrained(self.config.generator)
            self.enhancer = CoEnhancer(model, self.config.finetune, self.seed)
            if weights:
                self.enhancer.load_optimizer_state(section(self.restored, OPTIMIZER))
        return self.enhancer.generator

    @staticmethod
    def generator_from(weights: State, config: GeneratorConfig) -> TextToImage:
        """The generator holding ``weights`` (a server state's ``generator/`` entries)."""
        model = TextToImage(config)
        model.load_state_dict({key: value.cpu() for key, value in weights.items()})
        return model.eval()

    def configure_train(self, server_round: int, num_clients: int) -> list[TrainInstruction]:
        self.batch = synthetic_batch(self.generator(), self.config.images_per_class, self.seed, server_round)
        return super().configure_train(server_round, num_clients)

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[MMKTUpdate, State | None]:
        batch = self.batch
        if batch is None or batch.server_round != instruction.server_round:
            raise StrategyError(f"fedmmkt: no synthetic batch of round {instruction.server_round} in the server state")
        data = TensorData.concat([data, synthetic_data(batch, worker.model.spec)])
        update, kept = super().fit(worker, global_state, data, instruction, kept)
        feedback = client_feedback(worker.model, batch)
        return MMKTUpdate(update.client_id, update.num_examples, update.delta, update.metrics, **feedback), kept

    def free_rider_payload(self, instruction: TrainInstruction, global_state: State, num_examples: int) -> MMKTUpdate:
        zeros = {name: torch.zeros_like(value) for name, value in global_state.items()}
        return MMKTUpdate(instruction.client_id, num_examples, zeros)

    def aggregate_train(self, server_round: int, global_state: State, updates: list[MMKTUpdate]) -> State:
        state = super().aggregate_train(server_round, global_state, updates)
        feedback = [update for update in updates if update.has_feedback]
        if self.config.co_enhance and feedback:
            self.generator()
            model = build_model(self.server.spec, self.seed)
            model.load_state_dict(state)
            terms = self.enhancer.finetune(self.batch, feedback, model.requires_grad_(False).eval())
            self.losses.append([terms.get(name, math.nan) for name in LOSS_NAMES])
        self.batch = None
        return state

    def server_state(self) -> State:
        state: State = dict(self.restored)
        if self.enhancer is not None:
            state.update({GENERATOR + k: v for k, v in self.enhancer.generator.state_dict().items()})
            state.update(self.enhancer.optimizer_state())
        if self.losses:
            state[LOSSES] = torch.tensor(self.losses)
        if self.batch is not None:
            state.update({BATCH + "images": self.batch.images, BATCH + "prompted": self.batch.prompted,
                          BATCH + "round": torch.tensor(self.batch.server_round)})
        return state

    def client_state(self) -> State:
        """Only the round's synthetic batch: a site needs neither the generator nor its optimiser."""
        return {key: value for key, value in self.server_state().items() if key.startswith(BATCH)}

    def load_server_state(self, state: State) -> None:
        """Restore what :meth:`server_state` saved (a resumed server) or sent (a site: the round's batch)."""
        batch = section(state, BATCH)
        self.batch = SyntheticBatch(int(batch["round"]), batch["images"], batch["prompted"]) if batch else None
        self.losses = state[LOSSES].tolist() if LOSSES in state else []
        self.restored = {k: v for k, v in state.items() if k.startswith((GENERATOR, OPTIMIZER))}
        self.enhancer = None


def generator_of(server_state: State, config: FedMMKTConfig) -> TextToImage:
    """The generator a FedMMKT run ended with: co-enhanced (from its server state) or the frozen pretrained one."""
    weights = section(server_state, GENERATOR)
    return FedMMKT.generator_from(weights, config.generator) if weights else pretrained(config.generator)


def losses_of(server_state: State) -> list[dict[str, float]]:
    """The fine-tuning losses per round recorded in a FedMMKT server state."""
    rows = server_state[LOSSES].tolist() if LOSSES in server_state else []
    return [{k: v for k, v in zip(LOSS_NAMES, row) if not math.isnan(v)} for row in rows]
