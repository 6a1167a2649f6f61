import json

import numpy as np
import pytest

from fedmm.config import DataConfig, MaskConfig, PartitionConfig, config_from_dict
from fedmm.data.federated import FederatedData, client_arrays, held_out_presence, partition_and_mask
from fedmm.data.masking import MaskError, ModalityMasker
from fedmm.data.prepare import prepare

MODALITIES = ["acc", "gyro"]


def _mask(rate: dict, seed: int = 0, client: int = 0, n: int = 4000):
    masker = ModalityMasker(MODALITIES, MaskConfig(missing_rate=rate), seed)
    return masker.mask_client(client, n, np.ones(2, dtype=bool))


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.9])
def test_realised_rates_match_requested(rate):
    mask = _mask({"acc": rate, "gyro": rate})
    realised = mask.drawn_missing.mean(axis=0)
    tolerance = 4 * np.sqrt(max(rate * (1 - rate), 1e-12) / 4000)
    assert np.all(np.abs(realised - rate) <= tolerance + 1e-12)


def test_masks_are_deterministic_and_streams_independent():
    a = _mask({"acc": 0.5, "gyro": 0.5})
    b = _mask({"acc": 0.5, "gyro": 0.5})
    np.testing.assert_array_equal(a.presence, b.presence)
    # changing gyro's rate leaves acc's draws untouched
    c = _mask({"acc": 0.5, "gyro": 0.2})
    np.testing.assert_array_equal(a.presence[:, 0], c.presence[:, 0])
    # another client or seed draws differently
    assert (a.presence != _mask({"acc": 0.5, "gyro": 0.5}, client=1).presence).any()
    assert (a.presence != _mask({"acc": 0.5, "gyro": 0.5}, seed=1).presence).any()


@pytest.mark.parametrize("rate", [0.3, 0.9])
def test_random_modality_missing_drops_one_held_modality_never_the_last(rate):
    three = ["acc", "gyro", "mag"]
    masker = ModalityMasker(three, MaskConfig(random_missing_rate=rate), 0)
    mask = masker.mask_client(0, 6000, np.ones(3, dtype=bool))
    assert mask.kept.all()
    lost = (~mask.presence).sum(axis=1)
    assert set(np.unique(lost)) == {0, 1}
    assert abs(lost.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / 6000)
    np.testing.assert_allclose(masker.requested_rates(np.ones(3, dtype=bool)), rate / 3)
    np.testing.assert_allclose(mask.drawn_missing.mean(axis=0), rate / 3, atol=0.03)
    single = masker.mask_client(1, 100, np.array([True, False, False]))
    assert single.presence[:, 0].all() and not single.presence[:, 1:].any()


def test_per_modality_and_random_missing_rates_do_not_mix():
    with pytest.raises(ValueError, match="not both"):
        MaskConfig(missing_rate={"acc": 0.2}, random_missing_rate=0.3)


def test_client_modality_groups_follow_fractions():
    config = MaskConfig(client_modalities=[
        {"modalities": ["acc", "gyro"], "fraction": 0.4},
        {"modalities": ["acc"], "fraction": 0.3},
        {"modalities": ["gyro"], "fraction": 0.3},
    ])
    held = ModalityMasker(MODALITIES, config, 0).client_modalities(10)
    patterns = [tuple(row) for row in held.tolist()]
    assert patterns.count((True, True)) == 4
    assert patterns.count((True, False)) == 3
    assert patterns.count((False, True)) == 3


def test_unknown_modality_is_rejected():
    with pytest.raises(MaskError, match="unknown modalities \\['audio'\\]"):
        ModalityMasker(MODALITIES, MaskConfig(missing_rate={"audio": 0.5}), 0)


@pytest.fixture(scope="module")
def prepared():
    return prepare(DataConfig(), seed=0)


