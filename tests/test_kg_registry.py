"""FedMKGC versions in the MLflow registry: lineage, the recorded MRR and ranks, and the MRR gates."""

import dataclasses

import numpy as np
import pytest

from fedmm.data.validation import DataValidationError
from fedmm.kg import registry as kg_registry
from fedmm.kg.config import KGConfig, KGRegistryConfig, KGRunConfig
from fedmm.kg.run import evaluate_graph, federate_graph, load_validated, train_graph
from fedmm.kg.validation import validate_kg
from fedmm.tracking import registry

TINY = dict(dataset="nations", clients=3, keep=0.5, dim=8, rounds=2, local_epochs=1, batch_size=256)


@pytest.fixture(scope="module")
def nations():
    kg = load_validated("nations")
    return kg, validate_kg(kg)


def _register(nations, model_name, min_mrr=0.0, **run):
    kg, report = nations
    config = KGRunConfig(task="fedmkgc", run=KGConfig(**{**TINY, **run}),
                         registry=KGRegistryConfig(model_name=model_name, min_mrr=min_mrr))
    federation = federate_graph(kg, config.run)
    trained = train_graph(kg, federation, config.run)
    evaluation = evaluate_graph(kg, federation, trained)
    return evaluation, kg_registry.record_and_register_kg(config, report, federation, trained, evaluation)


def test_a_version_carries_its_mrr_lineage_and_gate_verdicts(nations):
    evaluation, first = _register(nations, "kg-gates", method="fede")
    assert first["promoted"] and registry.aliases("kg-gates")["champion"] == first["model_version"]
    tags = registry.client().get_model_version("kg-gates", first["model_version"]).tags
    assert float(tags[kg_registry.TAG_MRR]) == pytest.approx(evaluation["test"]["mrr"], abs=1e-6)
    assert tags["fedmm.data_sha256"] == kg_registry.graph_sha256("nations") and tags["fedmm.kg.method"] == "fede"
    assert tags["fedmm.gates"] == "validation=pass; min_mrr=pass; test_size=pass; beats_champion=pass"
    ranks = kg_registry.recorded_ranks("kg-gates", first["model_version"])
    assert float((1 / ranks).mean()) == pytest.approx(evaluation["test"]["mrr"])

    _, floor = _register(nations, "kg-gates", min_mrr=0.99, method="fede_text", missing_rate=0.5)
    gates = {g["name"]: g for g in floor["gates"]}
    assert not floor["promoted"] and not gates["min_mrr"]["passed"] and "vs floor 0.9900" in gates["min_mrr"]["detail"]
    assert "paired t interval" in gates["beats_champion"]["detail"]
    assert registry.aliases("kg-gates")["champion"] == first["model_version"]

    _, other = _register(nations, "kg-gates", method="fede", seed=1)
    gates = {g["name"]: g for g in other["gates"]}
    assert not other["promoted"] and "not comparable" in gates["beats_champion"]["detail"]


def test_a_failed_validation_registers_nothing(nations):
    kg, _ = nations
    leaked = dataclasses.replace(kg, splits={**kg.splits, "test": np.concatenate([kg.splits["test"], kg.splits["train"][:2]])})
    with pytest.raises(DataValidationError, match="2 valid/test triples are also in train"):
        _register((kg, validate_kg(leaked)), "kg-invalid", method="local")
    assert registry.client().search_model_versions("name='kg-invalid'") == []
