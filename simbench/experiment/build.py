"""Everything of a run but the runtime: topology, roles, node profiles, the data split, the
workload and one algorithm node per id.

Data flows one way: the config builds the topology and the scenario's node profiles; the
data set is split over the nodes that hold data; the workload (:mod:`simbench.workloads`)
builds each model holder's learner; the algorithm builds each node from its
:class:`~simbench.core.node.NodeContext`. Both the simulator (:mod:`.run`) and a real node
process (:mod:`simbench.experiment.distributed.node_main`) build a run this way, so both
get the same split, the same initial models and the same random streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import networkx as nx
import numpy as np

from ..core.node import NodeContext
from ..core.scenario import NodeProfile, node_profiles, resolve_weak_mode
from ..core.schema import ConfigError
from ..core.seeding import RunStreams
from ..data import partition as parts
from ..data.datasets import Dataset, load_dataset
from ..topology import TopologyError, from_spec
from ..workloads import NodeData, Workload, make_workload
from .config import ExperimentConfig


@dataclass
class Built:
    """A run ready for a runtime."""

    graph: nx.Graph
    roles: dict[int, str]
    profiles: list[NodeProfile]
    nodes: dict[int, Any]
    contexts: dict[int, NodeContext]
    workload: Workload
    streams: RunStreams

    def reporters(self) -> list[int]:
        """The nodes whose epochs form the run's per-epoch rows (their mean is ``avg``)."""
        algo = self.workload.cfg.algorithm_class()
        return [i for i in sorted(self.roles) if self.roles[i] in algo.reporting_roles()]


class EpochRelay:
    """The nodes' epoch hook, forwarding to ``target(node, epoch, learner)`` once that exists
    (the observer needs the built run; nothing is forwarded before it is set)."""

    target: Callable | None = None

    def __call__(self, node: int, epoch: int, learner: Any) -> None:
        if self.target is not None:
            self.target(node, epoch, learner)


def build_graph(cfg: ExperimentConfig, streams: RunStreams | None = None) -> nx.Graph:
    """The run's topology (a TopologyError becomes a ConfigError naming ``topology``)."""
    streams = streams or RunStreams(cfg.seed)
    try:
        return from_spec(cfg.topology, cfg.nodes, seed=streams.topology)
    except TopologyError as exc:
        raise ConfigError(f"topology: {exc}") from None


def check_roles(cfg: ExperimentConfig) -> dict[int, str]:
    """The checks a build makes before any data loads: topology, roles, model kind, weak workers."""
    cfg.workload_class().check_model(cfg)
    algo = cfg.algorithm_class()
    resolve_weak_mode(cfg.scenario, cfg.algorithm, algo.weak_modes)
    return algo.roles(build_graph(cfg), cfg.algorithm_params)


def split_data(cfg: ExperimentConfig, data: Dataset, holders: list[int], rng: np.random.Generator) -> dict[int, NodeData]:
    """Each data holder's training and validation indices (all of them, for an algorithm
    whose nodes share the whole training set)."""
    labels = data.y_train.numpy()
    spec = cfg.dataset
    kw = {"iid": {}, "dirichlet": {"alpha": spec.alpha}, "k_classes": {"k": spec.classes_per_node},
          "shards": {"shard_size": spec.shard_size},
          "fegan": {} if spec.max_per_class is None else {"magic_num": spec.max_per_class}}[spec.partition]
    try:
        if cfg.algorithm_class().whole_data(cfg.algorithm_params):
            shards = [np.arange(len(labels), dtype=np.int64) for _ in holders]
        else:
            shards = parts.partition(labels, len(holders), spec.partition, rng, **kw)
        if spec.max_per_class is not None:
            shards = parts.cap_per_class(shards, labels, spec.max_per_class)
    except ValueError as exc:
        raise ConfigError(f"dataset.partition: {exc}") from None
    out = {}
    for node, idx in zip(holders, shards):
        if len(idx) == 0:
            raise ConfigError(f"dataset: node {node} got no training data; use fewer nodes or another partition")
        train, val = parts.split_val(idx, spec.val_fraction, rng) if spec.val_fraction > 0 else (idx, idx[:0])
        out[node] = NodeData(train, val)
    return out


def load_data(cfg: ExperimentConfig) -> Dataset:
    """The run's data set, through the registry (built in, installed or import path)."""
    from .. import registry
    d = cfg.dataset
    return load_dataset(d.name, d.root, download=d.download, seed=cfg.seed, max_train=d.max_train,
                        max_test=d.max_test, loader=registry.dataset(d.name))


def build_nodes(cfg: ExperimentConfig, on_epoch: Callable | None = None, *, only: int | None = None,
                run_dir: str | Path | None = None, workload: Workload | None = None) -> Built:
    """Build the run of ``cfg``; ``only=k`` builds node ``k`` alone (a real-mode process; the
    split is still drawn for all). ``on_epoch(node, epoch, learner)`` is told of every
    epoch end (the observer of the average model, or a real node's snapshot hook)."""
    streams = RunStreams(cfg.seed)
    graph = build_graph(cfg, streams)
    n = graph.number_of_nodes()
    algo = cfg.algorithm_class()
    roles = algo.roles(graph, cfg.algorithm_params)
    speeds = {i: s for i, s in graph.nodes(data="speed") if s is not None}
    if workload is None:
        cfg.workload_class().check_model(cfg)
        workload = make_workload(cfg, load_data(cfg), run_dir, streams)
    holders = [i for i in range(n) if roles[i] in algo.data_roles()]
    weak_mode = resolve_weak_mode(cfg.scenario, cfg.algorithm, algo.weak_modes)
    profiles = node_profiles(cfg.scenario, n, streams.faults, speeds, workers=holders, weak_mode=weak_mode)
    split = split_data(cfg, workload.data, holders, streams.data)
    learner_seeds = streams.learner_seeds(n)
    mean_shard = np.mean([len(split[i].train) for i in holders])
    contexts, nodes = {}, {}
    for i in range(n) if only is None else [only]:
        learner, sets = None, {}
        if roles[i] in algo.model_roles():
            part = split.get(i, NodeData(None, None))
            bs = max(1, int(cfg.train.batch_size * profiles[i].batch_scale))
            learner = workload.make_learner(i, part, bs, learner_seeds[i], streams.model_seed(i, cfg.train.same_init))
            sets = workload.eval_sets(i, part)
        contexts[i] = NodeContext(
            node_id=i, role=roles[i], params=cfg.algorithm_params, learner=learner, epochs=cfg.train.epochs,
            graph=graph, roles=dict(roles), steps_per_epoch=max(1, math.ceil(mean_shard / cfg.train.batch_size)),
            on_epoch=on_epoch, network=cfg.network, compute=cfg.compute, profile=profiles[i], workload=workload, **sets,
        )
        nodes[i] = algo.make_node(contexts[i])
    return Built(graph, roles, profiles, nodes, contexts, workload, streams)
