"""The config's link faults applied at the application layer of a real run.

Between ``rt.send`` and the socket sits one FIFO per outgoing link. A message waits in
its link's FIFO until ``send time + drawn latency`` (never before the message ahead of
it, so delay cannot reorder a link, as in the simulator), is lost with probability
``loss`` (drawn per message from this node's own network stream), and is dropped while
a partition cuts the link; then it is handed to the transport. With no latency, loss or
partitions a message goes straight to the socket.

Drops are logged as the simulator logs them: ``drop_<reason>`` at the receiving node
with the sender as value (``lost``, ``partition``), plus ``drop_unreachable`` when the
socket to a dead peer is full. Bandwidth is not emulated here: shape it with ``tc``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.scenario import Dist, Partition

LatencyDraw = Callable[[np.random.Generator], float]


def latency_draw(base: Dist, jitter: float) -> LatencyDraw:
    """The simulator's per-message latency: the link's distribution plus uniform jitter."""
    if base.kind == "constant" and jitter == 0:
        value = base.value
        return lambda rng: value
    return lambda rng: base.sample(rng) + (float(rng.uniform(0.0, jitter)) if jitter else 0.0)


@dataclass(frozen=True)
class LinkFaults:
    """What one node injects on its outgoing links (``latency`` keyed by destination)."""

    latency: dict[int, LatencyDraw]
    loss: float = 0.0
    partitions: tuple[Partition, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.latency) or self.loss > 0 or bool(self.partitions)


NO_FAULTS = LinkFaults(latency={})


def link_faults(graph, node_id: int, network, scenario) -> LinkFaults:
    """This node's outgoing-link faults from the config's ``network`` and ``scenario``.

    Per-edge ``latency`` attributes of the topology override ``network.latency``, as in
    the simulator; links with no delay at all are left out (sent directly).
    """
    latency = {}
    for dst in graph.neighbors(node_id):
        attrs = graph.edges[node_id, dst]
        base = Dist("constant", value=attrs["latency"]) if "latency" in attrs else network.latency
        if not (base.kind == "constant" and base.value == 0 and network.jitter == 0):
            latency[dst] = latency_draw(base, network.jitter)
    cuts = tuple(p for p in scenario.partitions if any(node_id in e for e in p.edges))
    return LinkFaults(latency=latency, loss=network.loss, partitions=cuts)


class FaultLayer:
    """Delays, loses and partitions outgoing messages, then calls ``deliver(dst, payload)``.

    ``deliver`` returns False when the peer is unreachable. ``clock()`` is the run's
    clock in seconds; ``log(node, metric, value)`` records an event.
    """

    def __init__(self, node_id: int, faults: LinkFaults, rng: np.random.Generator, *,
                 deliver: Callable[[int, bytes], bool], clock: Callable[[], float],
                 log: Callable[[int, str, float], None]) -> None:
        self.node_id = node_id
        self.faults = faults
        self.rng = rng
        self.deliver = deliver
        self.clock = clock
        self.log = log
        self.direct = not faults.active
        self._queues: dict[int, deque] = {}
        self._last: dict[int, float] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._cut = [(frozenset(e), p.start, p.end) for p in faults.partitions for e in p.edges]

    def send(self, dst: int, payload: bytes) -> None:
        if self.direct:
            self._hand_over(dst, payload)
            return
        now = self.clock()
        draw = self.faults.latency.get(dst)
        arrival = now + (draw(self.rng) if draw is not None else 0.0)
        arrival = max(arrival, self._last.get(dst, 0.0))  # FIFO per link
        self._last[dst] = arrival
        lost = self.faults.loss > 0 and self.rng.random() < self.faults.loss
        queue = self._queues.setdefault(dst, deque())
        queue.append((arrival, payload, lost))
        self._idle.clear()
        task = self._tasks.get(dst)
        if task is None or task.done():
            self._tasks[dst] = asyncio.get_running_loop().create_task(self._pump(dst, queue), name=f"link{self.node_id}-{dst}")

    async def _pump(self, dst: int, queue: deque) -> None:
        while queue:
            arrival, payload, lost = queue[0]
            wait = arrival - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            if lost:
                self.log(dst, "drop_lost", self.node_id)
            elif self._partitioned(dst):
                self.log(dst, "drop_partition", self.node_id)
            else:
                self._hand_over(dst, payload)
        if not any(self._queues.values()):
            self._idle.set()

    def _partitioned(self, dst: int) -> bool:
        if not self._cut:
            return False
        now, edge = self.clock(), frozenset((self.node_id, dst))
        return any(e == edge and start <= now < end for e, start, end in self._cut)

    def _hand_over(self, dst: int, payload: bytes) -> None:
        if self._partitioned(dst):
            self.log(dst, "drop_partition", self.node_id)
        elif not self.deliver(dst, payload):
            self.log(self.node_id, "drop_unreachable", dst)

    async def drain(self, timeout: float) -> bool:
        """Wait until every delayed message has been handed over; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def drop_queued(self, reason: str) -> None:
        """Drop (and log as ``drop_<reason>`` at the destination) every message still waiting
        for its latency: the node went offline before handing them over."""
        for dst, queue in self._queues.items():
            for _ in queue:
                self.log(dst, f"drop_{reason}", self.node_id)
        self.cancel()

    def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._queues.clear()
        self._idle.set()
