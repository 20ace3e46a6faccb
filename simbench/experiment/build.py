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

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import networkx as nx
import numpy as np

from ..core.node import NodeContext
from ..core.population import Population, resolve
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
    population: Population | None = None
    fresh_node: Callable[[int], Any] | None = None
    """Node ``k`` rebuilt as at the start (a new learner from the same seeds): ``rejoin: fresh``."""
    split: dict[int, NodeData] | None = None
    """Each data holder's training and validation indices."""

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
    kw = {"iid": {}, "dirichlet": {"alpha": spec.alpha, "variant": spec.dirichlet},
          "k_classes": {"k": spec.classes_per_node}, "shards": {"shards_per_client": spec.shards_per_client},
          "file_order": {"shard_size": spec.shard_size},
          "fegan": {} if spec.max_per_class is None else {"magic_num": spec.max_per_class},
          "parity": {}, "flwr": {"partitioner": spec.flwr}}[spec.partition]
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


def data_summary(cfg: ExperimentConfig, data: Dataset, split: dict[int, NodeData]) -> tuple[str, np.ndarray]:
    """The split as text (per node: samples, classes, count per class; see
    :func:`simbench.data.partition.summary`) and its nodes × classes count matrix."""
    labels = data.y_train.numpy()
    nodes = sorted(split)
    trains = [np.asarray(split[i].train) for i in nodes]
    d = cfg.dataset
    how = {"shards": f"shards_per_client {d.shards_per_client}", "k_classes": f"classes_per_node {d.classes_per_node}",
           "dirichlet": f"alpha {d.alpha}, {d.dirichlet}", "file_order": f"shard_size {d.shard_size}",
           "flwr": ", ".join(f"{k} {v}" for k, v in d.flwr.items())}.get(d.partition, "")
    title = (f"{d.name}: {len(labels)} training samples, {len(data.y_test)} test samples, partition {d.partition}"
             f"{' (' + how + ')' if how else ''}, val_fraction {d.val_fraction} "
             f"({sum(len(split[i].val) for i in nodes)} validation samples), normalize {d.normalize}; training samples:")
    text = parts.summary(trains, labels, data.num_classes, nodes, title)
    return text, parts.class_histogram(trains, labels, data.num_classes)


def load_data(cfg: ExperimentConfig) -> Dataset:
    """The run's data set, through the registry (built in, installed or import path)."""
    from .. import registry
    d = cfg.dataset
    return load_dataset(d.name, d.root, download=d.download, seed=cfg.seed, max_train=d.max_train,
                        max_test=d.max_test, loader=registry.dataset(d.name), normalize=d.normalize)


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
    horizon = cfg.time_limit or 24 * 3600.0
    population = None if cfg.population is None else resolve(cfg.population, n, holders, streams.population, horizon)
    shared_roles = MappingProxyType(dict(roles))  # one read-only copy for every node (not n copies of n)

    def make(i: int) -> tuple[NodeContext, Any]:
        learner, sets = None, {}
        if roles[i] in algo.model_roles():
            part = split.get(i, NodeData(None, None))
            bs = max(1, int(cfg.train.batch_size * profiles[i].batch_scale))
            learner = workload.make_learner(i, part, bs, learner_seeds[i], streams.model_seed(i, cfg.train.same_init))
            sets = workload.eval_sets(i, part)
        ctx = NodeContext(
            node_id=i, role=roles[i], params=cfg.algorithm_params, learner=learner, epochs=cfg.train.epochs,
            graph=graph, roles=shared_roles, steps_per_epoch=max(1, math.ceil(mean_shard / cfg.train.batch_size)),
            on_epoch=on_epoch, network=cfg.network, compute=cfg.compute, profile=profiles[i], workload=workload,
            selection=cfg.population.selection if cfg.population is not None else "online", **sets,
        )
        return ctx, algo.make_node(ctx)

    contexts, nodes = {}, {}
    for i in range(n) if only is None else [only]:
        contexts[i], nodes[i] = make(i)
    if population is not None:
        profiles = population_speeds(cfg, population, profiles, contexts)
    return Built(graph, roles, profiles, nodes, contexts, workload, streams, population,
                 lambda i: make(i)[1], split)


def population_speeds(cfg: ExperimentConfig, population: Population, profiles: list[NodeProfile],
                      contexts: dict[int, NodeContext]) -> list[NodeProfile]:
    """Each population member's speed times its FLOP/s over the config's device speed.

    FedScale latencies (ms per sample) stand for ``F * 1000 / ms`` FLOP/s with F the forward
    FLOPs of one sample: the spec's ``fedscale_flops_per_sample``, else the node's own model's
    (a training step's FLOPs / (3 x its batch), FedScale's "backward = 2 x forward").
    """
    out = list(profiles)
    for i in population.devices:
        learner = contexts[i].learner if i in contexts else None
        forward = None
        if learner is not None and population.fedscale_flops_per_sample is None \
                and population.devices[i].ms_per_sample is not None:
            forward = learner.flops_per_step() / (3.0 * learner.batch_size)
        flops = population.flops_per_s(i, forward)
        if flops is not None:
            out[i] = dataclasses.replace(out[i], speed=out[i].speed * flops / cfg.compute.speed)
    return out
