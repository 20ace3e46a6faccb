"""One simulated run: config -> topology, data split, learners, nodes -> SimWorld -> files.

Data flows one way: the config builds the topology, scenario and data split; those build
the nodes; the world runs them; the recorder's tables become ``events.csv``,
``epochs.csv``, ``manifest.json`` and a plot in the run directory
``<output.dir>/<name>/<run_id>/`` (``<run_id>-2``, ``-3``, ... when that exists: a run
never overwrites another; ``force=True`` reuses the first).

A run's status (in ``manifest.json``, the same words in real mode and in matrix tables):

``finished``     every node's code returned (crashed nodes aside): training ran to its end;
``deadlock``     every live node waits and nothing is scheduled that could wake one;
``time_limit``   the config's ``time_limit`` stopped nodes that were still running;
``all_crashed``  every node was crashed when the run ended: there is no trained model;
``failed``       the code raised (the error, its last event and ``error.txt`` with the traceback);
``interrupted``  Ctrl-C or SIGTERM;
``running``      written when the run starts: a run killed outright keeps it.

Before anything is computed the run directory is created and checked for
:data:`MIN_FREE_BYTES` of free space; events are then written as they are recorded, so a
failing or killed run keeps its rows.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.files import write_atomic
from ..core.schema import ConfigError
from ..metrics.recorder import Recorder
from ..metrics.trackers import make_trackers
from ..sim.kernel import Deadlock
from ..sim.world import SimWorld
from .build import EpochRelay, build_nodes
from .config import ExperimentConfig

STATUSES = ("finished", "deadlock", "time_limit", "all_crashed", "failed", "interrupted", "running")
MIN_FREE_BYTES = 20 * 2**20
"""A run refuses to start with less free space than this where it writes."""


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
    execution: Any = None
    """How it was computed (:class:`Execution`; None for a real run)."""

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
            "platform": platform.platform(), "torch_threads": torch.get_num_threads()}


def run_dir_for(out_root: str | Path, cfg: ExperimentConfig, suffix: str = "", *, force: bool = False) -> Path:
    """A run directory of ``cfg`` under ``out_root`` that no run has used: ``<name>/<run_id><suffix>``,
    else with ``-2``, ``-3``, ... appended; ``force`` takes the first one (its old files are removed)."""
    base = Path(out_root) / cfg.name / f"{cfg.run_id()}{suffix}"
    if force:
        if base.exists():
            shutil.rmtree(base)
        return base
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and check that results can be written there: one ConfigError line
    (before any compute) when the place is read-only, not a directory, or nearly full."""
    where = f"output: {run_dir}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"x")
        probe.unlink()
        free = shutil.disk_usage(run_dir).free
    except OSError as exc:
        raise ConfigError(f"{where} cannot be written ({exc.strerror or exc}); use --out to write elsewhere") from None
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"{where}: only {free // 2**20} MiB free on its disk; a run needs at least "
                          f"{MIN_FREE_BYTES // 2**20} MiB")


def run_experiment(cfg: ExperimentConfig, out_root: str | Path | None = None, *, progress: bool | None = None,
                   run_dir: str | Path | None = None, force: bool = False) -> RunResult:
    """Run ``cfg`` in the simulator and write its run directory (``run_dir``, else a fresh one
    under ``out_root``; see :func:`run_dir_for`). Bad input raises a ConfigError before
    anything is computed; everything after that ends in a written run with its status."""
    started = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(out_root or cfg.output.dir, cfg, force=force)
    prepare_run_dir(run_dir)
    recorder = Recorder(cfg.run_id(), wall_clock=cfg.output.wall_clock)
    relay = EpochRelay()
    built = build_nodes(cfg, relay, run_dir=run_dir)
    observer = built.workload.observer(recorder, built.reporters())
    relay.target = observer.on_epoch
    write_data_summary(cfg, run_dir, built)
    used, why = built.workload.execution(cfg.execution)
    world = SimWorld(built.graph, built.nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
                     scenario=cfg.scenario, profiles=built.profiles, recorder=recorder, seed=built.streams.world,
                     horizon=cfg.time_limit or 24 * 3600.0, population=built.population,
                     reporters=built.reporters(), fresh_node=built.fresh_node, batched=used == "batched")
    observer.clock = lambda: world.now
    observer.bytes_total = lambda: float(sum(world.network.bytes_sent))
    execution = Execution(cfg.execution, used, why, world.batcher, time.perf_counter() - started)
    evaluation = evaluation_record(cfg, built.workload.data)
    _write_manifest(cfg, run_dir, recorder.run_id, "running", None, 0.0, 0.0, execution, evaluation)
    recorder.stream_to(run_dir)
    recorder.trackers = make_trackers(cfg.output.trackers, run_dir, cfg, recorder.run_id)
    show = cfg.output.progress if progress is None else progress
    bar = _progress(cfg, world, observer, len(built.reporters())) if show else None
    status, error = "finished", None
    t0 = time.perf_counter()
    try:
        world.run(until=cfg.time_limit)
        if world.unfinished():
            status, error = "time_limit", f"stopped at the time limit {cfg.time_limit}s; nodes still running: " \
                                          f"{_ids(world.unfinished())}"
        elif len(world.crashed()) == len(world.runtimes):
            status, error = "all_crashed", "every node was crashed when the run ended"
    except Deadlock as exc:
        status, error = "deadlock", str(exc)
        recorder.event(world.now, "all", "deadlock", 1.0)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
    except Exception as exc:  # noqa: BLE001 - the algorithm's (or simbench's) error: record it truthfully
        status, error = "failed", _failure(exc, recorder, run_dir)
    finally:
        wall = time.perf_counter() - t0
        if bar is not None:
            bar.set_postfix_str(f"sim {world.now:.2f}s, wall {wall:.1f}s, {status}")
            bar.close()
        if status != "failed":
            observer.flush()
            if built.population is not None and built.population.timelines:
                online_fraction(recorder, built.population)
        result = _write(cfg, run_dir, recorder, status, error, world.now, wall, built.workload, execution, evaluation)
    if status == "interrupted":
        raise KeyboardInterrupt
    return result


