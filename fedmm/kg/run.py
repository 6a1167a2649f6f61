"""One FedMKGC run's steps: load and validate the graph, federate it, train, evaluate.

The graph ``fedmm.graph.FEDMKGC`` (its stage bodies in ``fedmm.kg.stages``) calls them; the
experiment matrix runs that graph's stages up to the evaluation (:func:`run`), ``fedmm run`` on a
``task: fedmkgc`` file the whole graph.
"""

from __future__ import annotations

import time

from fedmm.data.validation import ValidationReport
from fedmm.kg.artifacts import Federation, TrainedKG
from fedmm.kg.config import KGConfig, KGRunConfig
from fedmm.kg.data import KnowledgeGraph, entity_text, load_kg
from fedmm.kg.evaluate import metrics, protocol_sha256, ranks
from fedmm.kg.federation import federate, federation_report, modality_features, pooled
from fedmm.kg.text import text_embeddings
from fedmm.kg.train import train
from fedmm.kg.validation import validate_kg


def load_validated(dataset: str) -> KnowledgeGraph:
    """The graph, once its ``kg_triples`` suite passed (:class:`DataValidationError` naming each failure otherwise)."""
    kg = load_kg(dataset)
    validate_kg(kg).raise_if_failed()
    return kg


def federate_graph(kg: KnowledgeGraph, config: KGConfig) -> Federation:
    """Embed the entity names, then deal the relations to the clients and draw their missing modalities."""
    features, available = modality_features(kg, text_embeddings([entity_text(e) for e in kg.entities]))
    return Federation(features, federate(kg, config, available))


def train_graph(kg: KnowledgeGraph, federation: Federation, config: KGConfig) -> TrainedKG:
    participants, tensors = train(federation.clients, federation.features, config, kg.num_entities, kg.num_relations)
    return TrainedKG.from_participants(participants, config, kg.num_entities, kg.num_relations, tensors)


def owner_graphs(federation: Federation, config: KGConfig):
    return [pooled(federation.clients)] if config.method == "centralized" else federation.clients


def evaluate_graph(kg: KnowledgeGraph, federation: Federation, trained: TrainedKG) -> dict:
    """Test and validation metrics, the test ranks query by query and the hash of what they rank."""
    participants = trained.participants(owner_graphs(federation, trained.config))
    features = trained.features(federation)
    test = ranks(participants, federation.clients, features, kg, "test")
    valid = ranks(participants, federation.clients, features, kg, "valid")
    return {"test": metrics(test), "valid": metrics(valid), "test_ranks": test.tolist(),
            "protocol_sha256": protocol_sha256(federation.clients, kg), "report": federation_report(federation.clients)}


def validated(dataset: str) -> ValidationReport:
    """The FedMKGC graph's validation stage on ``dataset``: its passed report (the gate raises otherwise)."""
    from fedmm.graph import FEDMKGC

    config = KGRunConfig(run=KGConfig(dataset=dataset))
    return FEDMKGC.run_through(config, "kg_validation_report", track=False)["kg_validation_report"]


def run(config: KGConfig, report: ValidationReport) -> dict:
    """Test (and validation) metrics of one run of the FedMKGC graph on a validated dataset (its ``report``), with
    its federation's sizes and wall time: the graph's stages up to the evaluation."""
    from fedmm.graph import FEDMKGC

    start = time.perf_counter()
    artifacts = FEDMKGC.run_through(KGRunConfig(run=config), "kg_evaluation", {"kg_validation_report": report},
                                    progress=False, track=False)
    evaluation = artifacts["kg_evaluation"]
    return {**evaluation["test"], **{f"valid_{k}": v for k, v in evaluation["valid"].items() if k != "queries"},
            "report": evaluation["report"], "seconds": round(time.perf_counter() - start, 2)}
