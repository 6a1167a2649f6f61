"""The rough edges a new user met on a small dataset of their own (issue 24): each message names the
setting to change, each run keeps its own reports, the audit says how it clustered, DVC runs anywhere."""

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY

from fedmm import graph, preflight
from fedmm.audit.inference import grouping_reason, validation_groups
from fedmm.config import ConfigError, load_config
from fedmm.report import summary_dir, write_run_reports
from fedmm.stages import dvc_instructions, write_dvc_project
from fedmm.summary import Gate, RunSummary

NPZ = ["data.source=npz", "data.path=unused.npz"]


def test_too_little_data_names_the_settings_that_apply_to_the_partition_scheme():
    subject, recording = np.repeat(np.arange(4), 20), np.arange(80)  # 80 one-sample recordings of 4 subjects
    natural = load_config(TINY, [*NPZ, "data.holdout_subjects=0", "partition.min_samples=20"])
    with pytest.raises(ConfigError) as error:
        preflight.data_fit(natural, subject, recording)
    message = str(error.value)
    assert "4 clients of at least 20 samples" in message and "partition.min_samples" in message
    assert "data.holdout_subjects" in message and "num_clients" not in message  # one client per subject
    iid = load_config(TINY, [*NPZ, "partition.scheme=iid", "partition.num_clients=8",
                             "validation.min_samples_per_client=12"])
    with pytest.raises(ConfigError, match="lower partition.num_clients or lower validation.min_samples_per_client"):
        preflight.data_fit(iid, subject, recording)


def test_a_small_test_set_names_the_promotion_settings():
    config = load_config(TINY, NPZ)
    (warning,) = preflight.data_fit(config, np.repeat(np.arange(4), 20), np.arange(80))
    assert warning.startswith("about 16 test samples") and "registry.min_test_samples=30" in warning
    assert "registry.confidence (now 0.95)" in warning


SUMMARY = RunSummary(
    model_name="m", model_version="1", aliases=["challenger"], promoted=False,
    gates=[Gate("test_size", False, "16 test samples from 16 recordings vs minimum 30 (registry.min_test_samples)")],
    tracking_uri="sqlite:///x.db", mlflow_run_id="mlflow1", config_hash="c" * 64, data_sha256="d" * 64,
    num_clients=4, rounds=2, strategy="fedavg", transport="inprocess", served_imputer=None, test_samples=16,
    dropped_samples=0, metrics={"test_macro_f1": 0.5}, zenml_pipeline_run="zenml-1",
)


def test_each_run_keeps_its_reports_and_latest_points_at_the_newest(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path))
    (tmp_path / "reports" / "latest").mkdir(parents=True)  # a folder left by a version without run folders
    (tmp_path / "reports" / "latest" / "summary.json").write_text("{}")
    first = write_run_reports(SUMMARY)
    second = write_run_reports(replace(SUMMARY, model_version="2", zenml_pipeline_run=None, mlflow_run_id="mlflow2"))
    assert first["summary"] == tmp_path / "reports" / "zenml-1" / "summary.json"
    assert second["summary"] == tmp_path / "reports" / "mlflow2" / "summary.json"  # no ZenML run: the MLflow id
    assert json.loads(first["summary"].read_text())["model_version"] == "1"
    assert summary_dir().is_symlink() and os.readlink(summary_dir()) == "mlflow2"
    assert json.loads((summary_dir() / "summary.json").read_text())["model_version"] == "2"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["latest", "mlflow2", "zenml-1"]


def test_the_audit_says_why_it_did_not_cluster_by_recording():
    one_each, subject = np.arange(12), np.repeat(np.arange(4), 3)
    key, groups = validation_groups(one_each, subject)
    assert key == "subject" and len(np.unique(groups)) == 4
    assert grouping_reason(key, one_each, subject) == "not by recording: each of the 12 validation samples is its own recording"
    assert grouping_reason("sample", np.zeros(12), np.zeros(12)) == (
        "not by recording: all 12 validation samples are one recording; "
        "not by subject: all 12 validation samples are one subject")
    assert grouping_reason("recording", np.repeat(np.arange(6), 2), subject) is None


def test_a_dvc_pipeline_outside_the_repository_calls_this_venvs_fedmm_and_says_how_to_run_it(tmp_path):
    config = load_config(TINY)
    paths = write_dvc_project(graph.for_config(config), config, tmp_path / "mine")
    stages = yaml.safe_load(paths["dvc"].read_text())["stages"]
    fedmm = Path(sys.executable).parent / "fedmm"
    assert all(stage["cmd"].startswith(f"{fedmm} stage ") for stage in stages.values())
    dvc = Path(sys.executable).parent / "dvc"
    assert dvc_instructions(paths["dvc"]) == f"cd {tmp_path / 'mine'} && {dvc} init --no-scm -q && {dvc} repro"
    (tmp_path / ".dvc").mkdir()
    assert dvc_instructions(paths["dvc"]) == f"cd {tmp_path} && {dvc} repro mine/dvc.yaml"
