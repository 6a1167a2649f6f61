import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_synthetic_npz
from scipy.stats import spearmanr

from fedmm.artifacts import write_json, write_npz
from fedmm.audit.report import AuditReport
from fedmm.audit.rounds import clustered_aggregation_weights, load_round_game
from fedmm.audit.run import audit_updates
from fedmm.config import AuditConfig, config_from_dict
from fedmm.data.federated import partition_and_mask
from fedmm.data.prepare import prepare
from fedmm.fl.training import train
from fedmm.tensors import TensorData
from fedmm.workflow import audit_contributions

HONEST, HALF, COPY, FREE, HARMFUL = range(5)  # player roles in every synthetic round
ROUNDS = 3


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, inputs, mask):
        return self.head(inputs["x"])


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = 1.5 * np.eye(3, 4)[labels] + rng.normal(scale=1.0, size=(n, 4))
    return TensorData.from_numpy({"x": x}, np.ones((n, 1), bool), labels)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Rounds of five clients: honest, half-honest, a copy of the honest one, a free rider
    (zero update) and a harmful one (the honest update negated and doubled)."""
    directory = tmp_path_factory.mktemp("updates")
    good = np.concatenate([1.5 * np.eye(3, 4).ravel(), -0.75 * np.ones(3)])  # a decent linear classifier
    layout = [{"name": "head.weight", "shape": [3, 4]}, {"name": "head.bias", "shape": [3]}]
    write_json(directory / "layout.json", layout)
    rng = np.random.default_rng(1)
    start = np.zeros(15)
    for r in range(ROUNDS):
        step = 0.4 * (good - start) + rng.normal(scale=0.02, size=15)
        deltas = np.stack([step, 0.5 * step, step, np.zeros(15), -2.0 * step])
        write_npz(directory / f"round_{r:04d}.npz", {
            "start": start.astype(np.float32),
            "deltas": deltas.astype(np.float32),
            "client_ids": np.array([10, 11, 12, 13, 14]),
            "num_examples": np.array([100, 100, 100, 50, 100]),
        })
        start = start + np.array([100, 100, 100, 50, 100]) @ deltas / 450
    return directory


GROUPS = np.repeat(np.arange(30), 10)  # 30 "recordings" of 10 validation samples each


@pytest.fixture(scope="module")
def report(store):
    modalities = {10: ["x"], 11: ["x"], 12: ["x"], 13: ["x"], 14: []}
    return audit_updates(store, Linear(), blobs(300, 0), AuditConfig(estimator="exact", clusters=3),
                         groups=GROUPS, group_key="recording", client_modalities=modalities)


def test_exact_rounds_pass_the_axiom_checks(report):
    assert len(report.meta.rounds) == ROUNDS
    for record in report.meta.rounds:
        assert record["method"] == "exact_shapley" and record["evaluations"] == 32
        res = record["residuals"]
        assert res["efficiency"] <= 1e-6 and res["symmetry"] <= 1e-6 and res["null_player"] <= 1e-6
        assert res["n_symmetric_pairs"] >= 1 and res["n_null_players"] >= 1  # the copy pair, the free rider
        assert record["game"]["validation_sha256"] == report.meta.game["validation_sha256"]
        rows = report.rounds[report.rounds["round"] == record["round"]].set_index("client")
        assert rows["value"].sum() == pytest.approx(record["u_grand"] - record["u_empty"], abs=1e-9)
        assert rows.loc[10, "value"] == pytest.approx(rows.loc[12, "value"], abs=1e-6)
        assert rows.loc[13, "value"] == 0.0 and rows.loc[13, "norm"] == 0.0
        assert rows.loc[14, "value"] < 0 < rows.loc[11, "value"] < rows.loc[10, "value"]
        assert rows.loc[14, "cosine"] < 0 < rows.loc[10, "cosine"]
        assert record["clustered"]["max_abs_error"] == pytest.approx((rows["clustered"] - rows["value"]).abs().max())


def test_flags_find_the_free_rider_and_the_harmful_client(report):
    clients = report.clients.set_index("client")
    assert clients.loc[13, "flags"] == "free_rider"
    assert clients.loc[14, "flags"] == "harmful,anomalous"  # the negated update also points against the others'
    assert clients.loc[[10, 11, 12], "flags"].eq("").all()
    assert set(report.flags) == {"13", "14"}
    harmful, opposed = report.flags["14"]
    evidence = harmful["evidence"]
    thresholds = report.meta.flags.thresholds
    assert evidence["p_holm"] < thresholds["alpha"] and evidence["ci_high"] < -thresholds["min_effect"]
    assert opposed["rule"].startswith("update opposed") and evidence["median_cosine"] == pytest.approx(-1, abs=1e-5)
    assert evidence["p_opposed"] < thresholds["alpha"] and clients.loc[10, "median_cosine"] > 0
    assert thresholds["group_key"] == "recording" and thresholds["n_groups"] == 30 and thresholds["df"] == 29
    assert report.flags["13"][0]["evidence"]["median_norm_ratio"] == 0.0
    assert clients.loc[14, "verdict"] == "harmful" and clients.loc[10, "verdict"] == "not harmful"
    # run-level numbers are sums of the per-round ones
    per_round = report.rounds.groupby("client")["value"].sum()
    np.testing.assert_allclose(clients["value"], per_round.loc[clients.index], atol=1e-12)
    assert clients["share"].sum() == pytest.approx(1.0)
    assert clients.loc[10, "rank"] == 1 and clients.loc[14, "rank"] == 5
    w = report.suggested_weights()
    assert w[13] == 0.0 and w[14] == 0.0 and sum(w.values()) == pytest.approx(1.0)
    assert w[10] == pytest.approx(w[12]) and w[10] > w[11]
    assert clients.loc[14, "modalities"] == "" and clients.loc[10, "modalities"] == "x"


def test_exact_rounds_report_validation_uncertainty(report):
    rows = report.rounds
    assert (rows.loc[rows["client"] != 13, "val_stderr"] > 0).all() and (rows["mc_stderr"] == 0).all()
    assert (rows.loc[rows["client"] == 13, "stderr"] == 0).all()  # a null player has no uncertainty at all
    assert ((rows["ci_low"] < rows["value"]) | (rows["stderr"] == 0)).all() and (rows["ci_low"] <= rows["ci_high"]).all()
    clients = report.clients.set_index("client")
    assert (clients.loc[[10, 11, 12, 14], "stderr"] > 0).all()
    share = clients.loc[[10, 11, 12, 14], "top_group_share"]  # 30 similar recordings: none dominates
    assert ((share > 1 / 30) & (share < 0.2)).all() and np.isnan(clients.loc[13, "top_group_share"])
    # the three rounds share one validation set: the cumulative standard error is not their quadrature sum
    quadrature = np.sqrt(rows.assign(v=rows["stderr"] ** 2).groupby("client")["v"].sum())
    assert (clients.loc[[10, 11, 14], "stderr"] > 1.2 * quadrature.loc[[10, 11, 14]]).all()


def test_a_sample_clustered_audit_is_narrower_than_a_recording_clustered_one(store, report):
    # blobs are independent samples: grouping them in tens changes little; cloning each recording's
    # first sample ten times makes the clusters matter
    data = blobs(300, 0)
    cloned = data.take(torch.as_tensor(np.repeat(np.arange(0, 300, 10), 10)))
    by_recording = audit_updates(store, Linear(), cloned, AuditConfig(estimator="exact"), groups=GROUPS,
                                 group_key="recording")
    by_sample = audit_updates(store, Linear(), cloned, AuditConfig(estimator="exact"))
    assert by_sample.meta.game["inference"]["n_groups"] == 300
    ratio = by_recording.clients["stderr"] / by_sample.clients["stderr"]
    assert (ratio[by_sample.clients["stderr"] > 0] > 2.5).all()  # sqrt(10) in theory, less the dof factors


def test_save_and_load_round_trip(report, tmp_path):
    report.save(tmp_path / "audit")
    names = {p.name for p in (tmp_path / "audit").iterdir()}
    assert {"rounds.csv", "rounds.parquet", "clients.csv", "clients.parquet", "audit.json"} <= names
    assert {"values_heatmap.png", "cumulative_values.png", "convergence.png", "report.html"} <= names
    back = AuditReport.load(tmp_path / "audit")
    pd.testing.assert_frame_equal(back.rounds, report.rounds)
    pd.testing.assert_frame_equal(back.clients, report.clients)
    assert back.meta == report.meta and back.summary() == report.summary()
    csv = pd.read_csv(tmp_path / "audit" / "rounds.csv")
    assert (csv["validation_sha256"] == report.meta.game["validation_sha256"]).all()
    assert report.meta.convergence["exact"] is not None  # all rounds exact: re-sampled from a table


def test_sampled_rounds_report_uncertainty_and_agree_with_exact(store, report):
    config = AuditConfig(max_evaluations=24, min_samples=3, clusters=3)
    sampled = audit_updates(store, Linear(), blobs(300, 0), config, groups=GROUPS, group_key="recording")
    for record in sampled.meta.rounds:
        assert record["method"] == "permutation_shapley" and record["evaluations"] <= 24
        assert record["residuals"]["efficiency"] <= 1e-9  # every permutation's marginals telescope
        assert "clustered" in record and "max_abs_error" not in record["clustered"]
    rows = sampled.rounds
    assert (rows["mc_stderr"] > 0).sum() >= 3 and (rows["ci_low"] <= rows["ci_high"]).all()
    np.testing.assert_allclose(rows["stderr"] ** 2, rows["val_stderr"] ** 2 + rows["mc_stderr"] ** 2)
    assert rows["banzhaf"].isna().all()
    assert spearmanr(sampled.clients["value"], report.clients["value"])[0] >= 0.9
    assert sampled.meta.convergence["exact"] is None and len(sampled.meta.convergence["evaluations"]) >= 1


def test_clustered_aggregation_weights(store):
    game = load_round_game(store / "round_0000.npz", Linear(), blobs(300, 0))
    w = clustered_aggregation_weights(game, 4)  # honest and copy share a cluster, the rest are alone
    assert w.shape == (5,) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[HARMFUL] == 0.0 and w[FREE] == 0.0 and w[HONEST] == pytest.approx(w[COPY])
    assert w[HONEST] > w[HALF] > 0
    coarse = clustered_aggregation_weights(game, 2)
    assert coarse.sum() == pytest.approx(1.0) and coarse[HARMFUL] == 0.0


def test_audit_of_a_training_run(tmp_path):
    config = config_from_dict({
        "data": {"source": "npz", "path": str(write_synthetic_npz(tmp_path / "data.npz")), "holdout_subjects": 1,
                 "test_fraction": 0.25, "val_fraction": 0.125},
        "partition": {"scheme": "iid", "num_clients": 3},
        "mask": {"client_modalities": [
            {"modalities": ["acc"], "fraction": 0.34}, {"modalities": ["acc", "gyro"], "fraction": 0.66},
        ]},
        "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
        "train": {"rounds": 2, "batch_size": 32, "lr": 0.01, "centralized": False},
    })
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    result = train(config, prepared, federated, workdir=tmp_path / "work")
    report = audit_contributions(config, prepared, federated, result)
    assert report.meta.training_fingerprint == result.fingerprint
    assert sorted(report.rounds["round"].unique()) == [0, 1]
    for record, history in zip(report.meta.rounds, result.history):
        assert record["u_grand"] == pytest.approx(-history.scores["val"]["loss"], abs=1e-5)  # the model FedAvg produced
    held = {k: "+".join(m for m, on in zip(federated.modalities, row) if on) for k, row in enumerate(federated.held)}
    assert {c: m for c, m in zip(report.clients["client"], report.clients["modalities"])} == held
    assert len(set(held.values())) == 2


def test_linearised_audit_reports_its_error(store, report):
    lin = audit_updates(store, Linear(), blobs(300, 0), AuditConfig(estimator="exact", linearised=True, linearised_check=8))
    assert lin.meta.game["linearised"] is True and report.meta.game["linearised"] is False
    for record in lin.meta.rounds:
        assert record["linearised_error"]["coalitions"] == 8
        assert record["linearised_error"]["max_abs"] < 1e-6  # the logits are linear in the weights here
        assert "anchor" in record["game"]["linearised"]
    np.testing.assert_allclose(lin.rounds["value"], report.rounds["value"], atol=1e-6)


class Wide(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(400, 5)

    def forward(self, inputs, mask):
        return self.head(inputs["x"])


def test_noise_updates_and_scaled_updates_are_flagged_whatever_their_value(tmp_path):
    """Six clients over four rounds of a 2,005-parameter model: three honest (a shared step plus their
    own noise), one sending pure noise of the same size, one its honest step x10, one nothing."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, 400)
    x = 0.8 * np.eye(5, 400)[labels] + rng.normal(size=(400, 400))
    val = TensorData.from_numpy({"x": x}, np.ones((400, 1), bool), labels)
    write_json(tmp_path / "layout.json", [{"name": "head.weight", "shape": [5, 400]}, {"name": "head.bias", "shape": [5]}])
    start = np.zeros(2005)
    target = np.concatenate([0.02 * np.eye(5, 400).ravel(), np.zeros(5)])
    for r in range(4):
        step = 0.5 * (target - start)
        honest = [step + 0.3 * np.linalg.norm(step) / np.sqrt(2005) * rng.normal(size=2005) for _ in range(3)]
        noise = np.linalg.norm(step) / np.sqrt(2005) * rng.normal(size=2005)
        deltas = np.stack([*honest, noise, 10 * honest[0], np.zeros(2005)])
        write_npz(tmp_path / f"round_{r:04d}.npz", {
            "start": start.astype(np.float32), "deltas": deltas.astype(np.float32),
            "client_ids": np.arange(6), "num_examples": np.full(6, 50),
        })
        start = start + deltas.mean(axis=0)
    report = audit_updates(tmp_path, Wide(), val, AuditConfig(estimator="exact"))
    clients = report.clients.set_index("client")
    assert clients.loc[3, "flags"] == "free_rider" and "noise update" in report.flags["3"][0]["rule"]
    assert clients.loc[3, "rms_cosine_others"] < 0.05 < clients.loc[[0, 1, 2], "rms_cosine_others"].min()
    assert "anomalous" in clients.loc[4, "flags"].split(",") and clients.loc[4, "median_norm_ratio"] > 5
    assert clients.loc[5, "flags"] == "free_rider" and "zero update" in report.flags["5"][0]["rule"]
    assert clients.loc[[0, 1, 2], "flags"].eq("").all()
    assert report.meta.flags.thresholds["noise_rms_cosine_floor"] < 0.05