def write_data_summary(cfg, run_dir: Path, built) -> None:
    """``data_split.txt`` (classes and sizes per data holder) and, with ``output.plot``, its
    heat map ``data_split.png`` in the run directory."""
    if not built.split:
        return
    from .build import data_summary
    text, hist = data_summary(cfg, built.workload.data, built.split)
    write_atomic(run_dir / "data_split.txt", text)
    if cfg.output.plot:
        from ..report.figures import split_figure
        split_figure(hist, run_dir / "data_split.png", nodes=sorted(built.split),
                     title=f"{cfg.dataset.name}, partition {cfg.dataset.partition}")


def evaluation_record(cfg, data) -> dict:
    """What the run evaluates on (manifest.json's ``evaluation``): the test samples each
    evaluation uses, the shard samples of the train metric and the validation split."""
    n_test = None if data is None else len(data.y_test)
    return {"test_samples": None if n_test is None else min(cfg.train.eval_samples, n_test),
            "test_set_size": n_test, "train_eval_samples_per_node": cfg.train.eval_samples,
            "val_fraction": cfg.dataset.val_fraction, "normalize": cfg.dataset.normalize}


def online_fraction(recorder: Recorder, population) -> None:
    """Add ``online_frac`` to every ``avg`` epoch row: the fraction of the population's nodes
    online at the epoch's time (from the availability trace, which the run followed)."""
    for (node, _epoch), row in recorder.epochs.items():
        if node == "avg":
            row["online_frac"] = population.online_fraction(row["time_s"])


def _ids(nodes: list[int]) -> str:
    return ", ".join(map(str, nodes[:10])) + (f" and {len(nodes) - 10} more" if len(nodes) > 10 else "")


def _failure(exc: BaseException, recorder: Recorder, run_dir: Path) -> str:
    """The one-line error of a failed run, naming its last event; the traceback goes to error.txt."""
    last = recorder.events[-1] if recorder.events else None
    where = f" (last event: node {last[2]} {last[3]} at t={last[0]:.6g}s)" if last else ""
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(exc)))
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}{where}"


def _progress(cfg: ExperimentConfig, world: SimWorld, observer: Any, reporters: int):
    """A bar of node-epochs whose note (simulated time, messages, compute steps) also moves
    within an epoch: a long epoch never looks hung."""
    from tqdm.auto import tqdm
    rounds = getattr(cfg.algorithm_params, "rounds", None) or cfg.train.epochs
    total = reporters * (rounds + 1)  # epoch 0 is the starting point
    bar = tqdm(total=total or None, desc=f"{cfg.name} {cfg.algorithm}", unit="node-epoch", dynamic_ncols=True,
               mininterval=0.5)

    def note() -> None:
        msgs = sum(world.network.msgs_sent)
        bar.set_postfix_str(f"sim {world.now:.2f}s, {msgs} msgs, {world.steps} steps", refresh=True)

    observer.progress = lambda: (bar.update(1), note())
    world.kernel.on_progress = note
    return bar


@dataclass
class Execution:
    """How the simulator computed a run (manifest.json's ``execution``)."""

    requested: str
    used: str
    reason: str | None
    """Why ``used`` is sequential when batched was asked for (None otherwise)."""
    batcher: Any = None
    startup_s: float = 0.0
    """Wall seconds from the call to the first simulated event: data, split, nodes, world."""

    def record(self, wall_clock: bool) -> dict:
        b = self.batcher
        return {"requested": self.requested, "used": self.used, "reason": self.reason,
                "batched_steps": b.steps if b is not None else 0,
                "vectorized_steps": b.vectorized if b is not None else 0,
                "startup_s": round(self.startup_s, 3) if wall_clock else None}


def _write_manifest(cfg, run_dir: Path, run_id: str, status: str, error, sim_time: float, wall: float,
                    execution: Execution | None = None, evaluation: dict | None = None) -> None:
    manifest = {
        "run_id": run_id, "mode": "sim", "status": status, "error": error, "seed": cfg.seed,
        "sim_time_s": sim_time, "wall_time_s": round(wall, 3) if cfg.output.wall_clock else None,
        "execution": execution.record(cfg.output.wall_clock) if execution is not None else None,
        "evaluation": evaluation,
        "config": cfg.to_dict(), "versions": versions(), "git_revision": git_revision(),
    }
    write_atomic(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")


def _write(cfg, run_dir: Path, recorder: Recorder, status: str, error, sim_time: float, wall: float,
           workload, execution: Execution | None = None, evaluation: dict | None = None) -> RunResult:
    recorder.close()
    recorder.write(run_dir)
    _write_manifest(cfg, run_dir, recorder.run_id, status, error, sim_time, wall, execution, evaluation)
    events, epochs = recorder.events_frame(), recorder.epochs_frame()
    if cfg.output.plot and len(epochs):
        topo = cfg.topology.get("kind") or cfg.topology.get("file")
        workload.plot(epochs, events, run_dir, title=f"{cfg.name}: {cfg.algorithm} on {topo} ({cfg.nodes} node{'s' if cfg.nodes != 1 else ''}), "
                      f"{cfg.dataset.name} / {cfg.model.name}  [{recorder.run_id}]")
    return RunResult(recorder.run_id, run_dir, status, sim_time, wall, events, epochs, error, execution)
