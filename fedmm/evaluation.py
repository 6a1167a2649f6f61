"""The evaluate stage: both test protocols, the centralized gap, per-client and per-class views."""

from __future__ import annotations

import numpy as np

from fedmm.data.federated import FederatedData, client_arrays
from fedmm.data.prepare import PreparedData
from fedmm.fl.result import TrainResult
from fedmm.fl.training import evaluation_sets
from fedmm.metrics import confusion, evaluate
from fedmm.tensors import TensorData

PROTOCOLS = {
    "test": "held-out recordings",
    "test_subjects": "held-out subjects",
    "test_missing": "held-out recordings under the training mask",
}


def evaluate_training(prepared: PreparedData, federated: FederatedData, result: TrainResult) -> dict:
    """Metrics of the federated model (and centralized reference) on every test protocol."""
    sets = evaluation_sets(prepared, "cpu", federated)
    federated_model = result.predictor()
    central_model = result.centralized_model()
    report: dict = {"protocols": {}, "class_names": prepared.dataset.class_names}
    for split, description in PROTOCOLS.items():
        if split not in sets:
            continue
        entry = {"description": description, "samples": len(sets[split]), "federated": evaluate(federated_model, sets[split])}
        if central_model is not None:
            entry["centralized"] = evaluate(central_model, sets[split])
            entry["gap_macro_f1"] = entry["centralized"]["macro_f1"] - entry["federated"]["macro_f1"]
        report["protocols"][split] = entry
    report["confusion_matrix"] = confusion(federated_model, sets["test"], prepared.dataset.num_classes).tolist()
    report["clients"] = [
        {"client": k, **evaluate(federated_model, TensorData.from_numpy(*client_arrays(prepared, federated, k)))}
        for k in range(federated.num_clients)
        if len(federated.client_rows(k))
    ]
    report["summary"] = summary_metrics(report)
    return report


def summary_metrics(report: dict) -> dict[str, float]:
    """The flat headline numbers: test_accuracy, test_macro_f1, centralized_macro_f1, ..."""
    flat: dict[str, float] = {}
    for split, entry in report["protocols"].items():
        flat[f"{split}_accuracy"] = entry["federated"]["accuracy"]
        flat[f"{split}_macro_f1"] = entry["federated"]["macro_f1"]
        if "centralized" in entry:
            prefix = "centralized" if split == "test" else f"centralized_{split}"
            flat[f"{prefix}_accuracy"] = entry["centralized"]["accuracy"]
            flat[f"{prefix}_macro_f1"] = entry["centralized"]["macro_f1"]
            flat[f"{split}_gap_macro_f1"] = entry["gap_macro_f1"]
    return {k: float(np.round(v, 6)) for k, v in flat.items()}
