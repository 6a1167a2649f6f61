"""Contribution-audit cost and accuracy on real rounds: the default smartwatch model and validation set.

    .venv/bin/python benchmarks/audit_bench.py --fast-vs-exact # the default run's audit: fast vs exact, ~2 minutes
    .venv/bin/python benchmarks/audit_bench.py                 # about 10 minutes on 2 idle CPU cores
    .venv/bin/python benchmarks/audit_bench.py --full          # all 65,536 coalitions of the 16-client round
    .venv/bin/python benchmarks/audit_bench.py --clients 10 --rounds 1 --seeds 2   # a quick look
    .venv/bin/python benchmarks/audit_bench.py --scale 8 100 1000 --threads 1    # the audit at scale

Trains short FedAvg runs (``configs/default.yaml`` model and data, Dirichlet clients, 10 and
16 of them) and audits the last stored round. Per client count it prints seconds per round
of exact Shapley (2^n coalition models on the validation set) batched and with the
one-model-at-a-time loop, their speedup (both timed alternately on the same coalitions,
best of ``--repeats``) and largest value difference, throughput in coalition-samples per
second next to one model's plain forward pass on a big batch, the vmap backend, and the
opt-in linearised game (cost and error against the true game). Timings on a subset of the
coalitions are extrapolated to 2^n and marked so.

``--fast-vs-exact`` audits the default pipeline run (``configs/default.yaml``; trained
first unless its checkpoints exist) three ways: the default audit (non-overlapping
validation windows, sampled coalitions under the Monte Carlo stopping rule), the exact game
on the same windows, and the exact game on every window (the audit before issue 10), and
prints their seconds and the fast audit's error against the exact one in standard errors.
On a CUDA machine ``--backend vmap`` measures the vmap backend the same way.

``--scale N ...`` trains two rounds of IID clients (default model, float32 update store) per
count and prints, per count, one JSON line and a table row: CPU seconds of the second
round's training and of its audit (default audit config, from the int8 update store, as the
pipeline reads it), their ratio, the round's update-store size at each precision, the int8
store's effect on the values (max |value(int8) - value(float32)| / SE, same draws), and the
audit's error against a high-budget run of the same estimator (``--reference-evaluations``
coalitions; exact enumeration where it is cheaper): max |error| / SE, the RMS of
error / its Monte Carlo SE (near 1 when that SE is honest) and the share of clients whose
error is within 1.96 Monte Carlo SEs.

At the largest client count: estimator overhead on a table utility (everything but model
evaluations) and the Spearman correlation with exact values of sampled estimators at <= 10%
of the exact evaluations. The exact reference needs all 2^n coalitions: without ``--full``
it is computed on a stratified validation subset (``--spearman-val`` samples), as printed.
On a shared machine use ``--threads 1 --clock cpu``: seconds are then CPU seconds of one core.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedmm import runtime  # noqa: E402

runtime.configure()

from scipy.stats import spearmanr  # noqa: E402

from fedmm.artifacts import read_json  # noqa: E402
from fedmm.audit.exact import enumerate_coalitions, exact_from_table, leave_one_out, utility_table  # noqa: E402
from fedmm.audit.game import CachedUtility, TableGame  # noqa: E402
from fedmm.audit.rounds import audit_round, load_round_game, make_statistic  # noqa: E402
from fedmm.audit.run import audit_validation  # noqa: E402
from fedmm.audit.sampling import MaxEvaluations, msr_banzhaf, permutation_shapley  # noqa: E402
from fedmm.config import AuditConfig, load_config  # noqa: E402
from fedmm.data.federated import partition_and_mask, split_tensors  # noqa: E402
from fedmm.data.prepare import prepare  # noqa: E402
from fedmm.fl.messages import ClientUpdate  # noqa: E402
from fedmm.fl.training import train  # noqa: E402
from fedmm.fl.updates import LAYOUT_FILE, PRECISIONS, UpdateStore  # noqa: E402

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def timed(function, *args):
    start = clock()
    out = function(*args)
    return out, clock() - start


def best_of(repeats: int, *functions):
    """Call the functions alternately ``repeats`` times: last outputs and best time of each."""
    best = [np.inf] * len(functions)
    outs = [None] * len(functions)
    for _ in range(repeats):
        for j, (function, args) in enumerate(functions):
            outs[j], seconds = timed(function, *args)
            best[j] = min(best[j], seconds)
    return outs, best


def last_round_game(args, prepared, num_clients: int, workdir: Path):
    """Train a short run with ``num_clients`` clients; the game of its last stored round."""
    config = load_config(args.config, [
        f"partition.scheme={args.scheme}", f"partition.num_clients={num_clients}", f"partition.alpha={args.alpha}",
        f"train.rounds={args.rounds}", "train.centralized=false", "train.device=cpu", f"seed={args.seed}",
    ])
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    result, seconds = timed(train, config, prepared, federated, None, workdir / f"clients{num_clients}")
    path = UpdateStore(result.updates_dir).rounds()[-1]
    audit = AuditConfig(metric=args.metric, memory_mb=args.memory_mb, backend=args.backend)
    return load_round_game(path, result.spec, split_tensors(prepared, "val", "cpu"), audit), seconds


def forward_throughput(game, reps: int) -> float:
    """Samples per second of one model (the grand coalition) on the validation set repeated ``reps``
    times as one batch (best of 3)."""
    model = copy.deepcopy(game.model)
    model.load_state_dict(game.coalition_state(np.ones(game.n_players, dtype=bool)), strict=False)
    inputs = {k: v.repeat(reps, *[1] * (v.ndim - 1)) for k, v in game.data.inputs.items()}
    mask = game.data.mask.repeat(reps, 1)
    with torch.no_grad():
        _, (seconds,) = best_of(3, (model, (inputs, mask)))
    return len(mask) / seconds


def stratified_subset(val, size: int, seed: int):
    """About ``size`` validation samples, the same share of every class."""
    labels = val.labels.numpy()
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, round(size * len(members) / len(labels)))
        picks.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return val.take(torch.as_tensor(np.sort(np.concatenate(picks))))


def residual_line(result) -> str:
    r = result.residuals
    return (f"efficiency {r['efficiency']:.1e} (relative), symmetry {r['symmetry']:.1e} "
            f"({r['n_symmetric_pairs']:.0f} pairs), null player {r['null_player']:.1e} ({r['n_null_players']:.0f})")


def bench_round(args, game) -> tuple[np.ndarray, np.ndarray] | None:
    """Timings of one round's exact evaluation; the true and linearised tables when all of it ran."""
    n, n_val, total = game.n_players, len(game.data), 2**game.n_players
    subset = total if (n <= 10 or args.full) else min(total, args.coalitions)
    coalitions = enumerate_coalitions(n, 0, subset)
    print(f"\nround {game.server_round}: {n} clients, {total:,} coalitions, {n_val} validation samples, "
          f"{game.start.size:,} parameters; backend {game.backend}, chunks of {game.coalition_chunk} coalitions "
          f"x {game.sample_chunk} samples")
    game(coalitions[:2])  # warm-up
    values, batched_s = timed(game, coalitions)
    extrapolated = "" if subset == total else f"  [{subset:,} coalitions timed, extrapolated]"
    print(f"  batched exact:     {batched_s * total / subset:8.1f} s/round  "
          f"{subset * n_val / batched_s:9,.0f} coalition-samples/s{extrapolated}")

    m = min(subset, args.loop_coalitions)
    pair = (game, (coalitions[:m],)), (game.utilities_loop, (coalitions[:m],))
    (fast, ref), (fast_s, loop_s) = best_of(args.repeats, *pair)
    print(f"  loop reference:    {loop_s * total / m:8.1f} s/round  {m * n_val / loop_s:9,.0f} coalition-samples/s"
          f"  [{m} coalitions, alternating with batched, best of {args.repeats}, extrapolated]")
    print(f"  batched vs loop on the same {m} coalitions: speedup {loop_s / fast_s:.2f}x, "
          f"max |difference| {np.max(np.abs(fast - ref)):.1e}")
    if args.vmap_coalitions and game.backend != "vmap":
        vm = game.replace(backend="vmap")
        k = min(m, args.vmap_coalitions)
        vm(coalitions[:2])
        vvals, vmap_s = timed(vm, coalitions[:k])
        print(f"  vmap backend:      {vmap_s * total / k:8.1f} s/round  {k * n_val / vmap_s:9,.0f} coalition-samples/s"
              f"  [{k} coalitions, extrapolated]; max |vmap - loop| {np.max(np.abs(vvals - ref[:k])):.1e}")
    reps = -(-4096 // n_val)
    plain, big = forward_throughput(game, 1), forward_throughput(game, reps)
    print(f"  plain forward of one model: {plain:9,.0f} samples/s on the {n_val} validation samples, "
          f"{big:,.0f} on {reps * n_val:,} in one batch (batched exact reaches "
          f"{subset * n_val / batched_s / max(plain, big):.0%} of the better)")

    lin, build_s = timed(game.linearised)
    lin_values, lin_s = timed(lin, enumerate_coalitions(n))
    err = np.abs(lin_values[:subset] - values)
    scale = abs(values[-1] - values[0]) if subset == total else abs(game(np.ones((1, n), bool))[0] - values[0])
    print(f"  linearised game:   {build_s + lin_s:8.2f} s/round (all {total:,} coalitions; {build_s:.2f} s of it "
          f"building the {n} JVPs); error vs true game on {subset:,} coalitions: max {err.max():.1e}, "
          f"mean {err.mean():.1e}, max/|u(N)-u(0)| {err.max() / scale:.1%}")
    if subset < total:
        return None
    exact, _ = exact_from_table(values, n)
    print(f"  axioms on the exact values: {residual_line(exact)}")
    approx = exact_from_table(lin_values, n)[0].values
    print(f"  linearised exact Shapley vs exact: Spearman {spearmanr(approx, exact.values)[0]:.3f}, "
          f"max |difference| / max |value| {np.max(np.abs(approx - exact.values)) / np.abs(exact.values).max():.1%}")
    return values, lin_values


def bench_estimators(args, table: np.ndarray, label: str, lin_table: np.ndarray | None) -> None:
    n = int(np.log2(table.size))
    game = TableGame(table)
    budget = table.size // 10
    print(f"\nestimators at {n} players, exact reference on {label}")
    (exact, banz), exact_s = timed(exact_from_table, table, n)
    print(f"  overhead (table utility, no model evaluations): exact Shapley + Banzhaf + axiom checks from the "
          f"2^{n} table {exact_s:.2f} s")

    def sampled(seed):
        cache = CachedUtility(game, n)
        res = permutation_shapley(cache, n, MaxEvaluations(budget), antithetic=True, batch_size=16, seed=seed)
        leave_one_out(cache, n)
        return res

    _, sampled_s = timed(sampled, 0)
    print(f"  overhead: sampled Shapley (budget {budget:,}) + leave-one-out, cached utility {sampled_s:.2f} s")
    print(f"  axioms: {residual_line(exact)}")
    v = exact.values
    print(f"  exact values: min {v.min():+.2e}, max {v.max():+.2e}, sum {v.sum():+.2e} = u(N) - u(start)")
    if lin_table is not None:
        approx = exact_from_table(lin_table, n)[0].values
        print(f"  linearised game's exact Shapley on the same data: Spearman {spearmanr(approx, v)[0]:.3f}, "
              f"max |difference| / max |value| {np.max(np.abs(approx - v)) / np.abs(v).max():.1%}")
    estimators = {
        "permutation, antithetic": dict(antithetic=True),
        "permutation": dict(),
        "permutation, GTG truncation 1%": dict(truncation_tol=0.01),
    }
    for cap in sorted({budget, AuditConfig().max_evaluations}, reverse=True):
        for name, kw in estimators.items():
            rhos, evals, covered = [], [], []
            for seed in range(args.seeds):
                res = permutation_shapley(game, n, MaxEvaluations(cap), batch_size=16, seed=seed, **kw)
                rhos.append(spearmanr(res.values, v)[0])
                evals.append(res.evaluations)
                lo, hi = res.ci(0.95)
                covered.append(np.mean((lo <= v) & (v <= hi)))
            print(f"  {name:31s} Spearman mean {np.mean(rhos):.3f}, min {np.min(rhos):.3f} over {args.seeds} seeds, "
                  f"<= {max(evals):,} evaluations ({max(evals) / table.size:.1%} of exact); "
                  f"95% CI covers {np.mean(covered):.0%} of exact values")
    rhos = [spearmanr(msr_banzhaf(game, n, MaxEvaluations(budget), seed=s).values, banz.values)[0]
            for s in range(args.seeds)]
    print(f"  {'MSR Banzhaf (vs exact Banzhaf)':31s} Spearman mean {np.mean(rhos):.3f}, min {np.min(rhos):.3f}")


def store_sizes(path: Path, directory: Path) -> tuple[dict[str, float], Path]:
    """MB of one stored round rewritten at every precision (the engine's write path), and its int8 copy."""
    arrays = UpdateStore.read_round(path)
    sizes, shapes = {}, [(e["name"], tuple(e["shape"])) for e in read_json(path.parent / LAYOUT_FILE)]
    offsets = np.cumsum([0] + [int(np.prod(shape)) for _, shape in shapes])

    def state(flat):
        return {name: torch.as_tensor(flat[lo:hi].reshape(shape)) for (name, shape), lo, hi in
                zip(shapes, offsets[:-1], offsets[1:])}

    updates = [ClientUpdate(int(c), int(k), state(d)) for c, k, d in
               zip(arrays["client_ids"], arrays["num_examples"], arrays["deltas"])]
    for precision in PRECISIONS:
        store = UpdateStore(directory / precision, precision)
        store.write_layout(state(arrays["start"]))
        store.write_round(int(path.stem.split("_")[-1]), state(arrays["start"]), updates)
        sizes[precision] = store.rounds()[0].stat().st_size / 1e6
    return sizes, UpdateStore(directory / "int8").rounds()[0]


def audit_errors(audit, reference, exact_reference: bool) -> dict[str, float]:
    """The audit's values against a reference audit of the same round, in standard errors."""
    a, r = audit.rows.set_index("client"), reference.rows.set_index("client").loc[audit.rows["client"]]
    err = (a["value"] - r["value"]).abs()
    mc = np.sqrt(a["mc_stderr"] ** 2 + (0 if exact_reference else r["mc_stderr"] ** 2))
    z = (err / mc.where(mc > 0)).dropna()
    return {"max_error_se": float((err / a["stderr"]).max()), "z_rms": float(np.sqrt((z**2).mean())) if len(z) else 0.0,
            "within_1.96_mc_se": float(np.mean(err <= 1.96 * mc + 1e-15))}


def train_two_rounds(args, n: int, workdir: Path):
    """Two rounds of ``n`` IID clients with a float32 update store: config, data, result, CPU s of round 2."""
    from fedmm import workflow
    from fedmm.fl import engine

    config = load_config(args.config, [
        "partition.scheme=iid", f"partition.num_clients={n}", "partition.min_samples=1", "train.rounds=2",
        "train.centralized=false", "train.device=cpu", f"seed={args.seed}"])
    prepared = workflow.prepare_data(config)
    federated = workflow.make_partitions(config, prepared)
    ticks = [time.process_time()]
    default_store, engine.UpdateStore = engine.UpdateStore, partial(UpdateStore, precision="float32")
    try:
        result = train(config, prepared, federated, lambda _: ticks.append(time.process_time()), workdir)
    finally:
        engine.UpdateStore = default_store
    return config, prepared, result, ticks[-1] - ticks[-2]


def scale(args) -> None:
    """The audit at scale: cost against training, update-store size and error, error against a high budget."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU seconds (process time)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.scale:
            config, prepared, result, train_s = train_two_rounds(args, n, Path(tmp) / f"clients{n}")
            path = UpdateStore(result.updates_dir).rounds()[-1]
            sizes, int8 = store_sizes(path, Path(tmp) / f"sizes{n}")
            val, groups, key = audit_validation(prepared, config.audit)
            stat = make_statistic(config.audit, groups, key, val.labels.numpy(), prepared.dataset.num_classes, 0)
            game = load_round_game(int8, result.spec, val, config.audit)
            start = time.process_time()
            audit = audit_round(game, config.audit, stat)
            audit_s = time.process_time() - start
            full = audit_round(load_round_game(path, result.spec, val, config.audit), config.audit, stat)
            exact = n <= 12
            ref_config = config.audit.model_copy(update={"estimator": "exact"} if exact else {
                "scale_permutations": max(2 * config.audit.scale_permutations, args.reference_evaluations // (n - 1)),
                "min_samples": max(config.audit.min_samples, args.reference_evaluations // (2 * n)),
                "max_evaluations": args.reference_evaluations, "mc_rel_tol": 1e-3})
            reference = audit_round(game, ref_config, stat, seed=1)
            row = {"clients": n, "train_round_cpu_s": train_s, "audit_cpu_s": audit_s,
                   "evaluations": audit.record["evaluations"], "method": audit.record["method"],
                   "stop_reason": audit.record["stop_reason"], "store_mb": sizes,
                   "int8_vs_float32_max_error_se": audit_errors(audit, full, True)["max_error_se"],
                   "reference_evaluations": reference.record["evaluations"],
                   **{f"vs_reference_{k}": v for k, v in audit_errors(audit, reference, exact).items()}}
            row["audit_over_training"] = row["audit_cpu_s"] / row["train_round_cpu_s"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{'clients':>7} {'train s':>8} {'audit s':>8} {'ratio':>6} {'evals':>6} {'int8 MB':>8} {'f16 MB':>7} "
          f"{'f32 MB':>7} {'int8 err/SE':>11} {'ref evals':>9} {'err/SE':>7} {'z rms':>6} {'in 1.96 MC SE':>13}")
    for r in rows:
        mb = r["store_mb"]
        print(f"{r['clients']:>7} {r['train_round_cpu_s']:>8.2f} {r['audit_cpu_s']:>8.2f} {r['audit_over_training']:>6.2f} "
              f"{r['evaluations']:>6} {mb['int8']:>8.2f} {mb['float16']:>7.2f} {mb['float32']:>7.2f} "
              f"{r['int8_vs_float32_max_error_se']:>11.4f} {r['reference_evaluations']:>9} "
              f"{r['vs_reference_max_error_se']:>7.3f} {r['vs_reference_z_rms']:>6.2f} "
              f"{r['vs_reference_within_1.96_mc_se']:>13.0%}")


def fast_vs_exact(args) -> None:
    """The default run's audit, fast and exact: seconds and the fast one's error in standard errors."""
    from fedmm import workflow

    config = load_config(args.config, [f"seed={args.seed}"])
    prepared = workflow.prepare_data(config)
    federated = workflow.make_partitions(config, prepared)
    result = workflow.train_models(config, prepared, federated)
    variants = {
        "fast (default)": {},
        "exact, same windows": {"estimator": "exact"},
        "exact, every window": {"estimator": "exact", "validation_windows": "all"},
    }
    reports = {}
    print(f"\n{config.partition.scheme} split, {federated.num_clients} clients, {len(result.history)} rounds, "
          f"backend {args.backend}")
    for name, changes in variants.items():
        audit = config.audit.model_copy(update={"backend": args.backend, **changes})
        report, seconds = timed(workflow.audit_contributions, config.model_copy(update={"audit": audit}), prepared,
                                federated, result)
        reports[name] = report
        inference = report.meta.game["inference"]
        print(f"  {name:22s} {seconds:6.1f} s  {sum(r['evaluations'] for r in report.meta.rounds):6d} evaluations, "
              f"{inference['n_samples']} windows in {inference['n_groups']} {inference['group_key']} clusters")
    fast, exact, every = (reports[k].clients.set_index("client") for k in variants)
    err = (fast["value"] - exact["value"]).abs() / exact["stderr"]
    rf, re = (reports[k].rounds.set_index(["round", "client"]) for k in list(variants)[:2])
    round_err = (rf["value"] - re["value"]).abs() / re["stderr"].where(re["stderr"] > 0)
    print(f"  fast vs exact (same windows): cumulative values max |error| {err.max():.3f} SE (mean {err.mean():.3f}), "
          f"per-round values max {round_err.max():.3f} SE; cumulative SE ratio "
          f"{(fast['stderr'] / exact['stderr']).min():.3f}-{(fast['stderr'] / exact['stderr']).max():.3f}")
    shift = (exact["value"] - every["value"]).abs() / every["stderr"]
    print(f"  non-overlapping vs every window (exact): values differ by at most {shift.max():.3f} SE; SE ratio "
          f"{(exact['stderr'] / every['stderr']).min():.2f}-{(exact['stderr'] / every['stderr']).max():.2f}; "
          f"flags {dict(fast['flags'])} / {dict(exact['flags'])} / {dict(every['flags'])}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 16])
    parser.add_argument("--scheme", default="dirichlet", choices=["iid", "dirichlet", "quantity"])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2, help="training rounds; the last one is audited")
    parser.add_argument("--metric", default="neg_log_loss", choices=["accuracy", "macro_f1", "neg_log_loss"])
    parser.add_argument("--backend", default="auto", choices=["auto", "vmap", "sequential"])
    parser.add_argument("--memory-mb", type=float, default=256.0)
    parser.add_argument("--coalitions", type=int, default=512, help="coalitions timed beyond 10 clients (no --full)")
    parser.add_argument("--loop-coalitions", type=int, default=48, help="coalitions timed batched vs loop")
    parser.add_argument("--repeats", type=int, default=3, help="alternating batched/loop timings, best kept")
    parser.add_argument("--vmap-coalitions", type=int, default=16, help="coalitions timed on vmap (0: skip)")
    parser.add_argument("--full", action="store_true", help="evaluate all 2^n coalitions at every client count")
    parser.add_argument("--spearman-val", type=int, default=48, help="validation samples for the exact reference")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--fast-vs-exact", action="store_true", help="only compare the default run's fast and exact audits")
    parser.add_argument("--scale", type=int, nargs="*", help="only the audit at scale, at these client counts")
    parser.add_argument("--reference-evaluations", type=int, default=5000, help="--scale: the reference's budget")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="cpu: process CPU time, steadier on a shared machine (use with --threads 1)")
    args = parser.parse_args(argv)

    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    if args.scale:
        scale(args)
        return
    if args.fast_vs_exact:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
        fast_vs_exact(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; metric {args.metric}, "
          f"{args.scheme} partition, {args.rounds} training rounds")
    prepared = prepare(load_config(args.config).data, args.seed)
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.clients:
            game, train_s = last_round_game(args, prepared, n, Path(tmp))
            print(f"\n[trained {args.rounds} rounds with {n} clients in {train_s:.0f} s]")
            tables = bench_round(args, game)
            if n == max(args.clients):
                if tables is not None:
                    reference = (tables[0], f"the full validation set ({len(game.data)} samples)", tables[1])
                else:
                    small = game.replace(data=stratified_subset(game.data, args.spearman_val, args.seed))
                    table, seconds = timed(utility_table, small, n)
                    lin_table = utility_table(small.linearised(), n)
                    print(f"  exact reference table on a {len(small.data)}-sample stratified validation subset: "
                          f"{seconds:.0f} s")
                    reference = (table, f"a {len(small.data)}-sample stratified validation subset", lin_table)
    bench_estimators(args, *reference)


if __name__ == "__main__":
    main()
