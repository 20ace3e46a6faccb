"""SimWorld: builds the kernel, network, fault schedule and one SimRuntime per node, then runs.

Random streams: the world seed is split per purpose (network, faults) and per node
(algorithm decisions, straggler draws) by :class:`~simbench.core.seeding.WorldStreams`, so
adding a fault or a node never shifts another stream.

A node stops for two reasons, by one mechanism: a **crash** (``crash``/``recover`` events,
arrivals dropped as ``drop_crashed_receiver``, its queued sends as ``drop_sender_crashed``)
and an **offline** spell of its population's availability (``offline``/``online``; arrivals
and transfers still on the way to it dropped as ``drop_offline``, its own unfinished sends as
``drop_sender_offline``, at once). Either way its processes are killed where they stand (a
computation in progress returns nothing, so nothing the node would have done with its result
happens; the simulator runs a call's work when it starts and charges its time after, so a
model that the call changed in place keeps the change), and it restarts ``run(rt)`` when no
reason is left,
with the state it had, or rebuilt (``population.rejoin: fresh``). While a node is offline the
run goes on for it (a peer-to-peer run whose every node is offline at once waits for the next
one to come back); once every reporting node has finished (the server of a federated run),
offline nodes no longer come back and the run ends with the last node that is running.
"""

from __future__ import annotations

import copy
import gc
import math
from collections import OrderedDict
from typing import Any, Callable, Collection, Mapping, Protocol

import networkx as nx
import numpy as np
import torch

from ..core.message import Message, Wire, cow_clone, decode
from ..core.population import Population
from ..core.runtime import node_device
from ..core.scenario import ComputeSpec, Dist, NetworkSpec, NodeProfile, Scenario, crash_schedule
from ..core.seeding import WorldStreams
from ..core.units import SECOND_TICKS, to_ticks
from ..metrics.recorder import Recorder
from .batch import Batcher
from .kernel import Kernel, SimFuture
from .network import LinkSpec, Network
from .runtime import SimRuntime


RECENT_BYTES = 32 * 2**20
"""Bytes of delivered payloads (and their decodings) kept for a resend of the same message."""


class _Wire:
    """One encoding on the network: deliveries pending and its decoding (once decoded)."""

    __slots__ = ("payload", "owner", "pending", "msg", "nested")

    def __init__(self, payload: Wire, owner: torch.Tensor | None) -> None:
        self.payload, self.owner, self.pending = payload, owner, 0
        self.msg: Message | None = None
        self.nested = False  # meta holds lists or dicts: every receiver gets a deep copy

    @property
    def held(self) -> int:
        """Bytes kept alive while it is among the recent: the wire bytes, and a decoded
        copy of the tensors unless the decoding views the wire buffer."""
        return len(self.payload) * (1 if self.owner is not None else 2)


class NodeLike(Protocol):
    async def run(self, rt: Any) -> Any: ...


def _latency_draw(base: Dist, jitter: float):
    if base.kind == "constant" and jitter == 0:
        value = base.value
        return lambda rng: value
    return lambda rng: base.sample(rng) + (float(rng.uniform(0.0, jitter)) if jitter else 0.0)


