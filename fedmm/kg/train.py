"""Training of every FedMKGC method over one shared round loop.

Each round a client loads the global state (FedE: the mean embedding of each entity over the
clients that hold it, and the FedAvg of the shared modality projections, weighted by training
triples), trains ``local_epochs`` on its own triples, and sends them back. Relations never leave
a client. ``local`` skips the aggregation; ``centralized`` trains one model on every client's
kept triples (a modality is there if any client has it).

- HidE (``*_hide``): the server builds a scaler from every client's embedding moments; each
  client trains the diffusion denoiser of :mod:`fedmm.impute.diffusion` on its own entities by
  masked supervision, imputes its missing modality embeddings by DDIM, and trains with them in
  place of zeros. The denoiser is averaged like the projections.
- MMFeD3 (``mmfed3*``): each client keeps a private model that never leaves it beside its copy
  of the global model; on the client's own queries, with its own masks, each distils the other's
  score distribution (KL at a temperature) and entity embeddings (squared distance), both
  directions. The private model is the client's predictor; with HidE only the global copy
  imputes, and the private one learns the imputed semantics through the feature term.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.impute.diffusion import Denoiser, cosine_alpha_bar, ddim_sample, train_denoiser_locally
from fedmm.impute.latent import LatentData, Scaler
from fedmm.kg.config import KGConfig
from fedmm.kg.federation import ClientGraph, pooled
from fedmm.kg.model import KGModel
from fedmm.seeding import torch_generator
from fedmm.tensors import distillation_kl, fedavg_states, seeded_module

Features = dict[str, torch.Tensor]


@dataclass
class Participant:
    """A client during a run: its graph, its copy of the global model and what it keeps to itself."""

    graph: ClientGraph
    model: KGModel
    present: torch.Tensor
    private: KGModel | None = None
    denoiser: Denoiser | None = None
    filled: torch.Tensor | None = None
    history: list[float] = field(default_factory=list)

    @property
    def predictor(self) -> KGModel:
        return self.private if self.private is not None else self.model


def queries(triples: np.ndarray, num_relations: int) -> torch.Tensor:
    """(2n, 3) (head, relation, tail) queries: each triple forwards and with its reciprocal relation."""
    t = torch.as_tensor(triples, dtype=torch.long)
    return torch.cat([t, torch.stack([t[:, 2], t[:, 1] + num_relations, t[:, 0]], 1)])


def shared_state(participant: Participant) -> dict[str, torch.Tensor]:
    """What a client sends besides its entity rows: modality projections and the denoiser."""
    state = {f"project.{k}": v for k, v in participant.model.encoder.project.state_dict().items()}
    if participant.denoiser is not None:
        state.update({f"denoiser.{k}": v for k, v in participant.denoiser.state_dict().items()})
    return state


def load_shared(participant: Participant, entities: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
    rows = torch.as_tensor(participant.graph.entities)
    with torch.no_grad():
        participant.model.encoder.structure.weight[rows] = entities[rows]
    participant.model.encoder.project.load_state_dict(
        {k.removeprefix("project."): v for k, v in state.items() if k.startswith("project.")})
    if participant.denoiser is not None:
        participant.denoiser.load_state_dict(
            {k.removeprefix("denoiser."): v for k, v in state.items() if k.startswith("denoiser.")})


def aggregate(participants: list[Participant]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each entity's mean over the clients holding it; the shared weights' FedAvg by training triples."""
    first = participants[0].model.encoder.structure.weight
    total, count = torch.zeros_like(first), torch.zeros(len(first), 1)
    for p in participants:
        rows = torch.as_tensor(p.graph.entities)
        total[rows] += p.model.encoder.structure.weight.detach()[rows]
        count[rows] += 1
    entities = torch.where(count > 0, total / count.clamp(min=1), first.detach())
    weights = [float(p.graph.num_train) for p in participants]
    return entities, fedavg_states([shared_state(p) for p in participants], weights)


def latents(participant: Participant, features: Features) -> LatentData:
    rows = torch.as_tensor(participant.graph.entities)
    with torch.no_grad():
        embeddings = participant.model.encoder.modalities(features, participant.present)
    return LatentData(embeddings[rows], participant.present[rows])


def impute(participant: Participant, features: Features, scaler: Scaler, config: KGConfig, seed_keys: tuple) -> None:
    """HidE on one client: denoiser epochs on its own entities, then DDIM fills its missing embeddings."""
    hide = config.hide
    alpha_bar = cosine_alpha_bar(hide.timesteps)
    data = latents(participant, features)
    if bool(data.usable.any()):
        with torch.enable_grad():
            train_denoiser_locally(participant.denoiser, alpha_bar, scaler, data, hide, config.seed, seed_keys)
    noise = torch.randn((hide.samples, *data.embeddings.shape), generator=torch_generator(config.seed, *seed_keys, "noise"))
    scaled = ddim_sample(participant.denoiser, alpha_bar, scaler, scaler(data.embeddings, data.present), data.present,
                         hide.sampling_steps, noise)
    filled = torch.zeros((len(participant.present), *data.embeddings.shape[1:]))
    filled[torch.as_tensor(participant.graph.entities)] = scaler.inverse(scaled)
    participant.filled = filled.detach()


