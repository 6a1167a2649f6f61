"""Plots of a contribution audit, written as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedmm.plotting import pyplot, save_figure

from .result import normal_interval

_FLAG_COLOURS = {"harmful": "tab:red", "free_rider": "tab:gray", "anomalous": "tab:orange"}


def _game_line(frame: pd.DataFrame) -> str:
    row = frame.iloc[0]
    return f"utility: {row['metric']}, {row['weighting']} weights, val sha256 {row['validation_sha256'][:12]}"


def values_heatmap(rounds: pd.DataFrame, path: Path) -> Path:
    """Rounds x clients Shapley values (blank where a client did not take part)."""
    plt = pyplot()
    grid = rounds.pivot(index="round", columns="client", values="value")
    values = grid.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * grid.shape[1] + 2), max(3.0, 0.3 * grid.shape[0] + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index], fontsize=7)
    ax.set_xlabel("client")
    ax.set_ylabel("round")
    ax.set_title(f"Shapley value per round\n{_game_line(rounds)}", fontsize=8)
    fig.colorbar(image, ax=ax, label="value")
    return save_figure(fig, path)


def cumulative_values(clients: pd.DataFrame, ci_level: float, path: Path) -> Path:
    """Cumulative value per client with its CI; flagged clients coloured by their first flag."""
    plt = pyplot()
    order = clients.sort_values("value", ascending=False)
    half = np.nan_to_num(order["value"] - order["ci_low"], posinf=0.0)
    colours = [_FLAG_COLOURS.get(f.split(",")[0], "tab:blue") if f else "tab:blue" for f in order["flags"]]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(order) + 2), 3.6))
    names = [f"{c}\n{f.replace(',', ' ')}" if f else str(c) for c, f in zip(order["client"], order["flags"])]
    ax.bar(range(len(order)), order["value"], yerr=half, color=colours, capsize=3)
    ax.set_xticks(range(len(order)), names, fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("client (by cumulative value)")
    ax.set_ylabel(f"cumulative value ({ci_level:.0%} CI)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _FLAG_COLOURS.values()]
    ax.legend(handles, list(_FLAG_COLOURS), fontsize=7)
    ax.set_title(f"Contribution over the run\n{_game_line(clients)}", fontsize=8)
    return save_figure(fig, path)


def convergence(trace: dict, path: Path, ci_level: float = 0.95) -> Path:
    """Sampled values (with CI bands) against evaluations used; exact values dashed when known."""
    plt = pyplot()
    evals = np.asarray(trace["evaluations"], dtype=float)
    values = np.asarray(trace["values"], dtype=float)
    stderr = np.asarray([[np.nan if s is None else s for s in row] for row in trace["stderr"]], dtype=float)
    low, high = normal_interval(values, stderr, ci_level)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    colours = plt.cm.tab20(np.linspace(0, 1, max(values.shape[1], 1)))
    for i in range(values.shape[1]):
        ax.plot(evals, values[:, i], color=colours[i], lw=1, label=str(trace["clients"][i]))
        ax.fill_between(evals, low[:, i], high[:, i], color=colours[i], alpha=0.15)
        if trace.get("exact") is not None:
            ax.axhline(trace["exact"][i], color=colours[i], ls="--", lw=0.8)
    if values.shape[1] <= 20:
        ax.legend(title="client", fontsize=6, ncol=2)
    ax.set_xlabel("utility evaluations")
    ax.set_ylabel("Shapley value estimate")
    source = "sampled" if trace.get("exact") is None else "re-sampled from its exact table; dashed: exact values"
    ax.set_title(f"Convergence, round {trace['round']}: {source}", fontsize=8)
    return save_figure(fig, path)
