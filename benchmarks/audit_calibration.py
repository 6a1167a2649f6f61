"""Calibration of the contribution audit's flags on the smartwatch data, against the targets of issue 10.

    .venv/bin/python benchmarks/audit_calibration.py                      # everything (hours on 2 cores)
    .venv/bin/python benchmarks/audit_calibration.py --only honest        # the honest federations only
    .venv/bin/python benchmarks/audit_calibration.py --report             # print the table of finished cells

Honest federations: the default config (model, data, 20 rounds) with the natural split
(one client per subject) and with Dirichlet(alpha=0.5) label skew over as many clients,
``--seeds`` seeds each. Target: at most 5% of honest client-audits flagged harmful.
Corrupted federations: ``--corrupted`` of ``--clients`` IID clients corrupted one way, the
same seeds. Targets: ``scaled_update`` x-2 and x10, ``label_flip`` at 80% and both free-rider
kinds flagged (every corrupted client) in at least 9 of 10 seeds; ``label_flip`` at 50% and
``feature_noise`` are reported as they come out.

Every (scenario, seed) cell is written to ``--out/<scenario>_seed<k>.json`` when it
finishes; a rerun skips finished cells, so the script can be interrupted and resumed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedmm import runtime

HONEST = {
    "honest_natural": ["partition.scheme=natural"],
    "honest_dirichlet": ["partition.scheme=dirichlet", "partition.alpha=0.5", "partition.num_clients=8"],
}
CORRUPTED = {  # name: (corruption, whether issue 10 sets a detection target)
    "scaled_update_x-2": ({"kind": "scaled_update", "scale": -2.0}, True),
    "scaled_update_x10": ({"kind": "scaled_update", "scale": 10.0}, True),
    "label_flip_80": ({"kind": "label_flip", "fraction": 0.8}, True),
    "free_rider_zero": ({"kind": "free_rider_zero"}, True),
    "free_rider_noise": ({"kind": "free_rider_noise", "noise_std": 0.01}, True),
    "label_flip_50": ({"kind": "label_flip", "fraction": 0.5}, False),
    "feature_noise": ({"kind": "feature_noise", "noise_std": 2.0}, False),
}


def overrides(name: str, seed: int, args) -> list[str]:
    common = [f"seed={seed}", "train.centralized=false", f"registry.model_name=calibration-{name}"]
    if name in HONEST:
        return [*HONEST[name], *common]
    corruption = [{"client": c, **CORRUPTED[name][0]} for c in range(args.corrupted)]
    return ["partition.scheme=iid", f"partition.num_clients={args.clients}",
            f"corruption.clients={json.dumps(corruption)}", *common]


def train_and_audit(config):
    """Prepare, partition, train and audit one config: (audit report, train seconds, audit seconds)."""
    from fedmm import workflow

    prepared = workflow.prepare_data(config)
    federated = workflow.make_partitions(config, prepared)
    start = time.perf_counter()
    result = workflow.train_models(config, prepared, federated)
    trained = time.perf_counter()
    report = workflow.audit_contributions(config, prepared, federated, result)
    return report, trained - start, time.perf_counter() - trained


def run_cell(name: str, seed: int, args) -> dict:
    from fedmm.config import load_config

    report, train_s, audit_s = train_and_audit(load_config(args.config, overrides(name, seed, args)))
    truth = {row["client"]: row for row in report.meta.corruption_ground_truth}
    clients = [
        {"client": int(r.client), "value": float(r.value), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high),
         "p_holm": float(r.p_holm), "verdict": r.verdict, "flags": [f for f in r.flags.split(",") if f],
         "median_norm_ratio": float(r.median_norm_ratio), "rms_cosine_others": float(r.rms_cosine_others),
         "median_cosine": float(r.median_cosine), "p_opposed": float(r.p_opposed), "num_examples": int(r.num_examples),
         "corrupted": bool(truth.get(int(r.client), {}).get("corrupted", False))}
        for r in report.clients.itertuples()
    ]
    return {"scenario": name, "seed": seed, "overrides": overrides(name, seed, args), "clients": clients,
            "inference": report.meta.game["inference"], "train_s": train_s, "audit_s": audit_s}


def summarise(cells: list[dict], seeds: int) -> None:
    by = {}
    for cell in cells:
        by.setdefault(cell["scenario"], []).append(cell)
    print("\nhonest federations (target: at most 5% of client-audits flagged harmful)")
    print(f"{'federation':<18} {'seeds':>5} {'client-audits':>13} {'harmful':>8} {'rate':>6} {'any flag':>8} "
          f"{'insufficient ev.':>16} {'runs w/ harmful':>15} {'audit s (median)':>16}")
    honest_total = honest_harmful = 0
    for name in HONEST:
        runs = by.get(name, [])
        audits = [c for run in runs for c in run["clients"]]
        harmful = sum("harmful" in c["flags"] for c in audits)
        flagged = sum(bool(c["flags"]) for c in audits)
        honest_total, honest_harmful = honest_total + len(audits), honest_harmful + harmful
        rate = harmful / len(audits) if audits else float("nan")
        print(f"{name:<18} {len(runs):>5} {len(audits):>13} {harmful:>8} {rate:>6.1%} {flagged:>8} "
              f"{sum(c['verdict'] == 'insufficient evidence' for c in audits):>16} "
              f"{sum(any('harmful' in c['flags'] for c in r['clients']) for r in runs):>15} "
              f"{_median([r['audit_s'] for r in runs]):>16.1f}")
    if honest_total:
        print(f"{'all honest':<18} {'':>5} {honest_total:>13} {honest_harmful:>8} {honest_harmful / honest_total:>6.1%}")
    print(f"\ncorrupted federations (3 of 10 clients; target: every corrupted client flagged in >= 9 of {seeds} seeds)")
    print(f"{'scenario':<18} {'target':>6} {'seeds':>5} {'all flagged':>11} {'corrupted flagged':>17} "
          f"{'flags seen':<28} {'honest harmful':>14} {'honest any flag':>15} {'corrupted value (mean)':>22} "
          f"{'value > 0':>9}")
    for name, (_, target) in CORRUPTED.items():
        runs = by.get(name, [])
        if not runs:
            continue
        bad = [c for r in runs for c in r["clients"] if c["corrupted"]]
        honest = [c for r in runs for c in r["clients"] if not c["corrupted"]]
        all_flagged = sum(all(c["flags"] for c in r["clients"] if c["corrupted"]) for r in runs)
        kinds = sorted({f for c in bad for f in c["flags"]})
        mean_value = sum(c["value"] for c in bad) / len(bad)
        print(f"{name:<18} {'yes' if target else 'report':>6} {len(runs):>5} {all_flagged:>11} "
              f"{sum(bool(c['flags']) for c in bad):>9}/{len(bad):<7} {','.join(kinds) or '-':<28} "
              f"{sum('harmful' in c['flags'] for c in honest):>6}/{len(honest):<7} "
              f"{sum(bool(c['flags']) for c in honest):>7}/{len(honest):<7} {mean_value:>22.3f} "
              f"{sum(c['value'] > 0 for c in bad):>5}/{len(bad):<3}")


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return float("nan") if not xs else (xs[len(xs) // 2] + xs[(len(xs) - 1) // 2]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per federation (default 5 honest, 10 corrupted)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--corrupted", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names, or 'honest' / 'corrupted'")
    parser.add_argument("--out", default="reports/audit_calibration")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished cells")
    args = parser.parse_args()
    runtime.configure()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [*HONEST, *CORRUPTED]
    if args.only:
        groups = {"honest": list(HONEST), "corrupted": list(CORRUPTED)}
        names = [n for n in names if n in args.only or any(n in groups.get(o, []) for o in args.only)]
    if not args.report:
        # seed by seed across scenarios, so an interrupted calibration has every scenario's first seeds
        cells = sorted(((seed, name) for name in names for seed in range(args.seeds or (5 if name in HONEST else 10))),
                       key=lambda cell: (cell[1] not in HONEST, cell[0]))
        for seed, name in cells:
            path = out / f"{name}_seed{seed}.json"
            if path.exists():
                continue
            cell = run_cell(name, seed, args)
            path.write_text(json.dumps(cell, indent=1))
            flagged = {c["client"]: c["flags"] for c in cell["clients"] if c["flags"]}
            print(f"{name} seed {seed}: flags {flagged or 'none'}; train {cell['train_s']:.0f} s, "
                  f"audit {cell['audit_s']:.1f} s", flush=True)
    finished = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    summarise(finished, max(10, args.seeds or 10))


if __name__ == "__main__":
    main()
