"""Missing modalities as users have them: ``present/<modality>`` in the file, through validation, partition,
evaluation sets and sites; and the file checks that refuse hostile or careless inputs before allocating."""

import json
import struct
import zipfile

import numpy as np
import pytest
from conftest import TINY
from presence_support import write_presence_npz

from fedmm.audit import audit_validation
from fedmm.config import AuditConfig, CorruptionConfig, DataConfig, MaskConfig, PartitionConfig, load_config
from fedmm.data.corruption import CorruptionPlan
from fedmm.data.dataset import DatasetError, MultimodalDataset, load_npz
from fedmm.data.federated import client_arrays, partition_and_mask, site_arrays, split_tensors
from fedmm.data.prepare import prepare
from fedmm.data.sources import CLOTHING_SHA256, load_source, read_npz_file
from fedmm.data.validation import validate_dataset, validate_partitions
from fedmm.fl.federation import run_spec
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.site import Site, export_site_files
from fedmm.fl.training import model_spec
from fedmm.impute.clients import client_datasets
from fedmm.impute.evaluate import TooFewCompleteError, complete_samples
from fedmm.impute.select import evaluate_selected
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.tracking.pyfunc import MASK_KEY, input_example, model_input, predict_probabilities


@pytest.fixture(scope="module")
def presence_file(tmp_path_factory):
    return write_presence_npz(tmp_path_factory.mktemp("presence") / "mine.npz")


def test_presence_is_read_and_absent_values_are_ignored(presence_file):
    dataset = load_npz(presence_file)
    raw = np.load(presence_file)
    np.testing.assert_array_equal(dataset.presence[:, 1], raw["present/gyro"])
    assert dataset.presence[:, 0].all() and not dataset.presence[raw["subject"] == 0, 2].any()
    assert dataset.presence_rates()["gyro"] == pytest.approx(raw["present/gyro"].mean())
    assert np.isfinite(dataset.modalities["gyro"]).all()  # the NaN filler is read as 0
    assert not dataset.modalities["mag"][~dataset.presence[:, 2]].any()  # so is the 999 filler
    again = MultimodalDataset.from_arrays(dataset.to_arrays())  # the prepared artifact keeps the presence
    np.testing.assert_array_equal(again.presence, dataset.presence)
    complete = MultimodalDataset.from_arrays({k: v for k, v in raw.items() if not k.startswith("present/")})
    assert complete.presence.all() and "present/gyro" not in complete.to_arrays()


def test_normalisation_and_bounds_come_from_present_values_only(presence_file):
    prepared = prepare(DataConfig(source="npz", path=str(presence_file), holdout_subjects=0), seed=0)
    train = prepared.indices("train")
    mag = prepared.dataset.modalities["mag"][train[prepared.dataset.presence[train, 2]]]
    np.testing.assert_allclose(prepared.stats["mag"][0], mag.mean(0), rtol=1e-5)
    assert prepared.manifest["value_bounds"]["mag"][1] < 100  # the 999 filler moved nothing
    test = prepared.manifest["splits"]["test"]
    assert test["presence_rate"]["acc"] == 1.0 and 0 < test["complete"] < test["samples"]


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"present/audio": np.ones(len(a["labels"]), bool)}), "present/audio names no modality"),
    (lambda a: a.update({"present/gyro": a["present/gyro"][:-1]}), r"present/gyro must be a bool array of shape \(192,\)"),
    (lambda a: a.update({"present/acc": np.zeros(len(a["labels"]), bool)}), r"sample\(s\) have no modality present"),
    (lambda a: a.update({"modality/acc": a["modality/acc"] * 1j}), "modality 'acc' is complex"),
    (lambda a: a.update({"modality/acc": a["modality/acc"].astype(str)}), "modality 'acc' is string"),
    (lambda a: a.update({"channel_names/acc": np.array(list("abcdefg"))}), "channel_names/acc has 7 names for 3 channels"),
    (lambda a: a.update({"labels": np.r_[a["labels"][:-1], 2**40]}), "label 1099511627776 but only 192 samples"),
])
def test_bad_files_are_one_line(presence_file, tmp_path, change, message):
    arrays = dict(np.load(presence_file))
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message) as error:
        read_npz_file(tmp_path / "bad.npz")
    assert "\n" not in str(error.value) and str(error.value).count("bad.npz") == 1


