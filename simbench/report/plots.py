"""Plots of one run from its tables: test accuracy against simulated time and epochs.

Besides each node's and the average model's per-epoch accuracy, metrics logged between
epochs are drawn on the time panel: a parameter server's supervisor (``sup_test_acc``),
which pulls the central model every few simulated seconds; and the number of clients
online over time when the run has a population with availability."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

FAULT_METRICS = {"crash": ("tab:red", "crash"), "recover": ("tab:green", "recover"),
                 "partition_start": ("tab:purple", "partition")}


def mark_faults(ax, events: pd.DataFrame) -> None:
    """A dashed vertical line at every crash, recovery and partition of ``events``."""
    seen = set()
    for metric, (color, label) in FAULT_METRICS.items():
        for _, row in events[events["metric"] == metric].iterrows():
            ax.axvline(row["time_s"], color=color, ls="--", lw=1, alpha=0.8,
                       label=None if label in seen else f"{label} (node {row['node']})")
            seen.add(label)


def online_counts(events: pd.DataFrame) -> pd.DataFrame | None:
    """``time_s, online``: how many nodes of the population are online, at every change (None
    without availability events). From ``population_size`` and the nodes' ``offline``/``online``."""
    size = events.loc[events["metric"] == "population_size", "value"]
    flips = events[events["metric"].isin(("offline", "online"))]
    if size.empty:
        return None
    step = flips["metric"].map({"offline": -1, "online": 1}).astype(int)
    t = [0.0, *flips["time_s"].astype(float)]
    online = [float(size.max()), *(float(size.max()) + step.cumsum())]
    return pd.DataFrame({"time_s": t, "online": online}).groupby("time_s", sort=True).last().reset_index()


def plot_online(ax, counts: pd.DataFrame, end: float, time_label: str) -> None:
    """Step plot of the online clients."""
    t = [*counts["time_s"], max(end, float(counts["time_s"].max()))]
    ax.step(t, [*counts["online"], counts["online"].iloc[-1]], where="post", color="tab:blue", lw=1.2)
    ax.set_xlabel(time_label)
    ax.set_ylabel("clients online")
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)


def plot_run(epochs: pd.DataFrame, events: pd.DataFrame, path: Path, title: str = "",
             time_label: str = "simulated time [s]") -> Path:
    """Two panels: every node's (thin) and the average model's (thick) test accuracy
    against time (simulated, or wall time in a real run), with faults marked, and against epochs;
    a third with the clients online over time when the run's population has availability."""
    counts = online_counts(events)
    if counts is None:
        fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    else:
        fig, (ax_t, ax_e, ax_o) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
        plot_online(ax_o, counts, float(events["time_s"].max()), time_label)
    nodes = [n for n in epochs["node"].unique() if n != "avg"]
    for n in nodes:
        rows = epochs[(epochs["node"] == n)].dropna(subset=["test_acc"])
        kw = {"lw": 0.9, "alpha": 0.55}
        ax_t.plot(rows["time_s"], rows["test_acc"], **kw)
        ax_e.plot(rows["epoch"], rows["test_acc"], **kw)
    avg = epochs[epochs["node"] == "avg"].dropna(subset=["test_acc"])
    if len(avg):
        ax_t.plot(avg["time_s"], avg["test_acc"], color="black", lw=2.2, label="average model")
        ax_e.plot(avg["epoch"], avg["test_acc"], color="black", lw=2.2, label="average model")
    sup = events[events["metric"] == "sup_test_acc"]
    if len(sup):
        ax_t.plot(sup["time_s"], sup["value"], color="tab:orange", lw=1.4, marker=".", ms=3,
                  label="supervisor (central model)")
    mark_faults(ax_t, events)
    ax_t.set_xlabel(time_label)
    ax_e.set_xlabel("epoch")
    for ax in (ax_t, ax_e):
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1)
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.set_xlim(left=0)
    handles, labels = ax_t.get_legend_handles_labels()
    if handles:
        ax_t.legend(loc="lower right", fontsize=8)
    ax_e.set_title(f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} (thin lines)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)
