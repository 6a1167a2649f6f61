"""FedMKGC: the shipped graphs, their validation, the federation, the models, HidE and MMFeD3, the table."""

import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO

from fedmm.data.sources import SourceIntegrityError
from fedmm.data.validation import DataValidationError
from fedmm.kg import data as kg_data
from fedmm.kg import text as kg_text
from fedmm.kg.artifacts import Federation, TrainedKG
from fedmm.kg.config import KGConfig
from fedmm.kg.data import KnowledgeGraph, TripleError, entity_text, load_kg, read_rows
from fedmm.kg.evaluate import evaluate, protocol_sha256
from fedmm.kg.experiment import load_kg_spec, markdown, paired_interval, run_kg_experiment, summarise
from fedmm.kg.federation import federate, modality_features, pooled
from fedmm.kg.run import evaluate_graph, federate_graph, train_graph
from fedmm.kg.train import aggregate, train
from fedmm.kg.validation import validate_kg

TINY = dict(dataset="nations", clients=3, keep=0.5, dim=8, rounds=2, local_epochs=1, batch_size=256)


@pytest.fixture(scope="module")
def nations():
    kg = load_kg("nations")
    return kg, kg_text.text_embeddings([entity_text(e) for e in kg.entities])


def test_shipped_graphs_have_their_published_sizes():
    umls = load_kg("umls")
    assert (umls.num_entities, umls.num_relations) == (135, 46)
    assert [len(umls.splits[s]) for s in ("train", "valid", "test")] == [5216, 652, 661]
    nations = load_kg("nations")
    assert nations.num_entities == 14 and nations.numeric.shape == (14, 2)
    assert nations.numeric_present.sum() == 13 and not nations.numeric_present[nations.entities.index("ussr")]
    assert np.allclose(nations.numeric[nations.numeric_present].mean(0), 0, atol=1e-5)
    assert "pykeen" not in sys.modules


def test_a_modified_graph_file_is_refused(tmp_path, monkeypatch):
    shutil.copytree(kg_data.kg_dir("umls"), tmp_path / "umls")
    with open(tmp_path / "umls" / "test.txt", "a") as handle:
        handle.write("alga\tisa\tentity\n")
    monkeypatch.setattr(kg_data, "kg_dir", lambda name: tmp_path / name)
    with pytest.raises(SourceIntegrityError, match="test.txt has SHA-256"):
        load_kg("umls")


def test_the_triple_gate_rejects_an_unknown_id_a_leak_and_a_duplicate(tmp_path):
    names = tuple("abc")
    good = {"train": np.array([[0, 0, 1], [1, 1, 2]]), "valid": np.array([[2, 0, 0]]), "test": np.array([[0, 1, 2]])}
    kg = KnowledgeGraph("g", names, ("r", "s"), good)
    assert validate_kg(kg).success
    leaked = validate_kg(KnowledgeGraph("g", names, ("r", "s"), {**good, "test": np.array([[0, 1, 2], [1, 1, 2]])}))
    assert [o.column for o in leaked.failed()] == ["leaked"]
    with pytest.raises(DataValidationError, match=r"1 valid/test triples are also in train, first \(1, 1, 2\)"):
        leaked.raise_if_failed()
    unknown = validate_kg(KnowledgeGraph("g", names, ("r", "s"), {**good, "test": np.array([[0, 5, 2]])}))
    assert {o.column for o in unknown.failed()} == {"relation", "unseen_in_train"}
    assert "ids must be 0..1; 1 triples out of range, first (0, 5, 2)" in unknown.failed()[0].details
    twice = validate_kg(KnowledgeGraph("g", names, ("r", "s"), {**good, "train": good["train"][[0, 1, 1]]}))
    assert [o.column for o in twice.failed()] == ["split+triple"]
    (tmp_path / "bad.txt").write_text("a\tb\tc\nonly\ttwo\n")
    with pytest.raises(TripleError, match="bad.txt:2: expected 3 tab-separated fields, found 2"):
        read_rows(tmp_path / "bad.txt")


def test_text_model_is_hash_checked_and_embeds_meaningfully(nations, monkeypatch):
    kg, text = nations
    assert text.shape == (14, kg_text.TEXT_DIM)
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    usa, uk, burma = (text[kg.entities.index(n)] for n in ("usa", "uk", "burma"))
    assert cosine(usa, uk) > cosine(usa, burma)
    monkeypatch.setitem(kg_text.MINILM_SHA256, "config.json", "0" * 64)
    with pytest.raises(SourceIntegrityError, match="config.json has SHA-256"):
        kg_text.encode(["x"])


def test_clients_own_disjoint_relations_and_share_entities():
    kg = load_kg("umls")
    config = KGConfig(dataset="umls", clients=5, keep=0.25, missing_rate=0.5)
    _, available = modality_features(kg, np.zeros((kg.num_entities, 4), dtype=np.float32))
    clients = federate(kg, config, available)
    relations = np.concatenate([c.relations for c in clients])
    assert sorted(relations) == list(range(46))
    owned = [set(c.relations.tolist()) for c in clients]
    assert all(set(c.splits["test"][:, 1]) <= owned[i] for i, c in enumerate(clients))
    per_client = [np.isin(kg.splits["train"][:, 1], c.relations).sum() for c in clients]
    assert [c.num_train for c in clients] == [round(0.25 * n) for n in per_client]
    held = sum(len(c.entities) for c in clients)
    assert held > len(np.unique(np.concatenate([c.entities for c in clients])))
    text_present = np.concatenate([c.present[c.entities, 1] for c in clients])
    assert 0.4 < text_present.mean() < 0.6
    assert (pooled(clients).present == np.logical_or.reduce([c.present for c in clients])).all()
    again = federate(kg, config, available)
    assert all((a.present == b.present).all() and (a.splits["train"] == b.splits["train"]).all()
               for a, b in zip(clients, again))


