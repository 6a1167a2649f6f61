"""The bad-input trials of issue 13, rerun through the real `fedmm` command: one row per trial.

Each trial runs `fedmm` as a user would (a fresh process) against one throwaway state
folder and prints: the input, the exit code, the error line (else the first line the user
sees, progress bars left out), how many model versions the trial registered, and seconds.
Every row should be a clear error with exit 2 and nothing registered, except the control
run on good data (exit 0, one version, promoted).

    .venv/bin/python benchmarks/bad_input_trials.py [--only NAME ...] [--keep]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
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


N = 240
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
    "good data (control)": synthetic,
}
SETS = {
    "--set train.rounds=[1,": ["train.rounds=[1,"],
    "--set with a YAML tag": ["train.rounds=!!python/object/apply:os.system [echo pwned]"],
    "seed beyond 64 bits": [f"seed={2 ** 70}"],
    "train.lr=.inf": ["train.lr=.inf"],
    "train.rounds=true": ["train.rounds=true"],
    "train.device=cuda without a GPU": ["train.device=cuda"],
    "value_bounds low > high": ["validation.value_bounds={acc: [5, -5]}"],
    "more clients than samples": ["partition.scheme=iid", "partition.num_clients=50"],
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
    found.append(("promote --min-macro-f1 -5", "trial-file-10",
                  ["promote", "--model", "trial-file-10", "--version", "1", "--min-macro-f1", "-5"]))
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


def first_line(stdout: str, stderr: str) -> str:
    """The error line when there is one, else the first line that is not a progress bar (stderr first)."""
    lines = [line.split("\r")[-1].strip() for text in (stderr, stdout) for line in text.splitlines()]
    lines = [line for line in lines if line and "/round" not in line and "round/s" not in line and "round]" not in line]
    errors = [line for line in lines if line.lower().startswith(("error:", "internal error:"))]
    return (errors or lines or [""])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only the trials whose names contain one of these")
    parser.add_argument("--keep", action="store_true", help="keep the state folder and data files")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fedmm-trials-"))
    home = folder / "home"
    env = {**os.environ, "FEDMM_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    rows = []
    for name, model, arguments in trials(folder):
        if args.only and not any(word in name for word in args.only):
            continue
        started, before = time.monotonic(), registered(home, model)
        done = subprocess.run([str(FEDMM), *arguments], capture_output=True, text=True, env=env, cwd=folder,
                              stdin=subprocess.DEVNULL)
        rows.append((name, done.returncode, first_line(done.stdout, done.stderr), registered(home, model) - before,
                     time.monotonic() - started))
        print(f"| {name} | {rows[-1][1]} | {rows[-1][2][:150]} | {rows[-1][3]} | {rows[-1][4]:.0f} |", flush=True)
    print("\n| input | exit | first line | versions it registered | s |\n| --- | ---: | --- | ---: | ---: |")
    for name, code, line, versions, seconds in rows:
        print(f"| {name} | {code} | {line[:150]} | {versions} | {seconds:.0f} |")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept: {folder}")


if __name__ == "__main__":
    main()
