import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fedmm.cli import main
from fedmm.config import ConfigError, ModelConfig, config_from_dict
from fedmm.fl.baselines import drop_modalities
from fedmm.fl.client import Worker, forward, trainable_state
from fedmm.fl.fedadam import FedAdam
from fedmm.fl.messages import ClientUpdate, cross_entropy
from fedmm.fl.moon import Moon
from fedmm.fl.strategies import STRATEGIES
from fedmm.fl.strategy import FedAvg
from fedmm.fl.training import model_spec, train
from fedmm.fl.updates import UpdateStore
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.seeding import torch_generator
from fedmm.tensors import TensorData

RAW = {
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 1.0},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 3, "batch_size": 64, "client_fraction": 0.75, "centralized": False},
    "mask": {"missing_rate": {"gyro": 0.3}},
}


def config(*overrides):
    return config_from_dict(RAW, list(overrides))


def run(data, tmp_path, name, *overrides):
    return train(config(*overrides), *data, workdir=tmp_path / name)


def delta_norms(workdir):
    stored = UpdateStore.read_round(UpdateStore(workdir / "updates").rounds()[0])
    return stored["client_ids"], np.linalg.norm(stored["deltas"], axis=1)


def test_strong_proximal_term_keeps_clients_near_the_global_model(data, tmp_path):
    run(data, tmp_path, "fedavg", "train.rounds=1", "train.local_epochs=3")
    run(data, tmp_path, "fedprox", "train.rounds=1", "train.local_epochs=3", "train.strategy=fedprox",
        "train.fedprox.mu=10")
    avg_clients, avg = delta_norms(tmp_path / "fedavg")
    prox_clients, prox = delta_norms(tmp_path / "fedprox")
    assert list(avg_clients) == list(prox_clients)
    assert (prox < avg).all()


def test_moon_contrastive_term_is_finite_and_log_two_against_the_global_model(data):
    prepared, federated = data
    train_config = config("train.strategy=moon", "train.moon.mu=1.0").train
    model = build_model(model_spec(config(), prepared), 0)
    batch = TensorData.from_numpy(
        {name: array[:64] for name, array in prepared.dataset.modalities.items()},
        np.ones((64, 2), dtype=bool), prepared.dataset.labels[:64],
    )
    global_state = trainable_state(model)
    moon = Moon.from_config(train_config, 0)
    out = forward(model, batch)
    assert moon.local_objective(model, global_state, None)(out) == cross_entropy(out)
    same = moon.local_objective(model, global_state, global_state)(out) - cross_entropy(out)
    assert same.item() == pytest.approx(math.log(2), abs=1e-5)
    previous = {name: value + 0.1 * torch.randn_like(value) for name, value in global_state.items()}
    loss = moon.local_objective(model, global_state, previous)(out)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_worker_loads_and_reads_back_like_the_module():
    stats = {"a": np.array([[0.0] * 3, [1.0] * 3]), "b": np.array([[0.0], [1.0]])}
    spec = ModelSpec.build({"a": (3, 16), "b": (1,)}, 3, ModelConfig(embed_dim=4, channels=2, fusion_dim=4), stats)
    model = build_model(spec, 0)
    other = {name: value + 1 for name, value in trainable_state(model).items()}
    worker = Worker(model)
    worker.load(other)
    for name, value in trainable_state(model).items():
        torch.testing.assert_close(value, other[name], rtol=0, atol=0)
        torch.testing.assert_close(worker.state()[name], other[name], rtol=0, atol=0)


STRATEGY_CHOICES = ("train.strategy: Input should be 'fedavg', 'fedprox', 'moon', 'fedmekt', 'fedmobile', "
                    "'mmfed3', 'fedadam', 'fedavg_dropout', 'fedavg_ft', 'proxy_only' or 'fedmmkt'")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.strategy=fedsgd", STRATEGY_CHOICES),
        ("train.fedprox.mu=-1", "train.fedprox.mu: Input should be greater than or equal to 0"),
        ("train.moon.temperature=0", "train.moon.temperature: Input should be greater than 0"),
        ("train.moon.tau=0.5", "train.moon.tau: unknown key"),
        ("train.strategy=fedmekt", "train.strategy 'fedmekt' needs a server proxy set: set partition.proxy_fraction > 0"),
    ],
)
def test_bad_strategy_settings_are_clear_errors(override, message):
    with pytest.raises(ConfigError) as error:
        config(override)
    assert message in str(error.value)


def test_strategy_is_selected_from_the_command_line():
    result = CliRunner().invoke(main, ["config", "--set", "train.strategy=fedprox", "--set", "train.fedprox.mu=0.1"])
    assert result.exit_code == 0 and "strategy: fedprox" in result.output and "mu: 0.1" in result.output
    result = CliRunner().invoke(main, ["run", "--set", "train.strategy=fedsgd"])
    assert result.exit_code == 2
    assert STRATEGY_CHOICES in result.output


def test_fedadam_is_adam_on_the_negated_mean_delta():
    settings = ("train.strategy=fedadam", "train.fedadam.server_lr=0.02")
    state = {"w": torch.tensor([1.0, -2.0, 0.5])}
    updates = [ClientUpdate(0, 1, {"w": torch.tensor([0.1, 0.0, -0.3])}), ClientUpdate(1, 3, {"w": torch.tensor([0.5, 0.0, 0.1])})]
    mean = FedAvg(config().train, 0).mean_delta(0, updates)["w"]
    torch.testing.assert_close(mean, torch.tensor([0.4, 0.0, 0.0]))
    param = torch.nn.Parameter(state["w"].clone())
    reference = torch.optim.Adam([param], lr=0.02, betas=(0.9, 0.99), eps=1e-3)
    fedadam = FedAdam.from_config(config(*settings).train, 0)
    for server_round in range(2):
        param.grad = -mean
        reference.step()
        state = fedadam.aggregate_train(server_round, state, updates)
        torch.testing.assert_close(state["w"], param.detach())
    assert state["w"][1] == -2.0  # a zero delta moves nothing


def test_modality_dropout_keeps_a_modality_per_sample_and_is_seeded():
    mask = torch.tensor([[True, True]] * 200 + [[True, False]] * 50)
    dropped = drop_modalities(mask, 0.5, torch_generator(0, "x"))
    assert dropped.any(1).all() and not (dropped & ~mask).any()
    assert (dropped[200:] == mask[200:]).all() and 0.2 < (~dropped[:200]).float().mean() < 0.5
    assert torch.equal(dropped, drop_modalities(mask, 0.5, torch_generator(0, "x")))


@pytest.mark.parametrize("strategy", ["fedavg_dropout", "fedavg_ft", "proxy_only", "fedmekt", "fedavg"])
def test_methods_training_on_the_proxy_labels_say_so(strategy):
    settings = (f"train.strategy={strategy}", "partition.proxy_fraction=0.1")
    assert STRATEGIES[strategy].extra_labels(config(*settings).train) == (strategy in ("fedavg_ft", "proxy_only", "fedmekt"))
