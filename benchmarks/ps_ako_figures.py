"""Issue 6's extra figures for results/ps_ako/: the server's downlink utilisation vs worker
count (from the matrix's run directories), and AdaComp's compression ratio per layer of seed
002's Keras MNIST CNN (measured here, on real MNIST gradients).

    python benchmarks/ps_ako_figures.py results/ps_ako [--data ../shared/data] [--steps 40]
    python benchmarks/ps_ako_figures.py --shards results/ps_ako/ps_shards

Writes ``downlink.csv``/``downlink.png``, ``adacomp_layers.csv``/``adacomp_layers.png`` and
``staleness.csv`` into the results directory; with ``--shards``, ``shards.csv``/``shards.png``
(time to 80% and the busiest shard's downlink against the number of server shards).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def downlink_table(root: Path) -> pd.DataFrame:
    """One row per cell: the busiest downlink's utilisation and, for PS runs, the staleness.

    Bytes into the server = the workers' bytes (they send only to the server); into an Ako
    worker = what its N-1 peers sent it, which is the mean total a worker sent (each sends
    the same to every peer). Utilisation = bytes in / (run time x link capacity).
    """
    rows = []
    for manifest in sorted(root.glob("runs/**/manifest.json")):
        run = manifest.parent
        man = json.loads(manifest.read_text())
        cfg = man["config"]
        algo = cfg["algorithm"]
        ev = pd.read_csv(run / "events.csv")
        sent = ev[ev["metric"] == "bytes_sent_total"].set_index("node")["value"]
        sent.index = sent.index.astype(str)
        t = float(man["sim_time_s"])
        bw = float(cfg["network"]["bandwidth"])
        n = int(cfg["nodes"])
        if algo["name"].startswith("ps_"):
            workers = n - 1
            into = float(sent.drop("0", errors="ignore").sum())
            label = algo["name"] + ("" if algo["name"] == "ps_sync" else f" {algo.get('ps_mode', '')}")
            if algo.get("compression", "none") != "none":
                label += f" +{algo['compression']}"
        else:
            workers = n
            into = float(sent.sum()) / n  # every worker sends the same amount to each of its peers
            label = f"ako P={algo['P']}"
        st = ev[ev["metric"] == "staleness"]["value"]
        p = ev[ev["metric"] == "ako_P"]["value"]
        rows.append({"algorithm": label, "workers": workers, "bandwidth_Mbit": bw * 8 / 1e6, "sim_time_s": t,
                     "bytes_into_busiest_node": into, "downlink_utilisation": into / (t * bw) if t > 0 else np.nan,
                     "staleness_mean": float(st.mean()) if len(st) else np.nan,
                     "staleness_max": float(st.max()) if len(st) else np.nan,
                     "ako_P": float(p.iloc[0]) if len(p) else np.nan})
    return pd.DataFrame(rows).sort_values(["bandwidth_Mbit", "algorithm", "workers"])


def plot_downlink(df: pd.DataFrame, path: Path) -> None:
    bws = sorted(df["bandwidth_Mbit"].unique(), reverse=True)
    fig, axes = plt.subplots(1, len(bws), figsize=(6 * len(bws), 4), squeeze=False)
    for ax, bw in zip(axes[0], bws):
        sub = df[df["bandwidth_Mbit"] == bw]
        algos = list(dict.fromkeys(sub["algorithm"]))
        sizes = sorted(sub["workers"].unique())
        width = 0.8 / max(1, len(sizes))
        for k, w in enumerate(sizes):
            vals = [sub[(sub["algorithm"] == a) & (sub["workers"] == w)]["downlink_utilisation"].mean() for a in algos]
            ax.bar(np.arange(len(algos)) + k * width, vals, width, label=f"{w} workers")
        ax.set_xticks(np.arange(len(algos)) + width * (len(sizes) - 1) / 2)
        ax.set_xticklabels(algos, rotation=35, ha="right", fontsize=8)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("busiest downlink utilisation")
        ax.set_title(f"{bw:g} Mbit/s links: the server's downlink (PS) vs a worker's (Ako)")
        ax.legend(fontsize=8)
    save(fig, path)


def adacomp_layers(data_root: str, steps: int, warmup: int = 10) -> pd.DataFrame:
    """Per-layer AdaComp ratio of seed 002's CNN trained with AdaComp-compressed SGD on MNIST."""
    from simbench.algorithms.compression import CompressionParams, Layer, train_compressed
    from simbench.data.datasets import load_dataset
    from simbench.learn import Learner, OptimConfig
    from simbench.models import build_model
    data = load_dataset("mnist", data_root, download=False, seed=0, max_train=6000, max_test=10)
    rows = []
    for quantize in (False, True):  # the same start, batches and dropout draws for both encodings
        torch.manual_seed(0)  # dropout draws from the global generator
        model = build_model("cnn", data.input_shape, data.num_classes, seed=0)
        learner = Learner(model, data.x_train, data.y_train, batch_size=10, optim=OptimConfig(lr=0.1), seed=0)
        layers = [Layer(*t) for t in learner.layer_slices()]
        params = CompressionParams(compression="adacomp", adacomp_quantize=quantize)
        counts, _ = train_compressed(learner, layers, params, steps, warmup)
        per_entry = 5 if quantize else 8  # int32 index + int8 sign, or + float32 value
        for lay, c in zip(layers, counts):
            rows.append({"layer": lay.name, "kind": lay.kind, "params": lay.numel, "quantize": quantize,
                         "bin": 50 if lay.kind == "conv" else 500,
                         "sent_fraction": c / (lay.numel * steps),
                         "byte_ratio": lay.numel * 4 * steps / max(1.0, per_entry * c)})
        total = sum(lay.numel for lay in layers)
        rows.append({"layer": "all", "kind": "-", "params": total, "quantize": quantize, "bin": 0,
                     "sent_fraction": counts.sum() / (total * steps),
                     "byte_ratio": total * 4 * steps / max(1.0, per_entry * counts.sum())})
    return pd.DataFrame(rows)


