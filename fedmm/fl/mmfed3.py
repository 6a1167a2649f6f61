"""MMFeD3 (MMFeD3-HidE, arXiv 2506.22036): multimodal federated dual distillation between server and clients."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedmm.config import TrainConfig
from fedmm.fl.client import Worker, forward, train_client
from fedmm.fl.messages import ClientUpdate, Forward, LocalLoss, TrainInstruction, cross_entropy
from fedmm.fl.params.mmfed3 import MMFED3
from fedmm.fl.strategy import FedAvg, ServerContext
from fedmm.models.multimodal import build_model
from fedmm.seeding import torch_generator
from fedmm.tensors import UNLABELLED, State, TensorData, distillation_kl, frozen_copy, weighted_mean


@dataclass(frozen=True, kw_only=True)
class DistillationUpdate(ClientUpdate):
    """A :class:`ClientUpdate` plus the trained client model's outputs on the proxy inputs."""

    proxy_logits: torch.Tensor  # (P, C)
    proxy_features: torch.Tensor  # (P, F) fused representations


@dataclass(frozen=True)
class ProxyOutputs:
    """A model's logits and fused representations on the whole proxy set, in proxy order."""

    logits: torch.Tensor
    features: torch.Tensor


@torch.no_grad()
def proxy_outputs(model: torch.nn.Module, proxy: TensorData) -> ProxyOutputs:
    out = forward(model.eval(), proxy)
    return ProxyOutputs(out.logits, out.representation)


def distillation_loss(
    logits: torch.Tensor, features: torch.Tensor, teacher_probs: torch.Tensor, teacher_features: torch.Tensor,
    logit_weight: float, feature_weight: float, temperature: float,
) -> torch.Tensor:
    """``logit_weight * T^2 * KL(teacher || softmax(logits / T)) + feature_weight * MSE(features, teacher)``."""
    return (logit_weight * distillation_kl(logits, teacher_probs, temperature)
            + feature_weight * F.mse_loss(features, teacher_features))


