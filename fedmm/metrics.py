"""Model evaluation: batched prediction and classification metrics."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from fedmm.tensors import TensorData


@torch.no_grad()
def predict_logits(model: torch.nn.Module, data: TensorData, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every sample, in order."""
    model.eval()
    return torch.cat([model(batch.inputs, batch.mask) for batch in data.batches(batch_size)])


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over the classes present in truth or prediction)."""
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def evaluate(model: torch.nn.Module, data: TensorData) -> dict[str, float]:
    """Accuracy, macro-F1 and mean cross-entropy of a model on a dataset's labelled samples."""
    if not data.labelled.all():
        data = data.take(torch.nonzero(data.labelled).flatten())
    logits = predict_logits(model, data)
    loss = torch.nn.functional.cross_entropy(logits, data.labels).item()
    metrics = classification_metrics(data.labels.cpu().numpy(), logits.argmax(1).cpu().numpy())
    return {**metrics, "loss": float(loss)}


def confusion(model: torch.nn.Module, data: TensorData, num_classes: int) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted)."""
    predictions = predict_logits(model, data).argmax(1).cpu().numpy()
    return confusion_matrix(data.labels.cpu().numpy(), predictions, labels=np.arange(num_classes))
