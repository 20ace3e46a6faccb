"""Network model under a sharded parameter server's traffic: W workers, each looping "compute
(a random 20-40 ms), push 400 kB split over S server shards, wait for every shard's 400/S kB
reply", on 100 Mbit/s links, no real compute. Pushes and replies start at scattered ticks,
so nearly every message start and end reallocates the rates of the hundreds of flows in
flight: this measures the max-min sharing of simbench/sim/network.py.

    python benchmarks/network_ps.py [--workers 64] [--shards 8] [--steps 10]

Prints wall time, messages, reallocations per second and the simulated time.
"""

from __future__ import annotations

import argparse

import networkx as nx
import numpy as np
import torch

from simbench.core.message import Message
from simbench.core.scenario import ComputeSpec, Dist, NetworkSpec, Scenario, node_profiles
from simbench.metrics.recorder import Recorder
from simbench.sim.world import SimWorld
from simbench.topology.builders import build as build_topology

from network_alltoall import timed_run  # a sibling script: its folder is on sys.path when run

MODEL_FLOATS = 100_000  # 400 kB of float32, about the reduced ps_ako MLP


class Shard:
    def __init__(self, workers: int) -> None:
        self.workers = workers

    async def run(self, rt):
        stopped = 0
        while stopped < self.workers:
            msg = await rt.recv()
            if msg.kind == "stop":
                stopped += 1
            else:
                await rt.send(msg.src, Message("x", {}, {"x": msg.tensors["g"]}))


class Worker:
    def __init__(self, shards: int, steps: int) -> None:
        self.shards, self.steps = shards, steps

    async def run(self, rt):
        part = torch.zeros(MODEL_FLOATS // self.shards)
        for _ in range(self.steps):
            await rt.sleep(float(rt.rng.uniform(0.02, 0.04)))
            for s in range(self.shards):
                await rt.send(s, Message("g", {}, {"g": part}))
            for _ in range(self.shards):
                await rt.recv(match="x")
        for s in range(self.shards):
            await rt.send(s, Message("stop"))


def build(workers: int, shards: int, steps: int) -> SimWorld:
    n = workers + shards
    bw = 12.5e6  # 100 Mbit/s
    net = NetworkSpec(latency=Dist("constant", value=0.001), bandwidth=bw, uplink=bw, downlink=bw)
    nodes = {i: Shard(workers) if i < shards else Worker(shards, steps) for i in range(n)}
    graph: nx.Graph = build_topology("star", n, hubs=shards)
    return SimWorld(graph, nodes, roles={}, network=net, compute=ComputeSpec(), scenario=Scenario(),
                    profiles=node_profiles(Scenario(), n, np.random.default_rng(0)),
                    recorder=Recorder("ps", wall_clock=False), seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    world = build(args.workers, args.shards, args.steps)
    wall, msgs = timed_run(world)
    print(f"PS, {args.workers} workers x {args.shards} shards x {args.steps} steps: {msgs} messages, "
          f"{wall:.2f} s wall, {msgs / wall:,.0f} messages/s, simulated {world.now:.3f} s")


if __name__ == "__main__":
    main()
