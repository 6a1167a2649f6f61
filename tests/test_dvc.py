"""`dvc repro` over a pipeline `fedmm dvc` wrote for your own data: every graph stage runs, a second
repro does nothing, changing `impute.serve` retrains, editing the data file reruns prepare."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner
from conftest import TINY, synthetic_overrides, write_synthetic_npz

from fedmm import graph
from fedmm.cli import main
from fedmm.fl.result import TrainResult


def test_dvc_on_your_own_data_reruns_exactly_what_changed(tmp_path):
    bin_dir = Path(sys.executable).parent
    elsewhere = [d for d in os.environ["PATH"].split(os.pathsep) if Path(d).resolve() != bin_dir.resolve()]
    env = {**os.environ, "PATH": os.pathsep.join(elsewhere), "DVC_NO_ANALYTICS": "1",  # no venv on PATH
           "FEDMM_HOME": str(tmp_path / ".fedmm"), "MLFLOW_TRACKING_URI": "", "OMP_NUM_THREADS": "1"}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # noqa: E731
    dvc = str(bin_dir / "dvc")
    assert run("git", "init", "-q").returncode == 0
    assert run(dvc, "init", "-q").returncode == 0
    (tmp_path / "data").mkdir()
    data = write_synthetic_npz(tmp_path / "data" / "mine.npz")
    overrides = [*synthetic_overrides(data, "fedmm-dvc"), "partition.scheme=iid", "partition.num_clients=3"]
    written = CliRunner().invoke(main, ["dvc", "-c", str(TINY), *sum([["--set", o] for o in overrides], []),
                                        "--dir", str(tmp_path / "mine")])
    assert written.exit_code == 0, written.output
    params = yaml.safe_load((tmp_path / "mine" / "params.yaml").read_text())
    assert params["data"]["path"] == "../data/mine.npz"  # relative to the pipeline's folder
    stages = yaml.safe_load((tmp_path / "mine" / "dvc.yaml").read_text())["stages"]
    assert stages["prepare"]["cmd"].startswith(f"{bin_dir / 'fedmm'} stage prepare")  # this venv's, by path
    assert f"run: cd {tmp_path} && {bin_dir / 'dvc'} repro mine/dvc.yaml" in written.output
    pipeline = "mine/dvc.yaml"

    first = run(dvc, "repro", pipeline)
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in graph.TRAINING.names:
        assert f"Running stage '{pipeline}:{stage}'" in first.stdout
    artifacts = tmp_path / "mine" / "artifacts"
    summary = json.loads((artifacts / "registry/summary.json").read_text())
    assert summary["model_version"] == "1" and summary["audit_rounds"] == 2
    assert {g["name"]: g["passed"] for g in summary["gates"]}["clean_audit"]  # the audit's tags reached the gate
    assert json.loads((artifacts / "imputation/skipped.json").read_text())["reason"] == "impute.evaluate is false"

    second = run(dvc, "repro", pipeline)
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout

    params["impute"]["serve"] = "mean"
    (tmp_path / "mine" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    retrain = run(dvc, "repro", "--single-item", f"{pipeline}:train")
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    assert f"Running stage '{pipeline}:train'" in retrain.stdout
    assert TrainResult.load(artifacts / "training").imputer.name == "mean"

    with np.load(data) as handle:
        arrays = dict(handle)
    arrays["labels"] = arrays["labels"][::-1].copy()
    np.savez(data, **arrays)
    status = run(dvc, "status", pipeline)
    assert f"{pipeline}:prepare" in status.stdout and "mine.npz" in status.stdout, status.stdout
