"""Small builders for simulator stories: a world from a graph and a dict of node objects."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from simbench.core.scenario import ComputeSpec, Dist, NetworkSpec, Scenario, node_profiles
from simbench.metrics.recorder import Recorder
from simbench.sim.world import SimWorld


def net(latency: float = 0.0, bandwidth: float = math.inf, **kw) -> NetworkSpec:
    lat = latency if isinstance(latency, Dist) else Dist("constant", value=latency)
    return NetworkSpec(latency=lat, bandwidth=bandwidth,
                       uplink=kw.pop("uplink", bandwidth), downlink=kw.pop("downlink", bandwidth), **kw)


def make_world(graph: nx.Graph, nodes: dict, *, network: NetworkSpec | None = None,
               compute: ComputeSpec | None = None, scenario: Scenario | None = None, seed: int = 0) -> SimWorld:
    scenario = scenario or Scenario()
    n = graph.number_of_nodes()
    return SimWorld(graph, nodes, roles={}, network=network or net(), compute=compute or ComputeSpec(),
                    scenario=scenario, profiles=node_profiles(scenario, n, np.random.default_rng(seed)),
                    recorder=Recorder("test", wall_clock=False), seed=seed)


class Idle:
    async def run(self, rt):
        return None
