"""Take the documentation's screenshots with headless Chromium (Debian's ``chromium``).

Runs the tutorial's first pipeline run (``make_tutorial_data.py`` data, default config) in a
fresh state folder, then photographs the contribution audit's HTML report and, through the
MLflow UI over that run's store, the registered model version with its aliases and tags::

    .venv/bin/python docs/screenshots.py            # writes docs/images/*.png

The ZenML dashboard opens on an account form on its first visit, so its DAG is not taken.
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