def local_training(participant: Participant, features: Features, config: KGConfig, num_relations: int, round_: int) -> None:
    """``local_epochs`` of 1-N cross-entropy (+ N3) on the client's queries; MMFeD3 adds its mutual terms."""
    graph, models = participant.graph, [participant.model] + ([participant.private] if participant.private else [])
    data = queries(graph.splits["train"], num_relations)
    candidates = torch.as_tensor(graph.entities)
    position = torch.full((len(participant.present),), -1, dtype=torch.long)
    position[candidates] = torch.arange(len(candidates))
    projections = [p for m in models for p in m.encoder.project.parameters()]
    others = [p for m in models for name, p in m.named_parameters() if not name.startswith("encoder.project.")]
    optimizer = torch.optim.Adam([{"params": others}, {"params": projections, "lr": config.feature_lr}], lr=config.lr)
    for epoch in range(config.local_epochs):
        order = torch.randperm(len(data), generator=torch_generator(config.seed, "kg", "batches", graph.index, round_, epoch))
        for start in range(0, len(data), config.batch_size):
            h, r, t = data[order[start:start + config.batch_size]].T
            embeddings = [participant.model.encoder(features, participant.present, participant.filled)]
            if participant.private is not None:
                embeddings.append(participant.private.encoder(features, participant.present))
            logits = [m.score(e, h, r, candidates) for m, e in zip(models, embeddings)]
            loss = sum(F.cross_entropy(s, position[t], label_smoothing=config.label_smoothing)
                       + config.n3_weight * m.n3(e, h, r, t) for m, e, s in zip(models, embeddings, logits))
            if participant.private is not None:
                d = config.distill
                rows = torch.cat([h, t])
                soft = [F.softmax(scores / d.temperature, dim=-1) for scores in logits]
                loss = loss + d.logit_weight * (distillation_kl(logits[0], soft[1], d.temperature)
                                                + distillation_kl(logits[1], soft[0], d.temperature))
                loss = loss + d.feature_weight * (((embeddings[0][rows] - embeddings[1][rows].detach()) ** 2).sum(-1).mean()
                                                  + ((embeddings[1][rows] - embeddings[0][rows].detach()) ** 2).sum(-1).mean())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            participant.history.append(float(loss.detach()))


def participants_for(clients: list[ClientGraph], config: KGConfig, num_entities: int, num_relations: int,
                     feature_dims: dict[str, int]) -> list[Participant]:
    """Every participant starts from the same seeded global initialisation."""
    graphs = [pooled(clients)] if config.method == "centralized" else clients
    init = seeded_module(lambda: KGModel(num_entities, num_relations, config.dim, config.scorer, feature_dims),
                         config.seed, "kg", "init")
    denoiser = None
    if config.hidden_imputation:
        denoiser = seeded_module(lambda: Denoiser(1 + len(feature_dims), 2 * config.dim, config.hide.hidden,
                                                  config.hide.timesteps), config.seed, "kg", "denoiser")
    out = []
    for graph in graphs:
        private = seeded_module(lambda: KGModel(num_entities, num_relations, config.dim, config.scorer, feature_dims),
                                config.seed, "kg", "private", graph.index) if config.dual_distillation else None
        out.append(Participant(graph, copy.deepcopy(init), torch.as_tensor(graph.present), private,
                               copy.deepcopy(denoiser)))
    return out


def train(clients: list[ClientGraph], features: dict[str, np.ndarray], config: KGConfig, num_entities: int,
          num_relations: int) -> tuple[list[Participant], Features]:
    """Run the method's rounds; returns the trained participants and the feature tensors they read."""
    tensors = {name: torch.as_tensor(value) for name, value in features.items()} if config.multimodal else {}
    if not config.multimodal:
        clients = [ClientGraph(c.index, c.entities, c.relations, c.splits, c.present[:, :1]) for c in clients]
    dims = {name: value.shape[1] for name, value in tensors.items()}
    participants = participants_for(clients, config, num_entities, num_relations, dims)
    for round_ in range(config.rounds):
        if config.hidden_imputation:
            scaler = Scaler.federated([latents(p, tensors) for p in participants])
            for p in participants:
                impute(p, tensors, scaler, config, ("kg", "hide", p.graph.index, round_))
        for p in participants:
            local_training(p, tensors, config, num_relations, round_)
        if config.federated:
            entities, state = aggregate(participants)
            for p in participants:
                load_shared(p, entities, state)
    if config.hidden_imputation:
        scaler = Scaler.federated([latents(p, tensors) for p in participants])
        for p in participants:
            impute(p, tensors, scaler, config, ("kg", "hide", p.graph.index, config.rounds))
    return participants, tensors
