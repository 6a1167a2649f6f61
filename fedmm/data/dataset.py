"""The multimodal dataset and its bring-your-own-data file format.

File format (``.npz``, read with ``allow_pickle=False``):

- ``modality/<name>``: float array, one per modality, shape (N, C, T) for time series
  (channels x time) or (N, D) for feature vectors. Two or more modalities.
- ``labels``: int array (N,), classes 0..K-1.
- ``class_names`` (optional): str array (K,); default ``class_0`` .. ``class_{K-1}``.
- ``subject`` (optional): int array (N,), the natural client of each sample.
- ``recording`` (optional): int array (N,), samples of one recording share a value and are
  never split between train and test (overlapping windows); default: every sample its own.
- ``channel_names/<name>`` (optional): str array (C,) or (D,) per modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmm.artifacts import read_npz, sha256_arrays
from fedmm.errors import UserError

MODALITY_PREFIX = "modality/"
CHANNEL_PREFIX = "channel_names/"


class DatasetError(UserError, ValueError):
    """A dataset file is missing, malformed or inconsistent."""


@dataclass
class MultimodalDataset:
    """Aligned per-modality arrays with labels, subjects and recording ids."""

    modalities: dict[str, np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    subject: np.ndarray
    recording: np.ndarray
    channel_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.modalities) < 2:
            raise DatasetError(f"a multimodal dataset needs at least 2 modalities, got {sorted(self.modalities)}")
        n = len(self.labels)
        for name, array in self.modalities.items():
            if "/" in name or "." in name or not name:
                raise DatasetError(f"modality name {name!r} must be non-empty without '/' or '.'")
            if array.ndim not in (2, 3):
                raise DatasetError(f"modality {name!r} has shape {array.shape}; expected (N, C, T) or (N, D)")
            if len(array) != n:
                raise DatasetError(f"modality {name!r} has {len(array)} samples but there are {n} labels")
        for name, values in (("subject", self.subject), ("recording", self.recording)):
            if len(values) != n:
                raise DatasetError(f"{name} has {len(values)} entries but there are {n} labels")

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(array.shape[1:]) for name, array in self.modalities.items()}

    def subset(self, index: np.ndarray) -> MultimodalDataset:
        return MultimodalDataset(
            modalities={name: array[index] for name, array in self.modalities.items()},
            labels=self.labels[index],
            class_names=self.class_names,
            subject=self.subject[index],
            recording=self.recording[index],
            channel_names=self.channel_names,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The dataset in the bring-your-own-data layout (see module docstring)."""
        arrays = {MODALITY_PREFIX + name: array for name, array in self.modalities.items()}
        arrays.update(
            labels=self.labels,
            class_names=np.asarray(self.class_names, dtype=str),
            subject=self.subject,
            recording=self.recording,
        )
        for name, channels in self.channel_names.items():
            arrays[CHANNEL_PREFIX + name] = np.asarray(channels, dtype=str)
        return arrays

    def content_hash(self) -> str:
        return sha256_arrays(self.to_arrays())

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], origin: str = "arrays") -> MultimodalDataset:
        """Build from the bring-your-own-data layout, checking it and naming what is wrong."""
        modalities = {
            key[len(MODALITY_PREFIX):]: np.asarray(value, dtype=np.float32)
            for key, value in arrays.items()
            if key.startswith(MODALITY_PREFIX)
        }
        if "labels" not in arrays:
            raise DatasetError(f"{origin}: no 'labels' array")
        labels = np.asarray(arrays["labels"])
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"{origin}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if len(labels) == 0:
            raise DatasetError(f"{origin}: the dataset is empty")
        if "class_names" in arrays:
            class_names = [str(name) for name in arrays["class_names"]]
        else:
            class_names = [f"class_{k}" for k in range(int(labels.max()) + 1)]
        n = len(labels)
        subject = np.asarray(arrays.get("subject", np.zeros(n)), dtype=np.int64)
        recording = np.asarray(arrays.get("recording", np.arange(n)), dtype=np.int64)
        channel_names = {
            key[len(CHANNEL_PREFIX):]: [str(c) for c in value]
            for key, value in arrays.items()
            if key.startswith(CHANNEL_PREFIX)
        }
        unknown = set(arrays) - {"labels", "class_names", "subject", "recording"} - {
            key for key in arrays if key.startswith((MODALITY_PREFIX, CHANNEL_PREFIX))
        }
        if unknown:
            raise DatasetError(f"{origin}: unknown arrays {sorted(unknown)} (see the data format in the README)")
        return cls(
            modalities=modalities,
            labels=labels.astype(np.int64),
            class_names=class_names,
            subject=subject,
            recording=recording,
            channel_names=channel_names,
        )


def load_npz(path: str | Path) -> MultimodalDataset:
    """Load a bring-your-own-data ``.npz`` file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        arrays = read_npz(path)
    except ValueError as error:
        raise DatasetError(f"{path}: not a pickle-free .npz file ({error})") from None
    return MultimodalDataset.from_arrays(arrays, origin=str(path))
