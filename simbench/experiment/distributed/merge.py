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

import pandas as pd

from ...core.files import write_atomic
from ...metrics.recorder import EPOCH_COLUMNS, EVENT_COLUMNS


@dataclass
class NodeOutcome:
    """How one node process ended."""

    node: int
    exit_code: int | None
    status: str
    """One of :data:`NODE_STATUSES`: finished, time_limit, crashed (scheduled), deadlock (no
    progress), failed (its own fault), stopped (another failed), timeout (launch --timeout),
    interrupted (signal), killed (did not stop on SIGTERM), unknown (no readable status)."""
    reason: str = ""
    """The last line of its stderr when it failed."""


NODE_STATUSES = ("finished", "time_limit", "crashed", "deadlock", "failed", "stopped", "timeout", "interrupted",
                 "killed", "unknown")


def overall_status(outcomes: list[NodeOutcome]) -> str:
    """The run's status in the simulator's words (simbench.experiment.run.STATUSES): interrupted,
    deadlock, failed (a node failed, was killed, or left no readable status), time_limit
    (the config's or launch --timeout), all_crashed, else finished."""
    states = {o.status for o in outcomes}
    if not outcomes:
        return "failed"
    if "interrupted" in states:
        return "interrupted"
    if "deadlock" in states:
        return "deadlock"
    if states & {"failed", "killed", "stopped", "unknown"} or not states <= set(NODE_STATUSES):
        return "failed"
    if states & {"timeout", "time_limit"}:
        return "time_limit"
    if states == {"crashed"}:
        return "all_crashed"
    return "finished"


def read_status(path: Path, node: int) -> dict:
    """A node's status.json, or ``{status: unknown}`` when it is missing or not a status."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"node": node, "status": "unknown"}
    if not isinstance(info, dict) or info.get("status") not in NODE_STATUSES:
        return {"node": node, "status": "unknown"}
    return info


def node_dirs(run_dir: Path) -> list[tuple[int, Path]]:
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
    dirs = node_dirs(run_dir)
    statuses = {}
    for k, d in dirs:
        statuses[k] = read_status(d / "status.json", k)
    if outcomes is None:
        outcomes = [NodeOutcome(k, None, s.get("status", "unknown"), s.get("error") or "") for k, s in statuses.items()]
    events = [df for _, d in dirs if (df := _read(d / "events.csv")) is not None]
    epochs = [df for _, d in dirs if (df := _read(d / "epochs.csv")) is not None]
    ev = pd.concat(events, ignore_index=True) if events else pd.DataFrame(columns=EVENT_COLUMNS)
    ep = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(columns=["run_id", "node", "time_s", *EPOCH_COLUMNS])
    workload = None
    if cfg is not None:
        from ...workloads import make_workload
        from ..build import build_graph
        workload = make_workload(cfg, None, run_dir)
        algo = cfg.algorithm_class()
        roles = algo.roles(build_graph(cfg, workload.streams), cfg.algorithm_params)
        reporters = [i for i in sorted(roles) if roles[i] in algo.reporting_roles()]
    if avg and workload is not None and len(ep):
        extra_ev, extra_ep = workload.merge_rows(run_dir, ep, reporters)
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
        write_atomic(run_dir / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False, float_format="%.6g"))
    manifest = _manifest(run_dir, cfg, outcomes, statuses, status or overall_status(outcomes), wall_time)
    write_atomic(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    if workload is not None and cfg.output.plot and len(ep):
        try:
            workload.plot(ep, ev, run_dir, title=f"{cfg.name}: {cfg.algorithm} on {manifest['run_id']} (real)",
                          time_label="wall time [s]")
        except Exception:  # noqa: BLE001 - a plot is a convenience; the tables are the result
            pass
    return manifest


def _manifest(run_dir: Path, cfg: Any, outcomes: list[NodeOutcome], statuses: dict, status: str,
              wall_time: float | None) -> dict:
    from ..run import git_revision, versions

    failed = [o for o in outcomes if o.status in ("failed", "killed", "timeout", "deadlock", "unknown")]
    return {
        "run_id": run_dir.name, "mode": "real", "status": status,
        "error": "; ".join(f"node {o.node}: {o.reason or o.status}" for o in failed) or None,
        "seed": getattr(cfg, "seed", None),
        "real_time_s": max((s.get("end_time_s", 0.0) or 0.0 for s in statuses.values()), default=0.0),
        "wall_time_s": None if wall_time is None else round(wall_time, 3),
        "nodes": [{**asdict(o), **{k: statuses.get(o.node, {}).get(k) for k in
                                   ("role", "bytes_sent", "msgs_sent", "compute_s", "wire_rejected", "address")}}
                  for o in outcomes],
        # what every node evaluated on (the same record the simulator writes; nodes agree)
        "evaluation": next((s["evaluation"] for s in statuses.values() if s.get("evaluation")), None),
        "config": cfg.to_dict() if cfg is not None else None,
        "versions": versions(), "git_revision": git_revision(),
    }
