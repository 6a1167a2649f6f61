"""FedMobile: generated features for missing modalities, contribution-aware and clustered-Shapley aggregation."""

import copy

import numpy as np
import pytest
import torch
from conftest import proxy_server

from fedmm.audit.clustered import aggregation_weights, clustered_shapley
from fedmm.config import ConfigError, config_from_dict
from fedmm.data.federated import partition_and_mask
from fedmm.evaluation import evaluate_training
from fedmm.fl.client import forward
from fedmm.fl.fedmobile import FedMobile, FedMobileUpdate, GeneratorUtility, contribution_weights
from fedmm.fl.messages import TrainInstruction, cross_entropy
from fedmm.fl.result import TrainResult
from fedmm.fl.training import train
from fedmm.impute.generator import GeneratedFeaturesNet
from fedmm.impute.latent import LatentData
from fedmm.models.multimodal import build_model
from fedmm.tensors import TensorData

RAW = {
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 1.0, "proxy_fraction": 0.1},
    "model": {"embed_dim": 16, "channels": 8, "fusion_dim": 16},
    "train": {"rounds": 3, "batch_size": 64, "centralized": False, "strategy": "fedmobile"},
    "mask": {"missing_rate": {"gyro": 0.7}},
}


def config(*overrides):
    return config_from_dict(RAW, list(overrides))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A 3-round run and the strategy restored from its checkpoint (its generator and scalers)."""
    workdir = tmp_path_factory.mktemp("fedmobile")
    result = train(config(), *data, workdir=workdir)
    strategy = FedMobile.from_config(config().train, 0, proxy_server(config(), data))
    strategy.load_server_state({
        k.removeprefix("server/"): torch.as_tensor(v)
        for k, v in np.load(workdir / "checkpoint.npz").items() if k.startswith("server/")
    })
    return result, strategy


def update(client, examples=10, accuracy=0.5, before=1.0, after=0.5, generator=None, usable=5):
    return FedMobileUpdate(client, examples, {}, generator=generator or {}, generator_examples=usable,
                           loss_before=before, loss_after=after, local_accuracy=accuracy)


def test_contribution_weights_combine_accuracy_and_loss_reduction():
    weights = contribution_weights([update(0, accuracy=0.8, after=0.5), update(1, accuracy=0.0, after=1.2)], 0.5)
    np.testing.assert_allclose(weights, [1.0, 0.0])
    weights = contribution_weights([update(0, accuracy=0.5, after=0.5), update(1, examples=30, accuracy=0.5, after=0.5)],
                                   0.5)
    np.testing.assert_allclose(weights, [0.25, 0.75])
    stalled = [update(0, accuracy=0, after=1.0), update(1, examples=30, accuracy=0, after=2.0)]
    np.testing.assert_allclose(contribution_weights(stalled, 0.5), [0.25, 0.75])


def test_a_client_missing_a_modality_gets_generated_features_not_zeros(data, trained):
    result, strategy = trained
    assert strategy.generator is not None and strategy.generator_scaler is not None
    prepared, _ = data
    model = result.model()
    test = TensorData.from_numpy(
        {k: v[:32] for k, v in prepared.dataset.modalities.items()},
        np.tile([True, False], (32, 1)), prepared.dataset.labels[:32],
    )
    out = forward(model, test)
    assert not out.embeddings[:, 1].any()
    completed, mask = strategy.predictor(model).complete(out.embeddings, test.mask)
    assert mask.all() and completed[:, 1].abs().sum() > 0
    torch.testing.assert_close(completed[:, 0], out.embeddings[:, 0])
    loss = strategy.local_objective(model, {}, None)(out)
    plain = torch.nn.functional.cross_entropy(out.logits, test.labels)
    assert not torch.isclose(loss, plain)
    generated_logits = strategy.predictor(model)(test.inputs, test.mask)
    assert not torch.allclose(generated_logits, model(test.inputs, test.mask))


def test_clustered_shapley_weights_down_a_broken_generator(data, trained):
    result, strategy = trained
    model = result.model()
    proxy = strategy.server.proxy
    latents = LatentData(model.embed(proxy.inputs, proxy.mask).detach(), proxy.mask)
    good = {k: v.clone() for k, v in strategy.generator.state_dict().items()}
    broken = {k: v * -5.0 for k, v in good.items()}
    trained_updates = [update(0, generator=good), update(1, generator=good), update(2, generator=broken)]
    utility = GeneratorUtility(copy.deepcopy(strategy.generator), trained_updates, strategy.generator_scaler, latents,
                               None)
    grand, without_broken = utility(np.array([[True, True, True], [True, True, False]]))
    assert without_broken > grand
    values, labels = clustered_shapley(utility, utility.outputs(), 2, seed=0)
    weights = aggregation_weights(values.values)
    assert labels[0] == labels[1] != labels[2]
    assert weights[2] < weights[0] and weights[2] == pytest.approx(0.0, abs=1e-9)


def test_sample_model_weighting_is_fedavgs(data):
    updates = [update(0, accuracy=0.9, after=0.2), update(1, examples=30, accuracy=0.1, after=1.0)]
    ablated = FedMobile.from_config(config("train.fedmobile.model_weighting=samples").train, 0, proxy_server(config(), data))
    np.testing.assert_allclose(ablated.model_weights(updates), [0.25, 0.75])
    aware = FedMobile.from_config(config().train, 0, proxy_server(config(), data))
    np.testing.assert_allclose(aware.model_weights(updates), contribution_weights(updates, 0.5))


def test_sample_weighting_needs_no_proxy_set():
    config_from_dict({**RAW, "partition": {**RAW["partition"], "proxy_fraction": 0.0}},
                     ["train.fedmobile.generator_weighting=samples"])
    with pytest.raises(ConfigError, match="partition.proxy_fraction"):
        config_from_dict({**RAW, "partition": {**RAW["partition"], "proxy_fraction": 0.0}})


def test_untrained_generator_is_not_used_in_the_first_round(data):
    strategy = FedMobile.from_config(config().train, 0, proxy_server(config(), data))
    model = build_model(strategy.server.spec, 0)
    assert strategy.predictor(model) is model
    prepared, _ = data
    batch = TensorData.from_numpy({k: v[:16] for k, v in prepared.dataset.modalities.items()},
                                  np.tile([True, False], (16, 1)), prepared.dataset.labels[:16])
    out = forward(model, batch)  # a missing modality the untrained generator must not fill
    torch.testing.assert_close(strategy.local_objective(model, {}, None)(out), cross_entropy(out), rtol=0, atol=0)


def test_a_saved_run_predicts_with_its_generator(data, trained, tmp_path):
    result, strategy = trained
    assert "test_missing" in result.history[-1].scores
    result.save(tmp_path / "saved")
    loaded = TrainResult.load(tmp_path / "saved").predictor()
    assert isinstance(loaded, GeneratedFeaturesNet)
    prepared, _ = data
    inputs = {k: torch.as_tensor(v[:16], dtype=torch.float32) for k, v in prepared.dataset.modalities.items()}
    mask = torch.tensor([[True, False]] * 16)
    torch.testing.assert_close(loaded(inputs, mask), strategy.predictor(result.model())(inputs, mask))
    report = evaluate_training(*data, TrainResult.load(tmp_path / "saved"))
    assert report.protocols["test_missing"].federated["macro_f1"] == pytest.approx(
        result.history[-1].scores["test_missing"]["macro_f1"])


def test_free_riders_get_no_weight(data, tmp_path):
    free_rider = ["corruption.clients=[{client: 1, kind: free_rider_noise, noise_std: 0.01}]"]
    result = train(config(*free_rider, "train.rounds=2"), *data[:1],
                   partition_and_mask(data[0], config().partition, config().mask, 0, config(*free_rider).corruption),
                   workdir=tmp_path / "run")
    assert len(result.history) == 2
    honest = update(0)
    strategy = FedMobile.from_config(config().train, 0, proxy_server(config(), data))
    rider = strategy.free_rider_payload(TrainInstruction(1, 0, 1, 64, 0.003, "adam"), {"w": torch.ones(2)}, 10)
    assert rider == FedMobileUpdate(1, 10, {"w": rider.delta["w"]}) and not rider.delta["w"].any()
    np.testing.assert_allclose(contribution_weights([honest, rider], 0.5), [1.0, 0.0])
