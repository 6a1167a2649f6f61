"""FedE-style federation of a knowledge graph: clients own relations and share the entities they touch.

Relations are dealt to clients in a seeded random order; a client holds the triples of its
relations (a seeded share ``keep`` of the training ones) and the entities they mention, so
entities overlap across clients while relations never do. Each (client, entity) lacks each
non-structure modality with probability ``missing_rate``, on top of the gaps in the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmm.kg.config import KGConfig
from fedmm.kg.data import KnowledgeGraph, TripleError
from fedmm.seeding import rng_for

STRUCTURE = "structure"


@dataclass(frozen=True)
class ClientGraph:
    """One client's triples (global ids), the entities and relations it holds, and modality presence.

    ``present`` is (num_entities, modalities) over the global entity ids with structure first;
    rows of entities the client does not hold are False.
    """

    index: int
    entities: np.ndarray
    relations: np.ndarray
    splits: dict[str, np.ndarray]
    present: np.ndarray

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])


def modality_features(kg: KnowledgeGraph, text: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The non-structure modalities (name -> (entities, dim)) and where the data has them.

    Text embeddings are standardised per dimension over the graph's entity names: MiniLM's
    mean-pooled vectors share a large common component that would otherwise dominate.
    """
    features, available = {}, [np.ones(kg.num_entities, dtype=bool)]
    if text is not None:
        features["text"] = ((text - text.mean(0)) / (text.std(0) + 1e-6)).astype(np.float32)
        available.append(np.ones(kg.num_entities, dtype=bool))
    if kg.numeric is not None:
        features["numeric"] = kg.numeric
        available.append(kg.numeric_present)
    return features, np.stack(available, axis=1)


def federate(kg: KnowledgeGraph, config: KGConfig, available: np.ndarray) -> list[ClientGraph]:
    """The clients of a run; ``available`` (entities, modalities) is the data's own presence."""
    if config.clients > kg.num_relations:
        raise TripleError(f"{config.clients} clients but {kg.name} has only {kg.num_relations} relations to deal")
    order = rng_for(config.seed, "kg", "relations").permutation(kg.num_relations)
    clients = []
    for index, relations in enumerate(np.array_split(order, config.clients)):
        relations = np.sort(relations)
        splits = {split: t[np.isin(t[:, 1], relations)] for split, t in kg.splits.items()}
        train = splits["train"]
        kept = rng_for(config.seed, "kg", "keep", index).permutation(len(train))[: max(1, round(config.keep * len(train)))]
        splits["train"] = train[np.sort(kept)]
        entities = np.unique(np.concatenate([t[:, [0, 2]].ravel() for t in splits.values()]))
        present = np.zeros_like(available)
        present[entities] = available[entities]
        for m in range(1, available.shape[1]):
            lost = rng_for(config.seed, "kg", "mask", index, m).random(kg.num_entities) < config.missing_rate
            present[:, m] &= ~lost
        clients.append(ClientGraph(index, entities, relations, splits, present))
    return clients


def pooled(clients: list[ClientGraph]) -> ClientGraph:
    """All clients' data in one place (the centralized reference): a modality is there if any client has it."""
    return ClientGraph(
        index=len(clients),
        entities=np.unique(np.concatenate([c.entities for c in clients])),
        relations=np.unique(np.concatenate([c.relations for c in clients])),
        splits={s: np.concatenate([c.splits[s] for c in clients]) for s in clients[0].splits},
        present=np.logical_or.reduce([c.present for c in clients]),
    )


def federation_report(clients: list[ClientGraph]) -> dict:
    """Sizes a reader needs to judge the setting: triples, entities, overlap and modality coverage."""
    holders = np.zeros(len(clients[0].present), dtype=int)
    for client in clients:
        holders[client.entities] += 1
    return {
        "train_triples": [c.num_train for c in clients],
        "entities": [len(c.entities) for c in clients],
        "relations": [len(c.relations) for c in clients],
        "mean_clients_per_entity": float(holders[holders > 0].mean()),
        "modality_coverage": [float(c.present[c.entities].mean(0)[1:].mean()) if c.present.shape[1] > 1 else 1.0
                              for c in clients],
    }