class SimWorld:
    """Every node of a run in one process on a virtual clock."""

    def __init__(self, graph: nx.Graph, nodes: Mapping[int, NodeLike], *, roles: Mapping[int, str],
                 network: NetworkSpec, compute: ComputeSpec, scenario: Scenario,
                 profiles: list[NodeProfile], recorder: Recorder, seed: int,
                 horizon: float = 24 * 3600.0, population: Population | None = None,
                 reporters: Collection[int] | None = None,
                 fresh_node: Callable[[int], NodeLike] | None = None, batched: bool = False) -> None:
        self.kernel = Kernel()
        self.batcher = Batcher(self.kernel) if batched else None
        """Puts off the learner steps of an instant and runs them together (None: each step
        runs when its node asks; see :mod:`simbench.sim.batch`)."""
        self.steps = 0
        """Training steps charged so far by all nodes (for progress displays)."""
        self.graph = graph
        self.nodes = dict(nodes)
        self.compute = compute
        self.scenario = scenario
        self.recorder = recorder
        n = graph.number_of_nodes()
        streams = WorldStreams(seed, n)

        links = {}
        for u, v, attrs in graph.edges(data=True):
            lat = Dist("constant", value=attrs["latency"]) if "latency" in attrs else network.latency
            spec = LinkSpec(_latency_draw(lat, network.jitter), attrs.get("bandwidth", network.bandwidth))
            links[(u, v)] = spec
            links[(v, u)] = spec
        up = network.uplink if network.uplink is not None else network.bandwidth
        down = network.downlink if network.downlink is not None else network.bandwidth
        ups, downs = [up] * n, [down] * n
        for i, dev in (population.devices.items() if population is not None else ()):
            ups[i] = dev.uplink if dev.uplink is not None else up
            downs[i] = dev.downlink if dev.downlink is not None else down
        self.network = Network(
            self.kernel, links, ups, downs, loss=network.loss,
            rng=streams.network, deliver=self._deliver, on_drop=self._on_drop,
        )
        all_nodes = tuple(range(n))
        self.runtimes = [
            SimRuntime(self, i, roles.get(i, "worker"), tuple(sorted(graph.neighbors(i))), all_nodes,
                       streams.node(i), profiles[i], streams.straggler(i), streams.sleep(i))
            for i in range(n)
        ]
        for i, node in self.nodes.items():
            self.runtimes[i].device = node_device(node)
        self._down_edges: dict[frozenset, int] = {}
        self._in_flight: dict[int, _Wire] = {}
        self._recent: OrderedDict[int, _Wire] = OrderedDict()
        self._recent_bytes = 0
        self._down: list[set[str]] = [set() for _ in range(n)]
        """Why each node is stopped now: ``crash``, ``offline`` (none: it runs)."""
        self.population = population
        self.reporters = set(range(n) if reporters is None else reporters)
        self.fresh_node = fresh_node
        self._finished: set[int] = set()
        self._over = False  # every reporting node has finished: offline nodes stay away
        self._absent: dict[int, Any] = {}  # node -> the process that stands for it while offline
        self._schedule_faults(streams.faults, horizon)
        if population is not None and population.timelines:
            self._schedule_availability()

    # -- network callbacks ---------------------------------------------------------
    # A payload's decoding is shared by every receiver of it. Its _Wire sits in
    # ``_in_flight`` while copies travel, then in ``_recent`` (bounded by bytes) so that an
    # algorithm that sends the same message object again (a gossip, a cached broadcast) does
    # not have it parsed and copied again.
    def sent(self, payload: Wire, owner: torch.Tensor | None = None) -> None:
        """A runtime put ``payload`` on the network once more (one more delivery pending);
        ``owner`` is the torch buffer holding its bytes (:attr:`Message.buffer`), if any."""
        key = id(payload)
        wire = self._in_flight.get(key)
        if wire is None or wire.payload is not payload:
            wire = self._recent.pop(key, None)
            if wire is not None:
                self._recent_bytes -= wire.held
            if wire is None or wire.payload is not payload:
                wire = _Wire(payload, owner)
            self._in_flight[key] = wire
        wire.pending += 1

    def decode(self, payload: Wire) -> Message:
        """Decode an arriving payload: once per encoding, however many receive it.

        The first arrival parses the header and views the tensors in the wire buffer
        (copies them out of foreign bytes); every receiver gets copy-on-write clones of
        them (a receiver that writes in place gets its own copy then, and the others never
        see it) and its own meta.
        """
        wire = self._in_flight.get(id(payload))
        if wire is None or wire.payload is not payload:  # not sent through a runtime (tests)
            return decode(payload)
        if wire.msg is None:
            wire.msg = decode(payload, owner=wire.owner)
            wire.nested = any(isinstance(v, (list, dict)) for v in wire.msg.meta.values())
        first = wire.msg
        meta = copy.deepcopy(first.meta) if wire.nested else dict(first.meta)
        msg = Message(first.kind, meta, {k: cow_clone(t) for k, t in first.tensors.items()} if first.tensors else {},
                      first.src, payload, wire.owner)
        wire.pending -= 1  # _settle, inlined: once per delivered message
        if wire.pending <= 0:
            self._retire(id(payload), wire)
        return msg

    def _settle(self, payload: Wire) -> None:
        """One delivery of ``payload`` ended (arrived or dropped)."""
        key = id(payload)
        wire = self._in_flight.get(key)
        if wire is None or wire.payload is not payload:
            return
        wire.pending -= 1
        if wire.pending <= 0:
            self._retire(key, wire)

    def _retire(self, key: int, wire: "_Wire") -> None:
        """No copy of ``wire`` travels any more: keep its decoding among the recent ones."""
        del self._in_flight[key]
        if wire.msg is not None:
            self._recent[key] = wire
            self._recent_bytes += wire.held
            while self._recent_bytes > RECENT_BYTES and self._recent:
                self._recent_bytes -= self._recent.popitem(last=False)[1].held

    def _deliver(self, src: int, dst: int, payload: Wire) -> None:
        self.runtimes[dst].deliver(payload)

    def _drop_reason(self, src: int, dst: int) -> str | None:
        if self.runtimes[dst].crashed:
            return "crashed_receiver" if "crash" in self._down[dst] else "offline"
        if self._down_edges and self._down_edges.get(frozenset((src, dst))):
            return "partition"
        return None

    def _on_drop(self, src: int, dst: int, payload: Wire, reason: str) -> None:
        self._settle(payload)
        self.recorder.event(self.kernel.now / SECOND_TICKS, dst, f"drop_{reason}", src)

    # -- faults -------------------------------------------------------------------------
    def _schedule_faults(self, rng: np.random.Generator, horizon: float) -> None:
        n = len(self.runtimes)
        for crash in crash_schedule(self.scenario, n, horizon, rng):
            self.kernel.schedule(to_ticks(crash.at), self.crash, crash.node)
            if crash.recover_at is not None:
                self.kernel.schedule(to_ticks(crash.recover_at), self.recover, crash.node)
        for k, part in enumerate(self.scenario.partitions):
            edges = [frozenset(e) for e in part.edges]
            self.kernel.schedule(to_ticks(part.start), self._partition, edges, +1)
            self.kernel.schedule(to_ticks(part.end), self._partition, edges, -1)
        for i, rt in enumerate(self.runtimes):
            if rt.profile.straggler:
                self.recorder.event(0.0, i, "straggler", 1.0)
            if rt.profile.weak:
                self.recorder.event(0.0, i, "weak_worker", rt.profile.speed)

    def crash(self, node: int) -> None:
        self._stop(node, "crash")

    def recover(self, node: int) -> None:
        self._resume(node, "crash")

    _STOP = {"crash": ("crash", "sender_crashed"), "offline": ("offline", "sender_offline")}
    _RESUME = {"crash": "recover", "offline": "online"}

    def _stop(self, node: int, why: str) -> None:
        """Node ``node`` stops for ``why`` (crash, offline): its processes die now, its unsent
        messages are dropped (going offline, the ones on their way to it too)."""
        rt, down = self.runtimes[node], self._down[node]
        if why in down:
            return
        down.add(why)
        if len(down) == 1:  # it was running: stop it
            rt.crash()
            self.network.drop_reason = self._drop_reason  # from now on arrivals can be dropped
            self.network.abort_from(node, self._STOP[why][1])
            if why == "offline":
                self.network.abort_to(node, "offline")
        self.recorder.event(rt.now(), node, self._STOP[why][0], 1.0)
        if why == "offline" and not self._over:  # the run waits for it to come back
            done = SimFuture(self.kernel, "online")
            self._absent[node] = self.kernel.spawn(_wait(done), f"offline{node}", daemon=True)

    def _resume(self, node: int, why: str) -> None:
        """Reason ``why`` is over; the node restarts ``run`` once no reason is left."""
        rt, down = self.runtimes[node], self._down[node]
        if why not in down:
            return
        down.discard(why)
        self.recorder.event(rt.now(), node, self._RESUME[why], 1.0)
        absent = self._absent.pop(node, None) if why == "offline" else None
        if absent is not None:
            absent.kill()
        if down:  # still crashed (or offline): it stays stopped
            return
        rt.crashed = False
        if why == "offline" and self.fresh_node is not None and self.population.rejoin == "fresh":
            self.nodes[node] = self.fresh_node(node)
            rt.device = node_device(self.nodes[node])
        recover = getattr(self.nodes[node], "on_recover", None)
        if recover is not None:
            recover()
        self._start(node)

    def _start(self, node: int) -> None:
        rt = self.runtimes[node]
        proc = rt.start(self.nodes[node].run(rt))
        if self.population is not None and self.population.timelines:
            proc.done.add_waiter(lambda fut, node=node: self._returned(node, fut))

    def _returned(self, node: int, fut: SimFuture) -> None:
        """Node ``node``'s code ended; once every reporting node has finished (or crashed),
        offline nodes are no longer waited for."""
        if fut._exc is None:
            self._finished.add(node)
        if not self._over and all(i in self._finished or "crash" in self._down[i] for i in self.reporters):
            self._over = True
            for proc in self._absent.values():
                proc.kill()
            self._absent.clear()

    # -- availability (population) ---------------------------------------------------------
    def _schedule_availability(self) -> None:
        pop = self.population
        self.recorder.event(0.0, "all", "population_size", len(pop.timelines))
        for i in sorted(pop.timelines):
            if not pop.online(i, 0.0):
                self._stop(i, "offline")
            self._next_flip(i, 0.0)

    def _next_flip(self, node: int, t: float) -> None:
        nxt = self.population.next_change(node, t)
        if nxt is not None:
            self.kernel.schedule_at(max(self.kernel.now, to_ticks(nxt)), self._flip, node, nxt)

    def _flip(self, node: int, t: float) -> None:
        """The trace says ``node`` changes state at ``t`` (seconds; the tick is ``t`` rounded)."""
        if self._over or node in self._finished:
            return  # the run is ending (no one comes back, no one else leaves), or the node is done
        if self.population.online(node, t):
            self._resume(node, "offline")
        else:
            self._stop(node, "offline")
        self._next_flip(node, t)

    def online(self, nodes) -> list[int]:
        """The nodes of ``nodes`` that the population has online now (all, without one)."""
        pop = self.population
        if pop is None or not pop.timelines:
            return list(nodes)
        now = self.now
        return [j for j in nodes if pop.online(j, now)]

    def _partition(self, edges: list[frozenset], delta: int) -> None:
        now = self.kernel.now / SECOND_TICKS
        self.network.drop_reason = self._drop_reason  # from now on arrivals can be dropped
        for e in edges:
            self._down_edges[e] = self._down_edges.get(e, 0) + delta
            u, v = sorted(e)
            self.recorder.event(now, u, "partition_start" if delta > 0 else "partition_end", v)

    # -- running ----------------------------------------------------------------------
    def run(self, until: float | None = None) -> None:
        """Start every node's ``run`` and drive the kernel until every node has returned or
        crashed (or to ``until`` seconds, if given). Faults scheduled after that moment are
        not run: they neither appear in the events nor move the clock."""
        for i in self.nodes:
            if not self._down[i]:  # a node offline at the start starts when it comes online
                self._start(i)
        # The kernel makes many short-lived objects (futures, heap entries, messages);
        # collecting generation 0 less often saves ~20% of a message-heavy run.
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
        try:
            self.kernel.run(until=None if until is None else to_ticks(until), stop_when_done=True)
        finally:
            gc.set_threshold(*thresholds)
        for i, rt in enumerate(self.runtimes):
            self.recorder.event(rt.now(), i, "bytes_sent_total", self.network.bytes_sent[i])
            self.recorder.event(rt.now(), i, "msgs_sent_total", self.network.msgs_sent[i])
            self.recorder.event(rt.now(), i, "compute_s_total", rt.compute_s)

    @property
    def now(self) -> float:
        return self.kernel.now / SECOND_TICKS

    def unfinished(self) -> list[int]:
        """Nodes whose code is still running (a run stopped by its time limit)."""
        return sorted({int(p.name[4:].split(".")[0]) for p in self.kernel.live if p.name.startswith("node")})

    def crashed(self) -> list[int]:
        """Nodes that are crashed now."""
        return [i for i, down in enumerate(self._down) if "crash" in down]


async def _wait(fut: SimFuture) -> None:
    """What an offline node's stand-in process does: wait (it is killed when the node returns)."""
    await fut


def infinite_network() -> NetworkSpec:
    """A network with latency only (no bandwidth limits): handy for tests."""
    return NetworkSpec(bandwidth=math.inf, uplink=math.inf, downlink=math.inf)
