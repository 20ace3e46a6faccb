"""Figures of a benchmark matrix from its tidy tables: curves, time-to-accuracy bars, heat maps.

Inputs are the tables the matrix runner writes (``curves.csv``, ``faults.csv`` and the
wide form of ``cells.csv``, one row per cell). A *series* is one combination of the
non-seed axes (e.g. ``dsgd / ring``); curves show its mean over seeds at each epoch with a
±1 std band; a *facet* axis (e.g. the scenario) gets one panel per value. Crashes are
marked where they happen on each curve. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "legend.frameon": False,
    "savefig.dpi": 200, "savefig.bbox": "tight", "figure.dpi": 100,
}
METRIC_LABELS = {
    "final_acc": "final test accuracy", "best_acc": "best test accuracy",
    "time_to_target_s": "simulated time to target [s]", "bytes_sent": "data sent [MB]",
    "messages": "messages sent", "sim_time_s": "simulated time [s]", "wall_time_s": "wall time [s]",
    "failures": "crashes", "final_fid": "final FID", "best_fid": "best FID",
}
SCALE = {"bytes_sent": 1e-6}
"""Metrics shown in other units than stored (bytes -> MB)."""
FAULT_STYLE = {"crash": ("X", "tab:red"), "recover": ("P", "tab:green"), "partition_start": ("v", "tab:purple")}


@contextmanager
def style() -> Iterator[None]:
    with plt.rc_context(STYLE):
        yield


def series_key(frame: pd.DataFrame, axes: Sequence[str]) -> pd.Series:
    """' / '-joined labels of ``axes`` per row (one name per series)."""
    if not axes:
        return pd.Series("all", index=frame.index)
    return frame[list(axes)].astype(str).agg(" / ".join, axis=1)


def _ordered(values: Sequence[str], order: dict[str, list[str]], axes: Sequence[str]) -> list[str]:
    """Series names in matrix order (axis value order), not alphabetical."""
    def rank(name: str):
        parts = name.split(" / ")
        return tuple(order.get(a, []).index(p) if p in order.get(a, []) else 0 for a, p in zip(axes, parts))
    return sorted(set(values), key=rank)


def mean_curve(curves: pd.DataFrame, x: str, y: str = "test_acc") -> pd.DataFrame:
    """Per epoch: mean x, mean/std of ``y`` (accuracy, or FID) over the seeds (cells) that reached it."""
    g = curves.groupby("epoch")
    out = pd.DataFrame({"x": g[x].mean(), "acc": g[y].mean(), "std": g[y].std(ddof=0),
                        "n": g["cell"].nunique(), "time_s": g["time_s"].mean()})
    return out.reset_index().sort_values("x")


LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
WIDTH = 7.0
"""Figure width in inches (a two-column page); panels wrap into rows and legends into columns."""
PANELS_PER_ROW = 3


def series_styles(names: Sequence[str]) -> tuple[dict, dict]:
    """A colour per first label of a series name 'a / b' (e.g. the algorithm) and a line
    style per second label (e.g. the topology), so the same algorithm keeps its colour in
    every figure of a report and no two lines look alike (up to 20 colours x 6 styles)."""
    parts = [n.split(" / ", 1) for n in names]
    firsts = list(dict.fromkeys(p[0] for p in parts))
    seconds = list(dict.fromkeys(p[1] if len(p) > 1 else "" for p in parts))
    cmap = plt.get_cmap("tab10" if len(firsts) <= 10 else "tab20")
    colors = {n: cmap(firsts.index(p[0]) % cmap.N) for n, p in zip(names, parts)}
    dashes = {n: LINESTYLES[seconds.index(p[1] if len(p) > 1 else "") % len(LINESTYLES)] for n, p in zip(names, parts)}
    return colors, dashes


def panel_grid(count: int, height: float = 2.6):
    """A figure of ``count`` panels in rows of at most PANELS_PER_ROW, WIDTH inches wide."""
    cols = min(count, PANELS_PER_ROW)
    rows = -(-count // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(WIDTH, height * rows + 0.4), squeeze=False, sharey=True)
    for ax in axs.flat[count:]:
        ax.set_visible(False)
    return fig, list(axs.flat[:count])


def legend_below(fig, handles: list, labels: list) -> None:
    """One legend under the panels, wrapped into as many columns as the width holds."""
    if not labels:
        return
    longest = max(len(str(lab)) for lab in labels)
    ncol = max(1, min(len(labels), int(WIDTH * 12 // max(longest + 4, 8))))
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def curves_figure(curves: pd.DataFrame, faults: pd.DataFrame, path: Path, *, x: str, series: Sequence[str],
                  facet: str | None, order: dict[str, list[str]], target: float | None = None, title: str = "",
                  y: str = "test_acc", ylabel: str = "test accuracy (average model)",
                  ylim: tuple[float, float] | None = None) -> Path:
    """The quality column ``y`` of the curves (the average model's accuracy, the global
    generator's FID, ...) against ``x`` (``time_s`` or ``bytes_sent``), one line per series
    (mean over seeds, ±1 std band), one panel per facet value; ``ylim`` from the data when None."""
    curves = curves.assign(_series=series_key(curves, series))
    names = _ordered(curves["_series"], order, series)
    colors, dashes = series_styles(names)
    panels = order.get(facet, []) if facet else [None]
    panels = [p for p in panels if p is None or (curves[facet] == p).any()] or [None]
    scale = 1e-6 if x == "bytes_sent" else 1.0
    log_x = x == "bytes_sent" and _wide(curves[x])
    if log_x:  # the epoch-0 point (nothing sent yet) has no place on a log axis
        curves = curves[curves[x] > 0]
    ylim = ylim or data_range(curves.loc[curves["epoch"] >= 1, y])
    with style():
        fig, axs = panel_grid(len(panels))
        marked = set()
        for ax, panel in zip(axs, panels):
            sub = curves if panel is None else curves[curves[facet] == panel]
            for name in names:
                rows = sub[sub["_series"] == name]
                if rows.empty:
                    continue
                mc = mean_curve(rows, x, y)
                xs = mc["x"] * scale
                ax.plot(xs, mc["acc"], color=colors[name], ls=dashes[name], lw=1.6, label=name)
                if (mc["n"] > 1).any():
                    ax.fill_between(xs, mc["acc"] - mc["std"].fillna(0), mc["acc"] + mc["std"].fillna(0),
                                    color=colors[name], alpha=0.18, lw=0)
                cells = set(rows["cell"])
                marked |= _mark_faults(ax, faults[faults["cell"].isin(cells)], mc, scale, colors[name], ylim[0])
            if target is not None:
                ax.axhline(target, color="0.35", ls=":", lw=1)
            if log_x:
                ax.set_xscale("log")
            ax.set_xlabel("simulated time [s]" if x == "time_s" else "data sent, all nodes [MB]")
            ax.set_title(f"{facet} = {panel}" if panel is not None else title)
            ax.set_ylim(*ylim)
            ax.set_xlim(left=0 if not log_x else None)
        axs[0].set_ylabel(ylabel)
        handles, labels = [], []
        for ax in axs:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        for kind in sorted(marked):
            marker, color = FAULT_STYLE[kind]
            handles.append(plt.Line2D([], [], ls="", marker=marker, color=color, markeredgecolor="white"))
            labels.append(kind.replace("_start", ""))
        if target is not None:
            handles.append(plt.Line2D([], [], color="0.35", ls=":", lw=1))
            labels.append(f"target {target:.0%}")
        legend_below(fig, handles, labels)
        if title and panels != [None]:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return Path(path)


def data_range(values: pd.Series) -> tuple[float, float]:
    """Limits around where ``values`` lie: from a little below their 2nd percentile to a little
    above their maximum."""
    v = values.dropna()
    if v.empty:
        return 0.0, 1.0
    lo, hi = float(v.quantile(0.02)), float(v.max())
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
    return lo - pad, hi + pad


def _wide(values: pd.Series) -> bool:
    v = values[values > 0]
    return len(v) > 1 and v.max() / v.min() > 50


def _mark_faults(ax, faults: pd.DataFrame, mc: pd.DataFrame, scale: float, color, floor: float = 0.0) -> set[str]:
    """A marker on the mean curve at the (mean) time of each fault kind and node (on the
    lower edge when the curve is still below the frame then)."""
    kinds = set()
    if faults.empty or mc.empty:
        return kinds
    for (kind, _node), g in faults.groupby(["kind", "node"]):
        if kind not in FAULT_STYLE:
            continue
        t = float(g["time_s"].mean())
        xv = np.interp(t, mc["time_s"], mc["x"]) * scale
        yv = max(float(np.interp(t, mc["time_s"], mc["acc"])), floor)
        marker, mcolor = FAULT_STYLE[kind]
        ax.plot([xv], [yv], ls="", marker=marker, ms=8, color=mcolor, markeredgecolor=color, mew=1.2, zorder=5,
                clip_on=False)
        kinds.add(kind)
    return kinds


def time_to_target_figure(wide: pd.DataFrame, path: Path, *, series: Sequence[str], facet: str | None,
                          order: dict[str, list[str]], target: float) -> Path:
    """Horizontal bars, one row per series and a panel per facet value: mean simulated time
    to the target accuracy over the seeds that reached it (error bar: std); 'k/n' beside a
    bar when only k of n seeds got there, 'not reached' when none. The figure is WIDTH
    wide whatever the number of series; it grows in height instead."""
    wide = wide.assign(_series=series_key(wide, series))
    names = _ordered(wide["_series"], order, series)
    colors, _ = series_styles(names)
    groups = [g for g in (order.get(facet, []) if facet else [None]) if g is None or (wide[facet] == g).any()] or [None]
    top = float(np.nanmax(wide["time_to_target_s"])) if wide["time_to_target_s"].notna().any() else 1.0
    with style():
        cols = min(len(groups), PANELS_PER_ROW)
        rows = -(-len(groups) // cols)
        fig, axs = plt.subplots(rows, cols, figsize=(WIDTH, rows * (0.22 * len(names) + 0.9) + 0.3),
                                squeeze=False, sharey=True, sharex=True)
        for ax in axs.flat[len(groups):]:
            ax.set_visible(False)
        for ax, group in zip(axs.flat, groups):
            sub = wide if group is None else wide[wide[facet] == group]
            for row, name in enumerate(names):
                vals = sub.loc[sub["_series"] == name, "time_to_target_s"]
                if vals.empty:
                    continue
                ok = vals.dropna()
                if ok.empty:
                    ax.text(top * 0.02, row, "not reached", va="center", fontsize=7, color="0.4")
                    continue
                ax.barh(row, ok.mean(), 0.7, xerr=ok.std(ddof=0) if len(ok) > 1 else None, color=colors[name],
                        capsize=2, error_kw={"lw": 0.8})
                if len(ok) < len(vals):
                    ax.text(ok.mean() * 1.02, row, f" {len(ok)}/{len(vals)}", va="center", fontsize=7)
            ax.set_yticks(range(len(names)), names)
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
            ax.set_xlim(left=0)
            if group is not None:
                ax.set_title(f"{facet} = {group}")
            ax.set_xlabel(f"simulated time to {target:.0%} accuracy [s]")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return Path(path)


def heat_scale(data: np.ndarray, metric: str) -> tuple[float, float]:
    """Colour limits that do not turn a difference of a thousandth into the whole colour
    range: the span is at least a tenth of the values' magnitude (accuracies: at least 0.1,
    within [0, 1])."""
    finite = data[np.isfinite(data)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, 0.1 * max(abs(hi), abs(lo)), 1e-12)
    mid = (lo + hi) / 2
    lo, hi = mid - span / 2, mid + span / 2
    if metric.endswith("_acc"):
        lo, hi = max(0.0, lo), min(1.0, hi)
    elif (finite >= 0).all():
        lo = max(0.0, lo)
    return lo, hi


def heatmap_figure(wide: pd.DataFrame, path: Path, *, rows: str, cols: str, metric: str,
                   order: dict[str, list[str]], title: str = "") -> Path:
    """Mean of ``metric`` over everything but ``rows`` × ``cols``, annotated; blank = no cell."""
    scale = SCALE.get(metric, 1.0)
    table = wide.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean", dropna=False) * scale
    table = table.reindex(index=[r for r in order.get(rows, []) if r in table.index],
                          columns=[c for c in order.get(cols, []) if c in table.columns])
    data = table.to_numpy(dtype=float)
    with style():
        fig, ax = plt.subplots(figsize=(min(WIDTH, 1.1 * data.shape[1] + 2.2), 0.55 * data.shape[0] + 1.4))
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.9")
        vmin, vmax = heat_scale(data, metric)
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(data):
            digits = 3 if metric.endswith("_acc") else (1 if abs(v) < 100 else 0)
            text = "—" if not np.isfinite(v) else f"{v:.{digits}f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if not np.isfinite(v) or v > mid else "white")
        ax.set_xticks(range(data.shape[1]), table.columns, rotation=30, ha="right")
        ax.set_yticks(range(data.shape[0]), table.index)
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
        ax.grid(False)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=METRIC_LABELS.get(metric, metric), shrink=0.9)
        fig.savefig(path)
        plt.close(fig)
    return Path(path)


def split_figure(hist: np.ndarray, path: Path, *, nodes: Sequence[int], title: str = "") -> Path:
    """A nodes × classes heat map of a run's data split (sample counts, one row per data
    holder; rows beyond 200 are binned so the figure stays readable)."""
    hist = np.asarray(hist, dtype=float)
    nodes = list(nodes)
    if len(hist) > 200:  # many clients: show every k-th row
        step = -(-len(hist) // 200)
        hist, nodes = hist[::step], nodes[::step]
    with style():
        fig, ax = plt.subplots(figsize=(1.2 + 0.35 * hist.shape[1], 1.2 + 0.05 * max(20, len(hist))))
        im = ax.imshow(hist, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.grid(False)
        ax.set_xlabel("class")
        ax.set_ylabel("node")
        ax.set_xticks(range(hist.shape[1]))
        ticks = np.linspace(0, len(hist) - 1, min(len(hist), 10)).round().astype(int) if len(hist) else []
        ax.set_yticks(list(ticks))
        ax.set_yticklabels([str(nodes[t]) for t in ticks])
        fig.colorbar(im, ax=ax, label="training samples")
        if title:
            ax.set_title(title)
        fig.savefig(path)
        plt.close(fig)
    return Path(path)
