"""Ako: decentralised SGD with partial gradient exchange (Watcharapichat, Lopez Morales,
Castro Fernandez and Pietzuch, "Ako: Decentralised Deep Learning with Partial Gradient
Exchange", SoCC 2016; the base of seed 000's DEGAN).

Every node is a worker with its own replica x_i and no server. The flat gradient is cut
into P contiguous partitions. Worker i, iteration t (t = 0, 1, ...)::

    wait (stale-synchronous bound): t - min_j c_j <= ssp_bound, c_j = iterations peer j
        is known to have completed (from the iteration numbers on its messages)
    u = g_i^{t-1} + sum of the peers' partial gradients of iterations < t received so far
    x_i <- opt(x_i, u / N)                           (one optimizer step; N workers)
    g_i^t = grad f_i(x_i) on one minibatch
    a_i <- a_i + g_i^t                               (accumulated, not yet sent)
    send a_i[p] to every peer, p = t mod P (round robin); a_i[p] <- 0

so what a worker does not send this iteration stays accumulated and goes out with the
partition's next turn: every gradient reaches every peer within P iterations. A peer's
message of iteration s is applied at the worker's iteration s + 1 or later (never from a
peer's future), so with P = 1 and ssp_bound = 0 every replica follows synchronous
all-to-all gradient averaging ``x <- opt(x, mean_k g_k)`` exactly.

``P: auto`` is the paper's rule: the fewest partitions for which sending one partition to
every peer takes no longer than computing one iteration, so the network is used at its
capacity independently of the cluster size::

    P = ceil((N - 1) * S / (B * T)),   clamped to [1, number of parameters]

S: bytes of a full gradient (4 per parameter), B: a node's link capacity (bytes/s, the
smaller of its uplink and downlink), T: the modelled time of one training step (the
configured ``step_time``, else the step's FLOPs at the device speed).

After its last iteration a worker waits for every peer's last message and applies it, so
all replicas end on the same footing; what is still accumulated and unsent (P > 1) stays
unsent, as in the paper's system when training stops.

A peer silent for ``peer_timeout`` seconds while a worker waits on the bound is left out
of the bound (logged ``ssp_timeouts``) until it is heard from again, so a crash does not
stop the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.schema import ConfigError
from ..core.units import parse_duration
from .kit import drain


def parse_p(value) -> Union[int, str]:
    """``auto`` or an integer >= 1 (the ``P`` field)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"{value!r} is not allowed; allowed: an integer >= 1 or auto")


