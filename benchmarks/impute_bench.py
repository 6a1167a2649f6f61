"""Imputation on real data: every imputer fitted federatedly over the clients of the trained
FedAvg model, scored on the complete held-out recordings, with the issue's three targets.

    .venv/bin/python benchmarks/impute_bench.py                       # smartwatch, configs/default.yaml
    .venv/bin/python benchmarks/impute_bench.py --config configs/uci_mfeat.yaml --impute diffusion.samples=8

The global model comes from ``fedmm.fl.training.train``, which resumes from (or reuses) the
checkpoint in the state folder, so a second run only fits and evaluates the imputers. It
prints the table at the 50% missing rate, fit times, the three targets with PASS/FAIL, and
the wall time of imputing the whole test set with diffusion; the full report (CSV, Parquet,
Markdown, plots) goes to ``--out``.

The learned imputers' settings are chosen on the validation split (``impute.select``, see
``fedmm.impute.select``); the test split scores only the chosen ones.

Targets, as checked here:
1. at 50% missing, the best learned imputer (knn, iterative, generator, diffusion) recovers at
   least half of the zero-fill-to-oracle macro-F1 gap, averaged over the patterns;
2. diffusion's NRMSE in the shared latent space is at most kNN's at every pattern and rate;
3. imputing the whole test set (every sample missing a random proper subset of modalities:
   one of two on the smartwatch; encoding included) with diffusion takes at most 10 s.

``--threads`` caps torch and BLAS threads (default 1): on shared cores, threads of small
problems stall each other and a fit can take tens of times longer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEARNED = ("knn", "iterative", "generator", "diffusion")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pipeline config override")
    parser.add_argument("--impute", action="append", default=[], metavar="KEY=VALUE", help="impute config override")
    parser.add_argument("--split", default="test", choices=("test", "test_subjects"),
                        help="evaluation split (complete samples; settings are chosen on the validation split)")
    parser.add_argument("--impute-seed", type=int, help="seed of the imputers and masks (default: the config's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "reports" / "impute"))
    return parser.parse_args()


def time_diffusion(imputer, model, test, seed: int) -> tuple[float, float]:
    """Wall seconds to encode the observed modalities and impute the rest, and the sampling share."""
    import torch

    from fedmm.impute.evaluate import draw_mask

    mask = torch.as_tensor(draw_mask("random", 1.0, len(test), model.modalities, seed))
    observed = {
        name: x * mask[:, m].reshape(-1, *[1] * (x.ndim - 1)) for m, (name, x) in enumerate(test.inputs.items())
    }
    with torch.no_grad():
        start = time.perf_counter()
        embeddings = model.embed(observed, mask)
        encoded = time.perf_counter()
        imputer.impute(embeddings, mask)
        done = time.perf_counter()
    return done - start, done - encoded


def main() -> int:
    args = parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    sys.path.insert(0, str(REPO))

    from fedmm import runtime

    runtime.configure()

    import pandas as pd
    import torch

    from fedmm.config import apply_overrides, load_config
    from fedmm.data.federated import partition_and_mask, split_tensors
    from fedmm.data.prepare import prepare
    from fedmm.fl.training import train
    from fedmm.impute.clients import client_datasets, split_owners
    from fedmm.impute.report import ImputationReport
    from fedmm.impute.select import evaluate_selected
    from fedmm.impute_config import ImputeConfig

    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    impute_config = ImputeConfig.model_validate(apply_overrides({}, args.impute))
    print(f"config {args.config} {args.set} seed={config.seed} impute seed={args.impute_seed} "
          f"threads={args.threads} cpus={os.cpu_count()}")
    print(f"impute {impute_config.model_dump_json()}")

    begin = time.perf_counter()
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
    result = train(config, prepared, federated)
    model = result.model()
    print(f"global model ready in {time.perf_counter() - begin:.1f} s "
          f"({len(result.history)} rounds, test macro-F1 {result.history[-1].score('test', 'macro_f1', float('nan')):.3f})")

    clients = client_datasets(prepared, federated)
    seed = config.seed if args.impute_seed is None else args.impute_seed
    split = lambda name: (split_tensors(prepared, name, "cpu"), split_owners(prepared, federated, name, seed))  # noqa: E731
    test = split(args.split)[0]
    report, imputers = evaluate_selected(impute_config, clients, model, split("val"), split(args.split), seed)
    report.save(args.out)
    print(f"{len(clients)} clients, {len(test)} {args.split} samples; report in {args.out}\n")
    selection = pd.DataFrame(report.meta["selection"])
    if len(selection):
        print("settings chosen on the validation split (mean share of the gap recovered there):\n"
              + selection.to_string(index=False) + "\n")
    print("fit seconds: " + ", ".join(f"{name} {imp.fit_seconds:.1f}" for name, imp in imputers.items()))
    print("\nAt 50% missing:\n")
    print(ImputationReport(report.at(0.5), report.meta).markdown())

    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    half = report.at(0.5)
    gaps = half[half.imputer.isin(LEARNED)].pivot(index="imputer", columns="pattern", values="gap_recovered")
    if len(gaps):
        gaps["mean"] = gaps.mean(axis=1)
        best = gaps["mean"].idxmax()
        with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
            print("share of the zero-fill-to-oracle macro-F1 gap recovered at 50%:\n" + gaps.to_string() + "\n")
        print(f"target 1: best learned imputer at 50% ({best}) recovers {gaps.loc[best, 'mean']:.3f} of the gap "
              f"(>= 0.5): {verdict(gaps.loc[best, 'mean'] >= 0.5)}")

    if {"diffusion", "knn"} <= set(imputers):
        latent = report.table.pivot_table(index=["pattern", "rate"], columns="imputer", values="nrmse_latent")
        wins = latent["diffusion"] <= latent["knn"]
        at_half = latent.xs(0.5, level="rate")[["diffusion", "knn"]].mean()
        print(f"target 2: diffusion's latent NRMSE <= kNN's at {int(wins.sum())}/{len(wins)} (pattern, rate); "
              f"at 50%, mean over patterns: diffusion {at_half['diffusion']:.3f}, kNN {at_half['knn']:.3f}: "
              f"{verdict(bool(wins.all()))}")

    if "diffusion" in imputers:
        seconds, sampling = time_diffusion(imputers["diffusion"], model, test, seed)
        print(f"target 3: diffusion imputes all {len(test)} {args.split} samples (each missing a random proper "
              f"subset of modalities) in {seconds:.2f} s (sampling {sampling:.2f} s of it; "
              f"{impute_config.diffusion.sampling_steps} DDIM steps x {impute_config.diffusion.samples} samples) "
              f"(<= 10 s): {verdict(seconds <= 10)}")
    print(f"\nfinished in {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
