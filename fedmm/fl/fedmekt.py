"""FedMEKT (Le et al. 2023): multimodal embedding knowledge transfer through a proxy set."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fedmm.config import TrainConfig
from fedmm.fl.client import OPTIMIZERS, Worker, trainable_state
from fedmm.fl.messages import TrainInstruction, labelled_cross_entropy
from fedmm.fl.params.fedmekt import FEDMEKT
from fedmm.fl.strategy import FedAvg, ServerContext, Strategy
from fedmm.models.multimodal import ModelSpec, MultimodalNet, build_model
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData, distillation_kl, seeded_module, weighted_mean

GLOBAL_ENCODERS = ("standardize.", "encoders.")


@dataclass(frozen=True)
class EmbeddingPayload:
    """Client -> server payload of FedMEKT: proxy-set embeddings, never parameters.

    ``embeddings`` (P, M, E) are the client's per-modality embeddings of the proxy set, zero
    for the modalities it does not hold; ``held`` (M,) says which modalities it holds.
    """

    client_id: int
    num_examples: int
    embeddings: torch.Tensor
    held: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def make_decoder(shape: tuple[int, ...], spec: ModelSpec) -> nn.Module:
    """An MLP from a joint embedding back to one modality's standardized input of ``shape``."""
    width = max(spec.channels * 4, spec.embed_dim)
    return nn.Sequential(
        nn.Linear(spec.embed_dim, width), nn.ReLU(), nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape)
    )


