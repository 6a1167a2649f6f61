"""The bad-input trials of issues 13 and 21, rerun through the real `fedmm` command: one row per trial.

Each trial runs `fedmm` as a user would (fresh processes) against one throwaway state
folder and prints what was tried, whether it was handled, and how: the exit code, the
error line (else the first line the user sees, progress bars left out), how many model
versions it registered, and seconds. A bad input is handled when it ends in one clear
error line with exit 2, no traceback and nothing registered; the control run on good data
must exit 0 with one version. The issue-21 trials (kill -9 mid-promotion, orphans of a
killed Flower run, concurrent first runs, memory bombs, tampered artifacts, ...) say in
their own row what handling means for them.

    .venv/bin/python benchmarks/bad_input_trials.py [--only NAME ...] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
FEDMM = Path(sys.executable).with_name("fedmm")


def synthetic(path: Path, n_recordings: int = 24, per_recording: int = 10, **changes) -> Path:
    """A small two-modality file whose signal depends on the class (3 classes, 4 subjects)."""
    rng = np.random.default_rng(0)
    recording = np.repeat(np.arange(n_recordings), per_recording)
    labels = (np.arange(n_recordings) % 3)[recording]
    wave = np.sin(2 * np.pi * (labels[:, None] + 1) * np.linspace(0, 1, 20))[:, None, :]
    arrays = {
        "modality/acc": (wave + 0.3 * rng.standard_normal((len(labels), 3, 20))).astype(np.float32),
        "modality/gyro": (-wave + 0.3 * rng.standard_normal((len(labels), 2, 20))).astype(np.float32),
        "labels": labels.astype(np.int64),
        "class_names": np.array(["c0", "c1", "c2"]),
        "subject": ((np.arange(n_recordings) // 3) % 4)[recording].astype(np.int64),
        "recording": recording.astype(np.int64),
    }
    arrays.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    np.savez(path, **arrays)
    return path


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _crc(path: Path) -> Path:
    content = bytearray(synthetic(path).read_bytes())
    content[400] ^= 0xFF
    return _file(path, bytes(content))


def _huge(path: Path) -> Path:
    synthetic(path)
    arrays = dict(np.load(path))
    arrays["modality/acc"][5, 0, 0] = 1e30
    np.savez(path, **arrays)
    return path


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """An .npy header that asks for an array of ``shape``, followed by a few bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


def _forged_header(path: Path) -> Path:
    """A good file whose acc array's header asks for 4.37 TiB."""
    synthetic(path)
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    members["modality/acc.npy"] = _npy_header((20_000_000_000, 3, 20))
    with zipfile.ZipFile(path, "w") as target:
        for name, content in members.items():
            target.writestr(name, content)
    return path


def _nan(path: Path) -> Path:
    synthetic(path)
    arrays = dict(np.load(path))
    arrays["modality/acc"][:40] = np.nan
    np.savez(path, **arrays)
    return path


N = 240
CONTROL_NAME = "good data (control)"
FILES = {
    "zero-byte .npz": lambda p: _file(p, b""),
    "truncated .npz": lambda p: _file(p, synthetic(p.with_name("full.npz")).read_bytes()[:5000]),
    "CRC-corrupt .npz": _crc,
    "non-zip file (a pickle)": lambda p: _file(p, pickle.dumps({"labels": [0, 1]})),
    "negative labels": lambda p: synthetic(p, labels=np.arange(N) % 3 - 1),
    "single class": lambda p: synthetic(p, labels=np.zeros(N, dtype=np.int64)),
    "modality with 0 time steps": lambda p: synthetic(p, **{"modality/acc": np.zeros((N, 3, 0), np.float32)}),
    "modality with 0 features": lambda p: synthetic(p, **{"modality/acc": np.zeros((N, 0), np.float32)}),
    "a value of 1e30": _huge,
    "label 7 with 3 real classes": lambda p: synthetic(
        p, labels=np.where(np.arange(N) % 3 == 2, 7, np.arange(N) % 3), class_names=None),
    "one label of 2**40 (memory bomb)": lambda p: synthetic(
        p, labels=np.where(np.arange(N) == 5, 2 ** 40, np.arange(N) % 3), class_names=None),
    "forged .npy header asking for 4.37 TiB": _forged_header,
    "complex-valued modality": lambda p: synthetic(
        p, **{"modality/acc": np.ones((N, 3, 20), np.complex64) * (1 + 2j)}),
    "7 channel names for 3 channels": lambda p: synthetic(
        p, **{"channel_names/acc": np.array([f"c{i}" for i in range(7)])}),
    "string modality": lambda p: synthetic(p, **{"modality/acc": np.full((N, 3, 20), "x")}),
    "NaN values (a step failure)": _nan,
    CONTROL_NAME: synthetic,
}
CONTROL = f"trial-file-{list(FILES).index(CONTROL_NAME)}"
SETS = {
    "--set train.rounds=[1,": ["train.rounds=[1,"],
    "--set with a YAML tag": ["train.rounds=!!python/object/apply:os.system [echo pwned]"],
    "seed beyond 64 bits": [f"seed={2 ** 70}"],
    "train.lr=.inf": ["train.lr=.inf"],
    "train.rounds=true": ["train.rounds=true"],
    "train.device=cuda without a GPU": ["train.device=cuda"],
    "value_bounds low > high": ["validation.value_bounds={acc: [5, -5]}"],
    "more clients than samples": ["partition.scheme=iid", "partition.num_clients=50"],
    "partition.num_clients=100000 (iid)": ["partition.scheme=iid", "partition.num_clients=100000"],
    "train.lr=1e30": ["train.lr=1e30"],
    "model.embed_dim=10**9 (a memory bomb in the config)": ["model.embed_dim=1000000000"],
    "diverging training (a client scales its update by 1e38)": [
        "corruption.clients=[{client: 0, kind: scaled_update, scale: 1e38}]", "registry.min_test_samples=10"],
}


