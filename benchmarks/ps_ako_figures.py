"""Extra figures for results/ps_ako/: the server's downlink utilisation vs worker count (from
the matrix's run directories), the bytes per push of each layer of seed 002's Keras MNIST CNN
under each compression (measured here, on real MNIST gradients), the supervisor's accuracy
against simulated time in the ps_adacomp matrix, and the sharded servers' scaling.

    python benchmarks/ps_ako_figures.py results/ps_ako [--steps 40]
    python benchmarks/ps_ako_figures.py --layers results/ps_ako [--steps 40]
    python benchmarks/ps_ako_figures.py --adacomp results/ps_ako/ps_adacomp
    python benchmarks/ps_ako_figures.py --shards results/ps_ako/ps_shards

The data root is ``$SIMBENCH_DATA`` (or ``--data``). The first form writes ``downlink.csv`` /
``downlink.png`` and, as ``--layers`` alone does, ``adacomp_layers.csv`` / ``adacomp_layers.png``
into the results directory; ``--adacomp`` writes ``pushes.csv`` (bytes per push and accuracy
per cell) and ``sup_acc_vs_time.png`` / ``sup_acc.csv`` into the matrix directory;
``--shards`` writes ``shards.csv`` / ``shards.png`` (time to 80% and the busiest shard's
downlink against the number of server shards).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import types
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


METHODS = {  # label -> compression knobs, as the ps_adacomp matrix sets them
    "none": {"compression": "none"},
    "adacomp": {"compression": "adacomp", "compression_rate": 0.01},
    "adacomp_chen": {"compression": "adacomp_chen"},
    "topk": {"compression": "topk", "k_fraction": 0.01},
}


def _reference_module() -> types.ModuleType:
    """A stand-in for Hardy-c/AdaComp's ``Communication`` module holding its ``backwards``
    float subclass, so pickles of its messages name the same class the reference's do."""
    mod = sys.modules.get("Communication") or types.ModuleType("Communication")
    if not hasattr(mod, "backwards"):
        backwards = type("backwards", (float,), {"__module__": "Communication"})
        mod.backwards = backwards
        sys.modules["Communication"] = mod
    return mod


def reference_pickle_bytes(layers, payload) -> tuple[int, int]:
    """Bytes of the reference's PUSH body for ``payload`` (Hardy's top-k) and for the dense
    gradient: ``pickle.dumps((iteration, {layer: [backwards floats]}, {layer: [int indices]}),
    protocol=2)`` and ``pickle.dumps([iteration, {layer: [floats]}], protocol=2)``
    (Communication.py::encode_variables; Python 3's pickle, the reference ran cPickle on
    Python 2). Each message also has the 5-byte frame header (length and command)."""
    backwards = _reference_module().backwards
    idx = payload["idx"].long()
    vals = payload["val"].double()
    updates, indices, dense = {}, {}, {}
    for lay in layers:
        m = (idx >= lay.start) & (idx < lay.stop)
        name = lay.name.replace(".", "/") + "_grad"
        updates[name] = [backwards(float(v)) for v in vals[m]]
        indices[name] = [int(i) - lay.start for i in idx[m]]
        dense[name] = [0.1] * lay.numel
    sparse = len(pickle.dumps((100, updates, indices), protocol=2)) + 5
    full = len(pickle.dumps([100, dense], protocol=2)) + 5
    return sparse, full


