"""Content hashes and atomic, pickle-free writes for the artifacts that flow between stages."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_sha256(folder: str | Path, pattern: str = "*") -> str:
    """SHA-256 over the files of a folder matching ``pattern`` (recursively): each one's relative path and content
    hash, in path order."""
    folder = Path(folder)
    lines = sorted(
        f"{path.relative_to(folder).as_posix()} {sha256_file(path)}\n" for path in folder.rglob(pattern) if path.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def sha256_arrays(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over named arrays (names, dtypes, shapes and bytes), independent of file format."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(payload: Any) -> bytes:
    """The JSON every artifact file holds: indented, sorted keys, numpy scalars and arrays as numbers and lists."""
    return json.dumps(payload, indent=2, sort_keys=True, default=_json_default).encode()


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    data = json_bytes(payload)
    _atomic(Path(path), lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    data = text.encode()
    _atomic(Path(path), lambda handle: handle.write(data))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """Write arrays to an .npz atomically; object arrays are refused (no pickles). With ``compressed``
    the members are deflated at level 1 (``np.load`` reads either)."""
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; artifacts must be pickle-free")
    _atomic(Path(path), (lambda handle: _deflated_npz(handle, arrays)) if compressed
            else (lambda handle: np.savez(handle, **arrays)))


def _deflated_npz(handle, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz, refusing pickled content."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
