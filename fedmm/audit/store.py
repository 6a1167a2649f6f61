"""The update store: what the round engine writes every round for the contribution audit to read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fedmm.artifacts import write_json, write_npz
from fedmm.tensors import State

LAYOUT_FILE = "layout.json"


class DeltaUpdate(Protocol):
    """A client's parameter delta and its example count (what the store keeps of a payload)."""

    @property
    def client_id(self) -> int: ...

    @property
    def num_examples(self) -> int: ...

    @property
    def delta(self) -> State: ...


class UpdateStore:
    """Per-round client updates as flat float32 matrices, for the contribution audit.

    ``round_XXXX.npz`` holds ``start`` (P,), the round's starting global state; ``deltas``
    (k, P), one row per participating client; ``client_ids`` and ``num_examples`` (k,).
    ``layout.json`` maps the flat vector back to named tensors.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def write_layout(self, state: State) -> None:
        layout = [{"name": name, "shape": list(value.shape)} for name, value in state.items()]
        write_json(self.directory / LAYOUT_FILE, layout)

    def write_round(self, server_round: int, start: State, updates: Sequence[DeltaUpdate]) -> None:
        """Flatten on the device (every delta in the start state's order), then one copy to the host per matrix."""
        flat = lambda *states: torch.cat([v.detach().reshape(-1).float() for s in states for v in s.values()])
        write_npz(
            self.directory / f"round_{server_round:04d}.npz",
            {
                "start": flat(start).cpu().numpy(),
                "deltas": flat(*({name: u.delta[name] for name in start} for u in updates))
                .reshape(len(updates), -1).cpu().numpy(),
                "client_ids": np.array([update.client_id for update in updates], dtype=np.int64),
                "num_examples": np.array([update.num_examples for update in updates], dtype=np.int64),
            },
        )

    def rounds(self) -> list[Path]:
        return sorted(self.directory.glob("round_*.npz"))
