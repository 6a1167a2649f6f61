"""The training stage's artifact: final global model, per-round history, client updates,
and the centralized reference."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fedmm.artifacts import read_json, read_npz, write_json, write_npz
from fedmm.fl.engine import UPDATES_DIR, arrays_to_state, state_to_arrays
from fedmm.fl.history import RoundRecord
from fedmm.fl.strategies import STRATEGIES
from fedmm.impute.base import Imputer, ImputingNet
from fedmm.impute.registry import make_imputer
from fedmm.impute_config import ImputeConfig
from fedmm.models.multimodal import ModelSpec, MultimodalNet

MODEL_FILE = "model.npz"
SERVER_STATE_FILE = "server_state.npz"
IMPUTER_FILE = "imputer.npz"
PREDICTOR_FILE = "predictor.json"
CENTRAL_MODEL_FILE = "centralized_model.npz"
META_FILE = "training.json"


def link_tree(source: Path, target: Path) -> None:
    """Mirror a folder of files by hard links (copies across file systems)."""
    target.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir()):
        destination = target / item.name
        if destination.exists():
            destination.unlink()
        try:
            os.link(item, destination)
        except OSError:
            shutil.copy2(item, destination)


@dataclass
class ServedImputer:
    """An imputer fitted after training that the model predicts with (``impute.serve``)."""

    name: str
    config: dict
    state: dict[str, torch.Tensor]

    def build(self, model: MultimodalNet) -> Imputer:
        return make_imputer(self.name, ImputeConfig.model_validate(self.config)).restore(self.state, model)


@dataclass
class TrainResult:
    """Global model (and centralized reference) with history and stored client updates."""

    spec: ModelSpec
    state: dict[str, torch.Tensor]
    history: list[RoundRecord]
    strategy: str
    fingerprint: str
    updates_dir: Path
    centralized_state: dict[str, torch.Tensor] | None = None
    centralized_history: list[dict] | None = None
    server_state: dict[str, torch.Tensor] = field(default_factory=dict)
    imputer: ServedImputer | None = None

    def model(self, device: str = "cpu") -> MultimodalNet:
        return _model(self.spec, self.state, device)

    def predictor(self, device: str = "cpu") -> torch.nn.Module:
        """The global model as it predicts: through the served imputer, else as its strategy does.

        (FedMobile predicts through its generator.)
        """
        model = self.model(device)
        if self.imputer is not None:
            return ImputingNet(model, self.imputer.build(model)).to(device).eval()
        server_state = {k: v.to(device) for k, v in self.server_state.items()}
        return STRATEGIES[self.strategy].predictor_from(model, server_state).eval()

    def centralized_model(self, device: str = "cpu") -> MultimodalNet | None:
        return None if self.centralized_state is None else _model(self.spec, self.centralized_state, device)

    def save_predictor(self, directory: str | Path) -> Path:
        """What :func:`load_predictor` needs (pickle-free): spec, strategy, weights, server state, served imputer."""
        directory = Path(directory)
        write_npz(directory / MODEL_FILE, state_to_arrays(self.state))
        write_npz(directory / SERVER_STATE_FILE, state_to_arrays(self.server_state))
        write_npz(directory / IMPUTER_FILE, state_to_arrays(self.imputer.state if self.imputer else {}))
        imputer = {"name": self.imputer.name, "config": self.imputer.config} if self.imputer else None
        write_json(directory / PREDICTOR_FILE, {"spec": self.spec.to_dict(), "strategy": self.strategy,
                                                "imputer": imputer})
        return directory

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        link_tree(self.updates_dir, directory / UPDATES_DIR)
        self.save_predictor(directory)
        if self.centralized_state is not None:
            write_npz(directory / CENTRAL_MODEL_FILE, state_to_arrays(self.centralized_state))
        write_json(
            directory / META_FILE,
            {
                "history": [record.to_dict() for record in self.history],
                "fingerprint": self.fingerprint,
                "centralized_history": self.centralized_history,
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> TrainResult:
        directory = Path(directory)
        meta = read_json(directory / META_FILE)
        central = directory / CENTRAL_MODEL_FILE
        return replace(
            _load_predictor_parts(directory),
            history=[RoundRecord.from_dict(record) for record in meta["history"]],
            fingerprint=meta["fingerprint"],
            updates_dir=directory / UPDATES_DIR,
            centralized_state=arrays_to_state(read_npz(central), "cpu") if central.is_file() else None,
            centralized_history=meta["centralized_history"],
        )


def _load_predictor_parts(directory: Path) -> TrainResult:
    meta = read_json(directory / PREDICTOR_FILE)
    imputer = None
    if meta["imputer"] is not None:
        imputer = ServedImputer(**meta["imputer"], state=arrays_to_state(read_npz(directory / IMPUTER_FILE), "cpu"))
    return TrainResult(
        spec=ModelSpec.from_dict(meta["spec"]),
        state=arrays_to_state(read_npz(directory / MODEL_FILE), "cpu"),
        history=[],
        strategy=meta["strategy"],
        fingerprint="",
        updates_dir=directory / UPDATES_DIR,
        server_state=arrays_to_state(read_npz(directory / SERVER_STATE_FILE), "cpu"),
        imputer=imputer,
    )


def load_predictor(directory: str | Path) -> torch.nn.Module:
    """The model a :meth:`TrainResult.save_predictor` folder predicts with."""
    return _load_predictor_parts(Path(directory)).predictor()


def _model(spec: ModelSpec, state: dict[str, torch.Tensor], device: str) -> MultimodalNet:
    model = MultimodalNet(spec)
    model.load_state_dict(state)
    return model.to(device).eval()