def test_samples_without_modalities_are_dropped_and_masked_values_never_reach_clients(prepared):
    config = config_from_dict({
        "partition": {"scheme": "iid", "num_clients": 5},
        "mask": {"client_modalities": [{"modalities": ["acc", "gyro"], "fraction": 0.6},
                                        {"modalities": ["gyro"], "fraction": 0.4}],
                 "missing_rate": {"acc": 0.5, "gyro": 0.5}},
    })
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    report = federated.report
    dropped = sum(row.n_dropped for row in report.clients)
    assert dropped == report.dropped_samples > 0
    assert dropped == int((~federated.presence.any(axis=1)).sum())
    gyro_only = [row for row in report.clients if row.held == ["gyro"]]
    assert gyro_only and all(row.realised_rate["acc"] == row.requested_rate["acc"] == 1.0 for row in gyro_only)
    for client in range(federated.num_clients):
        inputs, presence, labels = client_arrays(prepared, federated, client)
        assert presence.any(axis=1).all()
        for m, name in enumerate(federated.modalities):
            assert not inputs[name][~presence[:, m]].any(), "a masked modality kept its values"
            rows = federated.pool_index[federated.client_rows(client)]
            present = presence[:, m]
            np.testing.assert_array_equal(inputs[name][present], prepared.dataset.modalities[name][rows][present])


def test_partition_report_lists_sizes_and_class_histograms(prepared, tmp_path):
    federated = partition_and_mask(prepared, PartitionConfig(), MaskConfig(), 0)
    rows = federated.report.clients
    assert len(rows) == 8
    assert sum(row.n_samples for row in rows) == len(prepared.indices("train"))
    assert all(sum(row.class_counts) == row.n_samples for row in rows)
    assert len({row.subject for row in rows}) == 8
    federated.save(tmp_path / "partitions")
    saved = json.loads((tmp_path / "partitions" / "report.json").read_text())
    assert saved["clients"][0]["realised_rate_acc"] == rows[0].realised_rate["acc"]
    assert saved["clients"][0]["subject"] == rows[0].subject and saved["dropped_samples"] == 0
    assert FederatedData.load(tmp_path / "partitions").report == federated.report


def test_proxy_set_is_stratified_and_never_given_to_a_client(prepared):
    partition = PartitionConfig(scheme="iid", num_clients=4, proxy_fraction=0.1)
    federated = partition_and_mask(prepared, partition, MaskConfig(), 0)
    train = prepared.indices("train")
    proxy = federated.proxy_index
    assert len(proxy) == pytest.approx(0.1 * len(train), abs=len(np.unique(prepared.dataset.labels)))
    assert not np.intersect1d(proxy, federated.pool_index).size
    np.testing.assert_array_equal(np.sort(np.concatenate([proxy, federated.pool_index])), np.sort(train))
    labels = prepared.dataset.labels
    assert set(labels[proxy]) == set(labels[train])
    assert federated.content_hash != partition_and_mask(prepared, PartitionConfig(scheme="iid", num_clients=4),
                                                        MaskConfig(), 0).content_hash


def test_a_proxy_from_subjects_holds_whole_subjects_no_client_is(prepared):
    partition = PartitionConfig(proxy_fraction=0.1, proxy_from="subjects")
    federated = partition_and_mask(prepared, partition, MaskConfig(), 0)
    subject = prepared.dataset.subject
    proxy_subjects = set(subject[federated.proxy_index])
    assert len(proxy_subjects) == 1 and not proxy_subjects & set(subject[federated.pool_index])
    assert set(subject[prepared.indices("train")]) == proxy_subjects | set(subject[federated.pool_index])
    assert federated.num_clients == len(set(subject[federated.pool_index]))


def test_label_fraction_hides_labels_per_client(prepared):
    partition = PartitionConfig(scheme="iid", num_clients=4, label_fraction=0.2)
    federated = partition_and_mask(prepared, partition, MaskConfig(), 0)
    for client, row in enumerate(federated.report.clients):
        _, _, labels = client_arrays(prepared, federated, client)
        assert (labels >= 0).sum() == row.n_labelled == round(0.2 * row.n_samples)
        assert set(np.unique(labels)) - {-1} <= set(prepared.dataset.labels)


def test_held_out_presence_follows_the_training_mask():
    one = held_out_presence(MaskConfig(missing_rate={"gyro": 0.5}), MODALITIES, 4000, 0)
    assert one[:, 0].all() and abs((~one[:, 1]).mean() - 0.5) < 0.04
    groups = MaskConfig(client_modalities=[{"modalities": ["acc", "gyro"], "fraction": 0.5},
                                           {"modalities": ["acc"], "fraction": 0.25},
                                           {"modalities": ["gyro"], "fraction": 0.25}])
    presence = held_out_presence(groups, MODALITIES, 4000, 0)
    assert abs(presence.all(axis=1).mean() - 0.5) < 0.04 and abs((presence[:, 0] & ~presence[:, 1]).mean() - 0.25) < 0.04
    np.testing.assert_array_equal(presence, held_out_presence(groups, MODALITIES, 4000, 0))
