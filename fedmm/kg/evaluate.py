"""Filtered ranking metrics: each client's test triples ranked among the entities that client holds.

Both directions are scored (tail, and head through the reciprocal relation). Other true answers
from any split are filtered out; ties count half (the realistic rank). Metrics are micro-averaged
over every client's queries, so each method is scored on exactly the same queries.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch

from fedmm.kg.data import KnowledgeGraph
from fedmm.kg.train import Participant, queries

HITS = (1, 3, 10)


def known_answers(kg: KnowledgeGraph) -> dict[tuple[int, int], list[int]]:
    """(head, relation or its reciprocal) -> every true tail in any split."""
    answers: dict[tuple[int, int], list[int]] = defaultdict(list)
    for h, r, t in queries(kg.all_triples(), kg.num_relations).tolist():
        answers[(h, r)].append(t)
    return answers


@torch.no_grad()
def client_ranks(participant: Participant, graph, features, kg: KnowledgeGraph, answers, split: str) -> np.ndarray:
    """Filtered realistic ranks of ``graph``'s ``split`` queries by ``participant``'s predictor."""
    model = participant.predictor
    filled = participant.filled if participant.private is None else None
    entities = model.encoder(features, participant.present, filled)
    candidates = torch.as_tensor(graph.entities)
    position = {int(e): i for i, e in enumerate(graph.entities)}
    data = queries(graph.splits[split], kg.num_relations)
    if not len(data):
        return np.zeros(0)
    h, r, t = data.T
    scores = model.score(entities, h, r, candidates)
    target = torch.as_tensor([position[int(x)] for x in t])
    true = scores.gather(1, target.unsqueeze(1))
    other = torch.zeros_like(scores, dtype=torch.bool)
    for row, (head, relation) in enumerate(zip(h.tolist(), r.tolist())):
        other[row, [position[x] for x in answers[(head, relation)] if x in position]] = True
    other[torch.arange(len(target)), target] = False
    scores = scores.masked_fill(other, -torch.inf)
    ranks = 1 + (scores > true).sum(1) + 0.5 * ((scores == true).sum(1) - 1)
    return ranks.double().numpy()


def metrics(ranks: np.ndarray) -> dict[str, float]:
    return {"mrr": float((1 / ranks).mean()), **{f"hits@{k}": float((ranks <= k).mean()) for k in HITS},
            "queries": int(len(ranks))}


def ranks(participants: list[Participant], clients, features, kg: KnowledgeGraph, split: str = "test") -> np.ndarray:
    """Every client's filtered ``split`` ranks, client after client (the order :func:`protocol_sha256` hashes).

    A centralized run has one participant; it ranks each client's queries among that client's entities.
    """
    answers = known_answers(kg)
    owners = participants * len(clients) if len(participants) == 1 else participants
    return np.concatenate([client_ranks(p, c, features, kg, answers, split) for p, c in zip(owners, clients)])


def evaluate(participants: list[Participant], clients, features, kg: KnowledgeGraph, split: str = "test") -> dict:
    """Micro-averaged filtered MRR and Hits@k over every client's ``split`` queries."""
    return metrics(ranks(participants, clients, features, kg, split))


def protocol_sha256(clients, kg: KnowledgeGraph, split: str = "test") -> str:
    """SHA-256 of what a rank means: the graph, and each client's candidate entities and queries in order.

    Two runs with equal hashes ranked the same queries among the same candidates, query by query.
    """
    digest = hashlib.sha256(kg.name.encode())
    for client in clients:
        for array in (client.entities, queries(client.splits[split], kg.num_relations).numpy()):
            array = np.ascontiguousarray(array, dtype=np.int64)
            digest.update(np.int64(array.size).tobytes() + array.tobytes())
    return digest.hexdigest()
