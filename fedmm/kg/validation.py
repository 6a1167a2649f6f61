"""The ``kg_triples`` Great Expectations suite: the gate before a knowledge graph is federated or trained.

The suite runs over one row per triple (split, head, relation, tail) with the sensor suites'
GX plumbing (:mod:`fedmm.data.validation`): entity and relation ids within the vocabulary,
every valid and test triple's entities and relation seen in train (an unseen one cannot be
ranked), no valid or test triple in train (a leak inflates every ranking metric), no triple
twice within a split, at least one triple.
"""

from __future__ import annotations

import numpy as np

from fedmm.data.validation import ValidationReport, row_count_spec, run_gx
from fedmm.kg.data import SPLITS, KnowledgeGraph

SUITE = "kg_triples"


def _first(mask: np.ndarray, triples: np.ndarray) -> str:
    return f", first {tuple(int(x) for x in triples[np.flatnonzero(mask)[0]])}" if mask.any() else ""


def triple_table(kg: KnowledgeGraph):
    """One row per triple: its split, ids, how many of its ids train never saw, and whether it leaked into train."""
    import pandas as pd

    train = kg.splits["train"]
    seen_entities = np.zeros(kg.num_entities + 1, dtype=bool)
    seen_relations = np.zeros(kg.num_relations + 1, dtype=bool)
    seen_entities[np.clip(train[:, [0, 2]].ravel(), 0, kg.num_entities)] = True
    seen_relations[np.clip(train[:, 1], 0, kg.num_relations)] = True
    train_rows = {tuple(t) for t in train.tolist()}
    parts = []
    for split in SPLITS:
        triples = kg.splits[split]
        unseen = leaked = np.zeros(len(triples), dtype=np.int64)
        if split != "train":
            entities = np.clip(triples[:, [0, 2]], 0, kg.num_entities)
            unseen = (~seen_entities[entities]).sum(1) + ~seen_relations[np.clip(triples[:, 1], 0, kg.num_relations)]
            leaked = np.asarray([tuple(t) in train_rows for t in triples.tolist()], dtype=np.int64)
        parts.append(pd.DataFrame({"split": split, "head": triples[:, 0], "relation": triples[:, 1], "tail": triples[:, 2],
                                   "unseen_in_train": unseen.astype(np.int64), "leaked": leaked}))
    return pd.concat(parts, ignore_index=True)


def validate_kg(kg: KnowledgeGraph) -> ValidationReport:
    """Run the ``kg_triples`` suite over a graph's splits; returns the report (does not raise)."""
    table = triple_table(kg)
    triples = table[["head", "relation", "tail"]].to_numpy()
    leaked, unseen = table["leaked"].to_numpy() > 0, table["unseen_in_train"].to_numpy() > 0
    duplicated = table.duplicated(["split", "head", "relation", "tail"]).to_numpy()
    specs = []
    for column, limit in (("head", kg.num_entities), ("relation", kg.num_relations), ("tail", kg.num_entities)):
        values = table[column].to_numpy()
        bad = (values < 0) | (values >= limit)
        specs.append(("ExpectColumnValuesToBeBetween", {"column": column, "min_value": 0, "max_value": limit - 1}, column,
                      lambda ok, b=bad, n=limit: f"ids must be 0..{n - 1}; {int(b.sum())} triples out of range{_first(b, triples)}"))
    specs += [
        ("ExpectColumnValuesToBeBetween", {"column": "unseen_in_train", "max_value": 0}, "unseen_in_train",
         lambda ok: f"{int(unseen.sum())} valid/test triples name an entity or relation train never has"
                    f"{_first(unseen, triples)}"),
        ("ExpectColumnValuesToBeBetween", {"column": "leaked", "max_value": 0}, "leaked",
         lambda ok: f"{int(leaked.sum())} valid/test triples are also in train{_first(leaked, triples)}: "
                    "a leak inflates every ranking metric"),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["split", "head", "relation", "tail"]}, "split+triple",
         lambda ok: f"{int(duplicated.sum())} triples repeated within their split{_first(duplicated, triples)}"),
        row_count_spec(len(table)),
    ]
    outcomes = tuple(run_gx(SUITE, table, specs))
    return ValidationReport(SUITE, all(o.success for o in outcomes), outcomes)
