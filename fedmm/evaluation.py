"""The evaluate stage: both test protocols, the centralized gap, per-client and per-class views."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedmm.data.federated import FederatedData, client_arrays, split_tensors
from fedmm.data.prepare import PreparedData
from fedmm.fl.result import TrainResult
from fedmm.fl.training import evaluation_sets
from fedmm.metrics import confusion, evaluate
from fedmm.tensors import TensorData

PROTOCOLS = {
    "test": "held-out recordings, as the data has them",
    "test_complete": "held-out recordings that have every modality",
    "test_subjects": "held-out subjects",
    "test_missing": "held-out recordings under the training mask",
}


@dataclass
class ProtocolScores:
    """One test protocol: the federated model's scores and, when trained, the centralized reference's."""

    description: str
    samples: int
    federated: dict[str, float]
    centralized: dict[str, float] | None = None

    @property
    def gap_macro_f1(self) -> float | None:
        """Centralized minus federated macro-F1 (None without the reference)."""
        return None if self.centralized is None else self.centralized["macro_f1"] - self.federated["macro_f1"]

    def to_dict(self) -> dict:
        entry = {"description": self.description, "samples": self.samples, "federated": self.federated}
        if self.centralized is not None:
            entry.update(centralized=self.centralized, gap_macro_f1=self.gap_macro_f1)
        return entry

    @classmethod
    def from_dict(cls, entry: dict) -> ProtocolScores:
        return cls(entry["description"], entry["samples"], entry["federated"], entry.get("centralized"))


@dataclass
class EvaluationReport:
    """The evaluate stage's output: scores per test protocol, the confusion matrix on ``test``, per-client scores.

    ``clients`` rows are ``{"client": k, "accuracy", "macro_f1", "loss"}`` of the global model on
    client k's own (masked) data.
    """

    protocols: dict[str, ProtocolScores]
    class_names: list[str]
    confusion_matrix: list[list[int]]
    clients: list[dict] = field(default_factory=list)

    @property
    def test_macro_f1(self) -> float:
        return self.protocols["test"].federated["macro_f1"]

    def headline(self) -> dict[str, float]:
        """The flat headline numbers (MLflow's ``final.*`` metrics, ``summary.json``): test_accuracy,
        test_macro_f1, centralized_macro_f1, test_gap_macro_f1, ..."""
        flat: dict[str, float] = {}
        for split, scores in self.protocols.items():
            flat[f"{split}_accuracy"] = scores.federated["accuracy"]
            flat[f"{split}_macro_f1"] = scores.federated["macro_f1"]
            if scores.centralized is not None:
                prefix = "centralized" if split == "test" else f"centralized_{split}"
                flat[f"{prefix}_accuracy"] = scores.centralized["accuracy"]
                flat[f"{prefix}_macro_f1"] = scores.centralized["macro_f1"]
                flat[f"{split}_gap_macro_f1"] = scores.gap_macro_f1
        return {k: float(np.round(v, 6)) for k, v in flat.items()}

    def to_dict(self) -> dict:
        """The JSON of ``evaluation/report.json`` (``summary`` holds :meth:`headline`)."""
        return {"protocols": {split: scores.to_dict() for split, scores in self.protocols.items()},
                "class_names": self.class_names, "confusion_matrix": self.confusion_matrix, "clients": self.clients,
                "summary": self.headline()}

    @classmethod
    def from_dict(cls, payload: dict) -> EvaluationReport:
        return cls({split: ProtocolScores.from_dict(entry) for split, entry in payload["protocols"].items()},
                   payload["class_names"], payload["confusion_matrix"], payload["clients"])


def evaluate_training(prepared: PreparedData, federated: FederatedData, result: TrainResult) -> EvaluationReport:
    """Metrics of the federated model (and centralized reference) on every test protocol.

    ``test`` is the test split as the data has it; when some samples lack a modality,
    ``test_complete`` is its subset that has every modality (when there is one).
    """
    sets = evaluation_sets(prepared, "cpu", federated)
    if not prepared.dataset.presence.all():
        complete = split_tensors(prepared, "test", "cpu", complete=True)
        if len(complete):
            sets["test_complete"] = complete
    federated_model = result.predictor()
    central_model = result.centralized_model()
    protocols = {
        split: ProtocolScores(description, len(sets[split]), evaluate(federated_model, sets[split]),
                              None if central_model is None else evaluate(central_model, sets[split]))
        for split, description in PROTOCOLS.items() if split in sets
    }
    clients = [
        {"client": k, **evaluate(federated_model, TensorData.from_numpy(*client_arrays(prepared, federated, k)))}
        for k in range(federated.num_clients)
        if len(federated.client_rows(k))
    ]
    matrix = confusion(federated_model, sets["test"], prepared.dataset.num_classes).tolist()
    return EvaluationReport(protocols, prepared.dataset.class_names, matrix, clients)
