"""How well an audit finds the clients that were corrupted on purpose (the ground truth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def _flagged(flags) -> bool:
    return isinstance(flags, str) and flags != ""


def detection_quality(clients: pd.DataFrame, ground_truth: list[dict]) -> dict:
    """AUROC of the audit's suspicion score per corruption kind and over all corrupted clients.

    The suspicion score is the negated cumulative Shapley value (``clients["value"]``): the
    less a client contributed, the more suspect. For each kind, positives are the clients
    corrupted that way and negatives the honest clients; other corrupted clients are left out.
    Also reports, per kind, how many of its clients the audit flagged.
    """
    truth = pd.DataFrame(ground_truth).set_index("client")
    table = clients.set_index("client").join(truth, how="inner")
    honest = table[~table["corrupted"]]
    result: dict = {"score": "-cumulative value", "kinds": {}}
    kinds = sorted(k for k in table["kind"].dropna().unique())
    for kind in [*kinds, "any"]:
        bad = table[table["corrupted"]] if kind == "any" else table[table["kind"] == kind]
        if bad.empty or honest.empty:
            continue
        labels = np.r_[np.ones(len(bad)), np.zeros(len(honest))]
        scores = -np.r_[bad["value"].to_numpy(), honest["value"].to_numpy()]
        result["kinds"][kind] = {
            "auroc": float(roc_auc_score(labels, scores)),
            "corrupted_clients": [int(c) for c in bad.index],
            "flagged": [int(c) for c in bad.index if _flagged(bad.loc[c, "flags"])],
            "honest_flagged": [int(c) for c in honest.index if _flagged(honest.loc[c, "flags"])],
        }
    return result
