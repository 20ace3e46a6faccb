"""Per-node final test accuracy of the P2P matrix (seed 003's per-node result tables).

The matrix table (``cells.csv``) holds the *average model*'s accuracy; seed 003 reports each
node's own model. This script reads every cell's ``epochs.csv`` under ``RESULTS/runs`` and
writes, next to the matrix table:

* ``per_node.csv`` — one row per cell and node: the node's test accuracy after the last epoch;
* ``per_node.md`` — mean over nodes and seeds (± std over seeds) and the worst node, per
  algorithm × partition × ring size;
* ``per_node_acc.png`` — every node's final accuracy, per algorithm, one panel per partition
  and ring size, with single-node SGD as a dashed line.

Usage (after ``simbench matrix benchmarks/matrices/p2p.yaml``)::

    python benchmarks/p2p_table.py results/p2p
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ORDER = ["dsgd", "gossip", "admm", "pdmm", "admm_isvr", "pdmm_isvr", "cadmm"]


def per_node(root: Path) -> pd.DataFrame:
    rows = []
    for cell in sorted((root / "runs").glob("*/*/cell.json")):
        labels = json.loads(cell.read_text())["labels"]
        ep = pd.read_csv(cell.parent / "epochs.csv", dtype={"node": str})
        ep = ep[ep["node"] != "avg"]
        last = ep.loc[ep.groupby("node")["epoch"].idxmax()]
        for _, r in last.iterrows():
            rows.append({**labels, "cell": cell.parent.name, "node": int(r["node"]), "epoch": int(r["epoch"]),
                         "test_acc": float(r["test_acc"])})
    if not rows:
        raise SystemExit(f"no finished cells under {root / 'runs'}")
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over nodes per cell, then mean/std over seeds; worst node over all seeds."""
    keys = ["algorithm", "dataset.partition", "nodes"]
    per_cell = df.groupby([*keys, "seed"]).agg(mean=("test_acc", "mean"), worst=("test_acc", "min")).reset_index()
    out = per_cell.groupby(keys).agg(mean=("mean", "mean"), std=("mean", "std"), worst=("worst", "min"),
                                     seeds=("seed", "nunique")).reset_index()
    return out


def markdown(s: pd.DataFrame) -> str:
    base = s[s["algorithm"] == "sgd"]
    lines = ["| algorithm | " + " | ".join(f"{p}, ring {n}" for p in ("iid", "noniid") for n in ("3", "8")) + " |",
             "|---|" + "---|" * 4]
    for algo in ORDER:
        cells = []
        for p in ("iid", "noniid"):
            for n in ("3", "8"):
                r = s[(s["algorithm"] == algo) & (s["dataset.partition"] == p) & (s["nodes"].astype(str) == n)]
                cells.append("—" if r.empty else
                             f"{r['mean'].iloc[0]:.3f} ± {r['std'].iloc[0]:.3f} (worst {r['worst'].iloc[0]:.3f})")
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    if not base.empty:
        b = base.iloc[0]
        lines.append(f"| single-node SGD (all data) | {b['mean']:.3f} ± {b['std']:.3f} | | | |")
    return "\n".join(lines) + "\n"


def figure(df: pd.DataFrame, path: Path) -> None:
    base = df[df["algorithm"] == "sgd"]["test_acc"].mean()
    fig, axes = plt.subplots(1, 4, figsize=(15, 4), sharey=True)
    for ax, (p, n) in zip(axes, [(p, n) for p in ("iid", "noniid") for n in ("3", "8")]):
        sub = df[(df["dataset.partition"] == p) & (df["nodes"].astype(str) == n)]
        for k, algo in enumerate(ORDER):
            acc = sub[sub["algorithm"] == algo]["test_acc"]
            jitter = (pd.Series(range(len(acc))) % 7 - 3) * 0.04
            ax.scatter(k + jitter.values, acc.values, s=10, alpha=0.6)
            if len(acc):
                ax.hlines(acc.mean(), k - 0.3, k + 0.3, color="black", lw=1.5)
        ax.axhline(base, ls="--", color="grey", lw=1, label="single-node SGD")
        ax.set_xticks(range(len(ORDER)), ORDER, rotation=45, ha="right")
        ax.set_title(f"{p}, ring of {n}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("final test accuracy of each node")
    axes[0].legend(loc="lower left", fontsize=8)
    seeds = df["seed"].nunique()
    fig.suptitle(f"P2P methods on FashionMNIST: every node's own model after 10 epochs ({seeds} seeds; bar = mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a matrix results directory, e.g. results/p2p")
    args = ap.parse_args()
    df = per_node(args.results)
    df.to_csv(args.results / "per_node.csv", index=False)
    s = summary(df)
    (args.results / "per_node.md").write_text(
        "Final test accuracy of each node's own model: mean over nodes and seeds ± std over seeds "
        "(worst single node over all seeds).\n\n" + markdown(s))
    figure(df, args.results / "per_node_acc.png")
    print(markdown(s))


if __name__ == "__main__":
    main()