@pytest.mark.parametrize("metric, method", [("accuracy", "cr1"), ("macro_f1", "cluster_bootstrap")])
def test_step_function_metrics_get_intervals_too(store, metric, method):
    report = audit_updates(store, Linear(), blobs(300, 0), AuditConfig(metric=metric, estimator="exact"),
                           groups=GROUPS, group_key="recording")
    assert report.meta.game["inference"]["method"] == method
    clients = report.clients.set_index("client")
    assert (clients.loc[[10, 11, 12, 14], "stderr"] > 0).all() and clients.loc[13, "stderr"] == 0
    assert clients.loc[14, "value"] < 0 < clients.loc[10, "value"]
    assert clients.loc[14, "ci_high"] < 0 and clients.loc[10, "ci_low"] > 0


def test_rounds_audited_in_parallel_give_the_same_report(store):
    one, three = (audit_updates(store, Linear(), blobs(300, 0), AuditConfig(workers=w), groups=GROUPS) for w in (1, 3))
    pd.testing.assert_frame_equal(one.rounds, three.rounds)
    pd.testing.assert_frame_equal(one.clients, three.clients)
    assert [r["round"] for r in three.meta.rounds] == [0, 1, 2]


def test_model_version_tags_carry_the_flags_tests_and_thresholds_the_gate_reads(report):
    import json

    from fedmm.tracking.registry import audit_gate
    from fedmm.workflow import audit_tags

    tags = audit_tags(report, "run123")
    assert json.loads(tags["fedmm.audit.harmful_clients"]) == [14]
    assert json.loads(tags["fedmm.audit.flags"]) == {"13": ["free_rider"], "14": ["harmful", "anomalous"]}
    assert tags["fedmm.audit.state"] == "audited"
    assert json.loads(tags["fedmm.audit.thresholds"])["n_groups"] == 30
    tests = json.loads(tags["fedmm.audit.tests"])
    assert tests["14"]["verdict"] == "harmful" and tests["14"]["p_holm"] < 0.05 and tests["14"]["ci"][1] < 0
    assert tags["fedmm.audit.report"] == "runs:/run123/audit/report.html" and max(map(len, tags.values())) < 5000
    gate = audit_gate(tags)
    assert not gate.passed and "[14]" in gate.detail and "13" not in gate.detail  # free riders pass by default


def test_a_run_with_nothing_to_audit_is_recorded_as_such_and_passes_the_gate(tmp_path):
    import json

    from fedmm.tracking.registry import audit_gate
    from fedmm.workflow import audit_tags

    report = AuditReport.not_auditable("strategy 'fedmekt' sends no parameter deltas")
    assert report.state == "not_auditable" and report.flags == {} and report.summary()["audit_rounds"] == 0
    saved = AuditReport.load(report.save(tmp_path / "audit"))
    assert saved.meta == report.meta and saved.meta.reason == "strategy 'fedmekt' sends no parameter deltas"
    saved_json = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved_json["reason"] == saved.meta.reason and "game" not in saved_json
    assert "Nothing to audit: strategy &#x27;fedmekt&#x27;" in (tmp_path / "audit" / "report.html").read_text()
    tags = audit_tags(report)
    assert tags == {"fedmm.audit.state": "not_auditable",
                    "fedmm.audit.reason": "strategy 'fedmekt' sends no parameter deltas"}
    gate = audit_gate(tags)
    assert gate.passed and gate.detail == "nothing to audit: strategy 'fedmekt' sends no parameter deltas"