def adacomp_layers(data_root: str, steps: int, warmup: int = 10) -> pd.DataFrame:
    """Bytes per push of every layer of seed 002's CNN under each compression: a worker
    trained with seed 002's settings (batch 10, lr 0.1) applying what it sends, on MNIST;
    the entries sent over ``steps`` pushes after ``warmup`` (the residual methods' residue
    builds up first), at 8 bytes per sent entry (int32 index + float32 value), 4 per entry
    dense. For ``adacomp`` also the reference's own encoding (pickled Python lists)."""
    from simbench.algorithms.compression import CompressionParams, Layer, train_compressed
    from simbench.data.datasets import load_dataset
    from simbench.learn import Learner, OptimConfig
    from simbench.models import build_model
    data = load_dataset("mnist", data_root, download=False, seed=0, max_train=6000, max_test=10)
    rows = []
    for label, knobs in METHODS.items():  # the same start, batches and dropout draws for every method
        torch.manual_seed(0)  # dropout draws from the global generator
        model = build_model("cnn", data.input_shape, data.num_classes, seed=0)
        learner = Learner(model, data.x_train, data.y_train, batch_size=10, optim=OptimConfig(lr=0.1), seed=0)
        layers = [Layer(*t) for t in learner.layer_slices()]
        counts, payload = train_compressed(learner, layers, CompressionParams(**knobs), steps, warmup)
        per_entry = 4 if label == "none" else 8
        ref = reference_pickle_bytes(layers, payload) if label == "adacomp" else None
        for lay, c in zip(layers, counts):
            rows.append({"method": label, "layer": lay.name, "kind": lay.kind, "params": lay.numel,
                         "entries_per_push": c / steps, "bytes_per_push": per_entry * c / steps,
                         "dense_bytes": 4 * lay.numel, "byte_ratio": 4 * lay.numel * steps / max(1.0, per_entry * c)})
        total = sum(lay.numel for lay in layers)
        rows.append({"method": label, "layer": "all", "kind": "-", "params": total,
                     "entries_per_push": counts.sum() / steps, "bytes_per_push": per_entry * counts.sum() / steps,
                     "dense_bytes": 4 * total, "byte_ratio": 4 * total * steps / max(1.0, per_entry * counts.sum())})
        if ref is not None:
            rows.append({"method": "adacomp, reference encoding", "layer": "all", "kind": "-", "params": total,
                         "entries_per_push": counts.sum() / steps, "bytes_per_push": float(ref[0]),
                         "dense_bytes": float(ref[1]), "byte_ratio": ref[1] / ref[0]})
    return pd.DataFrame(rows)


