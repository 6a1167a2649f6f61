"""Take the documentation's screenshots with headless Chromium (Debian's ``chromium``).

Runs the tutorial's first pipeline run (``make_tutorial_data.py`` data, default config) in a
fresh state folder, then photographs the contribution audit's HTML report, through the MLflow
UI over that run's store the registered model version with its aliases and tags, and through
the ZenML dashboard (a local ZenML server over the same store) the run's DAG::

    .venv/bin/python docs/screenshots.py            # writes docs/images/*.png

The dashboard opens on a welcome survey until its user has answered it, so the script marks
the store's default user as onboarded first (a fresh, throwaway store).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from make_tutorial_data import digits_npz

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "digits"


def chromium() -> str:
    """The Chromium executable, or exit with what to install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("error: no Chromium found: install Debian's chromium (apt-get install -y chromium)")


def shoot(url: str, out: Path, width: int = 1280, height: int = 1000) -> None:
    """Save a PNG of ``url`` as rendered after its scripts settled."""
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=15000",
         f"--window-size={width},{height}", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=120,
    )
    print(f"{out} ({out.stat().st_size // 1024} KiB)")


def shoot_when(url: str, ready: str, out: Path, width: int, height: int, wait_s: int = 120) -> None:
    """Save a PNG of ``url`` once the JavaScript expression ``ready`` is true, in real time (a page that
    lays itself out in a web worker never finishes under ``--virtual-time-budget``), over DevTools."""
    import websocket  # websocket-client, in the lock

    port = _free_port()
    browser = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--remote-debugging-port={port}",
         f"--window-size={width},{height}", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        page = _until(lambda: next(t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                                   if t["type"] == "page"), wait_s)
        socket_ = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=wait_s, suppress_origin=True)
        calls = iter(range(1, 1 << 30))

        def call(method: str, **params) -> dict:
            number = next(calls)
            socket_.send(json.dumps({"id": number, "method": method, "params": params}))
            while (reply := json.loads(socket_.recv())).get("id") != number:
                pass
            return reply["result"]

        _until(lambda: call("Runtime.evaluate", expression=ready, returnByValue=True)["result"]["value"] or None, wait_s)
        time.sleep(1)  # the last layout's transition
        out.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
        socket_.close()
    finally:
        os.killpg(browser.pid, signal.SIGTERM)
        browser.wait(timeout=60)
    print(f"{out} ({out.stat().st_size // 1024} KiB)")


def _until(probe, wait_s: int):
    """``probe()``'s first truthy value, retried every second (its errors too) for ``wait_s`` seconds."""
    for _ in range(wait_s):
        try:
            if value := probe():
                return value
        except (OSError, StopIteration, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"not ready within {wait_s} s")


def tutorial_run(home: Path) -> dict:
    """Run the tutorial's first ``fedmm run`` in ``home`` and return its summary."""
    data = home / "digits.npz"
    digits_npz(str(data))
    env = {**os.environ, "FEDMM_HOME": str(home), "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [str(BIN / "fedmm"), "run", "--set", "data.source=npz", "--set", f"data.path={data}",
         "--set", f"registry.model_name={MODEL}"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
    )
    return json.loads((home / "reports" / "latest" / "summary.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(command: list[str], env: dict, health: str, wait_s: int = 180):
    """Run a server ``command`` until ``health`` (a path) answers; yield its base URL, then stop its processes."""
    port = _free_port()
    server = subprocess.Popen(
        [*command, "--port", str(port)], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(wait_s):
            try:
                urllib.request.urlopen(f"{base}{health}", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError(f"{command[0]} did not answer within {wait_s} s")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def mlflow_ui(home: Path):
    """The MLflow UI over ``home``'s store on a free loopback port."""
    command = [str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{home}/mlflow.db", "--host", "127.0.0.1"]
    return serving(command, {"MLFLOW_DISABLE_TELEMETRY": "true"}, "/health")


DAG_READY = ("document.querySelectorAll('.react-flow__node').length > 0 "
             "&& !document.body.innerText.includes('Calculating DAG')")
ZENML = {"ZENML_ANALYTICS_OPT_IN": "false", "ZENML_AUTO_OPEN_DASHBOARD": "false"}
ONBOARDED = ("from zenml.client import Client; client = Client(); client.update_user(client.active_user.id, "
             "updated_email_opt_in=False, updated_metadata={'finished_onboarding_survey': True})")


def zenml_dashboard(home: Path):
    """The ZenML dashboard over ``home``'s store on a free loopback port, its user past the welcome survey."""
    env = {**ZENML, "ZENML_CONFIG_PATH": str(home / "zenml")}
    subprocess.run([sys.executable, "-c", ONBOARDED], env={**os.environ, **env}, check=True, capture_output=True)
    return serving([str(BIN / "zenml"), "login", "--local", "--blocking"], env, "/health")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNGs")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedmm-screenshots-") as tmp:
        home = Path(tmp)
        summary = tutorial_run(home)
        report = home / "mlartifacts" / summary["mlflow_run_id"] / "artifacts" / "audit" / "report.html"
        shoot(report.as_uri(), out / "audit-report.png", height=1400)
        with mlflow_ui(home) as base:
            version = summary["model_version"]
            shoot(f"{base}/#/models/{MODEL}/versions/{version}", out / "mlflow-model-version.png", width=1600, height=1400)
        with zenml_dashboard(home) as base:
            shoot_when(f"{base}/projects/default/runs/{summary['zenml_pipeline_run']}", DAG_READY,
                       out / "zenml-run-dag.png", width=1600, height=1100)


if __name__ == "__main__":
    main()
