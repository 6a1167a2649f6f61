"""Plots of a training run, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmm.fl.history import RoundRecord
from fedmm.plotting import pyplot, save_figure


def accuracy_per_round(history: list[RoundRecord], centralized: dict | None, path: Path) -> Path:
    """Global accuracy and macro-F1 per round on each evaluation split."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for split in ("val", "test", "test_subjects"):
        scored = [r for r in history if split in r.scores]  # test splits: every train.eval_every rounds and the last
        if scored:
            rounds = [r.round for r in scored]
            ax.plot(rounds, [r.scores[split]["accuracy"] for r in scored], ".-", label=f"{split} accuracy")
            ax.plot(rounds, [r.scores[split]["macro_f1"] for r in scored], ".--", label=f"{split} macro-F1")
    if centralized and "test_macro_f1" in centralized:
        ax.axhline(centralized["test_macro_f1"], color="black", lw=0.8, ls=":", label="centralized test macro-F1")
    ax.set_xlabel("round")
    ax.set_ylim(0, 1)
    ax.set_title("Global model per round")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def per_client_accuracy(clients: list[dict], path: Path) -> Path:
    """The final global model's accuracy on each client's own (masked) data."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ids = [str(c["client"]) for c in clients]
    ax.bar(ids, [c["accuracy"] for c in clients], color="tab:blue")
    ax.set_xlabel("client")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Global model on each client's data")
    return save_figure(fig, path)


def confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> Path:
    """Confusion matrix of the global model on the recording-split test set."""
    plt = pyplot()
    values = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > values.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix (held-out recordings)")
    return save_figure(fig, path)
