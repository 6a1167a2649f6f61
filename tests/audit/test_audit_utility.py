import numpy as np
import pytest
import torch
from conftest import write_synthetic_npz
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, f1_score, log_loss

from fedmm.audit.exact import enumerate_coalitions, exact_shapley
from fedmm.audit.rounds import load_round_game
from fedmm.audit.utility import RoundGame, accuracy_batched, macro_f1_batched, neg_log_loss_batched
from fedmm.config import AuditConfig, config_from_dict
from fedmm.data.federated import partition_and_mask, split_tensors
from fedmm.data.prepare import prepare
from fedmm.fl.training import train
from fedmm.fl.updates import UpdateStore
from fedmm.tensors import TensorData


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real two-round FedAvg run of the multimodal CNN on the synthetic data (4 clients)."""
    tmp = tmp_path_factory.mktemp("run")
    config = config_from_dict({
        "data": {"source": "npz", "path": str(write_synthetic_npz(tmp / "data.npz")), "holdout_subjects": 1,
                 "test_fraction": 0.25, "val_fraction": 0.125},
        "partition": {"scheme": "iid", "num_clients": 4},
        "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
        "train": {"rounds": 2, "batch_size": 32, "lr": 0.01, "centralized": False},
    })
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    result = train(config, prepared, federated, workdir=tmp / "work")
    return result, split_tensors(prepared, "val", "cpu")


def round_game(run, r=1, **kw):
    result, val = run
    path = UpdateStore(result.updates_dir).rounds()[r]
    return load_round_game(path, result.spec, val, AuditConfig(**kw))


def with_zero_client(game: RoundGame, **kw) -> RoundGame:
    """The same round plus a client that sent a zero update."""
    return game.replace(
        deltas=np.vstack([game.deltas, np.zeros_like(game.deltas[:1])]), num_examples=np.append(game.num_examples, 50),
        client_ids=np.append(game.client_ids, 99), **kw,
    )


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "neg_log_loss"])
@pytest.mark.parametrize("weighting", ["fixed", "renormalised"])
def test_batched_matches_one_model_at_a_time(run, metric, weighting):
    # a tiny memory budget forces several coalition chunks and validation-sample chunks
    games = [
        round_game(run, metric=metric, weighting=weighting, memory_mb=0.05, backend=b) for b in ("vmap", "sequential")
    ]
    coalitions = enumerate_coalitions(games[0].n_players)
    reference = games[0].utilities_loop(coalitions)
    for game in games:
        assert game.coalition_chunk < len(coalitions) and game.sample_chunk < len(game.data)
        values = game(coalitions)
        np.testing.assert_allclose(values, reference, rtol=0, atol=1e-6)
        assert game.evaluations == len(coalitions)
    if metric == "neg_log_loss":
        assert np.ptp(reference) > 1e-3  # the coalitions really differ


def test_grand_coalition_is_the_model_fedavg_produced(run):
    result, _ = run
    for r in range(2):
        game = round_game(run, r=r)
        empty, grand = game(np.array([[False] * game.n_players, [True] * game.n_players]))
        assert grand == pytest.approx(-result.history[r].scores["val"]["loss"], abs=1e-5)
        if r:
            assert empty == pytest.approx(-result.history[r - 1].scores["val"]["loss"], abs=1e-5)


def test_coalition_vectors_follow_the_weighting(run):
    fixed = round_game(run)
    renorm = round_game(run, weighting="renormalised")
    n = fixed.num_examples
    c = np.array([[True, False, True, False], [False] * 4])
    w = n / n.sum()
    expect = fixed.start + w[0] * fixed.deltas[0] + w[2] * fixed.deltas[2]
    np.testing.assert_allclose(fixed.coalition_vectors(c)[0], expect, rtol=1e-6, atol=1e-7)
    m = n[[0, 2]] / n[[0, 2]].sum()
    expect = fixed.start + m[0] * fixed.deltas[0] + m[1] * fixed.deltas[2]
    np.testing.assert_allclose(renorm.coalition_vectors(c)[0], expect, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(renorm.coalition_vectors(c)[1], fixed.start.astype(np.float32))


def test_zero_update_is_a_null_player_only_with_fixed_weights(run):
    base = round_game(run)
    fixed = with_zero_client(base)
    res = exact_shapley(fixed, fixed.n_players)
    assert res.values[-1] == 0.0
    assert res.residuals["n_null_players"] >= 1 and res.residuals["null_player"] == 0.0
    assert res.residuals["efficiency"] <= 1e-6

    renorm = with_zero_client(base, weighting="renormalised")
    res = exact_shapley(renorm, renorm.n_players)
    assert res.residuals["n_null_players"] == 0
    assert abs(res.values[-1]) > 1e-4  # it dilutes the others' updates


def test_state_entries_no_client_changes_are_shared(run):
    game = round_game(run)
    assert {"standardize.acc.mean", "standardize.gyro.std"} <= set(game.shared_entries)
    assert "head.weight" not in game.shared_entries


class BatchNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layers = torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 3)
        self.net = torch.nn.Sequential(*layers)

    def forward(self, inputs, mask):
        return self.net(inputs["x"])


@pytest.mark.parametrize("backend", ["vmap", "sequential"])
def test_batch_norm_running_stats_come_from_the_coalition(backend):
    torch.manual_seed(0)
    model = BatchNormNet().eval()
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    layout = [(k, tuple(v.shape)) for k, v in state.items()]
    start = torch.cat([v.reshape(-1) for v in state.values()]).numpy()
    rng = np.random.default_rng(0)
    deltas = rng.normal(scale=0.3, size=(3, start.size))
    data = TensorData.from_numpy({"x": rng.normal(size=(40, 4))}, np.ones((40, 1), bool), rng.integers(0, 3, 40))
    game = RoundGame(model, layout, start, deltas, [10, 20, 30], data, metric="neg_log_loss", backend=backend)
    c = enumerate_coalitions(3)
    np.testing.assert_allclose(game(c), game.utilities_loop(c), atol=1e-6)
    # moving only the running variance changes the utility: buffers are part of the coalition model
    var = [i for i, (k, _) in enumerate(layout) if k.endswith("running_var")][0]
    lo = sum(int(np.prod(s)) for _, s in layout[:var])
    only_var = np.zeros_like(deltas)
    only_var[0, lo:lo + 6] = 2.0
    game = RoundGame(model, layout, start, only_var, [10, 20, 30], data, metric="neg_log_loss", backend=backend)
    u = game(c)
    assert abs(u[1] - u[0]) > 1e-3 and u[2] == u[0]


def test_batched_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    k, c = 5, 7
    labels = rng.integers(0, 3, 60)  # classes 3 and 4 absent from the truth
    logits = rng.normal(size=(c, 60, k))
    logits[0, :, 4] += 10  # coalition 0 predicts class 4, absent from the truth, everywhere
    logits[1, :, :3] -= 10  # coalition 1 never predicts classes 0-2
    t_logits, t_labels = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels)
    f1 = macro_f1_batched(t_logits, t_labels, k).numpy()
    acc = accuracy_batched(t_logits, t_labels).numpy()
    nll = neg_log_loss_batched(t_logits, t_labels).numpy()
    for j in range(c):
        pred = t_logits[j].argmax(1).numpy()
        expect = f1_score(labels, pred, labels=list(range(k)), average="macro", zero_division=0)
        assert f1[j] == pytest.approx(expect, abs=1e-6)
        assert acc[j] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)
        proba = torch.softmax(t_logits[j].double(), 1).numpy()
        assert nll[j] == pytest.approx(-log_loss(labels, proba, labels=list(range(k))), abs=1e-6)
    assert f1[0] == 0.0


def test_game_definition_pins_the_validation_set(run):
    game = round_game(run)
    d = game.game_definition()
    assert d["round"] == 1 and d["weighting"] == "fixed" and d["metric"] == "neg_log_loss"
    assert d["players"] == game.client_ids.tolist() and d["n_val"] == len(game.data)
    assert sum(d["fedavg_weights"]) == pytest.approx(1.0)
    other = game.replace(data=TensorData(game.data.inputs, game.data.mask, game.data.labels.roll(1)))
    assert len(d["validation_sha256"]) == 64 and other.validation_sha256 != d["validation_sha256"]
    assert game.replace().validation_sha256 == d["validation_sha256"]


def test_bad_arguments_are_refused(run):
    game = round_game(run)
    args = (game.model, game.layout, game.start, game.deltas, game.num_examples, game.data)
    for kw in ({"weighting": "mean"}, {"metric": "auc"}, {"backend": "jit"}, {"memory_mb": 0}):
        with pytest.raises(ValueError):
            RoundGame(*args, **kw)
    with pytest.raises(ValueError, match="layout"):
        RoundGame(game.model, game.layout[:-1], *args[2:])
    with pytest.raises(ValueError, match="num_examples"):
        RoundGame(*args[:4], np.zeros(game.n_players), game.data)
    with pytest.raises(ValueError):
        game(np.ones((1, game.n_players + 1), dtype=bool))


class LinearNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, inputs, mask):
        return self.head(inputs["x"])


@pytest.mark.parametrize("weighting", ["fixed", "renormalised"])
def test_linearised_game_is_exact_for_a_model_linear_in_its_weights(weighting):
    rng = np.random.default_rng(0)
    layout = [("head.weight", (3, 4)), ("head.bias", (3,))]
    data = TensorData.from_numpy({"x": rng.normal(size=(50, 4))}, np.ones((50, 1), bool), rng.integers(0, 3, 50))
    game = RoundGame(LinearNet(), layout, rng.normal(size=15), rng.normal(size=(5, 15)), [1, 2, 3, 4, 5], data,
                     weighting=weighting, metric="neg_log_loss")
    lin = game.linearised()
    c = enumerate_coalitions(5)
    np.testing.assert_allclose(lin(c), game(c), rtol=0, atol=1e-6)  # logits are linear in the coefficients
    assert lin.error(c)["max_abs"] < 1e-6 and lin.evaluations == 64
    anchor = game.fixed_weights / (2 if weighting == "fixed" else 1)
    assert lin.game_definition()["linearised"]["anchor"] == pytest.approx(list(anchor))


def test_linearised_game_approximates_the_cnn_round(run):
    game = round_game(run)
    lin = game.linearised()
    c = enumerate_coalitions(game.n_players)
    err = lin.error(c)
    assert 0 < err["max_abs"] and err["relative"] < 0.1
    exact, approx = exact_shapley(game, game.n_players).values, exact_shapley(lin, game.n_players).values
    assert spearmanr(exact, approx)[0] >= 0.8
    np.testing.assert_allclose(approx, exact, atol=0.1 * np.abs(exact).max())


def test_from_states_builds_the_same_game_as_flat_vectors():
    rng = np.random.default_rng(1)
    model = LinearNet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    deltas = [
        {k: torch.as_tensor(rng.normal(size=v.shape), dtype=torch.float32) for k, v in start.items()} for _ in range(3)
    ]
    data = TensorData.from_numpy({"x": rng.normal(size=(30, 4))}, np.ones((30, 1), bool), rng.integers(0, 3, 30))
    game = RoundGame.from_states(model, start, deltas, [5, 10, 15], data, metric="neg_log_loss")
    flat = lambda s: np.concatenate([s[k].numpy().ravel() for k in ("head.weight", "head.bias")])  # noqa: E731
    reference = RoundGame(model, [("head.weight", (3, 4)), ("head.bias", (3,))], flat(start),
                          np.stack([flat(d) for d in deltas]), [5, 10, 15], data, metric="neg_log_loss")
    c = enumerate_coalitions(3)
    np.testing.assert_array_equal(game(c), reference(c))
    grand = game.coalition_state(np.ones(3, dtype=bool))
    expect = start["head.bias"] + sum(w * d["head.bias"] for w, d in zip([1 / 6, 2 / 6, 3 / 6], deltas))
    torch.testing.assert_close(grand["head.bias"], expect)


def test_max_pool_before_relu_is_bit_identical(run):
    from fedmm.audit.utility import pool_before_relu
    from fedmm.models.multimodal import build_model

    result, val = run
    model = build_model(result.spec, 3).eval()
    fast = pool_before_relu(model)
    order = [type(m).__name__ for m in fast.encoders["acc"].net[:3]]
    assert order == ["Conv1d", "MaxPool1d", "ReLU"] and type(model.encoders["acc"].net[1]).__name__ == "ReLU"
    assert fast.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(fast(val.inputs, val.mask), model(val.inputs, val.mask))
