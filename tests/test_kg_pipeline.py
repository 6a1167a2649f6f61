"""`fedmm run` on a `task: fedmkgc` file: the ZenML FedMKGC pipeline, its MRR-gated version, its validation gate."""

import dataclasses

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from fedmm.cli import main
from fedmm.kg import data as kg_data
from fedmm.kg import registry as kg_registry
from fedmm.tracking import registry

RUN = {"task": "fedmkgc", "run": {"dataset": "nations", "method": "fede_hide", "missing_rate": 0.5, "clients": 3,
                                  "keep": 0.5, "dim": 8, "rounds": 2, "local_epochs": 1, "batch_size": 256},
       "registry": {"model_name": "kg-pipeline", "min_mrr": 0.1}}


def _config(tmp_path, payload=RUN):
    path = tmp_path / "kg.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def test_run_federates_trains_registers_and_promotes_on_mrr(tmp_path):
    from zenml.client import Client

    result = CliRunner().invoke(main, ["run", "--config", str(_config(tmp_path))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "gate min_mrr: pass (filtered test MRR" in result.output
    version = registry.aliases("kg-pipeline")["champion"]
    tags = registry.client().get_model_version("kg-pipeline", version).tags
    assert tags["fedmm.kg.method"] == "fede_hide" and float(tags[kg_registry.TAG_MRR]) >= 0.1
    run = Client().get_pipeline_run(tags["fedmm.zenml_pipeline_run"])
    assert list(run.steps) == ["validate_triples", "federate_triples", "train_kg", "evaluate_kg", "register_kg"]
    recorded = run.steps["evaluate_kg"].outputs["kg_evaluation"][0].load()["test"]["mrr"]
    assert recorded == pytest.approx(float(tags[kg_registry.TAG_MRR]), abs=1e-6)

    floor = {**RUN, "registry": {**RUN["registry"], "min_mrr": 0.99}}
    rejected = CliRunner().invoke(main, ["run", "--config", str(_config(tmp_path, floor)), "--set", "run.seed=1"])
    assert rejected.exit_code == 1 and "gate min_mrr: FAIL" in rejected.output


def test_a_leaked_test_triple_stops_the_run_with_one_line(tmp_path, monkeypatch):
    real = kg_data.load_kg

    def leaky(name):
        kg = real(name)
        return dataclasses.replace(kg, splits={**kg.splits, "test": np.concatenate([kg.splits["test"], kg.splits["train"][:1]])})

    monkeypatch.setattr("fedmm.kg.stages.load_kg", leaky)
    payload = {**RUN, "registry": {**RUN["registry"], "model_name": "kg-leaky"}}
    result = CliRunner().invoke(main, ["run", "--config", str(_config(tmp_path, payload))])
    assert result.exit_code == 2, result.output
    assert "error: kg_triples validation failed" in result.output and "1 valid/test triples are also in train" in result.output
    assert registry.client().search_model_versions("name='kg-leaky'") == []
