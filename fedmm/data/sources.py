"""Dataset sources: the built-in smartwatch data and bring-your-own ``.npz`` files.

Every source yields arrays in the bring-your-own-data layout and goes through
:meth:`MultimodalDataset.from_arrays`, so the built-in data takes the user's path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fedmm.artifacts import sha256_file
from fedmm.config import DataConfig
from fedmm.data.dataset import MODALITY_PREFIX, DatasetError, MultimodalDataset, load_npz

SMARTWATCH_SHA256 = "eb122f23cdf06ef6bd6c6c5312958ec5cf9d038e2e6d457b8081662c75a42537"
SMARTWATCH_FILE = ("data", "watch_dataset.npy")
# Full-scale limits of a typical wrist IMU: +-16 g and +-2000 deg/s (34.9 rad/s).
SMARTWATCH_BOUNDS = {"acc": (-16.0, 16.0), "gyro": (-35.0, 35.0)}
SMARTWATCH_CHANNELS = {"acc": ["ax", "ay", "az"], "gyro": ["wx", "wy", "wz"]}


class SourceIntegrityError(DatasetError):
    """A source file is missing or does not match its pinned hash."""


@dataclass(frozen=True)
class SourceInfo:
    """What a source is before it is loaded: its file, hash and modality names."""

    name: str
    path: Path
    sha256: str
    modalities: tuple[str, ...]
    value_bounds: dict[str, tuple[float, float]]


def smartwatch_path() -> Path:
    """Locate the smartwatch file inside the installed seglearn wheel, without importing it."""
    spec = importlib.util.find_spec("seglearn")
    if spec is None or spec.origin is None:
        raise SourceIntegrityError("the smartwatch data ships in seglearn==1.2.5, which is not installed")
    return Path(spec.origin).parent.joinpath(*SMARTWATCH_FILE)


def verify_sha256(path: Path, expected: str) -> str:
    """Check a file against its pinned hash before anything reads its content."""
    if not path.is_file():
        raise SourceIntegrityError(f"source file not found: {path}")
    actual = sha256_file(path)
    if actual != expected:
        raise SourceIntegrityError(
            f"source file {path} has SHA-256 {actual}, expected {expected}: refusing to load a modified file"
        )
    return actual


def window_recordings(
    recordings: list[np.ndarray], window: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut (T_i, C) recordings into (N, C, window) windows; returns windows and their recording index."""
    windows, owners = [], []
    for index, signal in enumerate(recordings):
        if len(signal) < window:
            continue
        view = sliding_window_view(signal, window, axis=0)[::stride]
        windows.append(view)
        owners.append(np.full(len(view), index, dtype=np.int64))
    if not windows:
        raise DatasetError(f"no recording is at least {window} steps long")
    return np.concatenate(windows).astype(np.float32), np.concatenate(owners)


def smartwatch_info(config: DataConfig) -> SourceInfo:
    return SourceInfo(
        name="smartwatch",
        path=smartwatch_path(),
        sha256=SMARTWATCH_SHA256,
        modalities=tuple(SMARTWATCH_CHANNELS),
        value_bounds=SMARTWATCH_BOUNDS,
    )


def load_smartwatch(config: DataConfig, info: SourceInfo) -> MultimodalDataset:
    """Verify, unpickle once, and window the smartwatch exercise recordings (Burns et al. 2018)."""
    verify_sha256(info.path, info.sha256)
    raw = np.load(info.path, allow_pickle=True).item()
    signals = [np.asarray(x, dtype=np.float64) for x in raw["X"]]
    windows, owner = window_recordings(signals, config.window, config.stride)
    arrays = {
        MODALITY_PREFIX + "acc": windows[:, 0:3],
        MODALITY_PREFIX + "gyro": windows[:, 3:6],
        "labels": np.asarray(raw["y"], dtype=np.int64)[owner],
        "class_names": np.asarray(raw["y_labels"], dtype=str),
        "subject": np.asarray(raw["subject"], dtype=np.int64)[owner],
        "recording": owner,
    }
    for name, channels in SMARTWATCH_CHANNELS.items():
        arrays[f"channel_names/{name}"] = np.asarray(channels, dtype=str)
    return MultimodalDataset.from_arrays(arrays, origin=str(info.path))


def npz_info(config: DataConfig) -> SourceInfo:
    path = Path(config.path or "")
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        modalities = tuple(k[len(MODALITY_PREFIX):] for k in data.files if k.startswith(MODALITY_PREFIX))
    return SourceInfo(name="npz", path=path, sha256=sha256_file(path), modalities=modalities, value_bounds={})


def load_npz_source(config: DataConfig, info: SourceInfo) -> MultimodalDataset:
    return load_npz(info.path)


@dataclass(frozen=True)
class Source:
    """How to describe a source cheaply and how to load it."""

    describe: Callable[[DataConfig], SourceInfo]
    load: Callable[[DataConfig, SourceInfo], MultimodalDataset]


SOURCES: dict[str, Source] = {
    "smartwatch": Source(smartwatch_info, load_smartwatch),
    "npz": Source(npz_info, load_npz_source),
}


def _source(config: DataConfig) -> Source:
    try:
        return SOURCES[config.source]
    except KeyError:
        raise DatasetError(f"unknown data.source {config.source!r}; choose one of {sorted(SOURCES)}") from None


def source_info(config: DataConfig) -> SourceInfo:
    """Describe the configured source (file, hash, modalities) without loading it."""
    return _source(config).describe(config)


def load_source(config: DataConfig) -> tuple[MultimodalDataset, SourceInfo]:
    """Load the configured source as a :class:`MultimodalDataset`, with its description."""
    info = source_info(config)
    return _source(config).load(config, info), info