def test_server_averages_each_entity_over_its_holders(nations):
    kg, text = nations
    config = KGConfig(**TINY, method="fede")
    features, available = modality_features(kg, text)
    clients = federate(kg, config, available)
    participants, _ = train(clients, features, config.model_copy(update={"rounds": 1}), kg.num_entities,
                            kg.num_relations)
    for p, value in zip(participants, (1.0, 2.0, 4.0)):
        p.model.encoder.structure.weight.data.fill_(value)
    entities, _ = aggregate(participants)
    for e in range(kg.num_entities):
        holders = [v for c, v in zip(clients, (1.0, 2.0, 4.0)) if e in c.entities]
        assert torch.allclose(entities[e], torch.tensor(np.mean(holders), dtype=torch.float32))


@pytest.mark.parametrize("method,scorer", [("local", "complex"), ("fede_hide", "complex"), ("mmfed3_hide", "rotate"),
                                           ("centralized", "complex")])
def test_every_method_trains_and_ranks_the_same_queries(nations, method, scorer):
    kg, text = nations
    config = KGConfig(**TINY, method=method, scorer=scorer, missing_rate=0.5)
    features, available = modality_features(kg, text)
    clients = federate(kg, config, available)
    participants, tensors = train(clients, features, config, kg.num_entities, kg.num_relations)
    result = evaluate(participants, clients, tensors, kg)
    assert result["queries"] == 2 * len(kg.splits["test"])
    assert 0 < result["hits@1"] <= result["hits@3"] <= result["hits@10"] <= 1 and 0 < result["mrr"] <= 1
    # one loss per batch of (reciprocal-doubled) queries, per local epoch, per round
    batches = [-(-2 * len(p.graph.splits["train"]) // config.batch_size) for p in participants]
    assert [len(p.history) for p in participants] == [config.rounds * config.local_epochs * b for b in batches]
    assert all(np.isfinite(p.history).all() for p in participants)
    if method.endswith("hide"):
        missing = ~participants[0].present[clients[0].entities]
        assert participants[0].filled[clients[0].entities][missing].abs().sum() > 0


def test_a_trained_model_and_its_federation_rank_the_same_after_a_round_trip(nations, tmp_path):
    kg, _ = nations
    config = KGConfig(**TINY, method="fede_hide", missing_rate=0.5)
    federation = federate_graph(kg, config)
    trained = train_graph(kg, federation, config)
    federation.save(tmp_path / "federation")
    trained.save(tmp_path / "model")
    before = evaluate_graph(kg, federation, trained)
    after = evaluate_graph(kg, Federation.load(tmp_path / "federation"), TrainedKG.load(tmp_path / "model"))
    assert after["test_ranks"] == before["test_ranks"] and after["protocol_sha256"] == before["protocol_sha256"]
    assert any(owner["filled"] is not None for owner in trained.owners)
    other_seed = federate_graph(kg, config.model_copy(update={"seed": 1}))
    assert protocol_sha256(other_seed.clients, kg) != before["protocol_sha256"]


def test_paired_interval_and_table():
    mean, low, high = paired_interval(np.array([0.1, 0.2, 0.3]))
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2 - 4.302653 * 0.1 / np.sqrt(3), abs=1e-5)
    cells = pd.DataFrame([{"dataset": "d", "missing_rate": 0.5, "method": m, "seed": s,
                           "mrr": v + s / 100, "hits@1": 0.1, "hits@3": 0.2, "hits@10": 0.3}
                          for m, v in (("fede", 0.5), ("mmfed3", 0.6)) for s in range(3)])
    summary = summarise(cells, "fede")
    row = summary.set_index("method").loc["mmfed3"]
    assert row["delta_mrr"] == pytest.approx(0.1) and row["delta_low"] == pytest.approx(0.1)
    table = markdown(summary, "fede")
    assert "| mmfed3 | 0.610 ± 0.010 |" in table and "+0.100 [+0.100, +0.100]" in table


def test_experiment_runs_resumably_and_dedupes_structure_only_runs(tmp_path):
    spec_file = tmp_path / "kg.yaml"
    spec_file.write_text(
        "task: fedmkgc\nname: kg-test\nconfig: {clients: 3, keep: 0.5, dim: 8, rounds: 1, local_epochs: 1}\n"
        "datasets: {nations: {dim: 4}}\nmethods: [fede, fede_text]\nmissing_rates: [0.0, 0.5]\nseeds: [0, 1]\n"
    )
    spec, configs = load_kg_spec(spec_file)
    first = run_kg_experiment(spec, configs, tmp_path / "out", track=False)
    assert first["ran"] == 6
    assert len(first["summary"]) == 4
    again = run_kg_experiment(spec, configs, tmp_path / "out", track=False)
    assert again["ran"] == 0 and "### nations, missing rate 0.5" in again["outputs"]["table"].read_text()


def test_shipped_experiment_files_validate():
    for name, runs in (("fedmkgc", 243), ("fedmkgc_ci", 14)):
        spec, configs = load_kg_spec(REPO / "configs" / "experiments" / f"{name}.yaml")
        assert len({c.run_id() for c in configs}) == runs


def test_a_bad_experiment_file_fails_before_any_run(tmp_path):
    from fedmm.config import ConfigError

    spec_file = tmp_path / "kg.yaml"
    spec_file.write_text("task: fedmkgc\nname: x\ndatasets: {wordnet: {}}\nmethods: [fede]\nmissing_rates: [0]\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="datasets"):
        load_kg_spec(spec_file)
