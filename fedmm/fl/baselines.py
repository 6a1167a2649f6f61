"""Baselines a fair comparison needs: the server's proxy set alone, FedAvg fine-tuned on it, FedAvg with modality dropout."""

from __future__ import annotations

import torch

from fedmm.config import TrainConfig
from fedmm.fl.client import Worker, forward, train_client
from fedmm.fl.fedmekt import dropout_masks
from fedmm.fl.messages import ClientUpdate, Forward, LocalLoss, TrainInstruction, cross_entropy
from fedmm.fl.params.baselines import FEDAVG_DROPOUT, FEDAVG_FT, PROXY_ONLY
from fedmm.fl.strategy import FedAvg, ServerContext, Strategy
from fedmm.models.multimodal import build_model
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData


def train_on_proxy(
    worker: Worker, state: State, proxy: TensorData, epochs: int, train: TrainConfig, modality_dropout: bool,
    seed: int, *keys: int | str,
) -> State:
    """``state`` trained with a fresh Adam at ``train.lr`` for ``epochs`` over the labelled proxy set.

    With ``modality_dropout`` every batch is also shown with each single modality absent
    (where another remains), so the model learns the incomplete inputs clients and tests have.
    """
    worker.load(state)
    model = worker.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    variants = dropout_masks(proxy.mask.shape[1], proxy.mask.device)[: None if modality_dropout else 1]
    for epoch in range(epochs):
        for batch in proxy.batches(train.batch_size, torch_generator(seed, *keys, epoch)):
            views = TensorData(
                {name: value.repeat(len(variants), *[1] * (value.dim() - 1)) for name, value in batch.inputs.items()},
                (batch.mask.unsqueeze(0) & variants.unsqueeze(1)).flatten(0, 1), batch.labels.repeat(len(variants)),
            )
            loss = cross_entropy(forward(model, views))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return worker.state()


class _ProxyTrained(FedAvg[ClientUpdate]):
    """A FedAvg whose server trains on the labelled proxy set (config: ``train.proxy``).

    ``modality_dropout``: every proxy batch is also shown with each single modality absent.
    """

    def __init__(self, train: TrainConfig, seed: int, server: ServerContext | None, modality_dropout: bool) -> None:
        super().__init__(train, seed, server)
        self.modality_dropout = self.checked(modality_dropout=modality_dropout).modality_dropout
        self.proxy = self.require_proxy() if server is not None else None
        self.server_model = Worker(build_model(server.spec, seed).to(server.device)) if server is not None else None

    @classmethod
    def extra_labels(cls, train: TrainConfig) -> bool:
        return True

    def _train_on_proxy(self, state: State, epochs: int, server_round: int) -> State:
        return train_on_proxy(
            self.server_model, state, self.proxy, epochs, self.train, self.modality_dropout, self.seed,
            self.name, server_round,
        )


class ProxyOnly(_ProxyTrained):
    """No federation: the server trains on its labelled proxy set alone, ``epochs`` (>= 1) per round.

    No client is asked to train (``configure_train`` is empty), so the run's budget is
    ``rounds x epochs`` passes over the proxy set; clients' data is never used.
    """

    info = PROXY_ONLY

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, epochs: int, modality_dropout: bool
    ) -> None:
        super().__init__(train, seed, server, modality_dropout)
        self.epochs = self.checked(epochs=epochs).epochs

    @classmethod
    def sends_deltas(cls) -> bool:
        return False

    free_rider_payload = Strategy.free_rider_payload

    def configure_train(self, server_round: int, num_clients: int) -> list[TrainInstruction]:
        return []

    def aggregate_train(self, server_round: int, global_state: State, updates: list) -> State:
        return self._train_on_proxy(global_state, self.epochs, server_round)


class FedAvgFinetune(_ProxyTrained):
    """FedAvg, then (after the last round's aggregation) ``finetune_epochs`` (>= 1) on the labelled proxy set."""

    info = FEDAVG_FT

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, finetune_epochs: int,
        modality_dropout: bool,
    ) -> None:
        super().__init__(train, seed, server, modality_dropout)
        self.finetune_epochs = self.checked(finetune_epochs=finetune_epochs).finetune_epochs

    def aggregate_train(self, server_round: int, global_state: State, updates: list[ClientUpdate]) -> State:
        merged = super().aggregate_train(server_round, global_state, updates)
        if server_round < self.train.rounds - 1:
            return merged
        return self._train_on_proxy(merged, self.finetune_epochs, server_round)


def drop_modalities(mask: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """``mask`` with each present modality dropped at ``rate``; a sample that would lose all keeps its mask."""
    dropped = mask & (torch.rand(mask.shape, generator=generator) >= rate).to(mask.device)
    return torch.where(dropped.any(1, keepdim=True), dropped, mask)


class ModalityDropout(FedAvg[ClientUpdate]):
    """FedAvg whose clients also train on their batches with modalities dropped at random (ModDrop-style).

    Client contract: per local batch minimise ``cross_entropy(batch) + cross_entropy(batch
    with each present modality dropped at rate)`` (``rate`` in (0, 1), config:
    ``train.dropout.rate``; a sample keeps at least one modality; draws keyed by
    ``(seed, "dropout", round, client)``), then send the FedAvg delta.
    """

    info = FEDAVG_DROPOUT

    def __init__(self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, rate: float) -> None:
        super().__init__(train, seed, server)
        self.rate = self.checked(rate=rate).rate

    def dropout_objective(self, model: torch.nn.Module, instruction: TrainInstruction) -> LocalLoss:
        generator = torch_generator(self.seed, "dropout", instruction.server_round, instruction.client_id)

        def loss(out: Forward) -> torch.Tensor:
            batch = out.batch
            dropped = TensorData(batch.inputs, drop_modalities(batch.mask, self.rate, generator), batch.labels)
            return cross_entropy(out) + cross_entropy(forward(model, dropped))

        return loss

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[ClientUpdate, State | None]:
        worker.load(global_state)
        objective = self.dropout_objective(worker.model, instruction)
        return train_client(worker, global_state, data, instruction, objective, self.keep, self.seed)
