"""`dvc repro` runs the stages through the fedmm CLI, and a second repro does nothing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TINY


def test_dvc_repro_reproduces_and_then_does_nothing(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "FEDMM_HOME": str(tmp_path / ".fedmm"), "MLFLOW_TRACKING_URI": ""}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = run(str(bin_dir / "fedmm"), "config", "--config", str(TINY))
    assert params.returncode == 0, params.stderr
    (tmp_path / "params.yaml").write_text(params.stdout)
    assert run("git", "init", "-q").returncode == 0
    assert run(str(bin_dir / "dvc"), "init", "-q").returncode == 0

    first = run(str(bin_dir / "dvc"), "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("prepare", "validate-data", "partition", "validate-partitions", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first.stdout
    metrics = json.loads((tmp_path / "artifacts/evaluation/metrics.json").read_text())
    assert 0 <= metrics["test_macro_f1"] <= 1 and "centralized_macro_f1" in metrics
    summary = json.loads((tmp_path / "artifacts/registry/summary.json").read_text())
    assert summary["model_version"] == "1"

    second = run(str(bin_dir / "dvc"), "repro")
    assert second.returncode == 0
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout
