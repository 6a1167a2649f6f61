"""The issue-21 trials of `bad_input_trials.py`: kills, races, unusable state folders, tampered artifacts.

Each trial is a function (folder, home, env) -> (handled, how) over the real command, run
after the bad-input trials (the control run's model, ``CONTROL`` v1, is what they promote,
kill and tamper with).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bad_input_trials import CONTROL, REPO, TINY, data_overrides, fedmm, how, one_clear_line, registered, synthetic

KILL_HOOK = """
import os, signal, sys
from mlflow import MlflowClient
kill_at, writes = int(os.environ["FEDMM_TRIAL_KILL_AT"]), []
def before(original):
    def write(self, *args, **kwargs):
        writes.append(1)
        if len(writes) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)
    return write
for name in ("set_registered_model_alias", "delete_registered_model_alias", "set_model_version_tag",
             "set_registered_model_tag", "delete_registered_model_tag"):
    setattr(MlflowClient, name, before(getattr(MlflowClient, name)))
from fedmm.cli import main
main(sys.argv[1:])
"""
COPY_VERSION = """
import sys
from fedmm import runtime
runtime.configure()
from fedmm.tracking import registry
name = sys.argv[1]
v1 = registry.model_version(name, "1")
tags = {k: v for k, v in v1.tags.items() if k not in ("fedmm.promotion", "fedmm.gates", registry.TAG_REPLACED)}
print(registry.client().create_model_version(name, v1.source, run_id=v1.run_id, tags=tags).version)
"""


def _registry(home: Path, model: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Aliases and version tags of a model, read straight from the SQLite store."""
    with sqlite3.connect(home / "mlflow.db") as db:
        aliases = dict(db.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (model,)))
        tags: dict[str, dict[str, str]] = {}
        for version, key, value in db.execute("SELECT version, key, value FROM model_version_tags WHERE name = ?", (model,)):
            tags.setdefault(str(version), {})[key] = value
    return {k: str(v) for k, v in aliases.items()}, tags


