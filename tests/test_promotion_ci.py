"""The CI pieces: the GitHub workflow lints and wires the contract; the job summary and JUnit XML of the gates."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import yaml

from fedmm.report import gates_junit, job_summary, write_summary
from fedmm.summary import RunSummary

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "fedmm.yml"


def test_workflow_lints_against_the_github_workflow_schema():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_trains_on_push_and_schedule_and_uploads_whatever_happens():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "push" in triggers and triggers["schedule"][0]["cron"]
    steps = workflow["jobs"]["train-and-promote"]["steps"]
    run = next(s for s in steps if "fedmm run" in s.get("run", ""))
    assert "|| true" not in run["run"] and "continue-on-error" not in run  # a failed gate fails the job
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].splitlines()
    assert ".fedmm/reports/" in paths and "!.fedmm/reports/latest" in paths and "audit" in upload["with"]["path"]
    assert workflow["jobs"]["train-and-promote"]["needs"] == "test"
    assert any(s.get("run") == ".ci/run" for s in workflow["jobs"]["test"]["steps"])


SUMMARY_JSON = {
    "model_name": "m", "model_version": "3", "promoted": False, "aliases": ["challenger"], "strategy": "fedavg",
    "num_clients": 4, "rounds": 2, "test_samples": 40, "data_sha256": "a" * 64, "config_hash": "b" * 64,
    "tracking_uri": "sqlite:///x", "test_macro_f1": 0.5, "test_accuracy": 0.625, "mlflow_run_id": "r",
    "transport": "in_process", "served_imputer": None, "dropped_samples": 0,
    "gates": [{"name": "validation", "passed": True, "detail": "ok"},
              {"name": "beats_champion", "passed": False, "detail": "interval [-0.1, +0.02] < margin"}],
    "audit_flags": {"1": [{"flag": "harmful", "evidence": "p 0.01"}]}, "audit_rounds": 2.0, "audit_total_gain": 0.1,
}
SUMMARY = RunSummary.from_dict(SUMMARY_JSON)


def test_the_summary_reads_back_from_its_json(tmp_path):
    assert SUMMARY.metrics == {"test_macro_f1": 0.5, "test_accuracy": 0.625}
    assert SUMMARY.audit == {"audit_rounds": 2.0, "audit_total_gain": 0.1} and SUMMARY.audit_flags["1"][0]["flag"] == "harmful"
    assert not SUMMARY.gate("beats_champion").passed and SUMMARY.zenml_pipeline_run is None
    assert SUMMARY.to_dict() == SUMMARY_JSON
    path = write_summary(SUMMARY, tmp_path)["summary"]
    assert RunSummary.from_dict(json.loads(path.read_text())) == SUMMARY
    ran = replace(SUMMARY, audit=None, audit_flags=None, zenml_pipeline_run="z")
    assert RunSummary.from_dict(ran.to_dict()) == ran and "audit_flags" not in ran.to_dict()


def test_job_summary_and_junit_name_every_gate(tmp_path, monkeypatch):
    step_summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    paths = write_summary(SUMMARY, tmp_path / "latest")
    markdown = paths["job_summary"].read_text()
    assert markdown == job_summary(SUMMARY) == step_summary.read_text()
    assert "m v3 not promoted" in markdown and "| beats_champion | **FAIL** |" in markdown
    suite = ET.fromstring(paths["junit"].read_text())
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["beats_champion"]
    assert gates_junit(SUMMARY) == paths["junit"].read_text()
