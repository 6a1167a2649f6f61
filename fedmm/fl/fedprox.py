"""FedProx (Li et al., MLSys 2020): FedAvg whose clients stay near the global model."""

from __future__ import annotations

import torch

from fedmm.config import TrainConfig
from fedmm.fl.messages import ClientUpdate, Forward, LocalContext, cross_entropy
from fedmm.fl.params.fedprox import FEDPROX
from fedmm.fl.strategy import FedAvg, ServerContext


class FedProx(FedAvg[ClientUpdate]):
    """FedAvg with a proximal term in the local objective, weighed by ``mu`` (>= 0; config: ``train.fedprox.mu``).

    Client contract: minimise ``cross_entropy + (mu / 2) * ||w - w_global||^2`` (the
    *squared* L2 distance of the trainable parameters to the round's global model, held fixed
    during local training), then send a :class:`~fedmm.fl.messages.ClientUpdate` (the delta
    of every floating-point state entry and the number of examples), as FedAvg. Client
    selection and aggregation are FedAvg's, and ``mu = 0`` is FedAvg exactly.
    """

    info = FEDPROX

    def __init__(self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, mu: float) -> None:
        super().__init__(train, seed, server)
        self.mu = self.checked(mu=mu).mu

    def client_loss(self, out: Forward, context: LocalContext) -> torch.Tensor:
        proximal = sum((param - context.global_state[name]).pow(2).sum() for name, param in context.params.items())
        return cross_entropy(out) + (self.mu / 2) * proximal
