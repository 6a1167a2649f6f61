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
- ``present/<name>`` (optional): bool array (N,) per modality, False where a sample lacks that
  modality (a sensor dropped out, a site never had it). The values there are ignored (any
  finite filler, or NaN) and read as 0. Without it every sample has the modality. Every
  sample needs at least one present modality.

A run's own file holds two or more modalities. A site's file (a federated deployment) may leave
out a modality it never had: the run's model gives its shape, and every sample lacks it
(:meth:`MultimodalDataset.aligned`).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmm.artifacts import read_npz, sha256_arrays
from fedmm.errors import UserError

MODALITY_PREFIX = "modality/"
CHANNEL_PREFIX = "channel_names/"
PRESENT_PREFIX = "present/"


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
    presence: np.ndarray | None = None
    """(N, M) bool, False where a sample lacks a modality (columns in modality order); None: all present."""

    def __post_init__(self) -> None:
        if not self.modalities:
            raise DatasetError("the dataset has no modality (no modality/<name> array)")
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
        for name, channels in self.channel_names.items():
            array = self.modalities.get(name)
            if array is None:
                raise DatasetError(f"channel_names/{name} names no modality; modalities are {sorted(self.modalities)}")
            if len(channels) != array.shape[1]:
                what = "channels" if array.ndim == 3 else "features"
                raise DatasetError(f"channel_names/{name} has {len(channels)} names for {array.shape[1]} {what}")
        shape = (n, len(self.modalities))
        self.presence = np.ones(shape, dtype=bool) if self.presence is None else np.asarray(self.presence, dtype=bool)
        if self.presence.shape != shape:
            raise DatasetError(f"presence has shape {self.presence.shape}, expected {shape}")

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
            presence=self.presence[index],
        )

    def presence_rates(self) -> dict[str, float]:
        """Fraction of samples that have each modality (the data's own presence)."""
        return {name: float(self.presence[:, m].mean()) if len(self) else 0.0 for m, name in enumerate(self.modalities)}

    def presence_of(self, names: list[str]) -> np.ndarray:
        """Presence (N, len(names)) with columns in the order of ``names``."""
        order = list(self.modalities)
        return self.presence[:, [order.index(name) for name in names]]

    def complete(self) -> np.ndarray:
        """Indices of the samples that have every modality."""
        return np.flatnonzero(self.presence.all(axis=1))

    def aligned(self, shapes: dict[str, tuple[int, ...]], origin: str = "dataset") -> MultimodalDataset:
        """This dataset over exactly the modalities of ``shapes`` (name -> per-sample shape), in that order.

        A modality this dataset lacks (a site that never had the sensor) is absent from every
        sample (zeros, presence False); one ``shapes`` does not name is left out.
        """
        n, names = len(self), list(self.modalities)
        modalities, presence = {}, np.zeros((n, len(shapes)), dtype=bool)
        for m, (name, shape) in enumerate(shapes.items()):
            if name in self.modalities:
                modalities[name], presence[:, m] = self.modalities[name], self.presence[:, names.index(name)]
            else:
                modalities[name] = np.zeros((n, *shape), dtype=np.float32)
        require_a_modality(presence, origin)
        return MultimodalDataset(
            modalities=modalities, labels=self.labels, class_names=self.class_names, subject=self.subject,
            recording=self.recording, presence=presence,
            channel_names={name: c for name, c in self.channel_names.items() if name in shapes},
        )

    def to_arrays(self, omit_absent: bool = False) -> dict[str, np.ndarray]:
        """The dataset in the bring-your-own-data layout (see module docstring).

        ``omit_absent``: leave out a modality no sample has, as a site that never had it writes its file.
        """
        if omit_absent:
            keep = [name for m, name in enumerate(self.modalities) if self.presence[:, m].any()]
            return self.aligned({name: self.modalities[name].shape[1:] for name in keep}).to_arrays()
        arrays = {MODALITY_PREFIX + name: array for name, array in self.modalities.items()}
        arrays.update(
            labels=self.labels,
            class_names=np.asarray(self.class_names, dtype=str),
            subject=self.subject,
            recording=self.recording,
        )
        for name, channels in self.channel_names.items():
            arrays[CHANNEL_PREFIX + name] = np.asarray(channels, dtype=str)
        for m, name in enumerate(self.modalities):
            if not self.presence[:, m].all():
                arrays[PRESENT_PREFIX + name] = self.presence[:, m]
        return arrays

    def content_hash(self) -> str:
        return sha256_arrays(self.to_arrays())

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], origin: str = "arrays") -> MultimodalDataset:
        """Build from the bring-your-own-data layout, checking it and naming what is wrong."""
        unknown = set(arrays) - {"labels", "class_names", "subject", "recording"} - {
            key for key in arrays if key.startswith((MODALITY_PREFIX, CHANNEL_PREFIX, PRESENT_PREFIX))
        }
        if unknown:
            raise DatasetError(f"{origin}: unknown arrays {sorted(unknown)} (see the data format in the README)")
        labels = read_labels(arrays, origin)
        n = len(labels)
        modalities = {
            key[len(MODALITY_PREFIX):]: modality_array(key[len(MODALITY_PREFIX):], value, origin)
            for key, value in arrays.items() if key.startswith(MODALITY_PREFIX)
        }
        if not modalities:
            raise DatasetError(f"{origin}: no modality/<name> array (see the data format in the README)")
        presence = read_presence(arrays, modalities, n, origin)
        for m, array in enumerate(modalities.values()):
            if array.ndim >= 1 and len(array) == n and not presence[:, m].all():
                array[~presence[:, m]] = 0.0
        class_names = read_class_names(arrays, labels, origin)
        try:
            return cls(
                modalities=modalities,
                labels=labels,
                class_names=class_names,
                subject=np.asarray(arrays.get("subject", np.zeros(n)), dtype=np.int64),
                recording=np.asarray(arrays.get("recording", np.arange(n)), dtype=np.int64),
                channel_names={
                    key[len(CHANNEL_PREFIX):]: [str(c) for c in np.atleast_1d(value)]
                    for key, value in arrays.items() if key.startswith(CHANNEL_PREFIX)
                },
                presence=presence,
            )
        except DatasetError as error:
            raise DatasetError(f"{origin}: {error}") from None


