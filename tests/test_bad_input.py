"""Bad input ends in one clear error line and exit code 2, before any work, with nothing registered.

Every case goes through the real ``fedmm`` command (in-process); they fail in the config
parser or the preflight, so no pipeline runs. Failures inside a pipeline step (the
Great Expectations suite) are covered in test_pipeline.py.
"""

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, synthetic_overrides, write_synthetic_npz
from promotion_support import REPO

from fedmm.cli import main
from fedmm.data.sources import robust_bounds

CONFIG_TRIALS = {
    "train.rounds=[1,": "the value is not valid YAML",
    "train.rounds=!!python/object/apply:os.system [echo pwned]": "could not determine a constructor",
    "train.lr=.inf": "train.lr: inf is not a finite number",
    "train.rounds=true": "train.rounds: expected a number, got the boolean True",
    f"seed={2 ** 70}": "seed: Input should be less than or equal to 9223372036854775807",
    "validation.value_bounds={acc: [5, -5]}": "validation.value_bounds.acc: low 5 is above high -5",
    "train.device=cuda": "no CUDA device is available",
    "model.embed_dim=1000000000": "model.embed_dim: Input should be less than or equal to 4096",
}


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("error:", "internal error:"))]


def _run(args: list[str]):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("override", CONFIG_TRIALS)
def test_bad_config_values_are_one_line_and_exit_2(override):
    import torch

    if override == "train.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: train.device=cuda is valid here")
    result = _run(["run", "-c", str(TINY), "--set", override])
    assert result.exit_code == 2, result.output
    assert len(_error_lines(result.output)) == 1 and CONFIG_TRIALS[override] in _error_lines(result.output)[0]


def _npz(tmp_path, **changes):
    path = write_synthetic_npz(tmp_path / "data.npz")
    arrays = dict(np.load(path))
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    np.savez(path, **arrays)
    return path


def _bytes(tmp_path, content: bytes):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    return path


def _crc_corrupt(tmp_path):
    path = write_synthetic_npz(tmp_path / "data.npz")
    content = bytearray(path.read_bytes())
    content[400] ^= 0xFF
    return _bytes(tmp_path, bytes(content))


NPZ_TRIALS = {
    "zero_bytes": (lambda t: _bytes(t, b""), "is empty (0 bytes)"),
    "truncated": (lambda t: _bytes(t, write_synthetic_npz(t / "full.npz").read_bytes()[:5000]), "truncated"),
    "crc_corrupt": (_crc_corrupt, "truncated or corrupt (Bad CRC-32"),
    "pickle_file": (lambda t: _bytes(t, pickle.dumps({"labels": [0, 1]})), "is not an .npz file"),
    "negative_labels": (lambda t: _npz(t, labels=np.arange(240) % 3 - 1), "labels must be 0..K-1, found -1"),
    "single_class": (lambda t: _npz(t, labels=np.zeros(240, dtype=np.int64)), "a classifier needs 2 or more classes"),
    "zero_time_steps": (lambda t: _npz(t, **{"modality/acc": np.zeros((240, 3, 0), np.float32)}), "0 time steps"),
    "zero_features": (lambda t: _npz(t, **{"modality/acc": np.zeros((240, 0), np.float32)}), "0 features"),
    "label_gap": (lambda t: _npz(t, labels=np.where(np.arange(240) % 3 == 2, 7, np.arange(240) % 3), class_names=None),
                  "leave classes [2, 3, 4, 5, 6] without samples"),
}


@pytest.mark.parametrize("trial", NPZ_TRIALS)
def test_bad_data_files_are_one_line_and_exit_2(tmp_path, trial):
    make, expected = NPZ_TRIALS[trial]
    path = make(tmp_path)
    result = _run(["run", "-c", str(TINY), *sum([["--set", o] for o in synthetic_overrides(path, "bad")], [])])
    assert result.exit_code == 2, result.output
    assert len(_error_lines(result.output)) == 1 and expected in _error_lines(result.output)[0]


def test_more_clients_than_the_data_can_fill_is_refused_before_work(synthetic_npz):
    overrides = [*synthetic_overrides(synthetic_npz, "bad"), "partition.scheme=iid", "partition.num_clients=50"]
    result = _run(["run", "-c", str(TINY), *sum([["--set", o] for o in overrides], [])])
    assert result.exit_code == 2
    assert "50 clients of at least 10 samples need 500 training samples, but the data leaves about" in result.output


