"""Plot of one GAN run: FID of the global generator against simulated time and epochs (and the
clients online over time, with a population's availability)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..report.plots import mark_faults, online_counts, plot_online  # noqa: E402


def plot_gan_run(epochs: pd.DataFrame, events: pd.DataFrame, path: Path, title: str = "",
                 time_label: str = "simulated time [s]") -> Path:
    counts = online_counts(events)
    if counts is None:
        fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    else:  # a population with availability: the clients online over time too
        fig, (ax_t, ax_e, ax_o) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
        plot_online(ax_o, counts, float(events["time_s"].max()), time_label)
    for node in epochs["node"].unique():
        rows = epochs[epochs["node"] == node].dropna(subset=["fid"]) if "fid" in epochs else epochs.iloc[:0]
        if not len(rows):
            continue
        kw = {"color": "black", "lw": 2.2, "label": "global generator"} if node == "avg" else {"lw": 0.9, "alpha": 0.6, "label": f"node {node}"}
        ax_t.plot(rows["time_s"], rows["fid"], **kw)
        ax_e.plot(rows["epoch"], rows["fid"], **kw)
    mark_faults(ax_t, events)
    ax_t.set_xlabel(time_label)
    ax_e.set_xlabel("epoch")
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.set_xlim(left=0)
    for ax in (ax_t, ax_e):
        ax.set_ylabel("FID (lower is better)")
        ax.grid(alpha=0.3)
    ax_t.legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