class Autoencoder(nn.Module):
    """A client's multimodal autoencoder: the global model's standardisation and encoders, a decoder per modality."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        net = MultimodalNet(spec)
        self.modalities = net.modalities
        self.standardize, self.encoders = net.standardize, net.encoders
        self.decoders = nn.ModuleDict({name: make_decoder(shape, spec) for name, shape in spec.sample_shapes.items()})

    embed = MultimodalNet.embed

    def reconstruction_loss(self, batch: TensorData, mode: str = "cross_modal") -> torch.Tensor:
        """MSE of the present modalities (standardized) decoded from the sample's embeddings.

        ``cross_modal`` (FedMEKT's code): each present modality alone predicts every present
        modality, the mean over (source, target) pairs; ``joint``: every present modality is
        decoded once from the mean of the present embeddings.
        """
        embeddings = self.embed(batch.inputs, batch.mask)
        present = batch.mask.to(embeddings.dtype)
        if mode == "joint":
            sources = (embeddings.sum(1) / present.sum(1, keepdim=True).clamp(min=1)).unsqueeze(1)
            pairs = present.unsqueeze(1)
        else:
            sources, pairs = embeddings, present.unsqueeze(2) * present.unsqueeze(1)
        errors = torch.stack(
            [(self.decoders[name](sources.flatten(0, 1)).unflatten(0, sources.shape[:2])
              - self.standardize[name](batch.inputs[name]).unsqueeze(1)).pow(2).flatten(2).mean(2)
             for name in self.modalities],
            dim=-1,
        )  # (B, sources, targets)
        return (errors * pairs).sum() / pairs.sum().clamp(min=1)


@torch.no_grad()
def proxy_embeddings(model: nn.Module, proxy: TensorData, held: torch.Tensor | None = None) -> torch.Tensor:
    """A model's embeddings (P, M, E) of the proxy set in order, zero for modalities outside ``held``."""
    held = proxy.mask.new_ones(proxy.mask.shape[1]) if held is None else held
    return torch.cat([model.embed(batch.inputs, batch.mask & held) for batch in proxy.batches(1024)])


def aggregate_embeddings(current: torch.Tensor, payloads: list[EmbeddingPayload]) -> torch.Tensor:
    """Per modality, the example-weighted mean embedding over the clients holding it (``current`` where none does)."""
    means = []
    for m in range(current.shape[1]):
        holders = [p for p in payloads if p.held[m] and p.num_examples > 0]
        means.append(weighted_mean([p.embeddings[:, m] for p in holders], [p.num_examples for p in holders])
                     if holders else current[:, m])
    return torch.stack(means, dim=1)


def dropout_masks(num_modalities: int, device: torch.device | str) -> torch.Tensor:
    """Presence rows (V, M): every modality, then each single modality absent (where another remains)."""
    single_absent = ~torch.eye(num_modalities, dtype=torch.bool, device=device)
    return torch.cat([single_absent.new_ones(1, num_modalities), single_absent[single_absent.any(1)]])


class FedMekt(FedAvg[EmbeddingPayload]):
    """FedMEKT: clients train multimodal autoencoders without labels; only proxy-set embeddings travel.

    Each round the server broadcasts the global model's per-modality embeddings of the proxy
    set (``t_m``, computed once per round). Selection and instructions are FedAvg's.

    Client contract: keep a local autoencoder between participations (encoders plus one
    decoder per modality; at its first participation it copies the global encoders it joins
    with and draws decoders keyed by ``(seed, "fedmekt", "decoder", client)``). After joining
    it receives only ``t_m``, never parameters (the simulation's ``global_state`` serves the
    server's broadcast and that first copy), and it never uses labels. Each local batch,
    paired with the next equally sized proxy batch of a seeded cyclic order, minimises::

        recon_weight * MSE(decode_n(e_m), x_n)                             over present (m, n)
        + distill_weight * T^2 * KL(softmax(t_m / T) || softmax(s_m / T))  over held m

    (cross-modal reconstruction as in FedMEKT's code: each present modality's embedding
    ``e_m`` alone predicts every present modality; ``train.fedmekt.reconstruction: joint``
    decodes each from the mean of the present embeddings instead)

    (``x_n`` standardized, ``s_m`` its own proxy embeddings, ``T``: ``train.fedmekt.temperature``;
    a client holds ``m`` if any of its samples has it). Then send an :class:`EmbeddingPayload`.

    Server: per modality the target is the example-weighted mean of the holders' embeddings
    (:func:`aggregate_embeddings`); the global encoders are distilled toward it on the proxy
    inputs for ``server_epochs`` (the same KL), then fusion and head are trained on the
    labelled proxy set for ``classifier_epochs`` with the encoders frozen, every batch also
    shown with each single modality absent. Both phases use a fresh Adam at ``train.lr``.

    Parameters (config: ``train.fedmekt``): ``recon_weight`` and ``distill_weight`` (>= 0),
    ``reconstruction`` (``cross_modal`` or ``joint``), ``temperature`` (> 0), ``server_epochs``
    and ``classifier_epochs`` (>= 1). No parameter delta travels, so there is no free rider
    to simulate and nothing for the contribution audit.
    """

    info = FEDMEKT

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, recon_weight: float,
        reconstruction: str, distill_weight: float, temperature: float, server_epochs: int, classifier_epochs: int,
    ) -> None:
        super().__init__(train, seed, server)
        self.config = self.checked(
            recon_weight=recon_weight, reconstruction=reconstruction, distill_weight=distill_weight,
            temperature=temperature, server_epochs=server_epochs, classifier_epochs=classifier_epochs,
        )
        self.proxy = self.require_proxy() if server is not None else None
        self.global_model = build_model(server.spec, seed).to(server.device) if server is not None else None
        self._broadcast: tuple[int, torch.Tensor] | None = None

    @classmethod
    def extra_labels(cls, train: TrainConfig) -> bool:
        return True

    free_rider_payload = Strategy.free_rider_payload

    def broadcast(self, server_round: int, global_state: State) -> torch.Tensor:
        """The round's global proxy embeddings (P, M, E): all the server sends to clients."""
        if self._broadcast is None or self._broadcast[0] != server_round:
            self.global_model.load_state_dict(global_state)
            self._broadcast = (server_round, proxy_embeddings(self.global_model, self.proxy))
        return self._broadcast[1]

    def _local_autoencoder(self, client: int, global_state: State, kept: State | None) -> Autoencoder:
        autoencoder = seeded_module(lambda: Autoencoder(self.server.spec), self.seed, "fedmekt", "decoder", client)
        if kept is None:
            joined = {name: value for name, value in global_state.items() if name.startswith(GLOBAL_ENCODERS)}
            kept = {**trainable_state(autoencoder), **joined}
        autoencoder.load_state_dict(kept)
        return autoencoder.to(self.server.device)

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[EmbeddingPayload, State]:
        """Train the client's own autoencoder (``worker`` is not used) and send its proxy embeddings."""
        teacher = self.broadcast(instruction.server_round, global_state)
        autoencoder = self._local_autoencoder(instruction.client_id, global_state, kept)
        held = data.mask.any(0)
        metrics = self._train_locally(autoencoder, data, teacher, held, instruction)
        embeddings = proxy_embeddings(autoencoder.eval(), self.proxy, held)
        payload = EmbeddingPayload(instruction.client_id, len(data), embeddings, held, metrics)
        return payload, trainable_state(autoencoder)

    def _train_locally(
        self, autoencoder: Autoencoder, data: TensorData, teacher: torch.Tensor, held: torch.Tensor,
        instruction: TrainInstruction,
    ) -> dict[str, float]:
        """The client's local epochs (class docstring); returns the last epoch's mean losses."""
        optimizer = OPTIMIZERS[instruction.optimizer](autoencoder.parameters(), lr=instruction.lr)
        keys = (self.seed, "fedmekt", instruction.server_round, instruction.client_id)
        proxy_order = torch.randperm(len(self.proxy), generator=torch_generator(*keys, "proxy")).to(teacher.device)
        proxy_batch = torch.arange(min(instruction.batch_size, len(self.proxy)), device=teacher.device)
        temperature = self.config.temperature
        soft_targets = F.softmax(teacher / temperature, dim=-1)
        offset = 0
        autoencoder.train()
        for epoch in range(instruction.local_epochs):
            generator = torch_generator(*keys, epoch)
            sums, batches = torch.zeros(2, device=teacher.device), 0
            for batch in data.batches(instruction.batch_size, generator):
                index = proxy_order[(offset + proxy_batch) % len(self.proxy)]
                offset = (offset + len(proxy_batch)) % len(self.proxy)
                proxy = self.proxy.take(index)
                student = autoencoder.embed(proxy.inputs, proxy.mask)
                losses = torch.stack([
                    autoencoder.reconstruction_loss(batch, self.config.reconstruction),
                    distillation_kl(student[:, held], soft_targets[index][:, held], temperature),
                ])
                loss = self.config.recon_weight * losses[0] + self.config.distill_weight * losses[1]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums, batches = sums + losses.detach(), batches + 1
        means = (sums / max(batches, 1)).tolist()
        return {"recon_loss": means[0], "distill_loss": means[1]}

    def _proxy_batches(self, server_round: int, phase: str, epoch: int) -> tuple[torch.Tensor, ...]:
        generator = torch_generator(self.seed, "fedmekt", "server", server_round, phase, epoch)
        order = torch.randperm(len(self.proxy), generator=generator).to(self.proxy.labels.device)
        return order.split(self.train.batch_size)

    def aggregate_train(self, server_round: int, global_state: State, updates: list[EmbeddingPayload]) -> State:
        if not updates:
            raise ValueError(f"round {server_round}: no client payloads to aggregate")
        model = self.global_model
        model.load_state_dict(global_state)
        targets = aggregate_embeddings(proxy_embeddings(model, self.proxy), updates)
        model.train()
        self._distill(model, targets, server_round)
        self._train_classifier(model, server_round)
        return trainable_state(model)

    def _distill(self, model: MultimodalNet, targets: torch.Tensor, server_round: int) -> None:
        optimizer = torch.optim.Adam(model.encoders.parameters(), lr=self.train.lr)
        temperature = self.config.temperature
        soft_targets = F.softmax(targets / temperature, dim=-1)
        for epoch in range(self.config.server_epochs):
            for index in self._proxy_batches(server_round, "distill", epoch):
                batch = self.proxy.take(index)
                loss = distillation_kl(model.embed(batch.inputs, batch.mask), soft_targets[index], temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def _train_classifier(self, model: MultimodalNet, server_round: int) -> None:
        embeddings = proxy_embeddings(model, self.proxy)
        variants = dropout_masks(embeddings.shape[1], embeddings.device)
        optimizer = torch.optim.Adam([*model.fusion.parameters(), *model.head.parameters()], lr=self.train.lr)
        for epoch in range(self.config.classifier_epochs):
            for index in self._proxy_batches(server_round, "classifier", epoch):
                mask = (self.proxy.mask[index].unsqueeze(0) & variants.unsqueeze(1)).flatten(0, 1)
                inputs = embeddings[index].repeat(len(variants), 1, 1) * mask.unsqueeze(-1)
                logits = model.head(model.fuse(inputs, mask))
                loss = labelled_cross_entropy(logits, self.proxy.labels[index].repeat(len(variants)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