def test_an_absurd_value_falls_outside_the_default_bounds(synthetic_npz):
    arrays = dict(np.load(synthetic_npz))
    low, high = robust_bounds(arrays["modality/acc"])
    assert -100 < low < high < 100
    arrays["modality/acc"][5, 0, 0] = 1e30
    assert robust_bounds(arrays["modality/acc"]) == pytest.approx((low, high), rel=0.05)


def test_help_creates_no_state(tmp_path, monkeypatch):
    home = tmp_path / "fresh-home"
    monkeypatch.setenv("FEDMM_HOME", str(home))
    for args in (["--help"], ["run", "--help"], ["promote", "--help"], ["--version"]):
        assert CliRunner().invoke(main, args).exit_code == 0
    assert not home.exists()


def test_an_internal_error_is_one_line_exit_3_with_the_traceback_in_a_log(monkeypatch):
    import fedmm.config

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(fedmm.config, "load_config", broken)
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 3
    assert result.output.splitlines()[0] == "internal error: RuntimeError: disk on fire"
    log = result.output.splitlines()[1].removeprefix("details: ")
    assert "Traceback" in Path(log).read_text() and "Traceback" not in result.output


def test_concurrent_first_runs_initialise_the_stores_once(tmp_path):
    """What `fedmm run` does before its pipeline (the sweep opens the MLflow stores, then the ZenML store), in three
    fresh processes at once. Unlocked, four such processes all failed with `table ... already exists`."""
    code = ("from fedmm import runtime; runtime.configure(); from fedmm.tracking.registry import sweep; sweep();"
            "from fedmm_pipelines.pipelines.runner import ensure_store; ensure_store()")
    env = {"PATH": "/usr/bin:/bin", "FEDMM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    errors = [p.communicate(timeout=180)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 3, errors


def test_a_tracking_server_without_a_registry_lock_is_refused_before_work(monkeypatch):
    import fedmm.tracking.runs  # noqa: F401 (as after an earlier command: a failing one then marks its runs FAILED)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5059")
    monkeypatch.delenv("FEDMM_REGISTRY_LOCK_URI", raising=False)
    result = _run(["run", "-c", str(TINY)])
    assert result.exit_code == 2 and "cannot be serialised: set FEDMM_REGISTRY_LOCK_URI" in result.output


def test_small_data_is_warned_about_with_numbers_before_work():
    from fedmm import preflight
    from fedmm.config import load_config

    config = load_config(TINY, ["data.source=npz", "data.path=unused.npz", "data.holdout_subjects=2",
                                "registry.min_test_samples=30"])
    subject, recording = np.repeat(np.arange(4), 20), np.repeat(np.arange(40), 2)  # 80 samples, 4 subjects
    warnings = preflight.data_fit(config, subject, recording)
    assert any("holds out about 40 of 80 samples (2 of 4 subjects)" in w for w in warnings)
    assert any(w.startswith("only 2 clients") for w in warnings)
    assert any(w.startswith("about 8 test samples") and "min_test_samples=30" in w for w in warnings)
    roomy = load_config(TINY, ["data.source=npz", "data.path=unused.npz", "data.holdout_subjects=0",
                               "registry.min_test_samples=10"])
    assert preflight.data_fit(roomy, np.repeat(np.arange(4), 50), np.repeat(np.arange(100), 2)) == []


def test_default_holdout_scales_with_the_number_of_subjects():
    from fedmm import preflight
    from fedmm.config import load_config
    from fedmm.data.prepare import holdout_count

    assert [holdout_count("auto", n) for n in (1, 4, 5, 9, 10, 40)] == [0, 0, 1, 1, 2, 2]
    assert holdout_count(3, 10) == 3
    config = load_config(TINY, ["data.source=npz", "data.path=unused.npz", "registry.min_test_samples=16"])
    subject, recording = np.repeat(np.arange(4), 20), np.arange(80)  # 80 recordings of 4 subjects
    assert preflight.data_fit(config, subject, recording) == []  # nothing held out: 16 test samples, 4 clients


def test_help_and_a_bad_config_answer_without_importing_torch(tmp_path):
    """`fedmm --help` and a config error need neither torch nor an orchestrator (a fresh interpreter)."""
    code = (
        "import sys; from click.testing import CliRunner; from fedmm.cli import main; "
        "helped = CliRunner().invoke(main, ['--help']); "
        "bad = CliRunner().invoke(main, ['run', '--set', 'train.rounds=true']); "
        "print(helped.exit_code, bad.exit_code, sorted(m for m in ('torch', 'zenml', 'mlflow') if m in sys.modules))"
    )
    env = {**os.environ, "FEDMM_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 2 []"


@pytest.mark.parametrize("home", ["read-only", "a file"])
def test_a_read_only_or_non_directory_home_is_one_line_and_exit_2(tmp_path, home):
    """Through the real command; read-only is a read-only bind mount in a private mount namespace (root writes
    into any folder whose mode says read-only)."""
    state = tmp_path / "state"
    command = [sys.executable, "-m", "fedmm.cli", "config"]
    if home == "a file":
        state.write_text("not a folder")
    else:
        state.mkdir()
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   f'mount --bind -o ro "{state}" "{state}" && exec "$@"', "sh", *command]
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "FEDMM_HOME": str(state), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    expected = "is not a folder (a file is in the way)" if home == "a file" else "cannot be written (Read-only file system)"
    assert done.stderr.startswith(f"error: FEDMM_HOME={state} ") and expected in done.stderr


def test_a_diverged_training_is_one_line_naming_the_round_and_leaves_nothing_behind(tmp_path):
    """The real `fedmm run` (a fresh process, the ZenML pipeline): a client sending an update scaled by 1e38 drives the
    global model to inf. The user sees the one line (no ZenML step traceback); nothing is registered; no run stays RUNNING."""
    import sqlite3

    path = write_synthetic_npz(tmp_path / "data.npz")
    overrides = [*synthetic_overrides(path, "diverged"), "registry.min_test_samples=10",
                 "corruption.clients=[{client: 0, kind: scaled_update, scale: 1e38}]"]
    home = tmp_path / "home"
    env = {**os.environ, "FEDMM_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "fedmm.cli", "run", "-c", str(TINY), *sum([["--set", o] for o in overrides], [])],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line.split("\r")[-1] for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged in round "), lines
    assert not [line for line in lines if not line.startswith(("error:", "details:", "fedavg:"))], lines  # progress only
    assert "Traceback" in Path(lines[-1].removeprefix("details: ")).read_text()
    with sqlite3.connect(home / "mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 0
        assert ("RUNNING",) not in db.execute("SELECT status FROM runs").fetchall()  # the run opens at registration


def test_make_server_under_a_private_home_says_what_to_do_in_one_line(tmp_path):
    """`make server` starts PostgreSQL as the postgres user (infra/postgres.sh); under a private (mode 700) FEDMM_HOME
    it could not reach its data folder: initdb failed with `Permission denied`. Now the script refuses up front."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    done = subprocess.run([str(REPO / "infra" / "postgres.sh"), "start", str(home / "postgres"), "5449"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "the postgres user, which cannot reach" in done.stderr
    assert "POSTGRES_DATA=" in done.stderr and not (home / "postgres").exists()  # refused before creating anything


INTERRUPTED_RUN = """
import sys, time, types
from fedmm.cli import main

def run_pipeline(config, echo):  # the pipeline, up to its MLflow run, then a long step
    from fedmm.tracking.runs import start_run

    start_run(config)
    print("started", flush=True)
    time.sleep(120)

sys.modules["fedmm_pipelines.pipelines.runner"] = types.SimpleNamespace(run_pipeline=run_pipeline)
main(["run", "-c", sys.argv[1]])
"""


@pytest.mark.parametrize("signum", [2, 15])
def test_ctrl_c_or_sigterm_is_one_line_exit_128_plus_the_signal_and_fails_the_run(tmp_path, signum):
    """A real process stopped mid-run by Ctrl-C (SIGINT) or SIGTERM: one error line (was click's `Aborted!` and exit 1,
    the gate-failed code), exit 130 / 143, and its MLflow run is FAILED at once, not RUNNING until the next sweep."""
    import signal
    import sqlite3

    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "FEDMM_HOME": str(home), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED_RUN, str(TINY)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "started\n", process.communicate(timeout=60)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: interrupted by {signal.Signals(signum).name};")
    with sqlite3.connect(home / "mlflow.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("FAILED",)]


def test_a_bad_option_is_one_line_and_exit_2():
    result = _run(["promote", "--model", "m", "--version", "1", "--min-macro-f1", "-5"])
    assert result.exit_code == 2 and result.output == (
        "error: Invalid value for '--min-macro-f1': -5.0 is not in the range 0<=x<=1. (see main promote --help)\n")


@pytest.mark.parametrize("store", ["not-sqlite", "corrupt-sqlite", "unreachable-postgresql", "unreachable-server",
                                   "unknown-scheme"])
def test_an_unusable_tracking_store_is_one_line_and_exit_2_within_seconds(tmp_path, monkeypatch, store):
    """A `mlflow.db` that is not a database was exit 3 with SQLAlchemy's lines; an unreachable PostgreSQL store
    was retried by MLflow for about 4 minutes, then the same."""
    import socket
    import time

    home = tmp_path / "home"
    monkeypatch.setenv("FEDMM_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri, expected = {
        "not-sqlite": (b"a text file where the MLflow store should be", f"{home / 'mlflow.db'} is not an SQLite database"),
        "corrupt-sqlite": (b"SQLite format 3\0" + bytes(range(256)) * 64, f"{home / 'mlflow.db'} is a corrupt SQLite database"),
        "unreachable-postgresql": (f"postgresql://fedmm:secret@127.0.0.1:{port}/fedmm",
                                   f"the tracking store postgresql://fedmm:***@127.0.0.1:{port}/fedmm cannot be reached"),
        "unreachable-server": (f"http://127.0.0.1:{port}", f"the tracking server http://127.0.0.1:{port} cannot be reached"),
        "unknown-scheme": ("foo://bar", "MLFLOW_TRACKING_URI='foo://bar' is not a store fedmm can use"),
    }[store]
    if isinstance(uri, bytes):
        home.mkdir()
        (home / "mlflow.db").write_bytes(uri)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("FEDMM_REGISTRY_LOCK_URI", f"postgresql://fedmm@127.0.0.1:{port}/fedmm")
    started = time.monotonic()
    result = _run(["promote", "--model", "m", "--version", "1"])
    assert result.exit_code == 2, result.output
    assert len(_error_lines(result.output)) == 1 and _error_lines(result.output)[0].startswith(f"error: {expected}")
    assert "secret" not in result.output
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("variable", ["SERVER_PORT", "POSTGRES_PORT"])
def test_make_server_with_a_port_taken_says_which_in_one_line(tmp_path, variable):
    """The MLflow server's port taken (was gunicorn's multi-line failure after PostgreSQL started) or PostgreSQL's
    (was pg_ctl's `could not start server`, the reason only in its log): refused in one line naming the variable."""
    import socket

    data = Path(tempfile.mkdtemp(prefix="fedmm-pg-", dir="/var/tmp"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        done = subprocess.run(["make", "-s", "server", "STAMP=", f"FEDMM_HOME={tmp_path}", f"POSTGRES_DATA={data}",
                               f"{variable}={taken.getsockname()[1]}"], capture_output=True, text=True, cwd=REPO,
                              timeout=120)
    subprocess.run([str(REPO / "infra" / "postgres.sh"), "stop", str(data)], capture_output=True, timeout=60)
    shutil.rmtree(data, ignore_errors=True)
    ours = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert done.returncode != 0 and done.stdout == "" and len(ours) == 1, done.stderr
    assert f"make server {variable}=" in ours[0]
    if variable == "POSTGRES_PORT":
        assert "Address already in use" in ours[0]


def test_the_installed_command_keeps_its_exit_code_and_its_whole_output(tmp_path):
    """``fedmm`` (the console script) skips the interpreter's teardown: piped output still arrives whole, a bad
    value still exits 2 and a good command 0."""
    fedmm = Path(sys.executable).parent / "fedmm"
    env = {**os.environ, "FEDMM_HOME": str(tmp_path)}
    good = subprocess.run([fedmm, "config", "-c", "configs/default.yaml"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    in_process = CliRunner().invoke(main, ["config", "-c", "configs/default.yaml"], env=env)
    assert (good.returncode, good.stdout) == (0, in_process.output) and len(good.stdout) > 1000
    bad = subprocess.run([fedmm, "config", "--set", "train.rounds=true"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert bad.returncode == 2 and len(_error_lines(bad.stderr)) == 1, bad.stderr
