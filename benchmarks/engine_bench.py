"""Round-engine throughput: FedAvg on the smartwatch data, Dirichlet clients, timed by phase.

    .venv/bin/python benchmarks/engine_bench.py --clients 10 100 --rounds 3

For each client count it prints client updates per second, the median round wall time and
the share of a round spent outside client compute (the local training loops), then where
that share goes: client setup and payload, the update store, aggregation, evaluation and
the checkpoint. Phases are timed around the engine's functions in wall time
(``time.perf_counter``) and in this process's CPU time (``time.process_time``, which other
processes on a shared machine disturb far less); ``--profile`` adds a cProfile listing of
the slowest functions. The first optimizer a process builds imports ``torch._dynamo``
(1-2 s): that happens once, before timing.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedmm import runtime  # noqa: E402

runtime.configure()

from fedmm.config import load_config  # noqa: E402
from fedmm.data.federated import partition_and_mask  # noqa: E402
from fedmm.data.prepare import prepare  # noqa: E402
from fedmm.fl import client, engine  # noqa: E402
from fedmm.fl.training import train  # noqa: E402
from fedmm.fl.updates import UpdateStore  # noqa: E402

PHASES = {
    "local training": (client, "run_epochs"),
    "client total": (engine, "client_payload"),
    "update store": (UpdateStore, "write_round"),
    "evaluation": (engine, "evaluate"),
    "checkpoint": (engine, "_save_checkpoint"),
}


@contextlib.contextmanager
def timed_phases(wall: dict[str, float], cpu: dict[str, float]):
    """Accumulate the wall and CPU time of each phase's function while the block runs."""
    originals = {name: getattr(owner, attr) for name, (owner, attr) in PHASES.items()}

    def wrap(name, function):
        def timed(*args, **kwargs):
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                wall[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - start_cpu
        return timed

    for name, (owner, attr) in PHASES.items():
        setattr(owner, attr, wrap(name, originals[name]))
    try:
        yield
    finally:
        for name, (owner, attr) in PHASES.items():
            setattr(owner, attr, originals[name])


def bench(args: argparse.Namespace, num_clients: int, prepared) -> dict:
    overrides = [
        "partition.scheme=dirichlet", f"partition.num_clients={num_clients}", f"partition.alpha={args.alpha}",
        f"partition.min_samples={args.min_samples}", f"train.rounds={args.rounds}", "train.centralized=false",
        f"train.device={args.device}", f"seed={args.seed}", *args.set,
    ]
    config = load_config(args.config, overrides)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    stamps: list[tuple[float, float]] = []
    wall: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    profiler = cProfile.Profile() if args.profile else None
    clock = lambda record=None: stamps.append((time.perf_counter(), time.process_time()))
    with tempfile.TemporaryDirectory() as workdir, timed_phases(wall, cpu):
        if profiler:
            profiler.enable()
        clock()
        result = train(config, prepared, federated, on_round=clock, workdir=Path(workdir))
        if profiler:
            profiler.disable()
    rounds = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    updates = sum(len(record.clients) for record in result.history)
    total, total_cpu = (stamps[-1][i] - stamps[0][i] for i in (0, 1))

    def phases(times: dict[str, float], overall: float) -> dict[str, float]:
        named = {
            "local training": times["local training"],
            "client setup and payload": times["client total"] - times["local training"],
            "update store": times["update store"],
            "evaluation": times["evaluation"],
            "checkpoint": times["checkpoint"],
        }
        return {**named, "other (aggregate, engine)": overall - sum(named.values())}

    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    return {
        "clients": num_clients,
        "updates": updates,
        "updates_per_s": updates / total,
        "round_median_s": statistics.median(rounds),
        "round_times": rounds,
        "total_s": total,
        "total_cpu_s": total_cpu,
        "outside_share": 1 - wall["local training"] / total,
        "outside_share_cpu": 1 - cpu["local training"] / total_cpu,
        "phases": phases(wall, total),
        "phases_cpu": phases(cpu, total_cpu),
        "test_macro_f1": result.history[-1].score("test", "macro_f1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100], help="client counts to run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration")
    parser.add_argument("--min-samples", type=int, default=5, help="smallest client the partitioner may produce")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="config override")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N slowest functions")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    base = load_config(args.config, [f"seed={args.seed}", *args.set])
    prepared = prepare(base.data, base.seed)
    print(f"smartwatch: {len(prepared.indices('train'))} training windows, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, seed {args.seed}, {args.rounds} rounds")
    for num_clients in args.clients:
        r = bench(args, num_clients, prepared)
        print(f"\n{r['clients']} clients: {r['updates_per_s']:.1f} client updates/s, "
              f"round {r['round_median_s']:.3f} s (median; {', '.join(f'{t:.3f}' for t in r['round_times'])}), "
              f"{100 * r['outside_share']:.1f}% of wall time and {100 * r['outside_share_cpu']:.1f}% of CPU time "
              f"outside client compute, test macro-F1 {r['test_macro_f1']:.4f}")
        print(f"  {'phase':<28} {'wall s':>8} {'share':>6} {'CPU s':>8} {'share':>6}")
        for name, seconds in r["phases"].items():
            seconds_cpu = r["phases_cpu"][name]
            print(f"  {name:<28} {seconds:8.3f} {100 * seconds / r['total_s']:5.1f}% "
                  f"{seconds_cpu:8.3f} {100 * seconds_cpu / r['total_cpu_s']:5.1f}%")


if __name__ == "__main__":
    main()
