"""FedMMKT with the MiniLM-conditioned generator: its cache, the payload contract over a round, co-enhancement, the experiment."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mmkt_support import REPO, TINY_GENERATOR, federation, tiny_config  # noqa: F401  (federation: a fixture)

from fedmm.mmkt import generator as gen
from fedmm.mmkt import strategy as fedmmkt
from fedmm.mmkt.config import GeneratorConfig
from fedmm.mmkt.experiment import load_mmkt_spec
from fedmm.mmkt.messages import MMKTUpdate
from fedmm.tensors import frozen_copy


def test_the_pretrained_generator_is_cached_by_its_config(monkeypatch):
    first = gen.pretrained(TINY_GENERATOR)
    monkeypatch.setattr(gen, "pretrain", lambda config: pytest.fail("retrained a cached generator"))
    again = gen.pretrained(TINY_GENERATOR)
    for name, value in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)
    assert GeneratorConfig(hidden=17).key() != TINY_GENERATOR.key()
    images = gen.generate(again, torch.tensor([0, 7]), 0, "test")
    assert images.shape == (2, 256) and 0 <= images.min() and images.max() <= 1


def test_prompts_condition_the_generator():
    model = gen.pretrained(TINY_GENERATOR)
    noise = torch.randn((1, 256), generator=torch.Generator().manual_seed(0))
    text = gen.prompt_embeddings()[0]
    assert not torch.allclose(model.sample(text[:1], noise), model.sample(text[7:8], noise))


def cell(config, federation, workdir):
    from fedmm.mmkt.federation import train_federation

    return train_federation(config, federation, workdir)


def test_the_client_payload_is_a_function_of_its_trained_model_and_the_synthetic_images_alone(
        federation, monkeypatch, tmp_path):
    """What reaches the server equals the feedback recomputed from each client's trained model on the
    synthetic batch: a payload that carried a client's samples, labels or their count would differ."""
    from fedmm.fl import strategy as base

    config = tiny_config()
    poisoned = federation.clients[0]
    federation = dataclasses.replace(federation, clients=[
        dataclasses.replace(poisoned, labels=(poisoned.labels + 1) % 10), *federation.clients[1:]])
    trained, received = [], []
    real_train = base.train_client

    def train_and_keep(worker, *args, **kwargs):
        out = real_train(worker, *args, **kwargs)
        trained.append(frozen_copy(worker.model, worker.state()))
        return out

    def finetune(self, batch, feedback, model):
        received.append((batch, feedback))
        return {}

    monkeypatch.setattr(base, "train_client", train_and_keep)
    monkeypatch.setattr(fedmmkt.CoEnhancer, "finetune", finetune)
    cell(config, federation, tmp_path)
    (batch, feedback), = received
    assert [f.client_id for f in feedback] == [0, 1, 2] and all(type(f) is MMKTUpdate for f in feedback)
    assert {f.name for f in dataclasses.fields(MMKTUpdate)} == {
        "client_id", "num_examples", "delta", "metrics", "logits", "prototypes", "mass"}
    for payload, model in zip(feedback, trained):
        expected = fedmmkt.client_feedback(model, batch)
        for name in ("logits", "prototypes", "mass"):
            torch.testing.assert_close(getattr(payload, name), expected[name], rtol=0, atol=0)
        assert payload.logits.shape == (len(batch.images), 10)
        assert payload.prototypes.shape == (10, federation.spec.fusion_dim) and payload.mass.shape == (10,)


def test_fedmmkt_changes_the_generator_and_fedavg_frozen_does_not(federation, tmp_path):
    config = tiny_config()
    before = gen.pretrained(config.generator).state_dict()
    frozen = cell(config.model_copy(update={"method": "fedavg_frozen"}), federation, tmp_path / "frozen")
    assert frozen.server_state == {}  # the pretrained generator, never sent back
    enhanced = cell(config, federation, tmp_path / "enhanced")
    generator = fedmmkt.generator_of(enhanced.server_state, config.strategy_section())
    assert any(not torch.equal(before[k], v) for k, v in generator.state_dict().items())
    losses = fedmmkt.losses_of(enhanced.server_state)
    assert len(losses) == len(enhanced.history) == 1 and set(losses[0]) == {"reward_loss", "align_loss", "prior_loss"}


def test_a_cell_killed_between_rounds_resumes_from_the_engines_checkpoint_bit_identically(federation, tmp_path):
    from conftest import interrupted_after_round

    from fedmm.mmkt.evaluate import client_metrics

    config = tiny_config()
    config = config.model_copy(update={"set": [*config.set, "train.rounds=3"]})
    whole = cell(config, federation, tmp_path / "whole")
    with interrupted_after_round(1):
        cell(config, federation, tmp_path / "killed")
    resumed = cell(config, federation, tmp_path / "killed")
    assert resumed.history == whole.history
    assert client_metrics(resumed.model(), federation.evaluation) == client_metrics(whole.model(), federation.evaluation)
    for left, right in ((resumed.state, whole.state), (resumed.server_state, whole.server_state)):
        assert left.keys() == right.keys()
        for key in left:
            torch.testing.assert_close(left[key], right[key], rtol=0, atol=0)


