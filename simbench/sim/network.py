"""The simulated network: latency, bandwidth and fair sharing of node links, on the kernel.

Model
-----
* Every message is a *transfer* of its real encoded size from ``src`` to ``dst``.
* Transfers on one directed link ``src -> dst`` are sent one after another (one stream
  per peer pair, like a TCP connection), so messages on a link arrive in send order.
* The head transfer of every busy link is a *flow*. A flow crosses three capacities:
  the sender's uplink, the link's own bandwidth and the receiver's downlink. Whenever a
  flow starts or ends, the rates of all flows are recomputed by **max-min fair sharing**
  (progressive filling): the most contended capacity is split equally among its flows,
  those flows are frozen at that rate, their share is taken off their other capacities,
  and so on. This is the flow-level model of SimGrid-style simulators: 16 workers
  pushing to one server split its downlink 16 ways, while a small message from a fresh
  sender still gets an equal share at once instead of queueing behind them. Flows that
  start at the same tick are shared out together, once, at the end of that tick (rates
  only matter once the clock moves), so an all-to-all of N x (N - 1) flows costs one
  recomputation, not one per flow.
* After its last byte leaves, a message arrives ``latency`` later; latency is drawn per
  message from the link's distribution (constant, or with jitter). Arrival times on a
  link never go backwards, so jitter cannot reorder a link.
* At arrival the delivery may still fail: the receiver crashed, the link is cut by a
  partition, or the message is lost (probability ``loss``, drawn per message from the
  network's own random stream). A crashed sender's queued and in-flight transfers are
  dropped at the crash; a node that goes offline loses those it sends and those on their
  way to it at once.

Capacities are bytes per second (``math.inf`` for unlimited); latencies are seconds.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.message import Wire
from ..core.units import SECOND_TICKS
from .kernel import Kernel

LatencyDraw = Callable[[np.random.Generator], float]


@dataclass
class LinkSpec:
    """One directed link: a latency draw (seconds) and a bandwidth (bytes/s)."""

    latency: LatencyDraw
    bandwidth: float = math.inf


class _Transfer:
    __slots__ = ("src", "dst", "payload", "size", "remaining", "rate", "resources", "lost", "meta")

    def __init__(self, src: int, dst: int, payload: Wire, lost: bool) -> None:
        self.src, self.dst, self.payload = src, dst, payload
        self.size = len(payload)
        self.remaining = float(self.size)
        self.rate = 0.0
        self.resources: tuple = ()
        self.lost = lost


class Network:
    """Carries encoded messages between nodes with modelled delays.

    Parameters
    ----------
    kernel : Kernel
    links : dict[(src, dst), LinkSpec]
        Directed links that may carry messages; sending on a missing link is an error.
    uplink, downlink : sequence of float
        Per-node capacities in bytes/s.
    loss : float
        Probability that a message is lost.
    rng : numpy Generator
        The network's own stream (latency jitter, losses).
    deliver : callable(src, dst, payload)
        Called at arrival time for each delivered message.
    on_drop : callable(src, dst, payload, reason)
        Told about every dropped message (for the event log).
    """

    def __init__(self, kernel: Kernel, links: dict[tuple[int, int], LinkSpec],
                 uplink, downlink, *, loss: float, rng: np.random.Generator,
                 deliver: Callable[[int, int, bytes], None],
                 on_drop: Callable[[int, int, bytes, str], None]) -> None:
        self.kernel = kernel
        self.links = links
        self.uplink = list(uplink)
        self.downlink = list(downlink)
        self.loss = loss
        self.rng = rng
        self._deliver = deliver
        self.drop_reason: Callable[[int, int], str | None] | None = None
        """Asked at arrival; a non-empty reason drops the message (crash, partition). None while
        nothing can drop a message but losses: the world sets it at the first crash or partition,
        one call less per message until then."""
        self._on_drop = on_drop
        self._queues: dict[tuple[int, int], deque[_Transfer]] = {}
        self._resources: dict[tuple[int, int], tuple] = {}
        self._flows: list[_Transfer] = []
        self._last_update = 0
        self._completion = None
        self._pending = None  # the end-of-tick reallocation, once scheduled
        self._last_arrival: dict[tuple[int, int], int] = {}
        self.bytes_sent = [0] * len(self.uplink)
        self.bytes_received = [0] * len(self.uplink)
        self.msgs_sent = [0] * len(self.uplink)
        self.msgs_dropped = 0

    # -- sending ------------------------------------------------------------------
    def send(self, src: int, dst: int, payload: Wire) -> None:
        """Queue ``payload`` on the link ``src -> dst``."""
        key = (src, dst)
        resources = self._resources.get(key)
        if resources is None:
            if key not in self.links:
                raise ValueError(f"node {src} has no link to node {dst} in the topology")
            # A link carries one flow at a time (its head transfer), so its own bandwidth binds
            # only when it is below both the sender's uplink and the receiver's downlink: the
            # flow never gets more than either. Otherwise it is left out of the sharing.
            up, down, bw = self.uplink[src], self.downlink[dst], self.links[key].bandwidth
            caps = (("up", src), ("link", src, dst), ("down", dst))
            resources = self._resources[key] = tuple(
                r for r, c in zip(caps, (up, bw if bw < min(up, down) else math.inf, down)) if c != math.inf)
        lost = self.loss > 0 and self.rng.random() < self.loss
        self.bytes_sent[src] += len(payload)
        self.msgs_sent[src] += 1
        if not resources:  # unlimited capacity: only latency applies, no queueing
            self._propagate(src, dst, payload, lost)
            return
        transfer = _Transfer(src, dst, payload, lost)
        transfer.resources = resources
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(transfer)
        if len(queue) == 1:
            self._start(transfer)

    def _start(self, t: _Transfer) -> None:
        if t.size == 0:
            self._transmitted(t)
            return
        # Rates matter only once the clock moves: flows starting at the same tick (an
        # all-to-all exchange starts thousands) share one reallocation at the end of it,
        # instead of one each (quadratic in the flows). Until then its rate is 0.
        self._flows.append(t)
        if self._pending is None:
            self._pending = self.kernel.schedule(0, self._settle_rates)

    def _settle_rates(self) -> None:
        self._pending = None
        self._advance()
        self._reallocate()

    def _capacity(self, resource: tuple) -> float:
        kind = resource[0]
        if kind == "up":
            return self.uplink[resource[1]]
        if kind == "down":
            return self.downlink[resource[1]]
        return self.links[(resource[1], resource[2])].bandwidth

    # -- max-min fair sharing -----------------------------------------------------
    def _advance(self) -> None:
        """Take the bytes sent since the last update off every flow."""
        dt = (self.kernel.now - self._last_update) / SECOND_TICKS
        if dt > 0:
            for f in self._flows:
                f.remaining -= f.rate * dt
        self._last_update = self.kernel.now

    def _reallocate(self) -> None:
        if self._pending is not None:  # this one covers the flows that started this tick too
            Kernel.cancel(self._pending)
            self._pending = None
        flows = self._flows
        cap: dict[tuple, float] = {}
        users: dict[tuple, list[_Transfer]] = {}
        for f in flows:
            for r in f.resources:
                if r not in cap:
                    cap[r] = self._capacity(r)
                    users[r] = []
                users[r].append(f)
        left = {r: len(u) for r, u in users.items()}  # resources with unfrozen flows only
        for f in flows:
            f.rate = -1.0  # not frozen yet
        while left:
            share, bottleneck = min((cap[r] / n, r) for r, n in left.items())
            for f in users[bottleneck]:
                if f.rate >= 0:
                    continue
                f.rate = share
                for r in f.resources:
                    cap[r] -= share
                    n = left[r] - 1
                    if n:
                        left[r] = n
                    else:
                        del left[r]
        self._schedule_completion()

    def _schedule_completion(self) -> None:
        if self._completion is not None:
            Kernel.cancel(self._completion)
            self._completion = None
        if not self._flows:
            return
        soonest = min(f.remaining / f.rate if f.rate > 0 else math.inf for f in self._flows)
        if soonest == math.inf:
            return
        delay = max(0, math.ceil(soonest * SECOND_TICKS - 1e-6))
        self._completion = self.kernel.schedule(delay, self._on_completion)

    def _on_completion(self) -> None:
        self._completion = None
        self._advance()
        tick = 1.0 / SECOND_TICKS
        done, left = [], []
        for f in self._flows:
            (done if f.rate > 0 and f.remaining <= f.rate * tick + 1e-6 else left).append(f)
        if done:
            self._flows = left
            for f in done:
                self._transmitted(f)
        self._reallocate()

    # -- after the last byte ------------------------------------------------------
    def _propagate(self, src: int, dst: int, payload: Wire, lost: bool) -> None:
        """The last byte has left: schedule arrival one latency later (FIFO per link)."""
        key = (src, dst)
        kernel = self.kernel
        delay = int(self.links[key].latency(self.rng) * SECOND_TICKS + 0.5)
        arrival = kernel.now + (delay if delay > 0 else 0)
        last = self._last_arrival.get(key, 0)
        if arrival < last:
            arrival = last
        self._last_arrival[key] = arrival
        kernel._seq += 1  # inlined Kernel.schedule_at: one call per message
        heapq.heappush(kernel._heap, (arrival, kernel._seq, [self._arrive, (src, dst, payload, lost)]))

    def _transmitted(self, t: _Transfer) -> None:
        self._propagate(t.src, t.dst, t.payload, t.lost)
        queue = self._queues[(t.src, t.dst)]
        queue.popleft()
        if queue:
            self._start(queue[0])

    def _arrive(self, src: int, dst: int, payload: Wire, lost: bool) -> None:
        reason = "lost" if lost else (self.drop_reason(src, dst) if self.drop_reason is not None else None)
        if reason:
            self.msgs_dropped += 1
            self._on_drop(src, dst, payload, reason)
            return
        self.bytes_received[dst] += len(payload)
        self._deliver(src, dst, payload)

    def abort_from(self, node: int, reason: str = "sender_crashed") -> int:
        """Drop every queued or in-flight transfer sent by ``node`` (it crashed, or went offline)."""
        return self._abort(lambda src, dst: src == node, reason)

    def abort_to(self, node: int, reason: str = "offline") -> int:
        """Drop every queued or in-flight transfer on its way to ``node`` (it went offline);
        messages whose last byte has left are dropped when they arrive."""
        return self._abort(lambda src, dst: dst == node, reason)

    def _abort(self, which: Callable[[int, int], bool], reason: str) -> int:
        dropped = 0
        self._advance()
        for (src, dst), queue in self._queues.items():
            if queue and which(src, dst):
                dropped += len(queue)
                head = queue[0]
                if head in self._flows:
                    self._flows.remove(head)
                for t in queue:  # counted and logged like every other dropped message
                    self.msgs_dropped += 1
                    self._on_drop(src, dst, t.payload, reason)
                queue.clear()
        if dropped:
            self._reallocate()
        return dropped

    @property
    def active_flows(self) -> int:
        return len(self._flows)