def plot_layers(df: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(dict.fromkeys(df["layer"]))
    for k, q in enumerate((False, True)):
        sub = df[df["quantize"] == q].set_index("layer").loc[names]
        ax.bar(np.arange(len(names)) + 0.4 * k, sub["byte_ratio"], 0.4,
               label="int32 index + int8 sign (quantized)" if q else "int32 index + float32 value")
    labels = [f"{n}\n({df[df['layer'] == n]['kind'].iloc[0]}, {df[df['layer'] == n]['params'].iloc[0]:,})" for n in names]
    ax.set_xticks(np.arange(len(names)) + 0.2)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yscale("log")
    ax.axhline(10, color="k", lw=0.8, ls="--")
    ax.set_ylabel("compression ratio (dense bytes / sent bytes)")
    ax.set_title("AdaComp on seed 002's MNIST CNN (L_T = 50 conv, 500 fc)")
    ax.legend(fontsize=8)
    save(fig, path)


def shards_table(root: Path) -> pd.DataFrame:
    """One row per cell of the ps_shards matrix: time to target, speed-up over one server and
    the shards' link utilisation: downlink = the workers' bytes / shards / (time x capacity),
    uplink = the busiest shard's own bytes (the slices it sends back) / (time x capacity)."""
    cells = pd.read_csv(root / "cells.csv").pivot_table(
        index=["cell", "algorithm", "shards", "network.bandwidth"], columns="metric", values="value").reset_index()
    util = {}
    for manifest in sorted(root.glob("runs/*/*/manifest.json")):
        man = json.loads(manifest.read_text())
        cfg, k = man["config"], int(man["config"]["algorithm"].get("shards", 1))
        ev = pd.read_csv(manifest.parent / "events.csv")
        sent = ev[ev["metric"] == "bytes_sent_total"].set_index("node")["value"]
        sent.index = sent.index.astype(str)
        into = float(sent.drop([str(s) for s in range(k)], errors="ignore").sum()) / k
        out = float(sent.reindex([str(s) for s in range(k)]).fillna(0).max())
        cap = float(man["sim_time_s"]) * float(cfg["network"]["bandwidth"])
        util[manifest.parent.name] = (into / cap, out / cap)
    cells["shard_downlink_utilisation"] = cells["cell"].map(lambda c: util[c][0])  # pushes in (per shard)
    cells["shard_uplink_utilisation"] = cells["cell"].map(lambda c: util[c][1])  # model slices out (busiest shard)
    one = cells[cells["shards"] == 1].set_index(["algorithm", "network.bandwidth"])["time_to_target_s"]
    cells["speedup_to_target"] = [one.get((a, b), np.nan) / t for a, b, t in
                                  zip(cells["algorithm"], cells["network.bandwidth"], cells["time_to_target_s"])]
    cols = ["algorithm", "network.bandwidth", "shards", "time_to_target_s", "speedup_to_target", "sim_time_s",
            "final_acc", "bytes_sent", "shard_downlink_utilisation", "shard_uplink_utilisation", "wall_time_s"]
    return cells[cols].sort_values(["network.bandwidth", "algorithm", "shards"])


def plot_shards(df: pd.DataFrame, path: Path) -> None:
    bws = sorted(df["network.bandwidth"].unique(), key=lambda b: -float(b.rstrip("MGbit")) * (1000 if "G" in b else 1))
    fig, axes = plt.subplots(1, len(bws), figsize=(5.5 * len(bws), 4), squeeze=False)
    for ax, bw in zip(axes[0], bws):
        sub = df[df["network.bandwidth"] == bw]
        for algo, g in sub.groupby("algorithm", sort=False):
            ax.plot(g["shards"], g["time_to_target_s"], "o-", label=algo)
        base = sub[sub["shards"] == 1]["time_to_target_s"].max()
        ks = np.array(sorted(sub["shards"].unique()))
        ax.plot(ks, base / ks, "k:", lw=0.8, label="1 / shards")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.set_xlabel("server shards (64 workers)")
        ax.set_ylabel("simulated time to 80% test accuracy [s]")
        ax.set_title(f"{bw} links")
        ax.legend(fontsize=8)
    save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--shards", action="store_true",
                    help="RESULTS is the ps_shards matrix: write shards.csv / shards.png only")
    args = ap.parse_args()
    if args.shards:
        df = shards_table(args.results)
        df.to_csv(args.results / "shards.csv", index=False, float_format="%.4g")
        plot_shards(df, args.results / "shards.png")
        print(df.to_string(index=False))
        return
    torch.set_num_threads(1)
    df = downlink_table(args.results)
    df.to_csv(args.results / "downlink.csv", index=False, float_format="%.4g")
    plot_downlink(df, args.results / "downlink.png")
    print(df.to_string(index=False))
    layers = adacomp_layers(args.data, args.steps)
    layers.to_csv(args.results / "adacomp_layers.csv", index=False, float_format="%.4g")
    plot_layers(layers, args.results / "adacomp_layers.png")
    print(layers.to_string(index=False))


if __name__ == "__main__":
    main()
