import numpy as np
import pytest
import torch
from conftest import assert_same_training, interrupted_after_round, prepared_and_partitioned

from fedmm.config import config_from_dict
from fedmm.data.federated import client_arrays
from fedmm.fl.engine import KeptStore
from fedmm.fl.messages import ClientUpdate
from fedmm.fl.reference import centralized_fingerprint
from fedmm.fl.strategy import FedAvg
from fedmm.fl.training import train
from fedmm.fl.updates import StackedStates, UpdateStore, delta_matrix, stacked, stacked_entries
from fedmm.metrics import evaluate
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.tensors import UNLABELLED, TensorData, fedavg_states

CONFIG = config_from_dict({
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 1.0},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 3, "batch_size": 64, "client_fraction": 0.75, "centralized": False},
    "mask": {"missing_rate": {"gyro": 0.3}},
})


@pytest.fixture(scope="module")
def data():
    return prepared_and_partitioned(CONFIG)


def test_fedavg_aggregates_by_sample_weight():
    strategy = FedAvg(CONFIG.train, 0)
    start = {"w": torch.zeros(2)}
    updates = [ClientUpdate(0, 30, {"w": torch.tensor([1.0, 0.0])}), ClientUpdate(1, 10, {"w": torch.tensor([0.0, 4.0])})]
    merged = strategy.aggregate_train(0, start, updates)
    torch.testing.assert_close(merged["w"], torch.tensor([0.75, 1.0]))


def test_client_fraction_selects_seeded_subsets():
    strategy = FedAvg(CONFIG.train, 0)
    picks = [tuple(i.client_id for i in strategy.configure_train(r, 4)) for r in range(6)]
    assert all(len(p) == 3 for p in picks)
    assert picks == [tuple(i.client_id for i in FedAvg(CONFIG.train, 0).configure_train(r, 4)) for r in range(6)]
    assert len(set(picks)) > 1


def test_same_seed_same_metrics_and_updates_are_kept(data, tmp_path):
    prepared, federated = data
    first = train(CONFIG, prepared, federated, workdir=tmp_path / "a")
    second = train(CONFIG, prepared, federated, workdir=tmp_path / "b")
    assert_same_training(first, second)
    rounds = UpdateStore(tmp_path / "a" / "updates").rounds()
    assert len(rounds) == 3
    stored = UpdateStore.read_round(rounds[0])
    assert stored["deltas"].shape == (3, stored["start"].shape[0])
    assert stored["num_examples"].tolist() == [len(federated.client_rows(c)) for c in stored["client_ids"]]
    start = torch.cat([v.reshape(-1) for v in build_model(first.spec, CONFIG.seed).state_dict().values()])
    np.testing.assert_allclose(stored["start"], start.numpy())


def test_interrupted_run_resumes_to_the_same_result(data, tmp_path):
    prepared, federated = data
    reference = train(CONFIG, prepared, federated, workdir=tmp_path / "reference")
    with interrupted_after_round(2):
        train(CONFIG, prepared, federated, workdir=tmp_path / "resumed")
    seen = []
    resumed = train(CONFIG, prepared, federated, workdir=tmp_path / "resumed", on_round=seen.append)
    assert [record.round for record in seen] == [3]
    assert_same_training(resumed, reference)


def test_missing_modality_is_zero_in_embedding_space():
    spec = ModelSpec.build({"acc": (3, 20), "gyro": (2, 20)}, 3, CONFIG.model,
                           {"acc": np.array([[0.0] * 3, [1.0] * 3]), "gyro": np.array([[0.0] * 2, [1.0] * 2])})
    model = build_model(spec, 0)
    inputs = {"acc": torch.randn(4, 3, 20), "gyro": torch.randn(4, 2, 20)}
    mask = torch.tensor([[True, False]] * 4)
    embeddings = model.embed(inputs, mask)
    assert embeddings[:, 1].abs().sum() == 0
    other = {"acc": inputs["acc"], "gyro": torch.randn(4, 2, 20) * 100}
    torch.testing.assert_close(model(inputs, mask), model(other, mask))


def test_evaluation_scores_labelled_samples_only(data):
    prepared, federated = data
    inputs, presence, labels = client_arrays(prepared, federated, 0)
    model = build_model(ModelSpec.build(prepared.dataset.sample_shapes(), prepared.dataset.num_classes, CONFIG.model,
                                        prepared.stats), 0)
    hidden = labels.copy()
    hidden[::2] = UNLABELLED
    partial = evaluate(model, TensorData.from_numpy(inputs, presence, hidden))
    odd = evaluate(model, TensorData.from_numpy({k: v[1::2] for k, v in inputs.items()}, presence[1::2], labels[1::2]))
    assert partial == pytest.approx(odd)


def with_train(**update):
    return CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update=update)})


