"""The training stage's artifact: final global model, per-round history, client updates,
and the centralized reference."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedmm.artifacts import read_json, read_npz, write_json, write_npz
from fedmm.fl.engine import UPDATES_DIR, arrays_to_state, state_to_arrays
from fedmm.fl.strategies import STRATEGIES
from fedmm.models.multimodal import ModelSpec, MultimodalNet

MODEL_FILE = "model.npz"
SERVER_STATE_FILE = "server_state.npz"
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
class TrainResult:
    """Global model (and centralized reference) with history and stored client updates."""

    spec: ModelSpec
    state: dict[str, torch.Tensor]
    history: list[dict]
    strategy: str
    fingerprint: str
    updates_dir: Path
    centralized_state: dict[str, torch.Tensor] | None = None
    centralized_history: list[dict] | None = None
    server_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def model(self, device: str = "cpu") -> MultimodalNet:
        return _model(self.spec, self.state, device)

    def predictor(self, device: str = "cpu") -> torch.nn.Module:
        """The global model as the strategy predicts with it (FedMobile: plus its generator)."""
        server_state = {k: v.to(device) for k, v in self.server_state.items()}
        return STRATEGIES[self.strategy].inference(self.model(device), server_state).eval()

    def centralized_model(self, device: str = "cpu") -> MultimodalNet | None:
        return None if self.centralized_state is None else _model(self.spec, self.centralized_state, device)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        link_tree(self.updates_dir, directory / UPDATES_DIR)
        write_npz(directory / MODEL_FILE, state_to_arrays(self.state))
        write_npz(directory / SERVER_STATE_FILE, state_to_arrays(self.server_state))
        if self.centralized_state is not None:
            write_npz(directory / CENTRAL_MODEL_FILE, state_to_arrays(self.centralized_state))
        write_json(
            directory / META_FILE,
            {
                "spec": self.spec.to_dict(),
                "history": self.history,
                "strategy": self.strategy,
                "fingerprint": self.fingerprint,
                "centralized_history": self.centralized_history,
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> TrainResult:
        directory = Path(directory)
        meta = read_json(directory / META_FILE)
        central = directory / CENTRAL_MODEL_FILE
        return cls(
            spec=ModelSpec.from_dict(meta["spec"]),
            state=arrays_to_state(read_npz(directory / MODEL_FILE), "cpu"),
            history=meta["history"],
            strategy=meta["strategy"],
            fingerprint=meta["fingerprint"],
            updates_dir=directory / UPDATES_DIR,
            centralized_state=arrays_to_state(read_npz(central), "cpu") if central.is_file() else None,
            centralized_history=meta["centralized_history"],
            server_state=arrays_to_state(read_npz(directory / SERVER_STATE_FILE), "cpu"),
        )


def _model(spec: ModelSpec, state: dict[str, torch.Tensor], device: str) -> MultimodalNet:
    model = MultimodalNet(spec)
    model.load_state_dict(state)
    return model.to(device).eval()
