"""What a federation's server holds, as files: the run, its evaluation sets and its proxy set.

The training stage writes a :class:`ServerBundle` for the Flower ServerApp (another process,
another virtual environment) and never gives it client data: the bundle holds the run
description every site receives, the held-out evaluation splits and the server's own
labelled proxy set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmm.artifacts import read_npz, write_npz
from fedmm.fl.site import RunSpec
from fedmm.tensors import TensorData

RUN_FILE, EVALUATION_FILE, PROXY_FILE = "run.json", "evaluation.npz", "proxy.npz"
SITES_FILE = "sites.json"
TIMINGS_FILE = "flower_timings.json"
"""Per round, how long the ServerApp waited for its clients' replies (push to last reply)."""
"""What the ServerApp learnt of the sites (client ids, data hashes, validation reports, refusals)."""
ROUND_MARKER = "FEDMM_ROUND "
"""Prefix of the ServerApp's log line carrying a finished round's record (JSON), for progress."""
FAILED_MARKER = "FEDMM_FAILED "
"""Prefix of the ServerApp's last log line when the federation cannot go on, with the reason."""
DROPPED_MARKER = "dropped site "
"""Prefix of the ServerApp's log line naming a site dropped from a round (failed or silent), and why."""
REFUSED_MARKER = "refused site "
"""Prefix of the ServerApp's log line naming a site whose data failed validation, and why."""
UNAVAILABLE_MARKER = "unavailable node "
"""Prefix of the ServerApp's log line naming nodes the SuperLink reported unavailable while the sites were asked
to describe themselves (it waits for them to connect again)."""


def tensor_arrays(data: TensorData, prefix: str = "") -> dict[str, np.ndarray]:
    arrays = {f"{prefix}inputs/{name}": value.cpu().numpy() for name, value in data.inputs.items()}
    arrays.update({f"{prefix}mask": data.mask.cpu().numpy(), f"{prefix}labels": data.labels.cpu().numpy()})
    return arrays


def arrays_tensor(arrays: dict[str, np.ndarray], prefix: str = "", device: str = "cpu") -> TensorData:
    inputs = {key.removeprefix(f"{prefix}inputs/"): value for key, value in arrays.items()
              if key.startswith(f"{prefix}inputs/")}
    return TensorData.from_numpy(inputs, arrays[f"{prefix}mask"], arrays[f"{prefix}labels"], device)


@dataclass
class ServerBundle:
    """The run every site is told about, the evaluation sets (by split name) and the proxy set."""

    run: RunSpec
    evaluation: dict[str, TensorData]
    proxy: TensorData

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RUN_FILE).write_text(self.run.to_json())
        arrays = {}
        for split, data in self.evaluation.items():
            arrays.update(tensor_arrays(data, f"{split}/"))
        write_npz(directory / EVALUATION_FILE, arrays)
        write_npz(directory / PROXY_FILE, tensor_arrays(self.proxy))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> ServerBundle:
        directory = Path(directory)
        arrays = read_npz(directory / EVALUATION_FILE)
        splits = list(dict.fromkeys(key.split("/", 1)[0] for key in arrays))
        return cls(
            run=RunSpec.from_json((directory / RUN_FILE).read_text()),
            evaluation={split: arrays_tensor(arrays, f"{split}/", device) for split in splits},
            proxy=arrays_tensor(read_npz(directory / PROXY_FILE), device=device),
        )