def plot_layers(df: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    df = df[df["method"].isin(list(METHODS))]
    names = list(dict.fromkeys(df["layer"]))
    width = 0.8 / len(METHODS)
    for k, label in enumerate(METHODS):
        sub = df[df["method"] == label].set_index("layer").loc[names]
        ax.bar(np.arange(len(names)) + width * k, sub["bytes_per_push"], width, label=label)
    labels = [f"{n}\n({df[df['layer'] == n]['kind'].iloc[0]}, {df[df['layer'] == n]['params'].iloc[0]:,})" for n in names]
    ax.set_xticks(np.arange(len(names)) + width * (len(METHODS) - 1) / 2)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("bytes per push (mean over 40 pushes)")
    ax.set_title("Seed 002's Keras MNIST CNN: bytes per push per layer\n"
                 "(none: float32; others: int32 index + float32 value per sent entry)")
    ax.legend(fontsize=8)
    save(fig, path)


CELLS = (*METHODS, "adacomp_no_staleness")
"""The ps_adacomp matrix's compression labels, in plotting order."""


def cell_label(algo: dict) -> str:
    """A ps_adacomp cell's compression label (Hardy's selection on the plain server is its own)."""
    name = algo.get("compression", "none")
    return f"{name}_no_staleness" if name == "adacomp" and algo.get("parameter_staleness") is False else name


def pushes_table(root: Path) -> pd.DataFrame:
    """One row per cell of the ps_adacomp matrix: real encoded bytes per push (the workers'
    bytes sent, pulls and the done message included, over the server's updates), the
    workers' compression ratio, per-parameter staleness, simulated time and accuracy."""
    rows = []
    for manifest in sorted(root.glob("runs/*/*/manifest.json")):
        man = json.loads(manifest.read_text())
        cfg = man["config"]
        algo = cfg["algorithm"]
        ev = pd.read_csv(manifest.parent / "events.csv")
        ev["node"] = ev["node"].astype(str)
        n = int(cfg["nodes"])
        workers = [str(i) for i in range(1, n - 1)]  # 0: server, n-1: supervisor
        sent = ev[(ev["metric"] == "bytes_sent_total") & ev["node"].isin(workers)]["value"].sum()
        msgs = ev[(ev["metric"] == "msgs_sent_total") & ev["node"].isin(workers)]["value"].sum()
        updates = int((ev["metric"] == "staleness").sum())
        sup = ev[ev["metric"] == "sup_test_acc"]
        srv = ev[(ev["metric"] == "test_acc") & (ev["node"] == "0")]
        one = lambda m: float(ev[ev["metric"] == m]["value"].iloc[-1]) if (ev["metric"] == m).any() else np.nan  # noqa: E731
        ratio = ev[ev["metric"] == "compression_ratio"]["value"]
        rows.append({"compression": cell_label(algo),
                     "bandwidth_Mbit": float(cfg["network"]["bandwidth"]) * 8 / 1e6,
                     "updates": updates, "worker_messages": int(msgs),
                     "bytes_per_push": sent / max(1, updates),
                     "push_ratio_vs_dense": float(ratio.mean()) if len(ratio) else 1.0,
                     "staleness_mean": one("staleness_mean"),
                     "param_staleness_mean": one("param_staleness_mean"),
                     "param_staleness_max": one("param_staleness_max"),
                     "sim_time_s": float(man["sim_time_s"]),
                     "final_server_acc": float(srv["value"].iloc[-1]) if len(srv) else np.nan,
                     "best_supervisor_acc": float(sup["value"].max()) if len(sup) else np.nan,
                     "wall_s": float(man.get("wall_time_s", np.nan))})
    return pd.DataFrame(rows).sort_values(["bandwidth_Mbit", "compression"], ascending=[False, True])


def sup_curves(root: Path) -> pd.DataFrame:
    """The supervisor's test accuracy against simulated time, one row per pull, per cell."""
    frames = []
    for manifest in sorted(root.glob("runs/*/*/manifest.json")):
        cfg = json.loads(manifest.read_text())["config"]
        ev = pd.read_csv(manifest.parent / "events.csv")
        sup = ev[ev["metric"] == "sup_test_acc"][["time_s", "value"]].rename(columns={"value": "sup_test_acc"})
        srv = ev[(ev["metric"] == "test_acc") & (ev["node"].astype(str) == "0")][["time_s", "value"]]
        srv = srv.rename(columns={"value": "sup_test_acc"}).assign(source="server")
        cur = pd.concat([sup.assign(source="supervisor"), srv])
        cur["compression"] = cell_label(cfg["algorithm"])
        cur["bandwidth_Mbit"] = float(cfg["network"]["bandwidth"]) * 8 / 1e6
        frames.append(cur)
    return pd.concat(frames).sort_values(["bandwidth_Mbit", "compression", "time_s"])


def plot_sup(df: pd.DataFrame, path: Path) -> None:
    bws = sorted(df["bandwidth_Mbit"].unique(), reverse=True)
    fig, axes = plt.subplots(1, len(bws), figsize=(6 * len(bws), 4), squeeze=False)
    for ax, bw in zip(axes[0], bws):
        sub = df[df["bandwidth_Mbit"] == bw]
        for k, label in enumerate(CELLS):
            g = sub[sub["compression"] == label]
            sup, srv = g[g["source"] == "supervisor"], g[(g["source"] == "server") & (g["time_s"] > 0)]
            if len(sup):
                ax.plot(sup["time_s"], sup["sup_test_acc"], "o-", ms=3, color=f"C{k}", label=label)
            if len(srv):  # the server's own evaluation after the epoch
                ax.plot(srv["time_s"], srv["sup_test_acc"], "x", ms=8, color=f"C{k}")
        ax.set_xlabel("simulated time [s]")
        ax.set_ylabel("test accuracy of the central model (supervisor)")
        ax.set_ylim(0, 1)
        ax.set_title(f"ps_async, 16 workers, seed 002's CNN, {bw:g} Mbit/s\n"
                     "(dots: supervisor's pulls; x: the server's evaluation after the epoch)", fontsize=9)
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
    ap.add_argument("--data", default=os.environ.get("SIMBENCH_DATA"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--shards", action="store_true",
                    help="RESULTS is the ps_shards matrix: write shards.csv / shards.png only")
    ap.add_argument("--adacomp", action="store_true",
                    help="RESULTS is the ps_adacomp matrix: write pushes.csv, sup_acc.csv, sup_acc_vs_time.png")
    ap.add_argument("--layers", action="store_true", help="write adacomp_layers.csv / .png only")
    args = ap.parse_args()
    if args.shards:
        df = shards_table(args.results)
        df.to_csv(args.results / "shards.csv", index=False, float_format="%.4g")
        plot_shards(df, args.results / "shards.png")
        print(df.to_string(index=False))
        return
    if args.adacomp:
        df = pushes_table(args.results)
        df.to_csv(args.results / "pushes.csv", index=False, float_format="%.4g")
        print(df.to_string(index=False))
        cur = sup_curves(args.results)
        cur.to_csv(args.results / "sup_acc.csv", index=False, float_format="%.4g")
        plot_sup(cur, args.results / "sup_acc_vs_time.png")
        return
    torch.set_num_threads(1)
    if not args.layers:
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
