"""MOON (Li, He and Song, CVPR 2021): model-contrastive federated learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedmm.config import TrainConfig
from fedmm.fl.messages import ClientUpdate, Forward, LocalContext, cross_entropy
from fedmm.fl.params.moon import MOON
from fedmm.fl.strategy import FedAvg, ServerContext
from fedmm.tensors import State


class Moon(FedAvg[ClientUpdate]):
    """FedAvg with MOON's model-contrastive term on the fused representation.

    For a batch, let ``z`` be the client model's fused representation
    (``MultimodalNet.represent``: encoders, masked fusion), ``z_glob`` that of the round's
    global model and ``z_prev`` that of the client's own model after its previous
    participation (both frozen). With cosine similarity ``sim``, the weight ``mu`` (>= 0) and
    the temperature ``tau`` (``temperature``, > 0; config: ``train.moon``)::

        l_con = -log(exp(sim(z, z_glob) / tau) / (exp(sim(z, z_glob) / tau) + exp(sim(z, z_prev) / tau)))
        loss = cross_entropy + mu * l_con

    Client contract: keep its trained state locally after every round (:meth:`keep`; it is
    never sent), minimise the loss above, and send a :class:`~fedmm.fl.messages.ClientUpdate`
    as FedAvg. At a client's first participation there is no previous model and the term is
    dropped (the reference code's previous = global would make it the constant log 2, which
    has no gradient). Selection and aggregation are FedAvg's; ``mu = 0`` is FedAvg exactly.
    """

    info = MOON

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, mu: float, temperature: float
    ) -> None:
        super().__init__(train, seed, server)
        checked = self.checked(mu=mu, temperature=temperature)
        self.mu, self.temperature = checked.mu, checked.temperature

    def keep(self, trained: State) -> State:
        return trained

    def client_loss(self, out: Forward, context: LocalContext) -> torch.Tensor:
        if context.kept is None:
            return cross_entropy(out)
        inputs, mask = out.batch.inputs, out.batch.mask
        with torch.no_grad():
            positive = context.represent(context.global_state, inputs, mask)
            negative = context.represent(context.kept, inputs, mask)
        similarities = torch.stack(
            [F.cosine_similarity(out.representation, positive, dim=1),
             F.cosine_similarity(out.representation, negative, dim=1)],
            dim=1,
        )
        target = torch.zeros(len(similarities), dtype=torch.long, device=similarities.device)
        contrastive = out.mean(F.cross_entropy(similarities / self.temperature, target, reduction="none"))
        return cross_entropy(out) + self.mu * context.has_kept * contrastive
