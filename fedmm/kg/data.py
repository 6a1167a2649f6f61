"""The UMLS, Nations and Kinships knowledge graphs shipped as text files in the pykeen==1.11.1 wheel.

Files are located without importing pykeen, checked against pinned SHA-256s before they are
read, and turned into integer triples over a sorted vocabulary. Nations also ships numeric
literals (area, population) for 13 of its 14 entities: a third modality with a natural gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmm.data.dataset import DatasetError
from fedmm.data.sources import package_dir, verify_sha256

SPLITS = ("train", "valid", "test")
WHEEL = "pykeen==1.11.1"
KG_SHA256 = {
    "umls": {
        "train.txt": "873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35",
        "valid.txt": "025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e",
        "test.txt": "a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014",
    },
    "nations": {
        "train.txt": "0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35fccaf82473e57",
        "valid.txt": "2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a52c652a7b0530",
        "test.txt": "3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b95ae4db770ab",
        "literals.txt": "1567d7f0a4165ed625810d610d55cfa1d730fa00796dc6d415db9013ceab95ce",
    },
    "kinships": {
        "train.txt": "738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da367dda689731",
        "valid.txt": "c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e24716be2b37f04da",
        "test.txt": "05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f2fe114e43d88",
    },
}
KG_NAMES = tuple(KG_SHA256)


class TripleError(DatasetError):
    """A graph that cannot be read or federated: bad lines, unknown literal entities, too few relations."""


@dataclass(frozen=True)
class KnowledgeGraph:
    """Integer (head, relation, tail) triples per split over named entities and relations.

    ``numeric`` is (entities, features) standardised log-values with ``numeric_present``
    marking the entities that have them; both are None where the graph ships no literals.
    """

    name: str
    entities: tuple[str, ...]
    relations: tuple[str, ...]
    splits: dict[str, np.ndarray]
    numeric: np.ndarray | None = None
    numeric_present: np.ndarray | None = None

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def all_triples(self) -> np.ndarray:
        return np.concatenate([self.splits[split] for split in SPLITS])


def kg_dir(name: str) -> Path:
    if name not in KG_SHA256:
        raise TripleError(f"unknown knowledge graph {name!r}; choose one of {list(KG_NAMES)}")
    return package_dir("pykeen", f"{name} knowledge graph", WHEEL) / "datasets" / name


def read_rows(path: Path) -> list[tuple[str, str, str]]:
    """Tab-separated (subject, predicate, object) rows, each with exactly three fields."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 3 or not all(fields):
            raise TripleError(f"{path}:{number}: expected 3 tab-separated fields, found {len(fields)}: {line[:80]!r}")
        rows.append((fields[0], fields[1], fields[2]))
    return rows


def read_literals(path: Path, entities: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Standardised log10 literals (entities, features) and which entities have each one."""
    rows = read_rows(path)
    features = sorted({attribute for _, attribute, _ in rows})
    index = {name: i for i, name in enumerate(entities)}
    values = np.zeros((len(entities), len(features)))
    present = np.zeros((len(entities), len(features)), dtype=bool)
    for entity, attribute, value in rows:
        if entity not in index:
            raise TripleError(f"{path}: literal for unknown entity {entity!r}")
        i, j = index[entity], features.index(attribute)
        values[i, j], present[i, j] = np.log10(float(value)), True
    for j in range(len(features)):
        column = values[present[:, j], j]
        values[:, j] = np.where(present[:, j], (values[:, j] - column.mean()) / column.std(), 0.0)
    return values.astype(np.float32), present.all(axis=1)


def load_kg(name: str) -> KnowledgeGraph:
    """Verify and read one of the shipped knowledge graphs (:func:`fedmm.kg.validation.validate_kg` is its gate)."""
    directory = kg_dir(name)
    for file, sha in KG_SHA256[name].items():
        verify_sha256(directory / file, sha)
    rows = {split: read_rows(directory / f"{split}.txt") for split in SPLITS}
    entities = tuple(sorted({e for part in rows.values() for h, _, t in part for e in (h, t)}))
    relations = tuple(sorted({r for part in rows.values() for _, r, _ in part}))
    entity_id = {e: i for i, e in enumerate(entities)}
    relation_id = {r: i for i, r in enumerate(relations)}
    splits = {
        split: np.asarray([(entity_id[h], relation_id[r], entity_id[t]) for h, r, t in part], dtype=np.int64)
        for split, part in rows.items()
    }
    numeric = present = None
    if "literals.txt" in KG_SHA256[name]:
        numeric, present = read_literals(directory / "literals.txt", entities)
    return KnowledgeGraph(name, entities, relations, splits, numeric, present)


def entity_text(name: str) -> str:
    """The text the language model reads for an entity name: underscores become spaces."""
    return name.replace("_", " ")
