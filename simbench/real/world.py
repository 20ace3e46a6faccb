"""Per-node set-up shared by real node processes, and RealWorld: all nodes in one process.

A node takes its streams from :class:`~simbench.core.seeding.WorldStreams`, as
:class:`~simbench.sim.world.SimWorld` does, so a node's algorithm stream (``rt.rng``),
straggler draws and the crash schedule are the same in both runtimes.
:func:`schedule_faults` arms one node's crash timers and logs its scenario events;
:func:`schedule_availability` arms its offline and online timers from the population's
trace (the same instants as in the simulator, on the wall clock).

:class:`RealWorld` takes SimWorld's constructor arguments and runs every node in one
asyncio loop over real ZeroMQ sockets on loopback. The runtime conformance suite uses it
to run one set of stories against both runtimes; a crash there stops the node in-process
(:meth:`RealRuntime.crash`) instead of exiting a process.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable, Mapping

import networkx as nx

from ..core.runtime import node_device
from ..core.scenario import ComputeSpec, Crash, NetworkSpec, NodeProfile, Scenario, crash_schedule
from ..core.seeding import NodeStreams, WorldStreams
from .faults import NO_FAULTS, link_faults
from .runtime import Clock, RealRuntime
from .transport import DEFAULT_MAX_SIZE, Address, Transport, run_key


def node_crashes(scenario: Scenario, n: int, horizon: float, streams: NodeStreams, node_id: int) -> list[Crash]:
    """This node's crashes, from the same schedule the simulator draws."""
    return [c for c in crash_schedule(scenario, n, horizon, streams.faults) if c.node == node_id]


def schedule_faults(rt: RealRuntime, scenario: Scenario, crashes: list[Crash],
                    on_crash: Callable[[], None]) -> list[asyncio.TimerHandle]:
    """Log this node's profile, arm its crash timers and partition events (wall time)."""
    loop = asyncio.get_running_loop()
    if rt.profile.straggler:
        rt.recorder.event(0.0, rt.node_id, "straggler", 1.0)
    if rt.profile.weak:
        rt.recorder.event(0.0, rt.node_id, "weak_worker", rt.profile.speed)
    handles = []

    def at(t: float, fn: Callable, *args: Any) -> None:
        handles.append(loop.call_later(max(0.0, t - rt.now()), fn, *args))

    for crash in crashes:
        at(crash.at, on_crash)
        if crash.recover_at is not None:  # a process that exited cannot come back here
            at(crash.at, rt.log, "recover_unsupported", crash.recover_at)
    for part in scenario.partitions:
        for u, v in (sorted(e) for e in part.edges):
            if u == rt.node_id:
                at(part.start, rt.log, "partition_start", v)
                at(part.end, rt.log, "partition_end", v)
    return handles


def schedule_availability(rt: RealRuntime, population: Any, log_size: bool = False) -> asyncio.TimerHandle | None:
    """Take ``rt`` offline and back at the instants its population's trace says (a timer for
    the next change, re-armed at each). Call before the node starts: a node offline at 0
    starts when it first comes online. ``log_size``: log ``population_size`` (node ``all``)."""
    if population is None or not population.timelines:
        return None
    if log_size:
        rt.recorder.event(0.0, "all", "population_size", len(population.timelines))
    node = rt.node_id
    if node not in population.timelines:
        return None
    loop = asyncio.get_running_loop()
    handle: list[asyncio.TimerHandle | None] = [None]

    def flip(t: float) -> None:
        if population.online(node, t):
            rt.come_online()
        else:
            rt.go_offline()
        arm(t)

    def arm(t: float) -> None:
        nxt = population.next_change(node, t)
        if nxt is not None:
            handle[0] = loop.call_later(max(0.0, nxt - rt.now()), flip, nxt)

    if not population.online(node, 0.0):
        rt.offline = True
        rt._back.clear()
        rt.log("offline", 1.0)
    arm(0.0)
    return handle[0]


class RealWorld:
    """Every node of a run in this process, on real sockets over loopback, in wall time."""

    def __init__(self, graph: nx.Graph, nodes: Mapping[int, Any], *, roles: Mapping[int, str],
                 network: NetworkSpec, compute: ComputeSpec, scenario: Scenario,
                 profiles: list[NodeProfile], recorder: Any, seed: int, horizon: float = 24 * 3600.0,
                 key: bytes | None = None, max_size: int = DEFAULT_MAX_SIZE, emulate_network: bool = True,
                 population: Any = None) -> None:
        self.graph = graph
        self.nodes = dict(nodes)
        self.roles = roles
        self.network = network
        self.scenario = scenario
        self.profiles = profiles
        self.recorder = recorder
        self.seed = seed
        self.horizon = horizon
        self.key = run_key(key or os.urandom(32), "in-process")
        self.max_size = max_size
        self.emulate_network = emulate_network
        self.population = population
        self.runtimes: list[RealRuntime] = []
        self.clock: Clock | None = None

    def run(self, until: float | None = None) -> None:
        """Run every node until all return (or ``until`` wall seconds pass)."""
        asyncio.run(self._run(until))

    @property
    def now(self) -> float:
        return self.clock() if self.clock is not None else 0.0

    async def _run(self, until: float | None) -> None:
        n = self.graph.number_of_nodes()
        transports, addrs = [], {}
        for i in range(n):
            t = Transport(i, self.key, max_size=self.max_size, accept_from=set(self.graph.neighbors(i)))
            addrs[i] = t.bind(Address("127.0.0.1", 0))
            transports.append(t)
        for i, t in enumerate(transports):
            t.connect({j: addrs[j] for j in self.graph.neighbors(i)})
        self.clock = Clock(time.time() + 0.05)  # a moment for the connections to come up
        for i in range(n):
            s = WorldStreams(self.seed, n).node_streams(i)
            faults = link_faults(self.graph, i, self.network, self.scenario) if self.emulate_network else NO_FAULTS
            self.runtimes.append(RealRuntime(
                i, self.roles.get(i, "worker"), tuple(sorted(self.graph.neighbors(i))), tuple(range(n)),
                rng=s.rng, profile=self.profiles[i], straggler_rng=s.straggler, stragglers=self.scenario.stragglers,
                transport=transports[i], clock=self.clock, recorder=self.recorder, faults=faults, net_rng=s.network,
                sleep_rng=s.sleep,
                population=self.population))
        for i, node in self.nodes.items():
            self.runtimes[i].device = node_device(node)
        await self.clock.wait_start()
        for i, rt in enumerate(self.runtimes):
            crashes = node_crashes(self.scenario, n, self.horizon, WorldStreams(self.seed, n).node_streams(i), i)
            schedule_faults(rt, self.scenario, crashes, rt.crash)
        mains = []
        for i, rt in enumerate(self.runtimes):
            if i not in self.nodes:
                continue
            schedule_availability(rt, self.population, log_size=i == 0)
            if self.population is not None and i in self.population.timelines:
                mains.append(rt.start_node(lambda i=i, rt=rt: self.nodes[i].run(rt)))
            else:
                mains.append(rt.start(self.nodes[i].run(rt)))
        try:
            done, pending = await asyncio.wait(mains, timeout=until)
            for task in pending:
                task.cancel()
            await asyncio.gather(*mains, return_exceptions=True)
            errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            if errors:
                raise errors[0]
        finally:
            await asyncio.gather(*(rt.finish(linger=1.0) for rt in self.runtimes), return_exceptions=True)
