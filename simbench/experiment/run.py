"""One simulated run: config -> topology, data split, learners, nodes -> SimWorld -> files.

Data flows one way: the config builds the topology, scenario and data split; those build
the nodes; the world runs them; the recorder's tables become ``events.csv``,
``epochs.csv``, ``manifest.json`` and a plot in ``<output.dir>/<name>/<run_id>/``.
A run that deadlocks (e.g. every peer of a crashed server waits forever) or is
interrupted still writes what it recorded, with its status in the manifest.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics.recorder import Recorder
from ..sim.kernel import Deadlock
from ..sim.world import SimWorld
from .build import EpochRelay, build_nodes
from .config import ExperimentConfig


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    sim_time: float
    wall_time: float
    events: Any
    epochs: Any
    error: str | None = None

    def final(self, metric: str = "test_acc", node: str = "avg") -> float:
        if metric not in self.epochs:
            return float("nan")
        values = self.epochs.loc[self.epochs["node"] == node, metric].dropna()
        return float(values.iloc[-1]) if len(values) else float("nan")


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import networkx, pandas, simbench  # noqa: E401
    return {"python": platform.python_version(), "simbench": simbench.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "networkx": networkx.__version__,
            "platform": platform.platform()}


def run_experiment(cfg: ExperimentConfig, out_root: str | Path | None = None, *, progress: bool | None = None) -> RunResult:
    """Run ``cfg`` in the simulator and write its run directory."""
    run_id = cfg.run_id()
    run_dir = Path(out_root or cfg.output.dir) / cfg.name / run_id
    recorder = Recorder(run_id, wall_clock=cfg.output.wall_clock)
    show = cfg.output.progress if progress is None else progress
    relay = EpochRelay()
    built = build_nodes(cfg, relay, run_dir=run_dir)
    observer = built.workload.observer(recorder, built.reporters())
    relay.target = observer.on_epoch
    world = SimWorld(built.graph, built.nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
                     scenario=cfg.scenario, profiles=built.profiles, recorder=recorder, seed=built.streams.world,
                     horizon=cfg.time_limit or 24 * 3600.0)
    observer.clock = lambda: world.now
    observer.bytes_total = lambda: float(sum(world.network.bytes_sent))
    rounds = getattr(cfg.algorithm_params, "rounds", None) or cfg.train.epochs
    total = len(built.reporters()) * (rounds + 1)  # epoch 0 is the starting point
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=total or None, desc=f"{cfg.name} {cfg.algorithm}", unit="node-epoch", dynamic_ncols=True, mininterval=0.5)
        observer.progress = lambda: (bar.update(1), bar.set_postfix_str(f"sim {world.now:8.2f}s"))
    status, error = "finished", None
    t0 = time.perf_counter()
    try:
        world.run(until=cfg.time_limit)
    except Deadlock as exc:
        status, error = "deadlock", str(exc)
        recorder.event(world.now, "all", "deadlock", 1.0)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        wall = time.perf_counter() - t0
        if bar is not None:
            bar.set_postfix_str(f"sim {world.now:.2f}s, wall {wall:.1f}s, {status}")
            bar.close()
        observer.flush()
        result = _write(cfg, run_dir, recorder, status, error, world.now, wall, built.workload)
    if status == "interrupted":
        raise KeyboardInterrupt
    return result


def _write(cfg, run_dir: Path, recorder: Recorder, status: str, error, sim_time: float, wall: float,
           workload) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    recorder.write(run_dir)
    manifest = {
        "run_id": recorder.run_id, "status": status, "error": error, "seed": cfg.seed,
        "sim_time_s": sim_time, "wall_time_s": round(wall, 3) if cfg.output.wall_clock else None,
        "config": cfg.to_dict(), "versions": versions(), "git_revision": git_revision(),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    events, epochs = recorder.events_frame(), recorder.epochs_frame()
    if cfg.output.plot and len(epochs):
        topo = cfg.topology.get("kind") or cfg.topology.get("file")
        workload.plot(epochs, events, run_dir, title=f"{cfg.name}: {cfg.algorithm} on {topo} ({cfg.nodes} nodes), "
                      f"{cfg.dataset.name} / {cfg.model.name}  [{recorder.run_id}]")
    return RunResult(recorder.run_id, run_dir, status, sim_time, wall, events, epochs, error)
