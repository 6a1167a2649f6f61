"""The first run's costs: the centralized reference trains on a thread beside the federation, with the bits it has
when trained alone."""

import threading

import torch
from conftest import assert_same_training, interrupted_after_round

from fedmm.config import config_from_dict
from fedmm.data.federated import client_arrays
from fedmm.fl.training import CentralizedReference, evaluation_sets, model_spec, train, train_centralized
from fedmm.models.multimodal import build_model
from fedmm.tensors import TensorData

CONFIG = config_from_dict({
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "dirichlet", "num_clients": 3, "alpha": 1.0},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 3, "batch_size": 64},
})
THREAD = "centralized reference"


def config():
    return CONFIG


def inputs(prepared, federated):
    """What the training stage hands the centralized reference: clients' data and the evaluation splits."""
    clients = [TensorData.from_numpy(*client_arrays(prepared, federated, k)) for k in range(federated.num_clients)]
    return model_spec(CONFIG, prepared), clients, evaluation_sets(prepared, "cpu", federated)


def running() -> bool:
    return any(thread.name == THREAD for thread in threading.enumerate())


def test_the_reference_trains_beside_the_federation_with_the_bits_of_training_one_after_the_other(data, tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path / "home"))
    prepared, federated = data
    spec, clients, evaluation = inputs(prepared, federated)
    beside = []  # at the federation's first round: the reference's thread is up, or done (its files are cached)
    result = train(CONFIG, prepared, federated, lambda record: beside.append(running() or any(
        (tmp_path / "home" / "centralized").rglob("*.npz"))), workdir=tmp_path / "a")
    assert beside[0] and not running()
    model = build_model(spec, CONFIG.seed)
    alone = train_centralized(model, TensorData.concat(clients), evaluation, CONFIG)
    assert result.centralized_history == alone
    for name, value in model.state_dict().items():
        torch.testing.assert_close(result.centralized_state[name], value, rtol=0, atol=0)
    without = CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update={"centralized": False})})
    assert_same_training(result, train(without, prepared, federated, workdir=tmp_path / "b"))


def test_an_interrupted_federation_stops_the_reference_which_caches_nothing(data, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path / "home"))
    prepared, federated = data
    with interrupted_after_round(1):
        train(CONFIG, prepared, federated, workdir=tmp_path / "a")
    assert not running()
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path / "other"))
    longer = CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update={"rounds": 50})})
    reference = CentralizedReference(longer, prepared, federated, *inputs(prepared, federated), "cpu")
    reference.cancel()
    assert not running() and reference.outcome is None
    assert not (tmp_path / "other" / "centralized").exists()
