"""Summarise a GAN matrix (``results/gans``): FID tables, FID-vs-time/bytes figures, final grids.

Usage: ``python benchmarks/gan_summary.py results/gans``. Reads every finished cell's
``cell.json`` labels and ``epochs.csv`` (the ``avg`` rows are the global generator), writes
``fid_summary.csv`` (one row per cell), ``fid_curves.csv`` (one row per cell and epoch),
``fid_vs_time.png``, ``fid_vs_bytes.png`` and ``grids/<cell>.png`` (the last epoch's samples).
``compute_s_total`` is the simulated compute time of all nodes together (``events.csv``), to
compare runs at equal compute; a matrix over ``nodes`` gets one series per algorithm and size.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


THRESHOLDS = (600, 800)


def load(root: Path) -> pd.DataFrame:
    rows = []
    for cell in sorted(root.glob("runs/*/*/cell.json")):
        info = json.loads(cell.read_text())
        labels = info.get("labels") or {}
        run = cell.parent
        ep = pd.read_csv(run / "epochs.csv")
        avg = ep[ep["node"] == "avg"].sort_values("epoch")
        ev = pd.read_csv(run / "events.csv") if (run / "events.csv").exists() else pd.DataFrame(columns=["metric"])
        totals = ev.loc[ev["metric"] == "compute_s_total", "value"] if len(ev) else []
        compute = float(totals.sum()) if len(totals) else float("nan")  # runs before the event: unknown
        labels = {k.split(".")[-1]: v for k, v in labels.items()}
        if "nodes" in labels:  # a matrix over node counts: one series per algorithm and size
            labels["algorithm"] = f"{labels['algorithm']} ({labels.pop('nodes')})"
        for r in avg.itertuples():
            rows.append({"cell": run.name, **labels, "compute_s": compute, "epoch": int(r.epoch),
                         "time_s": float(r.time_s), "bytes_total": float(getattr(r, "bytes_total", float("nan"))),
                         "fid": float(r.fid), "class_score": float(r.class_score), "coverage": float(r.coverage)})
    return pd.DataFrame(rows)


def summarise(curves: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in curves.columns if c not in ("epoch", "time_s", "bytes_total", "fid", "class_score", "coverage",
                                                   "compute_s")]
    out = []
    for key, g in curves.groupby(keys, sort=False):
        g = g.sort_values("epoch")
        last = g.iloc[-1]
        reach = {}
        for level in THRESHOLDS:  # first evaluation at or below the level: simulated time and bytes
            hit = g[g.fid <= level]
            reach[f"time_to_fid{level}_s"] = hit.time_s.iloc[0] if len(hit) else float("nan")
            reach[f"MB_to_fid{level}"] = hit.bytes_total.iloc[0] / 1e6 if len(hit) else float("nan")
        out.append({**dict(zip(keys, key)), **reach, "epochs": int(last.epoch), "fid_start": g.fid.iloc[0],
                    "fid_final": last.fid, "fid_best": g.fid.min(), "class_score_final": last.class_score,
                    "coverage_final": last.coverage, "sim_time_s": last.time_s, "bytes_total_MB": last.bytes_total / 1e6,
                    "compute_s_total": last.compute_s})
    return pd.DataFrame(out)


def plot(curves: pd.DataFrame, x: str, path: Path, xlabel: str) -> None:
    facets = [c for c in curves.columns if c not in ("cell", "algorithm", "epoch", "time_s", "bytes_total", "fid",
                                                       "class_score", "coverage", "seed", "compute_s")]
    groups = list(curves.groupby(facets, sort=True)) if facets else [("all", curves)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False, constrained_layout=True)
    colors = {a: f"C{k}" for k, a in enumerate(sorted(curves["algorithm"].unique()))}  # one colour per algorithm
    for ax, (name, g) in zip(axes[0], groups):
        for algo, a in g.groupby("algorithm", sort=True):
            a = a.sort_values("epoch")
            xs = a[x] / (1e6 if x == "bytes_total" else 1)
            ax.plot(xs, a["fid"], marker="o", ms=3, label=algo, color=colors[algo])
        ax.legend(fontsize=7)
        ax.set_title(" / ".join(map(str, name if isinstance(name, tuple) else (name,))), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("FID (shipped MNIST net; lower is better)")
        ax.grid(alpha=0.3)
        if x == "bytes_total":
            ax.set_xscale("symlog", linthresh=1.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(root: str) -> None:
    root = Path(root)
    curves = load(root)
    if curves.empty:
        sys.exit(f"no finished cells under {root}")
    curves.to_csv(root / "fid_curves.csv", index=False, float_format="%.6g")
    table = summarise(curves)
    table.to_csv(root / "fid_summary.csv", index=False, float_format="%.4g")
    plot(curves, "time_s", root / "fid_vs_time.png", "simulated time [s]")
    plot(curves, "bytes_total", root / "fid_vs_bytes.png", "bytes sent by all nodes [MB]")
    grids = root / "grids"
    grids.mkdir(exist_ok=True)
    for cell in sorted(root.glob("runs/*/*/cell.json")):
        labels = json.loads(cell.read_text()).get("labels") or {}
        pngs = sorted((cell.parent / "samples").glob("epoch_*.png"))
        if pngs:
            name = "_".join(str(v) for v in labels.values()) or cell.parent.name
            shutil.copyfile(pngs[-1], grids / f"{name}.png")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/gans")
