"""Acceptance of issue 20 as a user meets it: `fedmm run` on a file whose gyroscope is absent for 40% of
samples and whose magnetometer one subject never had; the champion (serving the federated mean imputer,
impute.serve) predicts without the gyroscope through MLflow, in process and over `mlflow models serve`'s
REST API; broken presence is one line and exit 2."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY
from presence_support import write_presence_npz

from fedmm.cli import main
from fedmm.impute.base import ImputingNet
from fedmm.report import summary_dir
from fedmm.runtime import tracking_uri
from fedmm.tracking import registry
from fedmm.tracking.pyfunc import predict_probabilities

NAME = "fedmm-presence"


def overrides(path: Path, name: str = NAME) -> list[str]:
    sets = [f"data.path={path}", f"registry.model_name={name}", "data.source=npz", "data.holdout_subjects=0",
            "train.rounds=6", "train.lr=0.01", "registry.min_macro_f1=0.0", "impute.serve=mean"]
    return sum([["--set", s] for s in sets], [])


@pytest.fixture(scope="module")
def presence_run(tmp_path_factory):
    path = write_presence_npz(tmp_path_factory.mktemp("presence") / "mine.npz")
    result = CliRunner().invoke(main, ["run", "-c", str(TINY), *overrides(path)], catch_exceptions=False)
    return path, result, json.loads((summary_dir() / "summary.json").read_text())


def absent_gyro_batch(path: Path, filler: float) -> dict[str, np.ndarray]:
    data = np.load(path)
    batch = {name: data[f"modality/{name}"][:6].astype(np.float32) for name in ("acc", "gyro", "mag")}
    batch["gyro"][:] = filler
    batch["mag"] = np.nan_to_num(batch["mag"], nan=0.0)
    mask = np.ones((6, 3), dtype=np.float32)
    mask[:, 1] = 0
    mask[:, 2] = data["present/mag"][:6]
    return {**batch, "mask": mask}


def test_run_trains_evaluates_audits_and_registers(presence_run):
    _, result, summary = presence_run
    assert result.exit_code == 0, result.output
    assert {"test_macro_f1", "test_complete_macro_f1", "test_samples"} <= set(summary)
    assert summary["audit_rounds"] == 6
    assert registry.aliases(NAME)["champion"] == summary["model_version"]


def test_champion_predicts_without_gyroscope_through_mlflow(presence_run, tmp_path):
    import mlflow.pyfunc

    path, _, _ = presence_run
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert "mask" in model.metadata.get_input_schema().input_names()
    nan_filled = model.predict(absent_gyro_batch(path, np.nan))
    zero_filled = model.predict(absent_gyro_batch(path, 0.0))
    assert np.isfinite(nan_filled).all() and np.allclose(nan_filled.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(nan_filled, zero_filled, atol=1e-6)  # absent values are ignored
    served = model.unwrap_python_model().model
    assert isinstance(served, ImputingNet) and served.imputer.name == "mean"
    batch = absent_gyro_batch(path, 0.0)
    filled = {name: np.where(batch["mask"][:, m].reshape(-1, *[1] * (batch[name].ndim - 1)) > 0, batch[name],
                             served.imputer.means[name].numpy().reshape(1, *batch[name].shape[1:]))
              for m, name in enumerate(("acc", "gyro", "mag"))}
    by_hand = predict_probabilities(served.model, {**filled, "mask": np.ones_like(batch["mask"])})
    np.testing.assert_allclose(zero_filled, by_hand, atol=1e-5)  # the absent gyroscope is mean-imputed
    assert not np.allclose(zero_filled, predict_probabilities(served.model, batch), atol=1e-4)

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager",
             "local", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, log)
        body = {"inputs": {k: v.tolist() for k, v in absent_gyro_batch(path, 0.0).items()}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        np.testing.assert_allclose(np.asarray(answer["predictions"]), zero_filled, atol=1e-5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.parametrize("defect, message", [
    ("nan_where_present", "gyro_nonfinite"),
    ("no_modality", "sample(s) have no modality present"),
])
def test_broken_presence_is_one_line_and_exit_2(tmp_path, defect, message):
    path = write_presence_npz(tmp_path / "bad.npz")
    arrays = dict(np.load(path))
    if defect == "nan_where_present":
        arrays["modality/gyro"][np.flatnonzero(arrays["present/gyro"])[:3], 0, 0] = np.nan
    else:
        arrays["present/acc"] = np.arange(len(arrays["labels"])) != 0
        arrays["present/gyro"][0] = arrays["present/mag"][0] = False  # sample 0 has nothing
    np.savez(path, **arrays)
    result = CliRunner().invoke(main, ["run", "-c", str(TINY), *overrides(path, f"{NAME}-bad")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer {url} in {seconds} s")
