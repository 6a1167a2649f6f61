"""Federated rounds over Flower vs in-process: round wall time, start-up, bytes, where the time goes.

Two settings by default: the default config (smartwatch, one site per subject: 8 sites) and
the tiny config over 32 IID sites. For each, the same FedAvg training runs in-process and over
a loopback federation (a SuperLink, one SuperNode plus one ClientApp executor per site, each
process with ``--threads`` torch threads), and the script prints:

- round wall time (median over rounds 2..R, so the first round's warm-up is left out);
- start-up: SuperLink and SuperNodes listening, then ServerApp start and the sites' query;
- bytes per round: the array data of the global state sent to each client and of the payloads
  back (Flower's framing excluded);
- per round over Flower: the time the ServerApp waited for replies (push to last reply) and the
  rest (aggregation, evaluation, checkpoint, message building).

    .venv/bin/python benchmarks/federation_bench.py                 # both settings
    .venv/bin/python benchmarks/federation_bench.py --only tiny32   # one

Run it on an idle machine and quote ``uptime``: several torch processes on 2 cores contend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("FEDMM_HOME", tempfile.mkdtemp(prefix="fedmm-federation-bench-"))

from fedmm import runtime  # noqa: E402

runtime.configure()

import torch  # noqa: E402

from fedmm.config import load_config  # noqa: E402
from fedmm.data.federated import partition_and_mask  # noqa: E402
from fedmm.data.prepare import prepare  # noqa: E402
from fedmm.fl.bundle import TIMINGS_FILE  # noqa: E402
from fedmm.fl.deploy import Federation, Runtime  # noqa: E402
from fedmm.fl.federation import loopback_sites  # noqa: E402
from fedmm.fl.training import train  # noqa: E402
from fedmm.runtime import state_dir  # noqa: E402

SETTINGS = {
    "default8": ("configs/default.yaml", ["train.rounds=6"]),
    "tiny32": ("configs/tiny.yaml", ["partition.scheme=iid", "partition.num_clients=32", "train.rounds=6"]),
}
COMMON = ["train.centralized=false", "flower.validate_sites=false"]


def timed_rounds(config, data, workdir: Path) -> tuple[list[float], float]:
    """Seconds between consecutive round records, and from the call to the first record."""
    stamps = []
    start = time.perf_counter()
    train(config, *data, on_round=lambda record: stamps.append(time.perf_counter()), workdir=workdir)
    return [b - a for a, b in zip(stamps, stamps[1:])], stamps[0] - start


def state_bytes(result) -> tuple[int, int]:
    down = sum(v.numel() * v.element_size() for v in result.state.values())
    return down, down  # FedAvg: the global state down, a delta of the same size back


def bench(name: str, threads: int, workdir: Path) -> dict:
    path, overrides = SETTINGS[name]
    config = load_config(REPO / path, [*overrides, *COMMON])
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    data = (prepared, federated)
    torch.set_num_threads(threads)
    in_rounds, in_first = timed_rounds(config, data, workdir / f"{name}-inprocess")

    started = time.perf_counter()
    sites = loopback_sites(prepared, federated, workdir / f"{name}-sites", node_auth=False)
    with Federation(Runtime(REPO / ".venv-site", state_dir() / "flower", threads), sites) as federation:
        listening = time.perf_counter() - started
        flower = load_config(REPO / path, [*overrides, *COMMON, "train.transport=flower",
                                           f"flower.superlink={federation.address}", "flower.insecure=true",
                                           f"flower.threads_per_site={threads}"])
        flower_dir = workdir / f"{name}-flower"
        fl_rounds, fl_first = timed_rounds(flower, data, flower_dir)
    timings = json.loads((flower_dir / TIMINGS_FILE).read_text())
    result = train(config, *data, workdir=workdir / f"{name}-inprocess")
    down, up = state_bytes(result)
    exchange = statistics.median(t["exchange_seconds"] for t in timings[1:])
    flower_round, in_round = statistics.median(fl_rounds), statistics.median(in_rounds)
    return {
        "setting": name, "sites": federated.num_clients, "threads_per_process": threads,
        "inprocess_round_s": round(in_round, 3), "flower_round_s": round(flower_round, 3),
        "ratio": round(flower_round / in_round, 2),
        "startup_processes_s": round(listening, 1),
        "startup_serverapp_and_query_s": round(fl_first - in_first, 1),
        "bytes_down_per_round": down * federated.num_clients, "bytes_up_per_round": up * federated.num_clients,
        "flower_exchange_s": round(exchange, 3), "flower_server_side_s": round(flower_round - exchange, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETTINGS), default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (in-process run too)")
    args = parser.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores; load before: {load}")
    with tempfile.TemporaryDirectory(prefix="fedmm-federation-bench-") as tmp:
        for name in [args.only] if args.only else list(SETTINGS):
            row = bench(name, args.threads, Path(tmp))
            print(json.dumps(row))
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
