import numpy as np
import torch
import torch.nn.functional as F
from conftest import SYNTHETIC_CLASSES, SYNTHETIC_SPEC, synthetic

from fedmm.config import config_from_dict
from fedmm.fl.client import Worker, forward, trainable_state
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.mmfed3 import DistillationUpdate, MMFeD3
from fedmm.fl.strategy import FedAvg, ServerContext
from fedmm.fl.training import train
from fedmm.fl.updates import UpdateStore
from fedmm.models.multimodal import build_model

RAW = {
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 1.0, "proxy_fraction": 0.1},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 3, "batch_size": 64, "client_fraction": 0.75, "centralized": False},
    "mask": {"missing_rate": {"gyro": 0.3}},
}
MMFED3 = "train.strategy=mmfed3"
CLASSES, SPEC = SYNTHETIC_CLASSES, SYNTHETIC_SPEC


def config(*overrides):
    return config_from_dict(RAW, list(overrides))


def run(data, tmp_path, name, *overrides):
    return train(config(*overrides), *data, workdir=tmp_path / name)


PROXY = synthetic(np.arange(30) % CLASSES, seed=0)


def strategy(*overrides):
    return MMFeD3.from_config(config(MMFED3, *overrides).train, 0, ServerContext(SPEC, proxy=PROXY))


def instruction(client, epochs=2):
    return TrainInstruction(client, 0, epochs, batch_size=16, lr=0.01, optimizer="adam")


def tempered(logits, temperature=3.0):
    return F.softmax(logits / temperature, dim=1)


def kl(target_probs, logits):
    return F.kl_div(F.log_softmax(logits / 3.0, dim=1), target_probs, reduction="batchmean").item()


def outputs_of(state, batch):
    model = build_model(SPEC, 0)
    model.load_state_dict(state)
    with torch.no_grad():
        return forward(model, batch)


def proxy_outputs_of(state):
    out = outputs_of(state, PROXY)
    return out.logits, out.representation


def test_payload_carries_the_trained_models_proxy_outputs_and_the_server_distills_the_ensemble():
    distill = strategy("train.mmfed3.server_epochs=30")
    global_state = trainable_state(build_model(SPEC, 0))
    worker = Worker(build_model(SPEC, 1))
    updates = []
    for client, classes in enumerate(([0, 0, 1], [2, 2, 1])):
        local = synthetic(classes * 8, seed=client + 1)
        update, _ = distill.fit(worker, global_state, local, instruction(client, epochs=10), None)
        assert isinstance(update, DistillationUpdate)
        assert update.proxy_logits.shape == (len(PROXY), CLASSES)
        assert update.proxy_features.shape == (len(PROXY), SPEC.fusion_dim)
        logits, features = proxy_outputs_of({k: global_state[k] + update.delta[k] for k in global_state})
        torch.testing.assert_close(update.proxy_logits, logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(update.proxy_features, features, rtol=0, atol=1e-5)
        updates.append(update)

    weights = [u.num_examples / sum(u.num_examples for u in updates) for u in updates]
    ensemble_probs = sum(w * tempered(u.proxy_logits) for w, u in zip(weights, updates))
    ensemble_features = sum(w * u.proxy_features for w, u in zip(weights, updates))
    averaged = FedAvg(config().train, 0).aggregate_train(0, global_state, updates)
    distilled = distill.aggregate_train(0, global_state, updates)
    assert distilled.keys() == global_state.keys()
    averaged_logits, averaged_features = proxy_outputs_of(averaged)
    distilled_logits, distilled_features = proxy_outputs_of(distilled)
    assert kl(ensemble_probs, distilled_logits) < kl(ensemble_probs, averaged_logits)
    assert F.mse_loss(distilled_features, ensemble_features) < F.mse_loss(averaged_features, ensemble_features)


def test_a_free_rider_sends_a_zero_delta_and_counts_as_the_global_model():
    distill = strategy()
    global_state = trainable_state(build_model(SPEC, 0))
    free_rider = distill.free_rider_payload(instruction(0), global_state, 10)
    assert isinstance(free_rider, DistillationUpdate) and free_rider.num_examples == 10
    assert all(not delta.any() for delta in free_rider.delta.values())
    probs, features = distill.ensemble([free_rider])
    logits, representation = proxy_outputs_of(global_state)
    torch.testing.assert_close(probs, tempered(logits))
    torch.testing.assert_close(features, representation)


def test_clients_distil_the_global_model_on_their_own_batches_under_their_own_masks():
    global_state = trainable_state(build_model(SPEC, 0))
    student = build_model(SPEC, 1)
    local = synthetic([0, 1, 2, 0, 1, 2], seed=3)
    local.mask[::2, 1] = False  # every other sample lacks gyro
    out = forward(student, local)
    teacher = outputs_of(global_state, local)
    expected = F.cross_entropy(out.logits, local.labels) + 9 * F.kl_div(
        F.log_softmax(out.logits / 3, dim=1), tempered(teacher.logits), reduction="batchmean"
    ) + F.mse_loss(out.representation, teacher.representation)
    torch.testing.assert_close(strategy().client_objective(student, global_state)(out), expected)


def test_the_local_objective_pulls_the_client_towards_the_global_model():
    global_state = trainable_state(build_model(SPEC, 0))
    tiny = synthetic([0] * 6, seed=3)
    global_probs = tempered(outputs_of(global_state, tiny).logits)

    def divergence(*weights):
        worker = Worker(build_model(SPEC, 0))
        update, _ = strategy(*weights).fit(worker, global_state, tiny, instruction(0, epochs=20), None)
        trained = {k: global_state[k] + update.delta[k] for k in global_state}
        return kl(global_probs, outputs_of(trained, tiny).logits)

    undistilled = divergence("train.mmfed3.logit_weight=0", "train.mmfed3.feature_weight=0")
    assert divergence("train.mmfed3.logit_weight=1", "train.mmfed3.feature_weight=0") < undistilled


def test_without_server_epochs_the_server_averages():
    distill = strategy("train.mmfed3.server_epochs=0")
    global_state = trainable_state(build_model(SPEC, 0))
    update, _ = distill.fit(Worker(build_model(SPEC, 0)), global_state, synthetic([0, 1, 2] * 4, 1), instruction(0), None)
    merged = distill.aggregate_train(0, global_state, [update])
    averaged = FedAvg(config().train, 0).aggregate_train(0, global_state, [update])
    for name in merged:
        torch.testing.assert_close(merged[name], averaged[name], rtol=0, atol=0)


def test_better_than_the_majority_class(data, tmp_path):
    settings = (MMFED3, "train.rounds=4", "train.lr=0.01", "train.local_epochs=2")
    reference = run(data, tmp_path, "reference", *settings)
    assert reference.history != run(data, tmp_path, "fedavg", *settings[1:]).history
    assert len(UpdateStore(tmp_path / "reference" / "updates").rounds()) == 4

    prepared = data[0]
    test_labels = prepared.dataset.labels[prepared.indices("test")]
    majority_share = np.bincount(test_labels).max() / len(test_labels)
    assert reference.history[-1].scores["test"]["accuracy"] > majority_share + 0.1