def test_a_site_trains_from_the_server_state_alone(federation):
    """A Flower site gets the global model, the instruction and the strategy's client state (the round's batch alone),
    and its payload survives the transport's codec bit for bit."""
    from fedmm.fl.client import Worker
    from fedmm.fl.codec import decode, encode
    from fedmm.fl.strategies import make_strategy
    from fedmm.fl.strategy import ServerContext
    from fedmm.mmkt.federation import federation_config
    from fedmm.models.multimodal import build_model

    train = federation_config(tiny_config()).train
    server = make_strategy(train, 0, ServerContext(federation.spec))
    site = make_strategy(train, 0, ServerContext(federation.spec))
    worker = Worker(build_model(federation.spec, 0))
    state = {k: v.clone() for k, v in worker.state().items()}
    instruction, = [i for i in server.configure_train(0, 3) if i.client_id == 1]
    sent_state = server.client_state()
    assert set(sent_state) == {"batch/images", "batch/prompted", "batch/round"}  # not the 1 M-parameter generator
    site.load_server_state(sent_state)
    expected, _ = server.fit(worker, state, federation.clients[1], instruction, None)
    sent, _ = site.fit(worker, state, federation.clients[1], instruction, None)
    received = decode(*encode(sent), [MMKTUpdate])
    for name in ("logits", "prototypes", "mass"):
        torch.testing.assert_close(getattr(received, name), getattr(expected, name), rtol=0, atol=0)
    assert received.delta.keys() == expected.delta.keys() and received.num_examples == expected.num_examples


def test_evaluation_images_use_the_same_noise_before_and_after():
    from fedmm.mmkt.evaluate import evaluation_images

    model = gen.pretrained(TINY_GENERATOR)
    a, classes = evaluation_images(model, 2, 5)
    b, _ = evaluation_images(model, 2, 5)
    np.testing.assert_array_equal(a, b)
    assert classes.tolist() == [d for d in range(10) for _ in range(2)]


def test_the_experiment_registers_both_models_gates_the_generator_on_the_client_and_resumes(tmp_path):
    from fedmm.mmkt.experiment import run_mmkt_experiment
    from fedmm.tracking import registry

    config = tiny_config()
    spec_file = tmp_path / "mmkt.yaml"
    shared = {**config.model_dump(mode="json", exclude={"method", "seed"}),
              "set": [*config.set, "registry.model_name=mmkt-test-client", "registry.min_macro_f1=0.0",
                      "registry.require_clean_audit=false"]}
    spec_file.write_text(yaml.safe_dump({"task": "fedmmkt", "name": "mmkt-test", "methods": ["fedavg", "fedmmkt"],
                                         "seeds": [0], "generator_model_name": "mmkt-test-generator", "config": shared}))
    spec, configs = load_mmkt_spec(spec_file)
    first = run_mmkt_experiment(spec, configs, tmp_path / "out")
    assert first["ran"] == 2 and [p.name for p in first["plots"]] == ["generated_seed0.png"]
    assert "| fedmmkt |" in first["outputs"]["table"].read_text()
    client = registry.client()
    client_version = client.get_model_version("mmkt-test-client", "1")
    generator_version = client.get_model_version("mmkt-test-generator", "1")
    assert client_version.tags["fedmm.generator_model"] == "mmkt-test-generator v1"
    assert generator_version.tags["fedmm.client_model"] == "mmkt-test-client v1"
    assert generator_version.tags["fedmm.data_sha256"] == client_version.tags["fedmm.data_sha256"]
    row = first["outputs"]["cells"].read_text()
    cells = pd.read_csv(first["outputs"]["cells"]).set_index("method")
    client_promoted = "champion" in registry.version_aliases("mmkt-test-client", "1")
    fidelity_held = cells.loc["fedmmkt", "server_after_fidelity"] >= cells.loc["fedmmkt", "server_before_fidelity"]
    assert client_promoted, client_version.tags.get("fedmm.gates")
    assert ("champion" in registry.version_aliases("mmkt-test-generator", "1")) == fidelity_held
    assert "client_model_promoted=pass" in generator_version.tags["fedmm.gates"]
    again = run_mmkt_experiment(spec, configs, tmp_path / "out")
    assert again["ran"] == 0 and again["parent_run_id"] == first["parent_run_id"]
    assert first["outputs"]["cells"].read_text() == row
