"""Figures and a table of the population matrices (benchmarks/matrices/population*.yaml).

    python benchmarks/population_figures.py results/population

reads ``<dir>/curves.csv`` and ``<dir>/runs/`` (the classifier matrix) and, when present,
``<dir>/population_gan/`` (FL-GAN), and writes into ``<dir>``:

* ``acc_vs_time.png``: the average (global) model's test accuracy against simulated time, one
  panel per algorithm and population size, one line per population;
* ``time_to_accuracy.png``: simulated time to reach :data:`TARGETS` accuracy;
* ``round_durations.png``: FedAvg's round durations (from one ``clients_heard`` to the next):
  the tail a synchronous round waits for;
* ``online_clients.png``: clients online over time in the availability cells;
* ``fid_vs_time.png``: FL-GAN's FID against simulated time (if its matrix ran);
* ``summary.md``: one row per cell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simbench.report.plots import online_counts  # noqa: E402

POPULATIONS = ("homogeneous", "traces", "traces_churn")
COLORS = {"homogeneous": "tab:gray", "traces": "tab:blue", "traces_churn": "tab:red"}
LABELS = {"homogeneous": "(i) homogeneous", "traces": "(ii) trace speeds + bandwidths",
          "traces_churn": "(iii) + availability"}
TARGETS = (0.8, 0.85)


def load(root: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    if not (root / "curves.csv").exists():
        return None
    curves = pd.read_csv(root / "curves.csv", dtype={"clients": str, "nodes": str})
    cells = pd.read_csv(root / "cells.csv", dtype={"clients": str, "nodes": str})
    return curves, cells


def events_of(root: Path, cell: str) -> pd.DataFrame:
    run = next((root / "runs").glob(f"*/{cell}"))
    return pd.read_csv(run / "events.csv", dtype={"node": str})


def time_to(curve: pd.DataFrame, target: float, col: str = "test_acc") -> float:
    hit = curve[curve[col] >= target]
    return float(hit["time_s"].iloc[0]) if len(hit) else float("nan")


def rounds(ev: pd.DataFrame) -> np.ndarray:
    t = ev.loc[ev["metric"] == "clients_heard", "time_s"].to_numpy(float)
    return np.diff(np.concatenate([[0.0], t]))


def panels(curves: pd.DataFrame, groups: list[tuple[str, str]], col: str, ylabel: str, path: Path) -> None:
    fig, axes = plt.subplots(len(groups) // 2, 2, figsize=(10, 3.2 * (len(groups) // 2)), squeeze=False,
                             constrained_layout=True)
    for ax, (algo, clients) in zip(axes.flat, groups):
        for pop in POPULATIONS:
            c = curves[(curves["algo"] == algo) & (curves["size"] == clients) & (curves["population"] == pop)]
            if len(c):
                ax.plot(c["time_s"], c[col], color=COLORS[pop], label=LABELS[pop], lw=1.6)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_title(f"{algo}, {clients} clients")
        ax.set_xlabel("simulated time [s]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(root: str) -> int:
    root = Path(root)
    got = load(root, "population")
    if got is None:
        print(f"{root}: no curves.csv", file=sys.stderr)
        return 1
    curves, cells = got
    curves = curves.rename(columns={"clients": "size"})
    groups = [(a, c) for a in ("fedavg", "dsgd") for c in ("100", "1000")
              if ((curves["algo"] == a) & (curves["size"] == c)).any()]
    panels(curves, groups, "test_acc", "test accuracy (average model)", root / "acc_vs_time.png")

    rows, durations, online = [], {}, {}
    wide = cells.pivot_table(index=["cell", "algo", "clients", "population"], columns="metric", values="value",
                             aggfunc="first").reset_index()
    for r in wide.itertuples():
        c = curves[curves["cell"] == r.cell]
        ev = events_of(root, r.cell)
        row = {"algorithm": r.algo, "clients": r.clients, "population": r.population,
               "final acc / FID": f"{r.final_acc:.3f}", "sim time [s]": f"{r.sim_time_s:.1f}"}
        for target in TARGETS:
            t = time_to(c, target)
            row[f"time to {target:.0%} [s]"] = "never" if t != t else f"{t:.1f}"
        if r.algo == "fedavg":
            d = rounds(ev)
            durations[(r.clients, r.population)] = d
            row["round median / p90 / max [s]"] = f"{np.median(d):.2f} / {np.percentile(d, 90):.2f} / {d.max():.2f}"
            heard = ev.loc[ev["metric"] == "clients_heard", "value"]
            row["updates lost"] = f"{int((10 if r.clients == '100' else 100) * len(heard) - heard.sum())}"
        counts = online_counts(ev)
        if counts is not None:
            size = float(ev.loc[ev["metric"] == "population_size", "value"].iloc[0])
            online[(r.algo, r.clients)] = (counts, size)
            ep = curves[curves["cell"] == r.cell]
            row["online at epoch ends"] = f"{np.mean([_at(counts, t) for t in ep['time_s']]) / size:.0%}"
        rows.append(row)
    order = {p: k for k, p in enumerate(POPULATIONS)}
    table = pd.DataFrame(rows).sort_values(["algorithm", "clients", "population"],
                                           key=lambda s: s.map(order) if s.name == "population" else s)
    time_bars(table, root / "time_to_accuracy.png")
    round_figure(durations, root / "round_durations.png")
    online_figure(online, root / "online_clients.png")
    gan = load(root / "population_gan", "population_gan")
    if gan is not None:
        gcurves, gcells = gan
        gcurves = gcurves.rename(columns={"nodes": "size"}).assign(algo="flgan")
        groups = [("flgan", c) for c in ("100", "1000") if (gcurves["size"] == c).any()]
        if len(groups) % 2:
            groups.append(groups[-1])
        panels(gcurves, groups, "fid", "FID, global generator (lower is better)", root / "fid_vs_time.png")
        gw = gcells.pivot_table(index=["cell", "nodes", "population"], columns="metric", values="value",
                                aggfunc="first").reset_index()
        for r in gw.itertuples():
            rows.append({"algorithm": "flgan", "clients": r.nodes, "population": r.population,
                         "final acc / FID": f"FID {r.final_fid:.1f}", "sim time [s]": f"{r.sim_time_s:.1f}"})
        table = pd.DataFrame(rows).sort_values(["algorithm", "clients", "population"],
                                               key=lambda s: s.map(order) if s.name == "population" else s)
    (root / "summary.md").write_text(markdown(table.fillna("")))
    print(table.fillna("").to_string(index=False))
    return 0


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _at(counts: pd.DataFrame, t: float) -> float:
    k = np.searchsorted(counts["time_s"].to_numpy(), t, side="right") - 1
    return float(counts["online"].iloc[max(k, 0)])


def time_bars(table: pd.DataFrame, path: Path) -> None:
    target = TARGETS[-1]
    col = f"time to {target:.0%} [s]"
    groups = list(dict.fromkeys(zip(table["algorithm"], table["clients"])))
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    width = 0.27
    for k, pop in enumerate(POPULATIONS):
        vals = []
        for algo, clients in groups:
            v = table[(table["algorithm"] == algo) & (table["clients"] == clients) & (table["population"] == pop)][col]
            vals.append(float(v.iloc[0]) if len(v) and v.iloc[0] != "never" else np.nan)
        x = np.arange(len(groups)) + (k - 1) * width
        ax.bar(x, vals, width, color=COLORS[pop], label=LABELS[pop])
        for xi, v in zip(x, vals):
            if v != v:
                ax.text(xi, 1, "never", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(groups)), [f"{a}\n{c} clients" for a, c in groups])
    ax.set_yscale("log")
    ax.set_ylabel(f"simulated time to {target:.0%} test accuracy [s]")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def round_figure(durations: dict, path: Path) -> None:
    sizes = sorted({c for c, _ in durations}, key=int)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.4), squeeze=False, constrained_layout=True)
    for ax, size in zip(axes.flat, sizes):
        for pop in POPULATIONS:
            d = durations.get((size, pop))
            if d is None:
                continue
            x = np.sort(d)
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=COLORS[pop], label=LABELS[pop])
        ax.set_xscale("log")
        ax.set_xlabel("FedAvg round duration [s] (simulated)")
        ax.set_ylabel("fraction of rounds")
        ax.set_title(f"{size} clients, 10% per round")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def online_figure(online: dict, path: Path) -> None:
    if not online:
        return
    fig, ax = plt.subplots(figsize=(7, 3.4), constrained_layout=True)
    for (algo, clients), (counts, size) in sorted(online.items()):
        ax.step(counts["time_s"], counts["online"] / size, where="post", label=f"{algo}, {clients} clients", lw=1.2)
    ax.set_xlabel("simulated time [s]")
    ax.set_ylabel("fraction of clients online")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/population"))
