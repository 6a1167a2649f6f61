"""The typed stage outputs read back from the JSON they are stored as."""

import json

import pytest

from fedmm.evaluation import EvaluationReport, ProtocolScores
from fedmm.fl.history import ClientRecord, RoundRecord


def _report() -> EvaluationReport:
    return EvaluationReport(
        protocols={"test": ProtocolScores("held-out recordings", 40, {"accuracy": 0.75, "macro_f1": 0.5, "loss": 0.9},
                                          {"accuracy": 0.875, "macro_f1": 0.8, "loss": 0.4}),
                   "test_missing": ProtocolScores("under the mask", 38, {"accuracy": 0.5, "macro_f1": 0.25, "loss": 1.2})},
        class_names=["a", "b"], confusion_matrix=[[15, 5], [5, 15]],
        clients=[{"client": 0, "accuracy": 1.0, "macro_f1": 1.0, "loss": 0.1}],
    )


def test_evaluation_headline_names_every_protocol_and_the_centralized_gap():
    report = _report()
    assert report.headline() == {
        "test_accuracy": 0.75, "test_macro_f1": 0.5, "centralized_accuracy": 0.875, "centralized_macro_f1": 0.8,
        "test_gap_macro_f1": pytest.approx(0.3), "test_missing_accuracy": 0.5, "test_missing_macro_f1": 0.25,
    }
    assert report.test_macro_f1 == 0.5 and report.protocols["test_missing"].gap_macro_f1 is None


def test_evaluation_report_reads_back_from_its_json():
    report = _report()
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["summary"] == report.headline() and "gap_macro_f1" not in payload["protocols"]["test_missing"]
    assert payload["protocols"]["test"]["gap_macro_f1"] == pytest.approx(0.3)
    assert EvaluationReport.from_dict(payload) == report


def test_round_record_keeps_the_flat_json_of_the_history():
    payload = {"round": 2, "val_accuracy": 0.5, "val_macro_f1": 0.4, "val_loss": 1.1, "test_missing_macro_f1": 0.3,
               "test_missing_accuracy": 0.35, "test_missing_loss": 1.4,
               "clients": [{"client": 0, "num_examples": 12, "loss": 0.9, "recon_loss": 0.2}], "dropped": [3]}
    record = RoundRecord.from_dict(payload)
    assert record.scores == {"val": {"accuracy": 0.5, "macro_f1": 0.4, "loss": 1.1},
                             "test_missing": {"macro_f1": 0.3, "accuracy": 0.35, "loss": 1.4}}
    assert record.clients == [ClientRecord(0, 12, {"loss": 0.9, "recon_loss": 0.2})] and record.dropped == [3]
    assert record.score("test_missing", "macro_f1") == 0.3 and record.score("test", "macro_f1") is None
    assert record.to_dict() == payload
