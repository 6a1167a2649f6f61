"""The prepare stage: load a source, split honestly, and write a pickle-free artifact.

Splits are by recording (windows of one recording overlap, so a window split would leak)
and, as a second protocol, by whole held-out subjects. Normalisation statistics come from
the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmm.artifacts import read_json, read_npz, sha256_arrays, write_json, write_npz
from fedmm.config import DataConfig
from fedmm.data.dataset import DatasetError, MultimodalDataset
from fedmm.data.sources import load_source
from fedmm.seeding import rng_for

SPLITS = ("train", "val", "test", "test_subjects")
ARRAYS_FILE = "arrays.npz"
MANIFEST_FILE = "manifest.json"


def holdout_count(setting: int | str, num_subjects: int) -> int:
    """How many whole subjects ``data.holdout_subjects`` holds out of ``num_subjects``.

    ``auto`` holds out one subject per five, at most 2: the smartwatch data's 10 subjects
    give 2; a bring-your-own-data file with fewer than five subjects keeps them all for
    training, validation and the recording-level test set.
    """
    return min(2, num_subjects // 5) if setting == "auto" else int(setting)


def split_by_recording(
    dataset: MultimodalDataset,
    test_fraction: float,
    val_fraction: float,
    holdout_subjects: int | str,
    seed: int,
) -> np.ndarray:
    """Assign each sample a split code (index into SPLITS), keeping every recording whole.

    ``holdout_subjects`` (:func:`holdout_count`) whole subjects go to ``test_subjects``; the remaining recordings
    are split per class into test, validation and train.
    """
    split = np.zeros(len(dataset), dtype=np.int8)
    subjects = np.unique(dataset.subject)
    holdout_subjects = holdout_count(holdout_subjects, len(subjects))
    held: np.ndarray = np.array([], dtype=np.int64)
    if holdout_subjects:
        if holdout_subjects >= len(subjects):
            raise DatasetError(
                f"data.holdout_subjects={holdout_subjects} but the data has {len(subjects)} subject(s); "
                "at least one must remain for training"
            )
        held = np.sort(rng_for(seed, "holdout-subjects").choice(subjects, holdout_subjects, replace=False))
        split[np.isin(dataset.subject, held)] = SPLITS.index("test_subjects")

    pool = split == 0
    recordings, first = np.unique(dataset.recording[pool], return_index=True)
    recording_label = dataset.labels[pool][first]
    rng = rng_for(seed, "recording-split")
    code_of_recording = np.zeros(len(recordings), dtype=np.int8)
    for label in np.unique(recording_label):
        members = rng.permutation(np.flatnonzero(recording_label == label))
        n_test = int(round(test_fraction * len(members)))
        n_val = int(round(val_fraction * len(members)))
        if len(members) - n_test - n_val < 1:
            raise DatasetError(f"class {label} has {len(members)} recording(s): too few to split into train/val/test")
        code_of_recording[members[:n_test]] = SPLITS.index("test")
        code_of_recording[members[n_test:n_test + n_val]] = SPLITS.index("val")
    position = np.searchsorted(recordings, dataset.recording[pool])
    split[pool] = code_of_recording[position]
    if not (split == SPLITS.index("test")).any():
        raise DatasetError("the recording split left the test set empty: raise data.test_fraction")
    return split


def normalisation_stats(dataset: MultimodalDataset, index: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean and std of each modality over the given samples that have it, as (2, C) arrays
    (0 and 1 for a modality none of them has)."""
    stats = {}
    for m, (name, array) in enumerate(dataset.modalities.items()):
        values = array[index[dataset.presence[index, m]]]
        if len(values) == 0:
            values = np.zeros((1, *array.shape[1:]), dtype=array.dtype)
        axes = (0, 2) if values.ndim == 3 else (0,)
        mean = values.mean(axis=axes)
        std = values.std(axis=axes)
        stats[name] = np.stack([mean, np.where(std > 1e-8, std, 1.0)]).astype(np.float32)
    return stats


def _artifact_arrays(dataset: MultimodalDataset, split: np.ndarray, stats: dict[str, np.ndarray]) -> dict:
    arrays = dataset.to_arrays()
    arrays["split"] = split
    arrays.update({f"stats/{name}": value for name, value in stats.items()})
    return arrays


@dataclass
class PreparedData:
    """The windowed, split dataset with training-split normalisation stats and a manifest."""

    dataset: MultimodalDataset
    split: np.ndarray
    stats: dict[str, np.ndarray]
    manifest: dict

    def indices(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(name))

    @property
    def data_sha256(self) -> str:
        return self.manifest["data_sha256"]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return _artifact_arrays(self.dataset, self.split, self.stats)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_npz(directory / ARRAYS_FILE, self.to_arrays())
        write_json(directory / MANIFEST_FILE, self.manifest)

    @classmethod
    def load(cls, directory: str | Path) -> PreparedData:
        directory = Path(directory)
        arrays = read_npz(directory / ARRAYS_FILE)
        split = arrays.pop("split")
        stats = {key[len("stats/"):]: arrays.pop(key) for key in list(arrays) if key.startswith("stats/")}
        dataset = MultimodalDataset.from_arrays(arrays, origin=str(directory))
        return cls(dataset=dataset, split=split, stats=stats, manifest=read_json(directory / MANIFEST_FILE))


def prepare(config: DataConfig, seed: int) -> PreparedData:
    """Load, split and describe the configured source."""
    dataset, info = load_source(config)
    split = split_by_recording(dataset, config.test_fraction, config.val_fraction, config.holdout_subjects, seed)
    stats = normalisation_stats(dataset, np.flatnonzero(split == 0))
    counts = {
        name: {
            "samples": int((split == code).sum()),
            "recordings": int(len(np.unique(dataset.recording[split == code]))),
            "subjects": sorted(int(s) for s in np.unique(dataset.subject[split == code])),
            "classes": np.bincount(dataset.labels[split == code], minlength=dataset.num_classes).tolist(),
            "presence_rate": dataset.subset(np.flatnonzero(split == code)).presence_rates(),
            "complete": int(dataset.presence[split == code].all(axis=1).sum()),
        }
        for code, name in enumerate(SPLITS)
    }
    manifest = {
        "source": {"name": info.name, "path": str(info.path), "sha256": info.sha256},
        "data_config": config.model_dump(mode="json"),
        "seed": seed,
        "modalities": {name: list(shape) for name, shape in dataset.sample_shapes().items()},
        "value_bounds": {name: list(bounds) for name, bounds in info.value_bounds.items()},
        "class_names": dataset.class_names,
        "num_samples": len(dataset),
        "splits": counts,
        "data_sha256": sha256_arrays(_artifact_arrays(dataset, split, stats)),
        "test_sha256": dataset.subset(np.flatnonzero(split == SPLITS.index("test"))).content_hash(),
    }
    return PreparedData(dataset=dataset, split=split, stats=stats, manifest=manifest)
