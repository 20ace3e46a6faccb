"""One simulated run: config -> topology, data split, learners, nodes -> SimWorld -> files.

Data flows one way: the config builds the topology, scenario and data split; those build
the nodes; the world runs them; the recorder's tables become ``events.csv``,
``epochs.csv``, ``manifest.json`` and a plot in ``<output.dir>/<name>/<run_id>/``.
A run that deadlocks (e.g. every peer of a crashed server waits forever) or is
interrupted still writes what it recorded, with its status in the manifest.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..algorithms import ALGORITHMS
from ..core.node import NodeContext
from ..core.scenario import node_profiles
from ..core.schema import ConfigError
from ..data import partition as parts
from ..data.datasets import Dataset, load_dataset
from ..learn import Learner, OptimConfig
from ..metrics.consensus import AverageModelObserver
from ..metrics.recorder import Recorder
from ..models import build_model
from ..sim.kernel import Deadlock
from ..sim.world import SimWorld
from ..topology import from_spec
from . import gan as gan_glue
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

    def final(self, metric: str = "test_acc", node: str = "avg") -> float:
        if metric not in self.epochs:
            return float("nan")
        values = self.epochs.loc[self.epochs["node"] == node, metric].dropna()
        return float(values.iloc[-1]) if len(values) else float("nan")


def _streams(seed: int) -> dict[str, np.random.Generator | int]:
    """Independent seeds per purpose, so adding a fault never shifts the data split."""
    topo, data, init, faults, world, learners = np.random.SeedSequence(seed).spawn(6)
    return {
        "topology": int(topo.generate_state(1)[0]), "data": np.random.default_rng(data),
        "init": int(init.generate_state(1)[0]), "faults": np.random.default_rng(faults),
        "world": int(world.generate_state(1)[0]), "learners": learners,
    }


def _optim(cfg: ExperimentConfig) -> OptimConfig:
    t = cfg.train
    return OptimConfig(name=t.optimizer, lr=t.lr, momentum=t.momentum, dampening=t.dampening,
                       nesterov=t.nesterov, weight_decay=t.weight_decay, l2_lambda=t.l2_lambda,
                       scheduler=t.scheduler, step_size=t.step_size, gamma=t.gamma)


def _split_data(cfg: ExperimentConfig, data: Dataset, holders: list[int], rng: np.random.Generator):
    labels = data.y_train.numpy()
    spec = cfg.dataset
    kw = {"iid": {}, "dirichlet": {"alpha": spec.alpha}, "k_classes": {"k": spec.classes_per_node},
          "shards": {"shard_size": spec.shard_size}}[spec.partition]
    try:
        shards = parts.partition(labels, len(holders), spec.partition, rng, **kw)
        if spec.max_per_class is not None:
            shards = parts.cap_per_class(shards, labels, spec.max_per_class)
    except ValueError as exc:
        raise ConfigError(f"dataset.partition: {exc}") from None
    out = {}
    for node, idx in zip(holders, shards):
        if len(idx) == 0:
            raise ConfigError(f"dataset: node {node} got no training data; use fewer nodes or another partition")
        train_idx, val_idx = parts.split_val(idx, spec.val_fraction, rng) if spec.val_fraction > 0 else (idx, idx[:0])
        out[node] = (train_idx, val_idx)
    return out


def build_nodes(cfg: ExperimentConfig, recorder: Recorder, observer_hook=None, only: int | None = None):
    """Everything but the runtime: graph, roles, profiles and one algorithm node per id.

    ``only=k`` builds node ``k`` alone (a real-mode process); the split is still drawn for all.
    """
    streams = _streams(cfg.seed)
    graph = from_spec(cfg.topology, cfg.nodes, seed=streams["topology"])
    n = graph.number_of_nodes()
    algo = ALGORITHMS[cfg.algorithm]
    gan = gan_glue.is_gan(algo)
    gan_glue.check_model(cfg, algo)
    roles = algo.roles(graph, cfg.algorithm_params)
    speeds = {i: s for i, s in graph.nodes(data="speed") if s is not None}
    data = load_dataset(cfg.dataset.name, cfg.dataset.root, download=cfg.dataset.download, seed=cfg.seed,
                        max_train=cfg.dataset.max_train, max_test=cfg.dataset.max_test)
    holders = [i for i in range(n) if roles[i] in algo.data_roles()]
    profiles = node_profiles(cfg.scenario, n, streams["faults"], speeds, workers=holders)
    split = _split_data(cfg, data, holders, streams["data"])
    ev = cfg.train.eval_samples
    test = (data.x_test[:ev].to(cfg.device), data.y_test[:ev].to(cfg.device))
    learner_seeds = streams["learners"].spawn(n)
    optim = _optim(cfg)

    def make_model(i: int):
        seed = streams["init"] if cfg.train.same_init else streams["init"] + i + 1
        if gan:
            return None  # GAN learners are built whole by make_gan_learner
        try:
            return build_model(cfg.model.name, data.input_shape, data.num_classes, seed=seed, **cfg.model.options)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model.options: {exc}") from None

    mean_shard = np.mean([len(split[i][0]) for i in holders])
    contexts, nodes = {}, {}
    for i in range(n) if only is None else [only]:
        learner = eval_train = val = None
        if roles[i] in algo.model_roles():
            if i in split:
                tr, va = split[i]
                x, y = data.x_train[tr], data.y_train[tr]
                val = (data.x_train[va].to(cfg.device), data.y_train[va].to(cfg.device)) if len(va) else None
            else:  # a model holder without data (a server): it never trains
                x, y = data.x_test[:1], data.y_test[:1]
            bs = max(1, int(cfg.train.batch_size * profiles[i].batch_scale))
            if gan:  # a GAN trains on the whole shard (no validation split)
                model_seed = streams["init"] if cfg.train.same_init else streams["init"] + i + 1
                idx = np.sort(np.concatenate(split[i])) if i in split else None
                learner = gan_glue.make_gan_learner(cfg, data, idx, bs, int(learner_seeds[i].generate_state(1)[0]),
                                                    model_seed)
                val = None
        if learner is None and roles[i] in algo.model_roles():
            learner = Learner(make_model(i), x.to(cfg.device), y.to(cfg.device), batch_size=bs, optim=optim,
                              seed=int(learner_seeds[i].generate_state(1)[0]), device=cfg.device)
            if i in split:
                eval_train = (x[:ev].to(cfg.device), y[:ev].to(cfg.device))
        ctx = NodeContext(
            node_id=i, role=roles[i], params=cfg.algorithm_params, learner=learner, epochs=cfg.train.epochs,
            eval_train=eval_train, val=val, test=test if learner is not None else None, graph=graph,
            roles=dict(roles), steps_per_epoch=max(1, math.ceil(mean_shard / cfg.train.batch_size)),
            on_epoch=observer_hook, network=cfg.network, compute=cfg.compute,
        )
        contexts[i] = ctx
        nodes[i] = algo.make_node(ctx)
    return graph, roles, profiles, nodes, contexts, (make_model, test, optim, data)


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
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
    gan = gan_glue.is_gan(ALGORITHMS[cfg.algorithm])
    observer = AverageModelObserver(recorder)
    if gan:
        p = cfg.algorithm_params
        observer = gan_glue.GanObserver(recorder, None, latent_dim=p.latent_dim, fid_batch=p.fid_batch, grid=p.grid,
                                        grid_dir=run_dir / "samples", seed=cfg.seed)
    graph, roles, profiles, nodes, contexts, (make_model, test, optim, data) = build_nodes(cfg, recorder, observer.on_epoch)
    reporters = [i for i in nodes if roles[i] in ALGORITHMS[cfg.algorithm].reporting_roles()]
    if gan:
        observer.evaluator = gan_glue.make_evaluator(cfg, data)
        for ctx in contexts.values():  # Lipizzaner scores its mixtures and saves the best one
            ctx.gan_evaluator, ctx.run_dir = observer.evaluator, run_dir
    else:
        observer.configure(make_model(0), test, expected=len(reporters), device=cfg.device)
    world = SimWorld(graph, nodes, roles=roles, network=cfg.network, compute=cfg.compute, scenario=cfg.scenario,
                     profiles=profiles, recorder=recorder, seed=_streams(cfg.seed)["world"],
                     horizon=cfg.time_limit or 24 * 3600.0)
    observer.clock = lambda: world.now
    if gan:
        observer.bytes_total = lambda: float(sum(world.network.bytes_sent))
    rounds = getattr(cfg.algorithm_params, "rounds", None) or cfg.train.epochs
    total = len(reporters) * (rounds + 1)  # epoch 0 is the starting point
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
        result = _write(cfg, run_dir, recorder, status, error, world.now, wall)
    if status == "interrupted":
        raise KeyboardInterrupt
    return result


def _write(cfg, run_dir: Path, recorder: Recorder, status: str, error, sim_time: float, wall: float) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    recorder.write(run_dir)
    manifest = {
        "run_id": recorder.run_id, "status": status, "error": error, "seed": cfg.seed,
        "sim_time_s": sim_time, "wall_time_s": round(wall, 3) if cfg.output.wall_clock else None,
        "config": cfg.to_dict(), "versions": _versions(), "git_revision": _git_revision(),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    events, epochs = recorder.events_frame(), recorder.epochs_frame()
    if cfg.output.plot and len(epochs) and "fid" in epochs.columns:
        from ..gan.plots import plot_gan_run
        plot_gan_run(epochs, events, run_dir / "fid.png", title=f"{cfg.name}: {cfg.algorithm} ({cfg.nodes} nodes), "
                     f"{cfg.dataset.name} / {cfg.model.name}  [{recorder.run_id}]")
    elif cfg.output.plot and len(epochs):
        from ..report.plots import plot_run
        topo = cfg.topology.get("kind") or cfg.topology.get("file")
        plot_run(epochs, events, run_dir / "test_acc.png",
                 title=f"{cfg.name}: {cfg.algorithm} on {topo} ({cfg.nodes} nodes), {cfg.dataset.name} / {cfg.model.name}  [{recorder.run_id}]")
    return RunResult(recorder.run_id, run_dir, status, sim_time, wall, events, epochs)
