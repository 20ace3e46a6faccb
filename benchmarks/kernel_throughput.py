"""Kernel throughput: events per second for N nodes gossiping with no compute.

Each node, for R rounds, sends a small message to a random neighbour on a random
regular graph and waits (with a timeout) for one message. No training, no bandwidth
model (latency only), so this measures the kernel, the runtime and the wire encoding.

    python benchmarks/kernel_throughput.py --nodes 1000 --rounds 50
Target (issue 2): >= 100,000 events/s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import math
import time

import networkx as nx

from simbench.core.message import Message
from simbench.core.scenario import ComputeSpec, Dist, NetworkSpec, Scenario, node_profiles
from simbench.metrics.recorder import Recorder
from simbench.sim.world import SimWorld

import numpy as np


class Gossiper:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.received = 0

    async def run(self, rt) -> None:
        msg = Message("gossip", {"v": rt.node_id})
        nbrs = rt.neighbors
        picks = rt.rng.integers(len(nbrs), size=self.rounds)
        for k in range(self.rounds):
            await rt.send(nbrs[picks[k]], msg)
            if await rt.recv(timeout=0.002) is not None:
                self.received += 1


def build(n: int, rounds: int, seed: int = 0) -> SimWorld:
    graph = nx.random_regular_graph(4, n, seed=seed)
    net = NetworkSpec(latency=Dist("constant", value=0.001), bandwidth=math.inf, uplink=math.inf, downlink=math.inf)
    nodes = {i: Gossiper(rounds) for i in range(n)}
    return SimWorld(graph, nodes, roles={}, network=net, compute=ComputeSpec(), scenario=Scenario(),
                    profiles=node_profiles(Scenario(), n, np.random.default_rng(0)),
                    recorder=Recorder("bench", wall_clock=False), seed=seed)


def measure(n: int, rounds: int) -> dict:
    world = build(n, rounds)
    t0 = time.perf_counter()
    world.run()
    wall = time.perf_counter() - t0
    events = world.kernel.events_processed
    return {"nodes": n, "rounds": rounds, "events": events, "wall_s": wall, "events_per_s": events / wall,
            "messages": sum(world.network.msgs_sent), "sim_time_s": world.now}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    r = measure(args.nodes, args.rounds)
    print(f"{r['nodes']} nodes x {r['rounds']} rounds: {r['events']:,} events, {r['messages']:,} messages "
          f"in {r['wall_s']:.2f} s wall -> {r['events_per_s']:,.0f} events/s (target >= 100,000)")


if __name__ == "__main__":
    main()