@dataclass(frozen=True)
class AkoParams:
    P: Union[int, str] = field(default="auto", metadata={"parse": parse_p})
    """Gradient partitions; one is sent per iteration (round robin). ``auto``: the paper's rule from bandwidth and compute speed."""
    ssp_bound: int = field(default=2, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Stale-synchronous bound: a worker is never more than this many iterations ahead of the slowest peer it has heard from."""
    peer_timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds a worker waits on a silent peer before leaving it out of the bound; null waits forever."""


def auto_partitions(n_workers: int, grad_bytes: float, bandwidth: float, step_time: float, max_p: int) -> int:
    """Ako's partition count: the smallest P with (N - 1) * S / P <= B * T, in [1, max_p]."""
    if n_workers <= 1 or not math.isfinite(bandwidth) or step_time <= 0:
        return 1 if n_workers <= 1 or not math.isfinite(bandwidth) else max_p
    p = math.ceil((n_workers - 1) * grad_bytes / (bandwidth * step_time))
    return int(min(max(1, p), max_p))


def partition_bounds(numel: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, nearly equal slices covering ``range(numel)``."""
    edges = [round(k * numel / parts) for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts)]


class AkoWorker(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.t = 0
        self.parts: list[tuple[int, int]] | None = None
        n = self.learner.num_params
        self.acc = torch.zeros(n, device=self.learner.device)
        self.own: torch.Tensor | None = None
        self.heard: dict[int, int] = {}
        self.held: list[Message] = []
        self.silent: set[int] = set()

    def resolve_p(self, n_workers: int) -> int:
        p, numel = self.params.P, self.learner.num_params
        if p != "auto":
            return min(int(p), numel)
        net, comp = self.ctx.network, self.ctx.compute
        if net is None or comp is None:
            return 1
        bw = net.narrowest
        step = comp.step_time if comp.step_time is not None else self.learner.flops_per_step() / comp.speed
        return auto_partitions(n_workers, 4.0 * numel, bw, step, numel)

    def iterations_per_epoch(self) -> int:
        """Iterations between evaluations (DEGAN may cap them)."""
        return self.learner.steps_per_epoch

    def total_iterations(self, per_epoch: int) -> int:
        """Iterations of the whole run; every worker must compute the same number."""
        return self.ctx.epochs * per_epoch

    async def planned_total(self, rt: Runtime, total: int) -> int:
        """The run's iteration count as of now; subclasses may end it early (DEGAN's target FID)."""
        return total

    def _keep(self, msg: Message) -> None:
        self.held.append(msg)
        self.heard[msg.src] = max(self.heard.get(msg.src, -1), int(msg["it"]))
        self.silent.discard(msg.src)

    async def wait_bound(self, rt: Runtime, need: int) -> None:
        """Receive until every live peer is known to have completed ``need`` iterations."""
        while True:
            for msg in await drain(rt, "ako"):
                self._keep(msg)
            behind = [j for j in rt.neighbors if j not in self.silent and self.heard.get(j, -1) + 1 < need]
            if not behind:
                return
            msg = await rt.recv(timeout=self.params.peer_timeout, match="ako")
            if msg is None:
                self.silent.update(behind)
                rt.log("ssp_timeouts", len(behind))
            else:
                self._keep(msg)

    def apply(self, t: int, n_workers: int) -> None:
        """One optimizer step with the own last gradient and the peers' gradients of iterations < t."""
        u = self.own.clone() if self.own is not None else torch.zeros(self.learner.num_params, device=self.learner.device)
        keep, used = [], self.own is not None
        for m in self.held:
            if int(m["it"]) < t:
                lo = int(m["lo"])
                g = m.tensors["g"]
                u[lo:lo + len(g)] += g
                used = True
            else:
                keep.append(m)
        self.held = keep
        self.own = None
        if used:
            self.learner.set_grad_flat(u.div_(n_workers))
            self.learner.apply_update()

    async def run(self, rt: Runtime) -> None:
        learner, bound = self.learner, self.params.ssp_bound
        n_workers = len(rt.neighbors) + 1
        if self.parts is None:
            p = self.resolve_p(n_workers)
            self.parts = partition_bounds(learner.num_params, p)
            rt.log("ako_P", float(p))
        spe = self.iterations_per_epoch()
        total = self.total_iterations(spe)
        if self.t == 0:
            self.end_epoch(rt, 0)
        while True:
            t = self.t
            total = await self.planned_total(rt, total)
            # the last iteration waits for every peer's last gradient (a clean finish)
            await self.wait_bound(rt, total if t >= total else t - bound)
            if (changed := await self.planned_total(rt, total)) != total:  # a stop came in while waiting
                total = changed
                continue
            known = [self.heard.get(j, -1) + 1 for j in rt.neighbors if j not in self.silent]
            rt.log("ssp_gap", float(t - min(known)) if known else 0.0)
            self.apply(t, n_workers)
            if t > 0 and t % spe == 0:
                self.end_epoch(rt, t // spe)
                total = await self.planned_total(rt, total)
            if t >= total:
                return
            await self.local_grad(rt)
            g = learner.get_grad_flat()
            self.own = g
            self.acc.add_(g)
            lo, hi = self.parts[t % len(self.parts)]
            msg = Message("ako", {"it": t, "lo": lo}, {"g": self.acc[lo:hi]})
            for j in rt.neighbors:
                await rt.send(j, msg)  # encoded at once: zeroing the partition below is safe
            self.acc[lo:hi] = 0
            self.t = t + 1


class Ako(Algorithm):
    name = "ako"
    Params = AkoParams
    summary = "decentralised partial gradient exchange with a stale-synchronous bound (Ako, SoCC 2016)"
    example = {"nodes": 4, "topology": {"kind": "complete"}, "algorithm": {"P": 2, "peer_timeout": "1s"}}

    @classmethod
    def roles(cls, graph, params):
        n = graph.number_of_nodes()
        if any(graph.degree(i) != n - 1 for i in graph.nodes):
            raise ConfigError(f"topology: {cls.name} exchanges gradients with every peer; it needs a complete "
                              "topology (topology: {kind: complete})")
        return {i: "worker" for i in graph.nodes}

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return AkoWorker(ctx)
