"""Corrupted clients: data and update corruptions land where they should, with their ground truth."""

import numpy as np
import pytest

from fedmm.config import ConfigError, config_from_dict
from fedmm.data.federated import FederatedData, client_arrays, partition_and_mask
from fedmm.data.partition import PartitionError
from fedmm.data.prepare import prepare
from fedmm.fl.training import train
from fedmm.fl.updates import UpdateStore

BASE = {
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "iid", "num_clients": 4},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 1, "batch_size": 64, "centralized": False},
}
CORRUPTED = [
    {"client": 0, "kind": "label_flip", "fraction": 0.6},
    {"client": 1, "kind": "free_rider_zero"},
    {"client": 2, "kind": "scaled_update", "scale": -3.0},
    {"client": 3, "kind": "drop_modality", "modality": "gyro"},
]


def _config(corrupted):
    return config_from_dict({**BASE, "corruption": {"clients": corrupted}})


@pytest.fixture(scope="module")
def prepared():
    return prepare(_config([]).data, 0)


def _federated(prepared, corrupted) -> FederatedData:
    config = _config(corrupted)
    return partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)


def test_data_corruptions_change_only_their_client(prepared):
    clean, corrupted = _federated(prepared, []), _federated(prepared, CORRUPTED)
    inputs, presence, labels = client_arrays(prepared, corrupted, 0)
    _, _, true_labels = client_arrays(prepared, clean, 0)
    flipped = labels != true_labels
    assert 0.45 < flipped.mean() < 0.75
    assert (labels >= 0).all() and (labels < prepared.dataset.num_classes).all()
    inputs3, presence3, _ = client_arrays(prepared, corrupted, 3)
    assert not inputs3["gyro"].any() and inputs3["acc"].any() and presence3.all()
    for client in (1, 2):
        for a, b in zip(client_arrays(prepared, corrupted, client), client_arrays(prepared, clean, client)):
            if isinstance(a, dict):
                assert all(np.array_equal(a[m], b[m]) for m in a)
            else:
                assert np.array_equal(a, b)
    assert corrupted.report.corruption.ground_truth[1] == {"client": 1, "corrupted": True, "kind": "free_rider_zero"}
    assert corrupted.content_hash != clean.content_hash


def test_feature_noise_is_seeded(prepared):
    spec = [{"client": 2, "kind": "feature_noise", "noise_std": 0.5}]
    first, second = (client_arrays(prepared, _federated(prepared, spec), 2)[0] for _ in range(2))
    clean = client_arrays(prepared, _federated(prepared, []), 2)[0]
    assert np.array_equal(first["acc"], second["acc"]) and not np.allclose(first["acc"], clean["acc"])


def test_update_corruptions_reach_the_stored_updates(prepared, tmp_path):
    clean_run = train(_config([]), prepared, _federated(prepared, []), workdir=tmp_path / "clean")
    bad = [c for c in CORRUPTED if c["kind"] in ("free_rider_zero", "scaled_update")]
    bad.append({"client": 3, "kind": "free_rider_noise", "noise_std": 0.05})
    train(_config(bad), prepared, _federated(prepared, bad), workdir=tmp_path / "bad")
    clean = UpdateStore.read_round(UpdateStore(clean_run.updates_dir).rounds()[0])
    corrupted = UpdateStore.read_round(UpdateStore(tmp_path / "bad" / "updates").rounds()[0])
    row = {int(c): i for i, c in enumerate(corrupted["client_ids"])}
    assert not corrupted["deltas"][row[1]].any()
    assert corrupted["num_examples"][row[1]] == clean["num_examples"][row[1]]
    np.testing.assert_allclose(corrupted["deltas"][row[2]], -3.0 * clean["deltas"][row[2]], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(corrupted["deltas"][row[0]], clean["deltas"][row[0]])
    assert corrupted["deltas"][row[3]].std() == pytest.approx(0.05, rel=0.05)


def test_bad_corruption_specs_are_clear_errors(prepared):
    with pytest.raises(PartitionError, match="client 7, but the partition has 4 clients"):
        _federated(prepared, [{"client": 7, "kind": "label_flip"}])
    with pytest.raises(PartitionError, match="'audio'"):
        _federated(prepared, [{"client": 0, "kind": "drop_modality", "modality": "audio"}])
    with pytest.raises(ConfigError, match="needs a modality"):
        _config([{"client": 0, "kind": "drop_modality"}])
    with pytest.raises(ConfigError, match="names a client twice"):
        _config([{"client": 0, "kind": "label_flip"}, {"client": 0, "kind": "free_rider_zero"}])