def data_overrides(path: Path, model: str) -> list[str]:
    return ["data.source=npz", f"data.path={path}", "data.holdout_subjects=1", "data.test_fraction=0.25",
            "data.val_fraction=0.125", f"registry.model_name={model}", "registry.min_macro_f1=0.0",
            "registry.min_test_samples=10", "validation.value_bounds={gyro: [-10, 10]}"]


def trials(folder: Path) -> list[tuple[str, str, list[str]]]:
    """(name, model name, fedmm arguments) of every trial."""
    found = []
    for index, (name, make) in enumerate(FILES.items()):
        model = f"trial-file-{index}"
        path = make(folder / f"file-{index}.npz")
        found.append((name, model, ["run", "-c", str(TINY), *sum([["--set", o] for o in data_overrides(path, model)], [])]))
    good = synthetic(folder / "good.npz")
    for index, (name, overrides) in enumerate(SETS.items()):
        model = f"trial-set-{index}"
        sets = [*data_overrides(good, model), *overrides]
        found.append((name, model, ["run", "-c", str(TINY), *sum([["--set", o] for o in sets], [])]))
    found.append(("promote --min-macro-f1 -5", CONTROL,
                  ["promote", "--model", CONTROL, "--version", "1", "--min-macro-f1", "-5"]))
    return found


def registered(home: Path, model: str) -> int:
    """Model versions of ``model`` in the trial home's MLflow store (0 when there is no store yet)."""
    database = home / "mlflow.db"
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        try:
            return connection.execute("SELECT COUNT(*) FROM model_versions WHERE name = ?", (model,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


PROGRESS = re.compile(r"\d+%\||/round|round/s|round\]|\?\w+/s\]")  # a tqdm progress bar


def first_line(stdout: str, stderr: str) -> str:
    """The error line when there is one, else the first line that is not a progress bar (stderr first)."""
    lines = [line.split("\r")[-1].strip() for text in (stderr, stdout) for line in text.splitlines()]
    lines = [line for line in lines if line and not PROGRESS.search(line)]
    errors = [line for line in lines if line.lower().startswith(("error:", "internal error:"))]
    return (errors or lines or [""])[0]


MEMORY_LIMIT = 8 * 2 ** 30  # address space of one trial: a memory bomb fails there, not on the machine


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def fedmm(arguments: list[str], env: dict, cwd: Path, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """Run the real command in a fresh process with at most :data:`MEMORY_LIMIT` of address space (exit -9 when
    it was killed, 124 when it timed out)."""
    try:
        return subprocess.run([str(FEDMM), *arguments], capture_output=True, text=True, env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, timeout=timeout, preexec_fn=_limit_memory, **options)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(error.cmd, 124, error.stdout or "", f"timed out after {timeout:.0f} s")


def one_clear_line(done: subprocess.CompletedProcess, code: int = 2) -> bool:
    """Exit ``code`` with one error line and no traceback."""
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("error:", "internal error:"))]
    return done.returncode == code and len(errors) == 1 and "Traceback" not in done.stdout + done.stderr


def how(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}: {first_line(done.stdout, done.stderr)[:150]}"


def standard_row(name: str, model: str, arguments: list[str], home: Path, env: dict, folder: Path) -> tuple:
    """A bad input is handled by one clear line, exit 2, nothing registered; the control by exit 0 and one version."""
    before = registered(home, model)
    done = fedmm(arguments, env, folder, timeout=240)
    versions = registered(home, model) - before
    control = name == CONTROL_NAME
    handled = (done.returncode == 0 and versions == 1) if control else (one_clear_line(done) and versions == 0)
    return handled, f"{how(done)}; {versions} version(s) registered"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only the trials whose names contain one of these")
    parser.add_argument("--keep", action="store_true", help="keep the state folder and data files")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fedmm-trials-"))
    folder.chmod(0o755)
    home = folder / "home"
    env = {**os.environ, "FEDMM_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    from fault_trials import FAULT_TRIALS

    planned = [(name, lambda n=name, m=model, a=arguments: standard_row(n, m, a, home, env, folder))
               for name, model, arguments in trials(folder)]
    planned += [(name, lambda t=trial: t(folder, home, env)) for name, trial in FAULT_TRIALS.items()]
    rows = []
    for name, trial in planned:
        if args.only and not any(word in name for word in args.only):
            continue
        started = time.monotonic()
        handled, detail = trial()
        rows.append((name, handled, detail, time.monotonic() - started))
        print(f"| {name} | {'yes' if handled else 'NO'} | {detail[:220]} | {rows[-1][3]:.0f} |", flush=True)
    print("\n| tried | handled | how | s |\n| --- | --- | --- | ---: |")
    for name, handled, detail, seconds in rows:
        print(f"| {name} | {'yes' if handled else 'NO'} | {detail[:220]} | {seconds:.0f} |")
    print(f"\n{sum(r[1] for r in rows)} of {len(rows)} handled")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept: {folder}")


if __name__ == "__main__":
    main()
