"""The report of a benchmark matrix: summary tables and figures from its results directory.

``write_report("results/<matrix>")`` reads what the matrix runner wrote (``matrix.json``,
``cells.csv``, ``curves.csv``, ``faults.csv``) and writes ``report.md`` (or
``report.html``) next to PNG figures: a table per configuration (mean ± std over seeds),
one pivot table per axis, accuracy against simulated time and against bytes sent, time to
the target accuracy, and a heat map over two axes. Which axis becomes the panels (facet)
and which two make the heat map come from the matrix's ``report:`` hints, else are chosen
from the axes (``scenario`` is the preferred facet; seeds are always averaged).

What the tables and curves show comes from the matrix's workload
(:mod:`simbench.workloads`): a classifier matrix is reported by the average model's test
accuracy and the time to the target accuracy, a GAN matrix by the global generator's FID
(``report_fid_vs_*.png``; ``fid_vs_*.png`` are ``benchmarks/gan_summary.py``'s), with no
target.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import figures
from .figures import METRIC_LABELS, SCALE

from ..workloads import ClassifierWorkload, Workload, results_workload

TABLE_METRICS = ClassifierWorkload.report_metrics
REPORT_KEYS = ("facet", "heatmap")


def load_results(root: str | Path) -> dict[str, Any]:
    """The matrix spec and its tables (axis columns kept as text labels)."""
    root = Path(root)
    try:
        spec = json.loads((root / "matrix.json").read_text())
    except FileNotFoundError:
        from ..core.schema import ConfigError
        raise ConfigError(f"report: {root} holds no matrix.json; run `simbench matrix FILE` first") from None
    axes = [a["path"] for a in spec["axes"]]
    text = {a: str for a in axes}
    cells = pd.read_csv(root / "cells.csv", dtype={**text, "error": str})
    curves = pd.read_csv(root / "curves.csv", dtype=text)
    faults = pd.read_csv(root / "faults.csv", dtype={**text, "node": str})
    meta = cells.drop_duplicates("cell").set_index("cell")[[*axes, "status", "error"]]
    wide = meta.join(cells.pivot(index="cell", columns="metric", values="value")).reset_index()
    return {"spec": spec, "axes": axes, "cells": cells, "wide": wide, "curves": curves, "faults": faults,
            "order": {a["path"]: a["labels"] for a in spec["axes"]}, "workload": results_workload(spec, curves)}


def _choose(res: dict) -> dict:
    """Facet, series and heat-map axes from the hints, else from the axes themselves."""
    spec, order = res["spec"], res["order"]
    hints = spec.get("report") or {}
    varying = [a for a in res["axes"] if a != "seed" and len(order[a]) > 1]
    facet = hints.get("facet")
    if facet is None:
        facet = "scenario" if "scenario" in varying else (varying[-1] if len(varying) > 1 else None)
    series = [a for a in varying if a != facet]
    heat = dict(hints.get("heatmap") or {})
    if not heat:
        pick = [a for a in varying if a != "algorithm"]
        pick = pick if len(pick) >= 2 else varying
        if len(pick) >= 2:
            heat = {"rows": pick[0], "cols": pick[1]}
    if heat:
        heat.setdefault("metric", res["workload"].heat_metric)
        heat.setdefault("where", {})
    return {"facet": facet, "series": series, "heat": heat, "varying": varying}


def _decimals(metric: str, v: float) -> int:
    """Digits after the point: 3 for accuracies, else by magnitude (0 from 100 up)."""
    if metric in ("final_acc", "best_acc"):
        return 3
    if metric in ("messages", "failures") and float(v).is_integer():
        return 0
    return 2 if abs(v) < 100 else 0


def _fmt(metric: str, v: float, decimals: int | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = v * SCALE.get(metric, 1.0)
    return f"{v:.{_decimals(metric, v) if decimals is None else decimals}f}"


def _mean_std(metric: str, vals: pd.Series) -> str:
    ok = vals.dropna()
    if ok.empty:
        return "never" if metric == "time_to_target_s" else "–"
    mean = ok.mean()
    text = _fmt(metric, mean)
    if len(ok) > 1:  # the spread at the mean's precision: "4133 ± 0", not "4133 ± 0.00"
        text += f" ± {_fmt(metric, ok.std(ddof=0), _decimals(metric, mean * SCALE.get(metric, 1.0)))}"
    if metric == "time_to_target_s" and len(ok) < len(vals):
        text += f" ({len(ok)}/{len(vals)})"
    return text


def config_table(wide: pd.DataFrame, varying: list[str], order: dict, metrics=TABLE_METRICS) -> pd.DataFrame:
    """One row per configuration (non-seed axes): mean ± std over the seeds that finished of
    each metric, and how every seed's cell ended."""
    keys = varying or ["matrix"]
    wide = wide.assign(matrix="all") if not varying else wide
    rows = []
    for key, g in wide.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["seeds"] = len(g)
        row["status"] = ", ".join(f"{s} {n}" for s, n in g["status"].value_counts().items())
        ok = g[g["status"] == "finished"]
        for m in metrics:
            row[_header(m)] = _mean_std(m, ok[m]) if m in ok else "–"
        rows.append(row)
    out = pd.DataFrame(rows)
    for a in varying:
        out[a] = pd.Categorical(out[a], categories=order[a], ordered=True)
    return out.sort_values(varying).reset_index(drop=True) if varying else out


