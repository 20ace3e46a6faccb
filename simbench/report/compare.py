"""``simbench compare RUN_A RUN_B``: two run directories side by side.

Prints what differs between their configs, how each ended, its headline numbers (the
average model's final and best quality, simulated and wall time, bytes and messages) and
its quality per epoch; ``--plot FILE`` draws both quality curves against time in one
figure. Works for simulated and real runs alike (the quality is the run's workload's:
test accuracy, or FID).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..core.schema import ConfigError


def _load(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        epochs = pd.read_csv(run_dir / "epochs.csv", dtype={"node": str})
        events = pd.read_csv(run_dir / "events.csv", dtype={"node": str})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"compare: {run_dir} is not a run directory ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"compare: {run_dir}/manifest.json is not a run manifest")
    return {"dir": run_dir, "manifest": manifest, "epochs": epochs, "events": events}


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _workload(run: dict):
    """The run's workload class: its algorithm's, else the one whose quality column it has."""
    from ..workloads import WORKLOADS, results_workload
    algo = (run["manifest"].get("config") or {}).get("algorithm", {})
    name = algo.get("name") if isinstance(algo, dict) else algo
    try:
        from .. import registry
        from ..workloads import workload_class
        return workload_class(registry.algorithm(name))
    except (ConfigError, TypeError):
        avg = run["epochs"][run["epochs"]["node"] == "avg"]
        return results_workload({}, avg) if len(avg) else WORKLOADS["classifier"]


def summary(run: dict, workload) -> dict:
    """The headline numbers of a run."""
    m, ep, ev = run["manifest"], run["epochs"], run["events"]
    quality = workload.quality
    avg = ep[ep["node"] == "avg"].dropna(subset=[quality]) if quality in ep else ep.iloc[:0]
    best = (avg[quality].max() if workload.higher_is_better else avg[quality].min()) if len(avg) else float("nan")
    total = lambda metric: float(ev.loc[ev["metric"] == metric, "value"].sum())  # noqa: E731
    return {"status": m.get("status"), "mode": m.get("mode", "sim"),
            "time_s": m.get("sim_time_s", m.get("real_time_s")), "wall_time_s": m.get("wall_time_s"),
            f"final {quality}": float(avg[quality].iloc[-1]) if len(avg) else float("nan"),
            f"best {quality}": float(best), "epochs": int(avg["epoch"].max()) if len(avg) else 0,
            "MB sent": total("bytes_sent_total") / 1e6, "messages": total("msgs_sent_total")}


def compare(run_a: str | Path, run_b: str | Path, plot: str | Path | None = None) -> str:
    """The comparison of two runs as text (and their curves in ``plot``, if given)."""
    a, b = _load(run_a), _load(run_b)
    workload = _workload(a)
    quality = workload.quality
    ca, cb = _flat(a["manifest"].get("config") or {}), _flat(b["manifest"].get("config") or {})
    diff = [(k, ca.get(k, "—"), cb.get(k, "—")) for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
    table = pd.DataFrame({"A": summary(a, workload), "B": summary(b, workload)})
    lines = [f"A: {a['dir']}", f"B: {b['dir']}", ""]
    lines += ["config differences:" if diff else "same config"]
    lines += [f"  {k}: {va!r} -> {vb!r}" for k, va, vb in diff]
    lines += ["", table.to_string(float_format=lambda v: f"{v:.4g}")]
    per_epoch = pd.DataFrame({
        name: run["epochs"][run["epochs"]["node"] == "avg"].set_index("epoch")[quality]
        for name, run in (("A", a), ("B", b)) if quality in run["epochs"]})
    if len(per_epoch):
        lines += ["", f"{quality} of the average model per epoch:", per_epoch.to_string(float_format=lambda v: f"{v:.4f}")]
    if plot is not None:
        _plot(a, b, quality, Path(plot))
        lines += ["", f"wrote {plot}"]
    return "\n".join(lines)


def _plot(a: dict, b: dict, quality: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.4), constrained_layout=True)
    for name, run, color in (("A", a, "tab:blue"), ("B", b, "tab:orange")):
        ep = run["epochs"]
        avg = ep[ep["node"] == "avg"].dropna(subset=[quality]) if quality in ep else ep.iloc[:0]
        mode = run["manifest"].get("mode", "sim")
        ax.plot(avg["time_s"], avg[quality], color=color, marker="o", ms=3,
                label=f"{name}: {run['dir'].name} ({'wall' if mode == 'real' else 'simulated'} time)")
    ax.set_xlabel("time [s]")
    ax.set_ylabel(quality)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
