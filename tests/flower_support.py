"""Shared by the Flower test modules: the tiny three-site run, its in-process reference, process checks."""

from pathlib import Path

import numpy as np
import torch
from conftest import REPO, TINY

from fedmm.artifacts import read_npz
from fedmm.config import load_config
from fedmm.fl.deploy import Runtime
from fedmm.fl.training import train

SITE_PYTHON = REPO / ".venv-site" / "bin" / "python"
STRATEGIES = ["fedavg", "fedprox", "moon", "fedmobile", "fedmekt", "mmfed3"]
# Three IID clients and a proxy set for every strategy, so one federation's sites serve all six.
# Sites train their clients one at a time: the bit-identical in-process reference is the loop engine.
OVERRIDES = ["partition.scheme=iid", "partition.num_clients=3", "partition.proxy_fraction=0.1",
             "train.centralized=false", "flower.validate_sites=false", "train.engine=loop"]


def tiny(*overrides: str):
    return load_config(TINY, [*OVERRIDES, *overrides])


def our_processes(home: Path, runtime: str = "flower") -> list[int]:
    """Live processes started with this FEDMM_HOME's Flower runtime folder ``runtime`` (and their descendants)."""
    return Runtime(REPO / ".venv-site", home / runtime).live_processes()


def in_process(config, data, workdir: Path):
    """The reference: the in-process engine with one torch thread, as each site runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.flower.threads_per_site)
    try:
        return train(config, *data, workdir=workdir)
    finally:
        torch.set_num_threads(threads)


def assert_identical(a, b) -> None:
    assert a.history == b.history
    for states in ((a.state, b.state), (a.server_state, b.server_state)):
        assert list(states[0]) == list(states[1])
        for name in states[0]:
            torch.testing.assert_close(states[0][name], states[1][name], rtol=0, atol=0)
    rounds_a, rounds_b = sorted(Path(a.updates_dir).glob("round_*.npz")), sorted(Path(b.updates_dir).glob("round_*.npz"))
    assert [p.name for p in rounds_a] == [p.name for p in rounds_b]
    for pa, pb in zip(rounds_a, rounds_b):
        xa, xb = read_npz(pa), read_npz(pb)
        assert all(np.array_equal(xa[k], xb[k]) for k in xa)
