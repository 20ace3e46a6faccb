"""Summarise a GAN matrix (``results/gans``): FID tables, FID-vs-time/bytes figures, final grids.

Usage: ``python benchmarks/gan_summary.py results/gans [--updates ALGORITHM=N ...]``. Reads every finished cell's
``cell.json`` labels and ``epochs.csv`` (the ``avg`` rows are the global generator), writes
``fid_curves.csv`` (one row per cell and epoch), ``fid_summary.csv`` (one row per cell),
``fid_by_seed.csv`` (a matrix over ``seed``: one row per setting, mean and standard deviation
over the seeds, and how many seeds reached each FID level), ``fid_vs_time.png``,
``fid_by_seed.md`` (that table for README), ``fid_paired.csv`` (each algorithm against FL-GAN,
or gan_single where there is no FL-GAN, on the same setting and seed), ``fid_vs_bytes.png`` (seed means, with the seeds' range shaded) and ``grids/<cell>.png`` (the
last epoch's samples; of seed 0 only when there are seeds).
``compute_s_total`` is the simulated compute time of all nodes together (``events.csv``), to
compare runs at equal compute; a matrix over ``nodes`` gets one series per algorithm and size
(a ``train.epochs`` axis is a budget, not a setting: it is dropped from the labels).
``--kl-weights MATRIX`` writes ``kl_weights.csv``: per seed of the matrix and per device, its
images, FeGAN's score e_k and the exp and linear weights times K (1 = the plain average), from
the split each seed's cells train on (the same for every algorithm of a seed).
``--updates ALGORITHM=N`` (repeatable) gives the generator updates per epoch of the series
whose name starts with ALGORITHM: the curves get a ``g_updates`` column (epoch x N) and
``fid_vs_updates.png`` is drawn, to compare runs at the same number of generator updates.
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


def matrix_labels(root: Path) -> dict[str, dict]:
    """Cell id -> axis labels from the matrix's ``cells.csv``, which the matrix rebuilds from its
    current axes; a ``cell.json`` written before an axis was added lacks that axis's label."""
    table = root / "cells.csv"
    if not table.exists():
        return {}
    cells = pd.read_csv(table, dtype=str, keep_default_na=False)
    axes = list(cells.columns[cells.columns.get_loc("cell") + 1:cells.columns.get_loc("status")])
    return {r["cell"]: {a: r[a] for a in axes} for _, r in cells.drop_duplicates("cell").iterrows()}


def load(root: Path) -> pd.DataFrame:
    rows = []
    current = matrix_labels(root)
    for cell in sorted(root.glob("runs/*/*/cell.json")):
        info = json.loads(cell.read_text())
        labels = {**(info.get("labels") or {}), **current.get(cell.parent.name, {})}
        run = cell.parent
        ep = pd.read_csv(run / "epochs.csv")
        avg = ep[ep["node"] == "avg"].sort_values("epoch")
        ev = pd.read_csv(run / "events.csv") if (run / "events.csv").exists() else pd.DataFrame(columns=["metric"])
        totals = ev.loc[ev["metric"] == "compute_s_total", "value"] if len(ev) else []
        compute = float(totals.sum()) if len(totals) else float("nan")  # runs before the event: unknown
        labels = {k.split(".")[-1]: v for k, v in labels.items()}
        labels.pop("epochs", None)
        if "nodes" in labels:  # a matrix over node counts: one series per algorithm and size
            labels["algorithm"] = f"{labels['algorithm']} ({labels.pop('nodes')})"
        for r in avg.itertuples():
            rows.append({"cell": run.name, **labels, "compute_s": compute, "epoch": int(r.epoch),
                         "time_s": float(r.time_s), "bytes_total": float(getattr(r, "bytes_total", float("nan"))),
                         "fid": float(r.fid), "class_score": float(r.class_score), "coverage": float(r.coverage)})
    return pd.DataFrame(rows)


def summarise(curves: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in curves.columns if c not in ("epoch", "time_s", "bytes_total", "fid", "class_score", "coverage",
                                                   "compute_s", "g_updates")]
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