def test_forged_npy_header_is_refused_before_allocating(tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (600000000000,), }"
    header += " " * (63 - len(header) % 64) + "\n"
    with zipfile.ZipFile(tmp_path / "forged.npz", "w") as archive:
        archive.writestr("labels.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)
    with pytest.raises(DatasetError, match=r"labels.npy declares 4800000000000 bytes in a \d+-byte member"):
        read_npz_file(tmp_path / "forged.npz")


def test_validation_checks_values_where_present_and_reports_rates(presence_file):
    dataset = load_npz(presence_file)
    modalities = {name: array.copy() for name, array in dataset.modalities.items()}
    shapes = dataset.sample_shapes()
    modalities["gyro"][~dataset.presence[:, 1]] = np.nan  # absent: not checked
    report = validate_dataset(modalities, dataset.labels, 3, shapes, {}, dataset.presence)
    assert report.success, report.failed()
    assert report.presence_rates == pytest.approx(dataset.presence_rates())
    rate = [o for o in report.outcomes if o.column == "present_gyro"][0]
    assert f"presence rate {dataset.presence_rates()['gyro']:.4f}" in rate.details
    present = np.flatnonzero(dataset.presence[:, 1])[:2]
    modalities["gyro"][present, 0, 0] = np.nan
    empty = dataset.presence.copy()
    empty[5] = False
    report = validate_dataset(modalities, dataset.labels, 3, shapes, {}, empty)
    failed = {o.column: o for o in report.failed()}
    assert set(failed) == {"gyro_nonfinite", "modalities_present"}
    assert "2 NaN/inf values where the modality is present" in failed["gyro_nonfinite"].details
    assert failed["modalities_present"].unexpected_count == 1


def test_training_mask_is_data_presence_and_simulated_mask(presence_file):
    prepared = prepare(DataConfig(source="npz", path=str(presence_file), holdout_subjects=0), seed=0)
    mask = MaskConfig(missing_rate={"acc": 0.5})
    federated = partition_and_mask(prepared, PartitionConfig(scheme="natural", min_samples=5), mask, seed=0)
    in_data = prepared.dataset.presence[federated.pool_index]
    alone = partition_and_mask(prepared, PartitionConfig(scheme="natural", min_samples=5), MaskConfig(), seed=0)
    np.testing.assert_array_equal(alone.presence, in_data)
    assert (federated.presence <= in_data).all() and (federated.presence[:, 0] < in_data[:, 0]).any()
    row = federated.report.clients[0]  # subject 0: mag absent from its data entirely
    assert row.data_missing_rate["mag"] == 1.0 and row.kept_rate["mag"] == 1.0
    assert abs(row.realised_rate["acc"] - 0.5) < 0.2 and row.realised_rate["mag"] == 0.0
    kept = federated.presence[federated.client == 0].any(axis=1).sum()
    assert row.n_samples == kept  # acc masked and no gyro nor mag: dropped, not counted for min_samples
    table = federated.client_table()
    report = validate_partitions(table, min_samples=5, tolerance=0.2)
    assert report.success, report.failed()
    data_rate = [o for o in report.outcomes if o.column == "data_missing_rate_mag"][0]
    assert "missing in the data (before the mask) per client: 0..1" in data_rate.details


def test_evaluation_sets_and_sites_keep_real_missingness(presence_file):
    prepared = prepare(DataConfig(source="npz", path=str(presence_file), holdout_subjects=0), seed=0)
    val, _, _ = audit_validation(prepared, AuditConfig())  # the audit's validation game scores real presence
    np.testing.assert_array_equal(val.mask.numpy(), prepared.dataset.presence[prepared.indices("val")])
    test, complete = split_tensors(prepared, "test", "cpu"), split_tensors(prepared, "test", "cpu", complete=True)
    expected = prepared.dataset.presence[prepared.indices("test")]
    np.testing.assert_array_equal(test.mask.numpy(), expected)
    assert len(complete) == expected.all(axis=1).sum() and bool(complete.mask.all())
    owners = np.arange(len(test))
    subset, owned = complete_samples(test, owners, "test")
    np.testing.assert_array_equal(owned, np.flatnonzero(expected.all(axis=1)))
    with pytest.raises(TooFewCompleteError, match=r"the test split has 0 of \d+ samples with every modality"):
        complete_samples(test.take(test.mask.all(1).logical_not().nonzero().flatten()), owners, "test")
    site = load_npz(presence_file)
    inputs, presence, _ = site_arrays(site.modalities, site.labels, 0, 4, MaskConfig(), 1.0, CorruptionPlan(CorruptionConfig(), 0), 0, 3,
                                      site.presence_of(["acc", "gyro", "mag"]))
    np.testing.assert_array_equal(presence, site.presence)
    assert not inputs["gyro"][~presence[:, 1]].any()


def test_input_example_shows_an_absent_modality(presence_file):
    example = input_example(load_npz(presence_file))
    assert set(example) == {"acc", "gyro", "mag", MASK_KEY}
    assert (example[MASK_KEY] == 0).any() and np.isfinite(example["gyro"]).all()



def test_clothing_reviews_have_genuinely_missing_text():
    dataset, info = load_source(DataConfig(source="clothing", max_samples=400))
    assert info.sha256 == CLOTHING_SHA256 and len(dataset) == 400
    assert dataset.sample_shapes() == {"title": (64,), "review": (64,), "tabular": (dataset.sample_shapes()["tabular"][0],)}
    rates = dataset.presence_rates()
    assert 0.75 < rates["title"] < 0.92 and 0.9 < rates["review"] < 1.0 and rates["tabular"] == 1.0  # 16% and 4% missing
    assert dataset.class_names == ["not recommended", "recommended"] and 0.7 < dataset.labels.mean() < 0.9
    assert len(np.unique(dataset.subject)) >= 5  # departments, the natural clients
    assert not dataset.modalities["title"][~dataset.presence[:, 0]].any()


def test_clothing_text_can_be_embedded_by_minilm_and_is_cached(monkeypatch):
    import fedmm.kg.text as text

    config = DataConfig(source="clothing", max_samples=40, text_encoder="minilm")
    dataset, _ = load_source(config)
    assert dataset.sample_shapes()["title"] == (384,) and dataset.sample_shapes()["review"] == (384,)
    assert not dataset.presence[:, 0].all()  # reviews without a title lack the modality, whatever the encoder
    title = dataset.modalities["title"]
    assert not title[~dataset.presence[:, 0]].any() and (np.linalg.norm(title[dataset.presence[:, 0]], axis=1) > 0.1).all()
    monkeypatch.setattr(text, "encode", lambda texts: pytest.fail("the cached embeddings were computed again"))
    np.testing.assert_array_equal(load_source(config)[0].modalities["review"], dataset.modalities["review"])


def test_a_site_file_carries_its_presence_and_its_report_gives_the_rates(presence_file, tmp_path):
    config = load_config(TINY, ["data.source=npz", f"data.path={presence_file}", "data.holdout_subjects=0",
                                "mask.missing_rate={acc: 0.3}"])
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
    spec = model_spec(config, prepared)
    run = run_spec(config, prepared, federated, spec, "f" * 64)
    rates, files = [], export_site_files(prepared, federated, tmp_path)
    assert ["modality/mag" in np.load(path) for path in files] == [False, True, True, True]  # site 0 never had it
    for client, path in enumerate(files):
        site = Site(path, client, tmp_path / f"state_{client}")
        report, own = site.validate(run), site.data_for(run)
        assert report.success and report.presence_rates == pytest.approx(own.presence_rates())
        assert json.loads(site.profile(run)["modalities"]) == pytest.approx(report.presence_rates)
        rates.append(report.presence_rates)
        at_site = site_arrays(
            own.modalities, own.labels, client, federated.num_clients, config.mask, 1.0,
            CorruptionPlan(config.corruption, config.seed), config.seed, 3, own.presence,
        )
        central = client_arrays(prepared, federated, client)
        np.testing.assert_array_equal(at_site[1], central[1])  # the data's presence AND the site's own mask draws
        np.testing.assert_array_equal(at_site[0]["mag"], central[0]["mag"])
    assert [r["mag"] == 0.0 for r in rates] == [True, False, False, False]  # subject 0's site never had it
    site = Site(files[0], 0, tmp_path / "state_fit")  # trains on its file without mag
    payload = site.fit(run, build_model(spec, 0).state_dict(), {}, TrainInstruction(0, 0, 1, 16, 0.01, "adam"))
    assert payload.num_examples == len(client_arrays(prepared, federated, 0)[1])
    assert all(bool(v.isfinite().all()) for v in payload.delta.values())
    acc_only = {k: v for k, v in np.load(files[0]).items() if not k.endswith("/gyro")}
    np.savez(tmp_path / "acc_only.npz", **acc_only)  # a site with one sensor: a file of one modality
    alone = Site(tmp_path / "acc_only.npz", 0, tmp_path / "state_alone")
    assert alone.validate(run).presence_rates == {"acc": 1.0, "gyro": 0.0, "mag": 0.0}
    with pytest.raises(DatasetError, match="at least 2 modalities"):
        read_npz_file(tmp_path / "acc_only.npz")  # a run's own file still needs two


def test_imputation_is_scored_on_complete_samples_and_says_how_many(presence_file):
    config = load_config(TINY, ["data.source=npz", f"data.path={presence_file}", "data.holdout_subjects=0",
                                "impute.imputers=[zero, mean]", "impute.select={}", "impute.rates=[0.5]"])
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    model = build_model(model_spec(config, prepared), 0)
    split = lambda name: (split_tensors(prepared, name, "cpu"), np.zeros(len(prepared.indices(name)), int))  # noqa: E731
    report, _ = evaluate_selected(config.impute, client_datasets(prepared, federated), model, split("val"),
                                  split("test"), config.seed)
    complete = int(prepared.dataset.presence[prepared.indices("test")].all(axis=1).sum())
    assert report.meta["complete_samples"] == {"samples": complete, "of": len(prepared.indices("test"))}
    assert (report.table["samples"] == complete).all() and report.table["nrmse_latent"].notna().all()
    assert f"Scored on the {complete} of {len(prepared.indices('test'))} test samples" in report.markdown()


def test_the_registered_model_ignores_the_values_of_an_absent_modality(presence_file):
    dataset = load_npz(presence_file)
    spec = ModelSpec.build(dataset.sample_shapes(), 3, load_config(TINY).model,
                           {m: np.stack([np.zeros(s[0]), np.ones(s[0])]) for m, s in dataset.sample_shapes().items()})
    model = build_model(spec, 0)
    batch = model_input({m: a[:5] for m, a in dataset.modalities.items()}, np.array([[1, 0, 1]] * 5, dtype=bool))
    zero = predict_probabilities(model, batch)
    batch["gyro"][:] = np.nan
    np.testing.assert_array_equal(predict_probabilities(model, batch), zero)


def test_the_coordinator_keeps_the_presence_of_its_own_samples(presence_file, tmp_path):
    from fedmm.fl.deployed import CoordinatorData, export_sites

    config = load_config(TINY, ["data.source=npz", f"data.path={presence_file}", "data.holdout_subjects=0"])
    validation, test = export_sites(config, tmp_path / "export")["coordinator"]
    data = CoordinatorData.from_files(validation, test)
    assert not data.test.presence.all()
    np.testing.assert_array_equal(data.tensors("test").mask.numpy(), data.test.presence)
    np.savez(tmp_path / "test_no_mag.npz", **{k: v for k, v in np.load(test).items() if not k.endswith("/mag")})
    without = CoordinatorData.from_files(validation, tmp_path / "test_no_mag.npz")  # its test samples never had mag
    assert without.test.modality_names == ["acc", "gyro", "mag"] and not without.test.presence[:, 2].any()