def kill_during_promote(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
    """Promote the other version, SIGKILLed before its k-th registry write (k = 1..8); after each, a command that
    takes the lock must find the aliases as before or as after the promotion, never between."""
    copied = subprocess.run([sys.executable, "-c", COPY_VERSION, CONTROL], capture_output=True, text=True, env=env)
    if copied.returncode != 0:
        return False, f"could not add a second version: {copied.stderr.strip()[-200:]}"
    killed, completed, bad = 0, 0, []
    for kill_at in range(1, 9):
        before, _ = _registry(home, CONTROL)
        champion = before.get("champion")
        other = "2" if champion == "1" else "1"
        done = subprocess.run([sys.executable, "-c", KILL_HOOK, "promote", "--model", CONTROL, "--version", other,
                               "--margin", "0", "--min-macro-f1", "0"], capture_output=True, text=True,
                              env={**env, "FEDMM_TRIAL_KILL_AT": str(kill_at)}, cwd=folder)
        killed += done.returncode == -signal.SIGKILL
        swept = fedmm(["promote", "--model", CONTROL, "--version", "999"], env, folder)
        completed += "interrupted promotion" in swept.stdout
        after, tags = _registry(home, CONTROL)
        moved = {**before, "champion": other, "previous-champion": champion}
        recorded = tags.get(other, {})
        if not (after == before or (after == moved and recorded.get("fedmm.promotion") == "promoted"
                                    and recorded.get("fedmm.replaced_version") == champion)):
            bad.append(f"k={kill_at}: {after}")
    return not bad and killed >= 7, (f"{killed} of 8 promotions killed by SIGKILL (one before each registry write); "
                                     f"{completed} left half-done were completed by the next command's sweep; "
                                     + (f"half-moved: {bad}" if bad else "aliases always as before or as after"))


def _descendants_of_home(home: Path) -> list[psutil.Process]:
    """Live processes whose environment names this trial's FEDMM_HOME (what a killed run started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and f"FEDMM_HOME={home}" in "\0".join(
                    f"{k}={v}" for k, v in process.environ().items()) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def orphans_after_kill(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
    """kill -9 of `fedmm run` over Flower once its SuperNodes run: 15 s later no process it started may be left."""
    flower_home = folder / "flower-home"
    good = synthetic(folder / "flower.npz")
    sets = [*data_overrides(good, "trial-flower"), "train.transport=flower", "train.rounds=3"]
    run_env = {**env, "FEDMM_HOME": str(flower_home)}
    run = subprocess.Popen([str(Path(sys.executable).with_name("fedmm")), "run", "-c", str(TINY),
                            *sum([["--set", o] for o in sets], [])], env=run_env, cwd=folder,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        if any("supernode" in " ".join(p.cmdline()) for p in _descendants_of_home(flower_home)):
            break
        time.sleep(1)
    if run.poll() is not None:
        return False, f"the run ended (exit {run.returncode}) before its SuperNodes were seen"
    started = len(_descendants_of_home(flower_home))
    run.send_signal(signal.SIGKILL)
    run.wait()
    time.sleep(15)
    left = _descendants_of_home(flower_home)
    names = sorted({Path(p.cmdline()[0]).name if p.cmdline() else p.name() for p in left})
    for process in left:  # the trial's own leftovers
        process.kill()
    return not left, f"{started} processes up when killed; {len(left)} left 15 s later {names if left else ''}".strip()


def concurrent_first_runs(count: int):
    def trial(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
        """``count`` `fedmm run` at once on a fresh FEDMM_HOME: none may fail for the other's store initialisation."""
        fresh = folder / f"concurrent-{count}"
        good = synthetic(folder / f"concurrent-{count}.npz")
        runs = [subprocess.Popen(
            [str(Path(sys.executable).with_name("fedmm")), "run", "-c", str(TINY),
             *sum([["--set", o] for o in [*data_overrides(good, f"trial-concurrent-{i}"), "train.rounds=1",
                                          "train.centralized=false"]], [])],
            env={**env, "FEDMM_HOME": str(fresh)}, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(count)]
        outputs = [run.communicate(timeout=1200) for run in runs]
        codes = [run.returncode for run in runs]
        clashes = sum("already exists" in out + err for out, err in outputs)
        return all(c in (0, 1) for c in codes) and not clashes, f"exit codes {codes}; {clashes} store clashes"
    return trial


def unusable_home(kind: str):
    def trial(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
        """A read-only (bind mount) or non-directory FEDMM_HOME: one line, exit 2."""
        state = folder / f"home-{kind}"
        command = [str(Path(sys.executable).with_name("fedmm")), "config"]
        if kind == "file":
            state.write_text("not a folder")
        else:
            state.mkdir()
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       f'mount --bind -o ro "{state}" "{state}" && exec "$@"', "sh", *command]
        done = subprocess.run(command, capture_output=True, text=True, env={**env, "FEDMM_HOME": str(state)}, cwd=folder)
        return one_clear_line(done), how(done)
    return trial


def promote_uses_recorded_gates(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
    """`fedmm promote` without -c reaches the run's verdict (its gate settings are recorded with the version)."""
    done = fedmm(["promote", "--model", CONTROL, "--version", "1"], env, folder)
    settings = next((line for line in done.stdout.splitlines() if line.startswith("gate settings")), "")
    return done.returncode == 0 and "recorded with" in settings, f"exit {done.returncode}: {settings[:160]}"


def _source(home: Path) -> Path:
    with sqlite3.connect(home / "mlflow.db") as db:
        source = db.execute("SELECT source FROM model_versions WHERE name = ? AND version = 1", (CONTROL,)).fetchone()[0]
    return Path(source.removeprefix("file://"))


def tampered_weights(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
    """Modified weights loaded with plain `mlflow.pyfunc.load_model`: the model's code refuses them."""
    weights = _source(home) / "artifacts" / "network" / "model.npz"
    original = weights.read_bytes()
    code = ("import numpy as np; from fedmm.artifacts import read_npz, write_npz; import sys; p = sys.argv[1]; "
            "a = read_npz(p); k = sorted(a)[0]; write_npz(p, {**a, k: a[k] + 1})")
    subprocess.run([sys.executable, "-c", code, str(weights)], check=True, env=env)
    load = f"import mlflow; mlflow.pyfunc.load_model('models:/{CONTROL}/1')"
    done = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, cwd=folder,
                          env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"})
    weights.write_bytes(original)
    refused = "refusing to build a model from modified weights" in done.stderr
    return done.returncode != 0 and refused, f"exit {done.returncode}; " + (
        "refused: weights do not hash to the recorded SHA-256" if refused else done.stderr.strip()[-160:])


def tampered_code(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
    """A modified model_code.py loaded with `fedmm.load_model`: refused before any of it runs."""
    code_file, marker = _source(home) / "model_code.py", folder / "injected-code-ran"
    original = code_file.read_text()
    code_file.write_text(original + f"\nopen({str(marker)!r}, 'w').close()\n")
    done = subprocess.run([sys.executable, "-c", f"import fedmm; fedmm.load_model({CONTROL!r})"], capture_output=True,
                          text=True, cwd=folder, env=env)
    code_file.write_text(original)
    refused = "refusing to load a modified model" in done.stderr and not marker.exists()
    return done.returncode != 0 and refused, f"exit {done.returncode}; injected code ran: {marker.exists()}; " + (
        "refused by hash" if refused else done.stderr.strip()[-160:])


def private_home_server(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
    """`make server` with a private (mode 700) FEDMM_HOME: one line saying what to do, no initdb failure."""
    private = folder / "private-home"
    private.mkdir(mode=0o700)
    done = subprocess.run(["make", "-s", "server", f"FEDMM_HOME={private}", "STAMP=", "POSTGRES_PORT=5447"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    ours = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    handled = done.returncode != 0 and len(ours) == 1 and "cannot reach" in ours[0]
    return handled, f"exit {done.returncode}: {(ours or [''])[0][:200]}"


def interrupted_run(signum: int):
    def trial(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
        """`fedmm run` stopped by Ctrl-C (SIGINT) or SIGTERM once its MLflow run exists: exit 128 + the signal, one
        line, the run FAILED at once, nothing registered."""
        state, name = folder / f"interrupted-{signum}", signal.Signals(signum).name
        sets = [*data_overrides(synthetic(folder / "interrupted.npz"), "trial-interrupted"), "train.rounds=200"]
        run = subprocess.Popen([str(Path(sys.executable).with_name("fedmm")), "run", "-c", str(TINY),
                                *sum([["--set", o] for o in sets], [])], env={**env, "FEDMM_HOME": str(state)},
                               cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run.poll() is None and not _statuses(state):
            time.sleep(1)
        if run.poll() is not None:
            return False, f"the run ended (exit {run.returncode}) before its MLflow run was seen"
        run.send_signal(signum)
        out, err = run.communicate(timeout=300)
        done = subprocess.CompletedProcess(run.args, run.returncode, out, err)
        statuses, versions = _statuses(state), registered(state, "trial-interrupted")
        handled = one_clear_line(done, 128 + signum) and statuses == ["FAILED"] and versions == 0
        return handled, f"{name}: {how(done)}; MLflow runs {statuses}; {versions} version(s) registered"
    return trial


def _statuses(home: Path) -> list[str]:
    """The statuses of the MLflow runs in a state folder (none while its store does not exist)."""
    try:
        with sqlite3.connect(home / "mlflow.db") as db:
            return [status for (status,) in db.execute("SELECT status FROM runs")]
    except sqlite3.Error:
        return []


def unusable_store(kind: str):
    def trial(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
        """A `mlflow.db` that is not a database, or an unreachable PostgreSQL store: one line, exit 2, in seconds."""
        state = folder / f"store-{kind}"
        state.mkdir()
        store_env = {**env, "FEDMM_HOME": str(state)}
        if kind == "not-sqlite":
            (state / "mlflow.db").write_text("not a database")
        else:
            store_env["MLFLOW_TRACKING_URI"] = "postgresql://fedmm@127.0.0.1:5449/fedmm"  # nothing listens there
            store_env["FEDMM_REGISTRY_LOCK_URI"] = store_env["MLFLOW_TRACKING_URI"]
        done = fedmm(["promote", "--model", CONTROL, "--version", "1"], store_env, folder)
        return one_clear_line(done), how(done)
    return trial


def server_port_taken(which: str):
    def trial(folder: Path, home: Path, env: dict) -> tuple[bool, str]:
        """`make server` when its MLflow or PostgreSQL port is taken: one line saying which and what to do."""
        taken = socket.create_server(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        variable = {"mlflow": "SERVER_PORT", "postgresql": "POSTGRES_PORT"}[which]
        data = Path(f"/var/tmp/fedmm-trial-postgres-{os.getpid()}")
        try:
            done = subprocess.run(["make", "-s", "server", f"FEDMM_HOME={folder / 'server-home'}", "STAMP=",
                                   f"POSTGRES_DATA={data}", f"{variable}={port}"],
                                  capture_output=True, text=True, cwd=REPO, env=env, timeout=180)
        finally:
            taken.close()
            subprocess.run([str(REPO / "infra" / "postgres.sh"), "stop", str(data)], capture_output=True)
            subprocess.run(["rm", "-rf", str(data)], check=False)
        ours = [line for line in done.stderr.splitlines() if not line.startswith("make")]
        handled = done.returncode != 0 and len(ours) == 1 and variable in ours[0]
        return handled, f"exit {done.returncode}: {(ours or [''])[0][:200]}"
    return trial


FAULT_TRIALS = {
    "fedmm promote without -c (gate settings recorded with the version)": promote_uses_recorded_gates,
    "kill -9 during fedmm promote, before each registry write": kill_during_promote,
    "two fedmm run at once on a fresh FEDMM_HOME": concurrent_first_runs(2),
    "four fedmm run at once on a fresh FEDMM_HOME": concurrent_first_runs(4),
    "read-only FEDMM_HOME": unusable_home("read-only"),
    "FEDMM_HOME is a file": unusable_home("file"),
    "make server with a private FEDMM_HOME": private_home_server,
    "tampered weights under plain mlflow.pyfunc.load_model": tampered_weights,
    "tampered model_code.py under fedmm.load_model": tampered_code,
    "kill -9 of fedmm run over Flower (orphans)": orphans_after_kill,
    "Ctrl-C (SIGINT) during fedmm run": interrupted_run(signal.SIGINT),
    "SIGTERM during fedmm run": interrupted_run(signal.SIGTERM),
    "mlflow.db in FEDMM_HOME is not a database": unusable_store("not-sqlite"),
    "unreachable PostgreSQL tracking store": unusable_store("unreachable"),
    "make server with the MLflow port taken": server_port_taken("mlflow"),
    "make server with the PostgreSQL port taken": server_port_taken("postgresql"),
}