def by_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each setting; ``reached_fidN``: seeds that got there."""
    keys = [c for c in ("algorithm", "dataset", "scenario", "nodes") if c in table.columns]
    rows = []
    for key, g in table.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)), seeds=len(g))
        for col in ("fid_final", "fid_best", "coverage_final", "class_score_final", "sim_time_s", "bytes_total_MB",
                    "compute_s_total"):
            row[f"{col}_mean"], row[f"{col}_std"] = g[col].mean(), g[col].std(ddof=1) if len(g) > 1 else float("nan")
        for level in THRESHOLDS:  # over the seeds that reached the level
            hit = g[f"time_to_fid{level}_s"].dropna()
            row[f"reached_fid{level}"] = len(hit)
            row[f"time_to_fid{level}_s_mean"] = hit.mean() if len(hit) else float("nan")
            row[f"MB_to_fid{level}_mean"] = g[f"MB_to_fid{level}"].dropna().mean() if len(hit) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).sort_values([k for k in ("dataset", "scenario", "nodes", "algorithm") if k in keys],
                                          kind="stable", ignore_index=True)


def paired(table: pd.DataFrame, reference: str = "flgan") -> pd.DataFrame:
    """Each algorithm against ``reference`` on the same dataset, scenario and seed (the seed
    moves every algorithm's FID together, far more than the algorithms differ): the mean
    difference of best and final FID (negative: better than the reference) and in how many of
    the pairs the algorithm's best FID is the lower."""
    keys = [c for c in ("dataset", "scenario", "nodes", "seed") if c in table.columns]
    ref = table.loc[table["algorithm"] == reference, [*keys, "fid_best", "fid_final"]]
    rows = []
    data = table["dataset"] if "dataset" in table.columns else pd.Series("", index=table.index)
    for (algo, dset), g in table[table["algorithm"] != reference].groupby(["algorithm", data], sort=True):
        g = g.merge(ref, on=keys, suffixes=("", "_ref"))
        if g.empty:
            continue
        rows.append({"algorithm": algo, "dataset": dset, "reference": reference, "pairs": len(g),
                     "best_fid_diff_mean": (g.fid_best - g.fid_best_ref).mean(),
                     "final_fid_diff_mean": (g.fid_final - g.fid_final_ref).mean(),
                     "best_fid_lower_in": int((g.fid_best < g.fid_best_ref).sum())})
    return pd.DataFrame(rows)


def markdown(seeded: pd.DataFrame) -> str:
    """The seed table as README prints it: mean ± sd, and n/seeds for the levels reached."""
    def pm(r, col, digits=0):
        sd = r[f"{col}_std"]
        return f"{r[f'{col}_mean']:.{digits}f}" + ("" if sd != sd else f" ± {sd:.{digits}f}")

    def mean(v, digits=0):
        return "—" if v != v else f"{v:.{digits}f}"

    head = ("| dataset | scenario | algorithm | FID final | FID best | coverage | reached FID 600 | s to FID 600 "
            "| MB to FID 600 | sim time s | MB total |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for _, r in seeded.iterrows():
        lines.append(f"| {r.get('dataset', '—')} | {r.get('scenario', 'none')} | {r.algorithm} | {pm(r, 'fid_final')} | {pm(r, 'fid_best')} "
                     f"| {pm(r, 'coverage_final', 2)} | {r.reached_fid600}/{r.seeds} | {mean(r.time_to_fid600_s_mean)} "
                     f"| {mean(r.MB_to_fid600_mean)} | {mean(r.sim_time_s_mean)} | {mean(r.bytes_total_MB_mean)} |")
    return "\n".join(lines) + "\n"


def plot(curves: pd.DataFrame, x: str, path: Path, xlabel: str) -> None:
    """One panel per setting (rows x columns when there are two facets); per algorithm the
    mean FID over seeds at each evaluation, against the seeds' mean x, the range shaded."""
    facets = [c for c in curves.columns if c not in ("cell", "algorithm", "epoch", "time_s", "bytes_total", "fid",
                                                       "class_score", "coverage", "seed", "compute_s", "g_updates")]
    rows_of = sorted(curves[facets[0]].unique()) if len(facets) == 2 else [None]
    cols_of = sorted(curves[facets[1]].unique()) if len(facets) == 2 else [None]
    groups = {}
    for name, g in (curves.groupby(facets, sort=True) if facets else [("all", curves)]):
        name = name if isinstance(name, tuple) else (name,)
        groups[(name[0], name[1]) if len(facets) == 2 else (None, name)] = g
    if len(facets) != 2:
        cols_of = [k[1] for k in groups]
    fig, axes = plt.subplots(len(rows_of), len(cols_of), figsize=(4.6 * len(cols_of), 3.6 * len(rows_of)),
                             squeeze=False, constrained_layout=True, sharey=True)
    colors = {a: f"C{k}" for k, a in enumerate(sorted(curves["algorithm"].unique()))}  # one colour per algorithm
    scale = 1e6 if x == "bytes_total" else 1
    for (r, c), g in groups.items():
        ax = axes[rows_of.index(r)][cols_of.index(c)]
        for algo, a in g.groupby("algorithm", sort=True):
            m = a.groupby("epoch").agg(x=(x, "mean"), fid=("fid", "mean"), lo=("fid", "min"), hi=("fid", "max"))
            ax.plot(m["x"] / scale, m["fid"], marker="o", ms=3, label=algo, color=colors[algo])
            if a["seed"].nunique() > 1 if "seed" in a else False:
                ax.fill_between(m["x"] / scale, m["lo"], m["hi"], color=colors[algo], alpha=0.12, lw=0)
        ax.legend(fontsize=7)
        title = (r, c) if r is not None else c
        ax.set_title(" / ".join(map(str, title if isinstance(title, tuple) else (title,))), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("FID (shipped net; lower is better)")
        ax.grid(alpha=0.3)
        if x == "bytes_total":
            ax.set_xscale("symlog", linthresh=1.0)
    seeds = curves["seed"].nunique() if "seed" in curves else 1
    if seeds > 1:
        fig.suptitle(f"mean of {seeds} seeds (shaded: their range)", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def kl_table(matrix: str) -> pd.DataFrame:
    """FeGAN's per-device scores and weights on each seed's split of ``matrix``."""
    import numpy as np

    from simbench.algorithms.fegan import kl_scores, kl_weights
    from simbench.experiment.build import build_nodes
    from simbench.experiment.matrix import load_matrix

    rows, seen = [], set()
    for cell in load_matrix(matrix).cells:
        if cell.cfg.algorithm != "fegan" or cell.cfg.seed in seen:
            continue
        seen.add(cell.cfg.seed)
        nodes = build_nodes(cell.cfg).nodes
        devices = nodes[0].clients
        counts = np.stack([nodes[d].learner.class_counts().numpy() for d in devices])
        e = kl_scores(counts)
        k = len(devices)
        for d, n, score, we, wl in zip(devices, counts.sum(1), e, kl_weights(e, "exp"), kl_weights(e, "linear")):
            rows.append({"seed": cell.cfg.seed, "device": d, "images": int(n), "e_k": score,
                         "exp_weight_x_K": we * k, "linear_weight_x_K": wl * k})
    return pd.DataFrame(rows)


def main(root: str, updates: dict[str, int] | None = None, kl_matrix: str | None = None) -> None:
    root = Path(root)
    curves = load(root)
    if curves.empty:
        sys.exit(f"no finished cells under {root}")
    if updates:
        per_epoch = curves["algorithm"].map(lambda a: next((n for k, n in updates.items() if a.startswith(k)), None))
        curves["g_updates"] = curves["epoch"] * per_epoch.astype(float)
    curves.to_csv(root / "fid_curves.csv", index=False, float_format="%.6g")
    table = summarise(curves)
    table.to_csv(root / "fid_summary.csv", index=False, float_format="%.4g")
    seeded = "seed" in table.columns and table["seed"].nunique() > 1
    if seeded:
        means = by_seed(table)
        means.to_csv(root / "fid_by_seed.csv", index=False, float_format="%.4g")
        (root / "fid_by_seed.md").write_text(markdown(means))
        names = sorted(table["algorithm"].unique())  # FL-GAN, else the centralized baseline
        reference = "flgan" if "flgan" in names else next((a for a in names if a.startswith("gan_single")), names[0])
        paired(table, reference).to_csv(root / "fid_paired.csv", index=False, float_format="%.4g")
    if kl_matrix:
        kl_table(kl_matrix).to_csv(root / "kl_weights.csv", index=False, float_format="%.4g")
    plot(curves, "time_s", root / "fid_vs_time.png", "simulated time [s]")
    plot(curves, "bytes_total", root / "fid_vs_bytes.png", "bytes sent by all nodes [MB]")
    if updates:
        plot(curves, "g_updates", root / "fid_vs_updates.png", "generator updates, all nodes")
    grids = root / "grids"
    grids.mkdir(exist_ok=True)
    for cell in sorted(root.glob("runs/*/*/cell.json")):
        labels = json.loads(cell.read_text()).get("labels") or {}
        if seeded and str(labels.get("seed")) != "0":
            continue
        labels = {k: v for k, v in labels.items() if not (seeded and k == "seed")}
        pngs = sorted((cell.parent / "samples").glob("epoch_*.png"))
        if pngs:
            name = "_".join(str(v) for v in labels.values()) or cell.parent.name
            shutil.copyfile(pngs[-1], grids / f"{name}.png")
    print((means if seeded else table).to_string(index=False))


if __name__ == "__main__":
    import argparse
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("root", nargs="?", default="results/gans")
    cli.add_argument("--updates", action="append", default=[], metavar="ALGORITHM=N",
                     help="generator updates per epoch of the series starting with ALGORITHM")
    cli.add_argument("--kl-weights", metavar="MATRIX", help="write FeGAN's per-device weights on the matrix's splits")
    args = cli.parse_args()
    main(args.root, {k: int(v) for k, v in (u.split("=", 1) for u in args.updates)}, args.kl_weights)
