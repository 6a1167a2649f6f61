"""What flows between the FedMKGC stages, each saved to and loaded from a folder (npz + JSON, no pickles).

- :class:`Federation`: the clients of a run and the modality features they read.
- :class:`TrainedKG`: each predictor's weights, modality presence and HidE fill, enough to rank queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedmm.artifacts import read_json, read_npz, write_json, write_npz
from fedmm.kg.config import KGConfig
from fedmm.kg.federation import ClientGraph
from fedmm.kg.model import KGModel
from fedmm.kg.train import Features, Participant

CLIENT_FIELDS = ("entities", "relations", "present")


@dataclass(frozen=True)
class Federation:
    """A run's clients and its non-structure modality features (name -> (entities, dim), in presence-column order)."""

    features: dict[str, np.ndarray]
    clients: list[ClientGraph]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_npz(folder / "features.npz", self.features)
        arrays = {}
        for client in self.clients:
            arrays.update({f"{client.index}.{name}": getattr(client, name) for name in CLIENT_FIELDS})
            arrays.update({f"{client.index}.split.{split}": triples for split, triples in client.splits.items()})
        write_npz(folder / "clients.npz", arrays)
        write_json(folder / "federation.json", {"clients": [c.index for c in self.clients],
                                                "splits": list(self.clients[0].splits)})

    @classmethod
    def load(cls, folder: str | Path) -> Federation:
        folder = Path(folder)
        meta, arrays = read_json(folder / "federation.json"), read_npz(folder / "clients.npz")
        clients = [ClientGraph(i, arrays[f"{i}.entities"], arrays[f"{i}.relations"],
                               {s: arrays[f"{i}.split.{s}"] for s in meta["splits"]}, arrays[f"{i}.present"])
                   for i in meta["clients"]]
        return cls(read_npz(folder / "features.npz"), clients)


@dataclass(frozen=True)
class TrainedKG:
    """The predictor of each owner (a client, or the one centralized model) with what it ranks with.

    ``owners[i]`` holds ``state`` (the predictor's weights), ``present`` (entities, modalities)
    and ``filled`` (HidE's imputed modality embeddings, or None: zero-fill).
    """

    config: KGConfig
    num_entities: int
    num_relations: int
    feature_dims: dict[str, int]
    owners: list[dict]

    @classmethod
    def from_participants(cls, participants: list[Participant], config: KGConfig, num_entities: int,
                          num_relations: int, features: Features) -> TrainedKG:
        owners = [{"state": {k: v.detach().clone() for k, v in p.predictor.state_dict().items()},
                   "present": p.present.clone(), "filled": p.filled if p.private is None else None}
                  for p in participants]
        return cls(config, num_entities, num_relations, {k: int(v.shape[1]) for k, v in features.items()}, owners)

    def features(self, federation: Federation) -> Features:
        """The feature tensors the predictors read (none for a structure-only method)."""
        return {name: torch.as_tensor(federation.features[name]) for name in self.feature_dims}

    def participants(self, graphs: list[ClientGraph]) -> list[Participant]:
        """Predictors to rank with, one per owner (``graphs``: the owners' graphs, in order)."""
        out = []
        for owner, graph in zip(self.owners, graphs, strict=True):
            model = KGModel(self.num_entities, self.num_relations, self.config.dim, self.config.scorer, self.feature_dims)
            model.load_state_dict(owner["state"])
            out.append(Participant(graph, model, owner["present"], filled=owner["filled"]))
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, owner in enumerate(self.owners):
            arrays = {f"state.{k}": v.numpy() for k, v in owner["state"].items()}
            arrays["present"] = owner["present"].numpy()
            if owner["filled"] is not None:
                arrays["filled"] = owner["filled"].numpy()
            write_npz(folder / f"owner-{i}.npz", arrays)
        write_json(folder / "model.json", {"config": self.config.model_dump(mode="json"), "num_entities": self.num_entities,
                                           "num_relations": self.num_relations, "feature_dims": list(self.feature_dims.items()),
                                           "owners": len(self.owners)})

    @classmethod
    def load(cls, folder: str | Path) -> TrainedKG:
        folder = Path(folder)
        meta = read_json(folder / "model.json")
        owners = []
        for i in range(meta["owners"]):
            arrays = {k: torch.as_tensor(v) for k, v in read_npz(folder / f"owner-{i}.npz").items()}
            owners.append({"state": {k.removeprefix("state."): v for k, v in arrays.items() if k.startswith("state.")},
                           "present": arrays["present"], "filled": arrays.get("filled")})
        return cls(KGConfig(**meta["config"]), meta["num_entities"], meta["num_relations"], dict(meta["feature_dims"]), owners)