def read_labels(arrays: dict[str, np.ndarray], origin: str) -> np.ndarray:
    """The ``labels`` array as int64, or a one-line error."""
    if "labels" not in arrays:
        raise DatasetError(f"{origin}: no 'labels' array")
    labels = np.asarray(arrays["labels"])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{origin}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) == 0:
        raise DatasetError(f"{origin}: the dataset is empty")
    return labels.astype(np.int64)


def read_class_names(arrays: dict[str, np.ndarray], labels: np.ndarray, origin: str) -> list[str]:
    """``class_names`` as given, or ``class_0..class_{K-1}``; a label no class could have is refused first."""
    if "class_names" in arrays:
        return [str(name) for name in np.atleast_1d(arrays["class_names"])]
    top = int(labels.max())
    if top >= len(labels):
        raise DatasetError(
            f"{origin}: label {top} but only {len(labels)} samples; labels must be the classes 0..K-1, each with a sample"
        )
    return [f"class_{k}" for k in range(top + 1)]


def modality_array(name: str, value: np.ndarray, origin: str) -> np.ndarray:
    """A modality as float32 (a writable copy); complex, string or other non-numeric arrays are refused."""
    value = np.asarray(value)
    if value.dtype.kind not in "biuf":
        what = {"c": "complex", "U": "string", "S": "bytes", "M": "datetime", "m": "timedelta"}.get(value.dtype.kind, "non-numeric")
        raise DatasetError(f"{origin}: modality {name!r} is {what} ({value.dtype}); modalities must be real numbers")
    return np.array(value, dtype=np.float32)


def read_presence(arrays: dict[str, np.ndarray], modalities: dict[str, np.ndarray], n: int, origin: str) -> np.ndarray:
    """(N, M) presence from the ``present/<modality>`` arrays (all True without them), checked."""
    presence = np.ones((n, len(modalities)), dtype=bool)
    names = list(modalities)
    for key, value in arrays.items():
        if not key.startswith(PRESENT_PREFIX):
            continue
        name, value = key[len(PRESENT_PREFIX):], np.asarray(value)
        if name not in modalities:
            raise DatasetError(f"{origin}: {key} names no modality; modalities are {names}")
        if value.shape != (n,) or value.dtype.kind not in "bui" or not np.isin(value, (0, 1)).all():
            raise DatasetError(f"{origin}: {key} must be a bool array of shape ({n},), got {value.dtype} {value.shape}")
        presence[:, names.index(name)] = value.astype(bool)
    require_a_modality(presence, origin)
    return presence


def require_a_modality(presence: np.ndarray, origin: str) -> None:
    """Refuse, in one line, samples that have no modality present."""
    empty = np.flatnonzero(~presence.any(axis=1))
    if len(empty):
        raise DatasetError(
            f"{origin}: {len(empty)} sample(s) have no modality present (first: sample {int(empty[0])}); "
            "drop them or mark one present/<modality> True"
        )


def require_multimodal(dataset: MultimodalDataset, origin: str) -> None:
    """A run's own data (not a site's file) defines the model's modalities: it needs two or more."""
    if len(dataset.modalities) < 2:
        raise DatasetError(f"{origin}: a multimodal dataset needs at least 2 modalities, got {dataset.modality_names}")


def load_npz(path: str | Path) -> MultimodalDataset:
    """Load a bring-your-own-data ``.npz`` file (its array sizes checked against the file's first)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    check_npz_sizes(path)
    try:
        arrays = read_npz(path)
    except ValueError as error:
        raise DatasetError(f"{path}: not a pickle-free .npz file ({error})") from None
    return MultimodalDataset.from_arrays(arrays, origin=str(path))


# Deflate cannot expand data more than about 1032 times; a member claiming more is forged.
DEFLATE_MAX_RATIO = 1100


def check_npz_sizes(path: Path) -> None:
    """Refuse an ``.npz`` whose array headers ask for more bytes than the file can hold, before allocating.

    Each member's ``.npy`` header is read with :mod:`numpy.lib.format` (no data loaded); the
    array it declares must fit the member's uncompressed size, which must fit the archive.
    """
    limit = path.stat().st_size * DEFLATE_MAX_RATIO
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.file_size > limit or member.compress_size > path.stat().st_size:
                    raise DatasetError(f"{path}: member {member.filename} claims {member.file_size} bytes, more than "
                                       "the file can hold: the archive is forged or corrupt")
                with archive.open(member) as handle:
                    declared = npy_nbytes(handle, f"{path}: {member.filename}")
                if declared > member.file_size:
                    raise DatasetError(f"{path}: array {member.filename} declares {declared} bytes in a "
                                       f"{member.file_size}-byte member: the file is forged or truncated")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise DatasetError(f"{path} is truncated or corrupt ({error}): write it again with numpy.savez") from None


def npy_nbytes(handle, origin: str) -> int:
    """Bytes of data an ``.npy`` stream's header declares (read without loading the array)."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except ValueError as error:
        raise DatasetError(f"{origin} has no valid .npy header ({error})") from None
    return int(np.prod(shape, dtype=object)) * dtype.itemsize
