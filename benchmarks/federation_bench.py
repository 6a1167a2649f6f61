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
    .venv/bin/python benchmarks/federation_bench.py --deployed 3 8  # deployed, across namespaces (root)

``--deployed N...`` runs the deployed mode instead (``tests/netns_support.py``): a SuperLink
host, a coordinator and N sites in network namespaces with private disks, TLS, node
authentication, the ServerApp on the coordinator, FedAvg on the tiny config over N IID sites.
It prints the round wall time (median over rounds 2..R) against the same sites trained
in-process, start-up (SuperLink listening, all sites connected, the run's first round minus
one round), bytes per round on the wire: the SuperLink host's link to the sites network
(TLS, HTTP and Flower framing included; the run's query and start-up spread over its rounds),
and where a round goes: the ServerApp's wait from sending to the last reply (``exchange_s``)
and the slowest site's own training time in it (``site_train_s``).

Run it on an idle machine and quote ``uptime``: several torch processes on 2 cores contend.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if "FEDMM_HOME" not in os.environ:  # a state folder of its own, removed when the benchmark exits
    os.environ["FEDMM_HOME"] = tempfile.mkdtemp(prefix="fedmm-federation-bench-")
    atexit.register(shutil.rmtree, os.environ["FEDMM_HOME"], ignore_errors=True)

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


def link_bytes(hosts, index: int = 0) -> int:
    """Bytes both ways through the switch side of a party's link (leg ``index``: the SuperLink's sites leg)."""
    done = subprocess.run(["ip", "-n", hosts.ns("switch"), "-s", "-j", "link", "show", f"v{hosts.tag}{index}"],
                          capture_output=True, text=True, check=True)
    stats = json.loads(done.stdout)[0]["stats64"]
    return stats["rx"]["bytes"] + stats["tx"]["bytes"]


def bench_deployed(sites: int, rounds: int, workdir: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from netns_support import Deployment, Hosts

    from fedmm.fl.deployed import CoordinatorData, export_sites, in_process_reference

    overrides = ["partition.scheme=iid", f"partition.num_clients={sites}", "train.centralized=false",
                 f"train.rounds={rounds}", "flower.round_timeout=300"]
    config = load_config(REPO / "configs/tiny.yaml", overrides)
    root = workdir / f"deployed{sites}"
    exported = export_sites(config, root / "stage" / "export")
    with Hosts(root, sites) as hosts:
        deployment = Deployment(hosts, REPO, root / "logs", exported["sites"], exported["coordinator"])
        startup = deployment.start(timeout=600)
        before, started = link_bytes(hosts), time.time()
        run = deployment.coordinator("bench", overrides)
        code = run.wait(3600)
        wire = link_bytes(hosts) - before
        log = (root / "logs" / "bench.log").read_text()
        timings = json.loads(hosts.get("coordinator", f"bench/train/{TIMINGS_FILE}")) if code == 0 else []
        config = load_config(REPO / "configs/tiny.yaml", [*overrides, *deployment.overrides()])
    if code != 0:
        raise SystemExit(f"deployed run failed:\n{log[-3000:]}")
    stamps = [float(line.split()[2]) for line in log.splitlines() if line.startswith("round ")]
    torch.set_num_threads(1)
    local = []
    in_process_reference(config, CoordinatorData.from_files(*exported["coordinator"]), exported["sites"],
                         root / "inprocess", on_round=lambda record: local.append(time.perf_counter()))
    flower_round = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    in_round = statistics.median(b - a for a, b in zip(local, local[1:]))
    return {
        "setting": f"deployed{sites}", "sites": sites, "rounds": rounds,
        "inprocess_round_s": round(in_round, 3), "deployed_round_s": round(flower_round, 3),
        "floor_s": round(3.5 + in_round, 2),
        "startup_superlink_s": round(startup["superlink_s"], 1), "startup_sites_s": round(startup["sites_s"], 1),
        "startup_run_s": round(stamps[0] - started - flower_round, 1),
        "wire_bytes_per_round": wire // rounds,
        "exchange_s": round(statistics.median(t["exchange_seconds"] for t in timings[1:]), 2),
        "site_train_s": site_train_seconds(root / "logs", sites),
    }


def site_train_seconds(logs: Path, sites: int) -> float:
    """The slowest site's training time per round (median over rounds 2..R), from ``fedmm site``'s round lines."""
    slowest: dict[int, float] = {}
    for k in range(sites):
        for line in (logs / f"site{k}.log").read_text().splitlines():
            if line.startswith("round ") and " trained (" in line and not line.startswith("round 1 "):
                number, seconds = int(line.split()[1]), float(line.rsplit(", ", 1)[1].removesuffix(" s)"))
                slowest[number] = max(slowest.get(number, 0.0), seconds)
    return round(statistics.median(slowest.values()), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETTINGS), default=None)
    parser.add_argument("--deployed", type=int, nargs="+", default=None, metavar="SITES",
                        help="deployed mode across network namespaces with these site counts (root)")
    parser.add_argument("--rounds", type=int, default=4, help="--deployed: rounds per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (in-process run too)")
    args = parser.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores; load before: {load}")
    with tempfile.TemporaryDirectory(prefix="fedmm-federation-bench-") as tmp:
        for sites in args.deployed or []:
            print(json.dumps(bench_deployed(sites, args.rounds, Path(tmp))), flush=True)
        for name in ([args.only] if args.only else list(SETTINGS)) if args.deployed is None else []:
            row = bench(name, args.threads, Path(tmp))
            print(json.dumps(row))
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
