"""Merge the per-node rows of a real run into the layout of a simulated run.

Input: ``<run_dir>/nodes/<id>/`` written by each node process (events.csv, epochs.csv,
status.json, params/epoch<E>.npy). Output in ``<run_dir>``: events.csv sorted by
``time_s``, epochs.csv in the recorder's order, and manifest.json with ``mode: real``.
When parameter snapshots are there, the average model of every epoch is evaluated as the
simulator's observer does (the ``avg`` rows and ``consensus_distance``), at the time the
last node reported that epoch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..metrics.recorder import EPOCH_COLUMNS, EVENT_COLUMNS, Recorder


@dataclass
class NodeOutcome:
    """How one node process ended."""

    node: int
    exit_code: int | None
    status: str
    """finished, time_limit, crashed (scheduled), failed/error (its own fault), stopped (another
    failed), timeout (launch --timeout), interrupted (signal), killed (did not stop on SIGTERM)."""
    reason: str = ""
    """The last line of its stderr when it failed."""


def overall_status(outcomes: list[NodeOutcome]) -> str:
    states = {o.status for o in outcomes}
    for bad in ("failed", "error", "interrupted", "timeout", "killed", "stopped"):
        if bad in states:
            return bad
    return "time_limit" if "time_limit" in states else "finished"


def _node_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "nodes"
    if not root.is_dir():
        return []
    return sorted((int(d.name), d) for d in root.iterdir() if d.is_dir() and d.name.isdigit())


def _read(path: Path) -> pd.DataFrame | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path, dtype={"node": str})


def merge(run_dir: str | Path, cfg: Any, outcomes: list[NodeOutcome] | None = None, *,
          status: str | None = None, wall_time: float | None = None, avg: bool = True) -> dict:
    """Write events.csv, epochs.csv and manifest.json of ``run_dir``; returns the manifest."""
    run_dir = Path(run_dir)
    dirs = _node_dirs(run_dir)
    statuses = {}
    for k, d in dirs:
        try:
            statuses[k] = json.loads((d / "status.json").read_text())
        except (OSError, ValueError):
            statuses[k] = {"node": k, "status": "unknown"}
    if outcomes is None:
        outcomes = [NodeOutcome(k, None, s.get("status", "unknown"), s.get("error") or "") for k, s in statuses.items()]
    events = [df for _, d in dirs if (df := _read(d / "events.csv")) is not None]
    epochs = [df for _, d in dirs if (df := _read(d / "epochs.csv")) is not None]
    ev = pd.concat(events, ignore_index=True) if events else pd.DataFrame(columns=EVENT_COLUMNS)
    ep = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(columns=["run_id", "node", "time_s", *EPOCH_COLUMNS])
    if avg and cfg is not None:
        extra_ev, extra_ep = gan_rows(ep) if "fid" in ep.columns else average_rows(run_dir, cfg, ep)
        ev = pd.concat([ev, extra_ev], ignore_index=True) if len(extra_ev) else ev
        ep = pd.concat([ep, extra_ep], ignore_index=True) if len(extra_ep) else ep
    # rows from the nodes' files and from the avg recorder: one float type for numbers
    ev = ev.astype({c: float for c in ("time_s", "wall_s", "value")})
    ep = ep.astype({c: float for c in ep.columns if c not in ("run_id", "node", "epoch")})
    ev = ev.sort_values("time_s", kind="stable").reset_index(drop=True)
    key = ep["node"].astype(str).map(lambda s: (1, 0) if not s.lstrip("-").isdigit() else (0, int(s)))
    ep = ep.assign(_k=key).sort_values(["_k", "epoch"], kind="stable").drop(columns="_k").reset_index(drop=True)
    ep = ep[[c for c in ["run_id", "node", "time_s", *EPOCH_COLUMNS] if c in ep.columns]
            + sorted(c for c in ep.columns if c not in ("run_id", "node", "time_s", *EPOCH_COLUMNS))]
    for name, frame in (("events.csv", ev), ("epochs.csv", ep)):
        tmp = run_dir / (name + ".tmp")
        frame.to_csv(tmp, index=False, float_format="%.6g")
        tmp.replace(run_dir / name)
    manifest = _manifest(run_dir, cfg, outcomes, statuses, status or overall_status(outcomes), wall_time)
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    if cfg is not None and cfg.output.plot and len(ep):
        try:
            from ..report.plots import plot_run
            plot_run(ep, ev, run_dir / "test_acc.png", title=f"{cfg.name}: {cfg.algorithm} on {manifest['run_id']} (real)")
        except Exception:  # noqa: BLE001 - a plot is a convenience; the tables are the result
            pass
    return manifest


def _manifest(run_dir: Path, cfg: Any, outcomes: list[NodeOutcome], statuses: dict, status: str,
              wall_time: float | None) -> dict:
    from ..experiment.run import _git_revision, _versions

    failed = [o for o in outcomes if o.status in ("failed", "error", "killed", "timeout")]
    return {
        "run_id": run_dir.name, "mode": "real", "status": status,
        "error": "; ".join(f"node {o.node}: {o.reason or o.status}" for o in failed) or None,
        "seed": getattr(cfg, "seed", None),
        "real_time_s": max((s.get("end_time_s", 0.0) or 0.0 for s in statuses.values()), default=0.0),
        "wall_time_s": None if wall_time is None else round(wall_time, 3),
        "nodes": [{**asdict(o), **{k: statuses.get(o.node, {}).get(k) for k in
                                   ("role", "bytes_sent", "msgs_sent", "compute_s", "wire_rejected", "address")}}
                  for o in outcomes],
        "config": cfg.to_dict() if cfg is not None else None,
        "versions": _versions(), "git_revision": _git_revision(),
    }


def gan_rows(epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A GAN run's ``avg`` rows: per epoch, the scores of the first node to report them (as
    the simulator's observer does)."""
    scored = epochs[epochs["fid"].notna()]
    if not len(scored):
        return pd.DataFrame(), pd.DataFrame()
    first = scored.sort_values("time_s", kind="stable").groupby("epoch", sort=True).head(1)
    return pd.DataFrame(), first.assign(node="avg")[["run_id", "node", "time_s", "epoch", "fid", "class_score",
                                                      "coverage"]].reset_index(drop=True)


