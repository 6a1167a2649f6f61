"""One FedMKGC run: load and validate the graph, embed entity names, federate, train, evaluate."""

from __future__ import annotations

import time

from fedmm.kg.config import KGConfig
from fedmm.kg.data import entity_text, load_kg
from fedmm.kg.evaluate import evaluate
from fedmm.kg.federation import federate, federation_report, modality_features
from fedmm.kg.text import text_embeddings
from fedmm.kg.train import train


def run(config: KGConfig) -> dict:
    """Test (and validation) metrics of one run, with its federation's sizes and wall time."""
    start = time.perf_counter()
    kg = load_kg(config.dataset)
    text = text_embeddings([entity_text(e) for e in kg.entities])
    features, available = modality_features(kg, text)
    clients = federate(kg, config, available)
    participants, tensors = train(clients, features, config, kg.num_entities, kg.num_relations)
    test = evaluate(participants, clients, tensors, kg, "test")
    valid = evaluate(participants, clients, tensors, kg, "valid")
    return {**test, **{f"valid_{k}": v for k, v in valid.items() if k != "queries"},
            "report": federation_report(clients), "seconds": round(time.perf_counter() - start, 2)}