def test_centralized_reference_shows_its_progress_and_is_trained_once_per_fingerprint(data, tmp_path, capsys):
    """Its progress per epoch; a run that differs only in strategy or engine reuses it, another lr does not."""
    prepared, federated = data
    config = with_train(rounds=1, centralized=True)
    result = train(config, prepared, federated, workdir=tmp_path / "a")
    assert [row["epoch"] for row in result.centralized_history] == [1]
    assert "centralized reference: 100%" in capsys.readouterr().err
    fingerprint = centralized_fingerprint(config, prepared, federated, "cpu")
    other = with_train(rounds=1, centralized=True, strategy="fedprox", engine="loop")
    assert centralized_fingerprint(other, prepared, federated, "cpu") == fingerprint
    assert centralized_fingerprint(with_train(rounds=1, lr=0.01), prepared, federated, "cpu") != fingerprint
    again = train(other, prepared, federated, workdir=tmp_path / "b")
    assert "centralized reference" not in capsys.readouterr().err
    assert again.centralized_history == result.centralized_history
    for name, value in result.centralized_state.items():
        torch.testing.assert_close(again.centralized_state[name], value, rtol=0, atol=0)


def test_test_splits_are_scored_every_eval_every_rounds_and_after_the_last(data, tmp_path):
    prepared, federated = data
    history = train(with_train(eval_every=2), prepared, federated, workdir=tmp_path).history
    splits = set(history[-1].scores)
    assert {"val", "test", "test_missing"} <= splits
    assert [set(r.scores) for r in history] == [{"val"}, splits, splits]


def test_training_on_cpu_runs_on_one_intra_op_thread_and_restores_the_setting(data, tmp_path):
    """Two intra-op threads spin-wait for each other on a loaded host (10x the CPU seconds of one, measured)."""
    prepared, federated = data
    before, seen = torch.get_num_threads(), []
    torch.set_num_threads(2)
    try:
        train(with_train(rounds=1), prepared, federated, workdir=tmp_path,
              on_round=lambda record: seen.append(torch.get_num_threads()))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def stacked_round():
    """Five updates in one round: rows 0-2 of one stack, a plain dict, row 0 of another stack."""
    gen = torch.Generator().manual_seed(0)
    layout = {"w": torch.randn(2, 3, generator=gen), "b": torch.randn(3, generator=gen), "n": torch.randn((), generator=gen)}
    stacks = [StackedStates(torch.randn(k, 10, generator=gen), layout) for k in (3, 1)]
    plain = {name: torch.randn(value.shape, generator=gen) for name, value in layout.items()}
    deltas = [stacks[0].row(0), stacks[0].row(1), stacks[0].row(2), plain, stacks[1].row(0)]
    return layout, stacks, [ClientUpdate(i, 10 + i, delta) for i, delta in enumerate(deltas)]


def test_stacked_deltas_read_and_aggregate_as_the_dicts_they_stand_for():
    layout, stacks, updates = stacked_round()
    dicts = [ClientUpdate(u.client_id, u.num_examples, {k: v.clone() for k, v in u.delta.items()}) for u in updates]
    assert [list(u.delta) for u in dicts] == [list(layout)] * 5 and dicts[1].delta["w"].shape == (2, 3)
    flat = torch.stack([torch.cat([u.delta[k].reshape(-1) for k in layout]) for u in dicts])
    assert torch.equal(delta_matrix(updates, layout), flat)
    assert delta_matrix(updates[:3], layout).data_ptr() == stacks[0].matrix.data_ptr()  # read, not copied
    rows = stacked_entries([stacks[0].row(1), stacks[0].row(2)], ["w"])["w"]
    assert torch.equal(rows, torch.stack([dicts[1].delta["w"], dicts[2].delta["w"]]))
    assert rows.data_ptr() == stacks[0].matrix[1].data_ptr()  # consecutive rows: a view
    same = stacked(updates[:3], layout)
    assert [u.delta.stack for u in same] == [stacks[0]] * 3
    rows = stacked(updates, layout)
    assert torch.equal(rows[0].delta.stack.matrix, flat) and rows[3].metrics == updates[3].metrics
    strategy = FedAvg(CONFIG.train, 0)
    merged, reference = strategy.aggregate_train(0, layout, rows), strategy.aggregate_train(0, layout, dicts)
    assert all(torch.equal(merged[k], reference[k]) for k in layout)  # the same sum, in the same order
    expected = {k: layout[k] + fedavg_states([u.delta for u in dicts], [u.num_examples for u in dicts])[k] for k in layout}
    assert all(torch.equal(merged[k], expected[k]) for k in layout)


def test_kept_states_snapshot_as_stacked_entries_and_load_back(tmp_path):
    layout, stacks, updates = stacked_round()
    kept = {7: updates[1].delta, 3: updates[0].delta, 5: {"w": torch.ones(2, 3)}, 9: updates[3].delta}
    store = KeptStore(tmp_path)
    store.save(2, kept)
    loaded = store.load(2, "cpu")
    assert sorted(loaded) == [3, 5, 7, 9] and list(loaded[5]) == ["w"]
    assert all(torch.equal(loaded[c][k], kept[c][k]) for c in kept for k in kept[c])
    store.save(3, {})
    store.prune(2)
    assert [p.name for p in tmp_path.iterdir()] == ["after_0002.npz"] and store.load(3, "cpu") == {}