class MMFeD3(FedAvg[DistillationUpdate]):
    """FedAvg plus MMFeD3's logit and feature distillation between clients and server, both ways.

    With temperature ``T`` (``temperature``, > 0) and weights ``lambda_l`` (``logit_weight``)
    and ``lambda_f`` (``feature_weight``), both >= 0 (config: ``train.mmfed3``)::

        distillation_loss = lambda_l * T^2 * KL(softmax(teacher / T) || softmax(student / T))
                            + lambda_f * MSE(student representation, teacher representation)

    Client contract (server -> client): distil the round's global model into the local one on
    the client's own batches, each with its own modality mask (the incomplete inputs the
    client really has, so distillation supervises the paths its data trains), minimising per
    local batch::

        cross_entropy(batch) + distillation_loss(client on batch, global model on batch)

    then send a :class:`DistillationUpdate`: the FedAvg delta (so the contribution audit and
    update corruptions apply) plus the trained model's logits and representations of the
    server's proxy inputs (the server shares those inputs, never their labels: the strategy
    drops them).

    Server (client -> server): the sample-weighted FedAvg of the deltas, then
    ``server_epochs`` of Adam (fresh each round, ``train.lr``) on ``distillation_loss``
    towards the client ensemble on the proxy inputs (the example-weighted mean of the
    clients' tempered softmaxes and of their representations). A free rider sends a zero
    delta and the round's global model's proxy outputs (what a client that did not train
    computes), so it counts as the global model. ``server_epochs`` (>= 0): 0 keeps the client
    direction only.

    The first ``warmup_rounds`` (>= 0) rounds are FedAvg (no distillation either way), so
    clients distil towards a global model that has learnt something. With both weights 0 the
    distillation terms and the server step are skipped: FedAvg exactly.
    """

    info = MMFED3

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, logit_weight: float,
        feature_weight: float, temperature: float, server_epochs: int, warmup_rounds: int,
    ) -> None:
        super().__init__(train, seed, server)
        self.config = self.checked(
            logit_weight=logit_weight, feature_weight=feature_weight, temperature=temperature,
            server_epochs=server_epochs, warmup_rounds=warmup_rounds,
        )
        self.distills = self.config.logit_weight > 0 or self.config.feature_weight > 0
        self.proxy = self.server_model = None
        if server is not None:
            labelled = self.require_proxy()
            self.proxy = TensorData(labelled.inputs, labelled.mask, torch.full_like(labelled.labels, UNLABELLED))
            self.server_model = Worker(build_model(server.spec, seed).to(server.device))
        self._broadcast: tuple[int, ProxyOutputs] | None = None

    def global_outputs(self, server_round: int, global_state: State) -> ProxyOutputs:
        """What the server broadcasts at the round start: the global model's proxy outputs (cached per round)."""
        if self._broadcast is None or self._broadcast[0] != server_round:
            self.server_model.load(global_state)
            self._broadcast = server_round, proxy_outputs(self.server_model.model, self.proxy)
        return self._broadcast[1]

    def _loss(self, logits: torch.Tensor, features: torch.Tensor, teacher_probs: torch.Tensor,
              teacher_features: torch.Tensor) -> torch.Tensor:
        c = self.config
        return distillation_loss(
            logits, features, teacher_probs, teacher_features, c.logit_weight, c.feature_weight, c.temperature
        )

    def distills_in(self, server_round: int) -> bool:
        """Whether distillation (both directions) runs in this round."""
        return self.distills and server_round >= self.config.warmup_rounds

    def client_objective(self, model: torch.nn.Module, global_state: State) -> LocalLoss:
        """Cross-entropy plus distillation towards the global model on the same batch, under its own mask."""
        teacher = frozen_copy(model, global_state)
        temperature = self.config.temperature

        def loss(out: Forward) -> torch.Tensor:
            with torch.no_grad():
                target = forward(teacher, out.batch)
            return cross_entropy(out) + self._loss(
                out.logits, out.representation, F.softmax(target.logits / temperature, dim=1), target.representation
            )

        return loss

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[DistillationUpdate, State | None]:
        worker.load(global_state)
        loss_fn = cross_entropy
        if self.distills_in(instruction.server_round):
            loss_fn = self.client_objective(worker.model, global_state)
        update, kept = train_client(worker, global_state, data, instruction, loss_fn, self.keep, self.seed)
        outputs = proxy_outputs(worker.model, self.proxy)
        return DistillationUpdate(
            client_id=update.client_id, num_examples=update.num_examples, delta=update.delta, metrics=update.metrics,
            proxy_logits=outputs.logits, proxy_features=outputs.features,
        ), kept

    def free_rider_payload(
        self, instruction: TrainInstruction, global_state: State, num_examples: int
    ) -> DistillationUpdate:
        update = super().free_rider_payload(instruction, global_state, num_examples)
        outputs = self.global_outputs(instruction.server_round, global_state)
        return DistillationUpdate(
            client_id=update.client_id, num_examples=update.num_examples, delta=update.delta,
            proxy_logits=outputs.logits, proxy_features=outputs.features,
        )

    def ensemble(self, updates: list[DistillationUpdate]) -> tuple[torch.Tensor, torch.Tensor]:
        """The example-weighted means of the clients' tempered proxy softmaxes (P, C) and representations (P, F)."""
        weights = [update.num_examples for update in updates]
        probs = weighted_mean([F.softmax(u.proxy_logits / self.config.temperature, dim=1) for u in updates], weights)
        return probs, weighted_mean([u.proxy_features for u in updates], weights)

    def aggregate_train(self, server_round: int, global_state: State, updates: list[DistillationUpdate]) -> State:
        merged = super().aggregate_train(server_round, global_state, updates)
        if not self.distills_in(server_round) or not self.config.server_epochs:
            return merged
        teacher_probs, teacher_features = self.ensemble(updates)
        self.server_model.load(merged)
        model = self.server_model.model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.train.lr)
        size, batch_size = len(self.proxy), self.train.batch_size
        for epoch in range(self.config.server_epochs):
            generator = torch_generator(self.seed, "mmfed3", "server", server_round, epoch)
            order = torch.randperm(size, generator=generator).to(self.proxy.mask.device)
            for start in range(0, size, batch_size):
                index = order[start:start + batch_size]
                out = forward(model, self.proxy.take(index))
                loss = self._loss(out.logits, out.representation, teacher_probs[index], teacher_features[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return self.server_model.state()
