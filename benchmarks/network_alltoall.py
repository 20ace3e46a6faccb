"""Network model under an all-to-all exchange: N nodes each send one 100 kB message to every
peer per round (Ako's and DEGAN's pattern: N x (N - 1) flows in flight at once, sharing
every node's 100 Mbit/s uplink and downlink), no compute.

    python benchmarks/network_alltoall.py [--nodes 64] [--rounds 3]

Prints wall time, messages and the simulated time. Flows that start at the same tick share
one max-min reallocation (simbench/sim/network.py); before that, 32 nodes took 13.4 s for
3 rounds on the 2-core development box and 64 nodes were out of reach.
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import numpy as np
import torch

from simbench.core.message import Message
from simbench.core.scenario import ComputeSpec, Dist, NetworkSpec, Scenario, node_profiles
from simbench.metrics.recorder import Recorder
from simbench.sim.world import SimWorld


class Exchanger:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    async def run(self, rt):
        for r in range(self.rounds):
            msg = Message("g", {"r": r}, {"g": torch.zeros(25_000)})
            for j in rt.neighbors:
                await rt.send(j, msg)
            for _ in rt.neighbors:
                await rt.recv()


def build(n: int, rounds: int) -> SimWorld:
    bw = 12.5e6  # 100 Mbit/s
    net = NetworkSpec(latency=Dist("constant", value=0.001), bandwidth=bw, uplink=bw, downlink=bw)
    return SimWorld(nx.complete_graph(n), {i: Exchanger(rounds) for i in range(n)}, roles={}, network=net,
                    compute=ComputeSpec(), scenario=Scenario(),
                    profiles=node_profiles(Scenario(), n, np.random.default_rng(0)),
                    recorder=Recorder("alltoall", wall_clock=False), seed=0)


def timed_run(world: SimWorld) -> tuple[float, int]:
    """Run ``world``; its wall seconds and the messages its network carried."""
    t0 = time.perf_counter()
    world.run()
    return time.perf_counter() - t0, sum(world.network.msgs_sent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    world = build(args.nodes, args.rounds)
    wall, msgs = timed_run(world)
    print(f"all-to-all, {args.nodes} nodes x {args.rounds} rounds: {msgs} messages of 100 kB, "
          f"{wall:.2f} s wall, {msgs / wall:,.0f} messages/s, simulated {world.now:.3f} s")


if __name__ == "__main__":
    main()