def average_rows(run_dir: Path, cfg: Any, epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``avg`` rows from the nodes' parameter snapshots (empty frames when there are none)."""
    snaps: dict[int, dict[int, Path]] = {}
    for k, d in _node_dirs(run_dir):
        for f in (d / "params").glob("epoch*.npy"):
            snaps.setdefault(int(f.stem[5:]), {})[k] = f
    if not snaps or not len(epochs):
        return pd.DataFrame(), pd.DataFrame()
    import torch

    from ..algorithms import ALGORITHMS
    from ..experiment.run import build_nodes
    from ..metrics.consensus import AverageModelObserver

    rec = Recorder(run_dir.name, wall_clock=False)
    graph, roles, _p, _n, _c, (make_model, test, _o, _d) = build_nodes(cfg, rec, None, only=min(snaps[min(snaps)]))
    reporters = [i for i in roles if roles[i] in ALGORITHMS[cfg.algorithm].reporting_roles()]
    obs = AverageModelObserver(rec)
    obs.configure(make_model(0), test, expected=len(reporters), device=cfg.device)
    times = {(str(r.node), int(r.epoch)): float(r.time_s) for r in epochs.itertuples()}

    class Flat:  # the observer asks a learner for get_flat() only
        def __init__(self, path: Path) -> None:
            self.path = path

        def get_flat(self) -> torch.Tensor:
            return torch.from_numpy(np.load(self.path, allow_pickle=False))

    for epoch in sorted(snaps):
        order = sorted(snaps[epoch], key=lambda k: times.get((str(k), epoch), 0.0))
        for k in order:
            obs.clock = lambda t=times.get((str(k), epoch), 0.0): t
            obs.on_epoch(k, epoch, Flat(snaps[epoch][k]))
    obs.flush()
    ev = rec.events_frame()
    ev["run_id"] = epochs["run_id"].iloc[0]
    ep = rec.epochs_frame()
    ep["run_id"] = epochs["run_id"].iloc[0]
    return ev, ep
