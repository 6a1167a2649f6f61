"""FedMEKT: clients train autoencoders without labels and send proxy-set embeddings, never parameters."""

import pytest
import torch
from conftest import proxy_server

from fedmm.config import config_from_dict
from fedmm.data.federated import client_arrays
from fedmm.fl import engine
from fedmm.fl.client import Worker, trainable_state
from fedmm.fl.fedmekt import Autoencoder, EmbeddingPayload, FedMekt, aggregate_embeddings
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.training import train
from fedmm.fl.updates import UpdateStore
from fedmm.models.multimodal import build_model
from fedmm.tensors import UNLABELLED, TensorData

RAW = {
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 1.0, "proxy_fraction": 0.1},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {
        "rounds": 4, "batch_size": 64, "local_epochs": 2, "client_fraction": 0.75, "centralized": False,
        "strategy": "fedmekt", "fedmekt": {"classifier_epochs": 100},
    },
    "mask": {
        "client_modalities": [
            {"modalities": ["acc"], "fraction": 0.25},
            {"modalities": ["gyro"], "fraction": 0.25},
            {"modalities": ["acc", "gyro"], "fraction": 0.5},
        ],
    },
}


def config(*overrides):
    return config_from_dict(RAW, list(overrides))


def client(data, k):
    prepared, federated = data
    return TensorData.from_numpy(*client_arrays(prepared, federated, k))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """A 4-round run, with every payload the server received."""
    payloads = []
    aggregate = FedMekt.aggregate_train

    def recording(self, server_round, global_state, updates):
        payloads.extend(updates)
        return aggregate(self, server_round, global_state, updates)

    workdir = tmp_path_factory.mktemp("fedmekt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FedMekt, "aggregate_train", recording)
        result = train(config(), *data, workdir=workdir)
    return workdir, result, payloads


def fit(data, k, labels=None, mask=None):
    """One first-participation fit of client ``k`` on the initial global model."""
    strategy = FedMekt.from_config(config().train, 0, proxy_server(config(), data))
    local = client(data, k)
    local = TensorData(local.inputs, local.mask if mask is None else mask, local.labels if labels is None else labels)
    model = build_model(strategy.server.spec, 0)
    instruction = TrainInstruction(k, 0, 1, 64, 0.003, "adam")
    return strategy.fit(Worker(model), trainable_state(model), local, instruction, None)


def test_clients_send_proxy_embeddings_and_never_parameters(data, reference):
    workdir, result, payloads = reference
    proxy = proxy_server(config(), data).proxy
    assert payloads and all(type(p) is EmbeddingPayload for p in payloads)
    for payload in payloads:
        assert payload.embeddings.shape == (len(proxy), len(result.spec.modalities), result.spec.embed_dim)
        assert payload.held.any() and not payload.embeddings[:, ~payload.held].any()
        assert payload.embeddings[:, payload.held].any()
    assert {tuple(p.held.tolist()) for p in payloads} == {(True, False), (False, True), (True, True)}
    assert UpdateStore(workdir / engine.UPDATES_DIR).rounds() == []
    assert all({"recon_loss", "distill_loss"} <= set(c.metrics) for record in result.history for c in record.clients)


def test_clients_use_no_labels(data):
    labelled, _ = fit(data, 0)
    unlabelled, _ = fit(data, 0, labels=torch.full_like(client(data, 0).labels, UNLABELLED))
    torch.testing.assert_close(unlabelled.embeddings, labelled.embeddings, rtol=0, atol=0)
    assert unlabelled.metrics == labelled.metrics


def test_a_client_without_a_modality_sends_zeros_for_it(data):
    mask = client(data, 0).mask.clone()
    mask[:, 1] = False
    payload, _ = fit(data, 0, mask=mask)
    assert payload.held.tolist() == [True, False]
    assert payload.embeddings[:, 0].any() and not payload.embeddings[:, 1].any()


def test_aggregation_ignores_clients_for_modalities_they_lack():
    current, only_a, both = torch.rand(3, 5, 2, 4).unbind()
    only_a[:, 1] = 0
    payloads = [
        EmbeddingPayload(0, 100, only_a, torch.tensor([True, False])),
        EmbeddingPayload(1, 300, both, torch.tensor([True, True])),
    ]
    targets = aggregate_embeddings(current, payloads)
    torch.testing.assert_close(targets[:, 0], (only_a[:, 0] + 3 * both[:, 0]) / 4)
    torch.testing.assert_close(targets[:, 1], both[:, 1])
    alone = aggregate_embeddings(current, payloads[:1])
    torch.testing.assert_close(alone[:, 0], only_a[:, 0])
    torch.testing.assert_close(alone[:, 1], current[:, 1], rtol=0, atol=0)


def test_global_model_beats_chance_on_the_test_split(reference):
    _, result, _ = reference
    chance = 1 / result.spec.num_classes
    assert result.history[-1].scores["test"]["macro_f1"] > 1.5 * chance
    assert result.history[-1].scores["test_missing"]["macro_f1"] > 1.5 * chance


def test_cross_modal_reconstruction_decodes_every_present_modality_from_each_one(data):
    autoencoder = Autoencoder(proxy_server(config(), data).spec)
    batch = client(data, 0).take(torch.arange(4))
    batch = TensorData(batch.inputs, torch.tensor([[True, True], [True, True], [True, False], [False, True]]), batch.labels)
    embeddings = autoencoder.embed(batch.inputs, batch.mask)
    errors = []
    for i, present in enumerate(batch.mask.tolist()):
        held = [m for m, name in enumerate(autoencoder.modalities) if present[m]]
        for source in held:
            for target in held:
                name = autoencoder.modalities[target]
                decoded = autoencoder.decoders[name](embeddings[i, source].unsqueeze(0))
                errors.append((decoded - autoencoder.standardize[name](batch.inputs[name][i:i + 1])).pow(2).mean())
    torch.testing.assert_close(autoencoder.reconstruction_loss(batch), torch.stack(errors).mean())
    single = batch.take(torch.arange(2, 4))  # one modality each: cross-modal is the joint loss
    torch.testing.assert_close(autoencoder.reconstruction_loss(single), autoencoder.reconstruction_loss(single, "joint"))
    assert not torch.isclose(autoencoder.reconstruction_loss(batch), autoencoder.reconstruction_loss(batch, "joint"))