def axis_table(wide: pd.DataFrame, axis: str, order: dict, metrics=TABLE_METRICS) -> pd.DataFrame:
    """``pivot_table`` of the metric means per value of one axis (over all other axes and seeds,
    cells that finished only)."""
    metrics = [m for m in metrics if m in wide]
    counts = wide.groupby(axis)["cell"].count()
    wide = wide[wide["status"] == "finished"]
    piv = wide.pivot_table(index=axis, values=metrics, aggfunc="mean", dropna=False).reindex(counts.index)
    piv = piv.reindex([v for v in order[axis] if v in piv.index])
    out = pd.DataFrame({axis: piv.index, "cells": counts.reindex(piv.index).to_numpy(),
                        "finished": wide.groupby(axis)["cell"].count().reindex(piv.index).fillna(0).astype(int).to_numpy()})
    for m in metrics:
        out[_header(m)] = [_fmt(m, v) for v in piv[m]]
    return out


def _header(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


# -- output ----------------------------------------------------------------------------------
def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _render(blocks: list[tuple], fmt: str, title: str) -> str:
    out = []
    for kind, *args in blocks:
        if fmt == "md":
            out.append({"h": lambda lvl, t: "#" * lvl + " " + t, "p": lambda t: t, "table": _md_table,
                        "img": lambda f, alt: f"![{alt}]({f})"}[kind](*args))
        else:
            out.append({"h": lambda lvl, t: f"<h{lvl}>{html.escape(t)}</h{lvl}>",
                        "p": lambda t: f"<p>{html.escape(t)}</p>",
                        "table": lambda df: df.to_html(index=False, border=0, classes="results"),
                        "img": lambda f, alt: f'<img src="{f}" alt="{html.escape(alt)}" style="max-width:100%">'}[kind](*args))
    if fmt == "md":
        return "\n\n".join(out) + "\n"
    css = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table.results{border-collapse:collapse;"
           "font-size:13px}table.results td,table.results th{padding:3px 8px;border-bottom:1px solid #ddd}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


FIGURE_FORMATS = ("png", "pdf", "svg")


def write_report(root: str | Path, fmt: str = "md", figures_format: str = "png") -> Path:
    """Write ``report.md`` (or ``.html``) and its figures (PNG, PDF or SVG) into ``root``;
    return its path. Means and figures use the cells that finished; the others are listed."""
    if fmt not in ("md", "html"):
        raise ValueError(f"report format must be md or html, got {fmt!r}")
    if figures_format not in FIGURE_FORMATS:
        raise ValueError(f"figure format must be one of {', '.join(FIGURE_FORMATS)}, got {figures_format!r}")
    ext = figures_format
    root = Path(root)
    res = load_results(root)
    spec, everything, order = res["spec"], res["wide"], res["order"]
    wide = everything[everything["status"] == "finished"]
    pick = _choose(res)
    workload: type[Workload] = res["workload"]
    metrics = workload.report_metrics
    target = float(spec.get("target_accuracy", 0.8)) if workload.has_target else None
    name = spec["name"]
    status = ", ".join(f"{n} {s}" for s, n in everything["status"].value_counts().items())
    blocks: list[tuple] = [("h", 1, f"Benchmark matrix `{name}`")]
    axes_text = "; ".join(f"{a}: {', '.join(order[a])}" for a in res["axes"])
    quality = workload.report_text(spec)
    blocks.append(("p", f"{len(everything)} of {spec.get('cells', len(everything))} cells recorded ({status}); "
                        f"the tables and figures use the {len(wide)} that finished. "
                        f"Axes — {axes_text}. {quality} "
                        f"Times are simulated seconds; data sent counts the serialized bytes of every message."))
    if spec.get("source"):
        blocks.append(("p", f"Regenerate: `simbench matrix {spec['source']} && simbench report {root}`"))

    blocks += [("h", 2, "Results per configuration (mean ± std over the seeds that finished)"),
               ("table", config_table(everything, pick["varying"], order, metrics))]
    blocks.append(("h", 2, "Summary per axis (mean over all other axes and seeds, finished cells)"))
    for axis in pick["varying"]:
        blocks += [("h", 3, axis), ("table", axis_table(everything, axis, order, metrics))]

    curves, faults = res["curves"], res["faults"]
    curves = curves[curves["cell"].isin(set(wide["cell"]))]
    if len(curves):
        seeds = len(order.get("seed", [0]))
        y, (short, long, stem) = workload.quality, workload.report_curve
        ylim = workload.axis_range(curves.loc[curves["epoch"] >= 1, y]) if y in curves else None
        for x, fname, what in (("time_s", f"{stem}_vs_time.{ext}", "simulated time"),
                               ("bytes_sent", f"{stem}_vs_bytes.{ext}", "data sent by all nodes")):
            figures.curves_figure(curves, faults, root / fname, x=x, series=pick["series"], facet=pick["facet"],
                                  order=order, target=target, title=name, y=y, ylabel=workload.quality_label,
                                  ylim=ylim)
            blocks += [("h", 2, f"{short} vs {what}"), ("img", fname, f"{short} vs {what}"),
                       ("p", f"{long} after each epoch against {what}; line: mean over "
                             f"{seeds} seed(s), band: ±1 std. Markers: crash (X) or recovery (+) of a node, "
                             "placed where it happened on the curve" + ("; dotted: target accuracy." if target else "."))]
    if target is not None and "time_to_target_s" in wide:
        figures.time_to_target_figure(wide, root / f"time_to_target.{ext}", series=pick["series"], facet=pick["facet"],
                                      order=order, target=target)
        blocks += [("h", 2, f"Time to {target:.0%} accuracy"), ("img", f"time_to_target.{ext}", "time to target"),
                   ("p", "Simulated seconds until the average model first reaches the target; bar: mean over the "
                         "seeds that reached it, error bar: std; k/n: only k of n seeds reached it.")]
    heat = pick["heat"]
    if heat:
        sub = wide
        for a, v in heat["where"].items():
            sub = sub[sub[a].isin([str(x) for x in (v if isinstance(v, list) else [v])])]
        where = ", ".join(f"{a} = {v}" for a, v in heat["where"].items())
        figures.heatmap_figure(sub, root / f"heatmap.{ext}", rows=heat["rows"], cols=heat["cols"], metric=heat["metric"],
                               order=order, title=where)
        blocks += [("h", 2, f"{_header(heat['metric'])}: {heat['rows']} × {heat['cols']}"),
                   ("img", f"heatmap.{ext}", "heat map"),
                   ("p", f"Mean {_header(heat['metric'])} over {'cells with ' + where + ' and ' if where else ''}"
                         "all other axes and seeds; blank: no such cell.")]
    failed = everything[everything["status"] != "finished"]
    if len(failed):
        table = failed[["cell", *pick["varying"], "status", "error"]].fillna("")
        blocks += [("h", 2, "Cells that did not finish"),
                   ("p", "deadlock: every live node waited and nothing was scheduled (e.g. a synchronous server "
                         "waiting for a crashed worker); failed: the cell raised an error (rerun redoes it)."),
                   ("table", table)]
    path = root / f"report.{fmt}"
    path.write_text(_render(blocks, fmt, name))
    return path
