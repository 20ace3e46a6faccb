"""Ako: decentralised SGD with partial gradient exchange (Watcharapichat, Lopez Morales,
Castro Fernandez and Pietzuch, "Ako: Decentralised Deep Learning with Partial Gradient
Exchange", SoCC 2016; the base of seed 000's DEGAN). Reference code: ``mesh-umn/TF.AKO``
(``redis_ako.py``: the training loop; ``redis_ako_queue.py``: ``enqueue``,
``get_others_grads``, the receiver's ``work``; ``redis_ako_config.py``: defaults), which
seed 000's ``m-faezi/DEGAN`` (``pgelib/``) extends to GANs.

Every node is a worker with its own replica x_i and no server. The flat gradient is cut
into P contiguous partitions. Worker i, iteration t (t = 0, 1, ...)::

    [wait (stale-synchronous bound, only with ssp_bound set): t - min_j c_j <= ssp_bound,
        c_j = iterations peer j is known to have completed (from its messages' iteration
        numbers; a peer that has finished is not waited for)]
    u = g_i^{t-1} + sum of the peers' partial gradients of iterations < t received so far
    x_i <- opt(x_i, u)                               (one optimizer step; aggregate: sum)
    g_i^t = grad f_i(x_i) on one minibatch
    a_i <- a_i + g_i^t                               (accumulated, not yet sent)
    send a_i[p] to every peer, p = t mod P (round robin); a_i[p] <- 0

so what a worker does not send this iteration stays accumulated and goes out with the
partition's next turn: every gradient reaches every peer within P iterations (the
reference's sliding-window sum of the last p gradients, ``enqueue``, is the same thing for
a fixed P).

``aggregate``: the reference **sums** the worker's own gradient and every partial
gradient received since its last step and applies the sum with one optimizer step
(``redis_ako.py``: ``total_grads[w] = np.add(total_grads[w], _grads[w][0])``, then
``optimizer``; no division by the number of workers anywhere). ``aggregate: sum`` is that
rule and the default; ``mean`` divides u by N (an N-times smaller step for SGD; for Adam,
as in the reference, the two differ only through Adam's epsilon).

``ssp_bound``: the reference trains fully asynchronously by default
(``synchronous_training = False`` in both ``redis_ako_config.py``); its synchronous mode
bounds the iteration gap by ``synch_max_diff`` (default 0). ``ssp_bound: null``, the
default, never waits; an integer s is the bound (0: lockstep). A peer's message of
iteration s is applied at the worker's iteration s + 1 or later (never from a peer's
future, unlike the reference, which applies whatever has arrived), so with P = 1 and
ssp_bound = 0 every replica follows synchronous all-to-all ``x <- opt(x, sum_k g_k)``
(``mean_k`` with ``aggregate: mean``) exactly.

``P: auto`` is the paper's rule: the fewest partitions for which sending one partition to
every peer takes no longer than computing one iteration, so the network is used at its
capacity independently of the cluster size::

    P = ceil((N - 1) * S / (B * T)),   clamped to [1, number of parameters]

S: bytes of a full gradient (4 per parameter), B: a node's link capacity (bytes/s, the
smaller of its uplink and downlink), T: the modelled time of one training step (the
configured ``step_time``, else the step's FLOPs at the device speed). (The reference sets
P per worker by hand, from hand-written groups of layers.)

Finishing: after its last iteration a worker tells every peer (``ako_done``, after its last
gradient on the same link), waits until every peer has told it the same, and applies
what it has received, so all replicas end on the same footing even when workers run
different numbers of iterations (DEGAN's ``batches``); what is still accumulated and
unsent (P > 1) stays unsent, as in the reference when training stops.

A peer silent for ``peer_timeout`` seconds while a worker waits on it is left out (logged
``ssp_timeouts``) until it is heard from again, so a crash does not stop the others.
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


AGGREGATES = ("sum", "mean")


@dataclass(frozen=True)
class AkoParams:
    P: Union[int, str] = field(default="auto", metadata={"parse": parse_p})
    """Gradient partitions; one is sent per iteration (round robin). ``auto``: the paper's rule from bandwidth and compute speed."""
    ssp_bound: Optional[int] = field(default=None, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Stale-synchronous bound: a worker is never more than this many iterations ahead of the slowest unfinished peer; null (the reference's default): fully asynchronous, never waits."""
    aggregate: str = field(default="sum", metadata={"choices": AGGREGATES})
    """How a worker combines its own gradient with the peers' partial gradients before its optimizer step: sum (the reference) or mean (divided by the number of workers)."""
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
        self.finished: set[int] = set()  # peers that sent ako_done

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

    def iterations_per_epoch(self, rt: Runtime) -> int:
        """This worker's iterations between evaluations: one pass over its shard (DEGAN: its share of ``batches``)."""
        return self.learner.steps_per_epoch

    def total_iterations(self, per_epoch: int) -> int:
        """This worker's iterations in the whole run (workers may differ: see ``ako_done``)."""
        return self.ctx.epochs * per_epoch

    async def planned_total(self, rt: Runtime, total: int) -> int:
        """The run's iteration count as of now; subclasses may end it early (DEGAN's target FID)."""
        return total

    def _keep(self, msg: Message) -> None:
        self.silent.discard(msg.src)
        if msg.kind == "ako_done":
            self.finished.add(msg.src)
            return
        self.held.append(msg)
        self.heard[msg.src] = max(self.heard.get(msg.src, -1), int(msg["it"]))

    async def wait_for(self, rt: Runtime, need: Optional[int]) -> None:
        """Receive until every live, unfinished peer is known to have completed ``need``
        iterations (None: until every live peer has finished)."""
        kinds = ("ako", "ako_done")
        while True:
            for msg in await drain(rt, kinds):
                self._keep(msg)
            behind = [j for j in rt.neighbors if j not in self.silent and j not in self.finished
                      and (need is None or self.heard.get(j, -1) + 1 < need)]
            if not behind:
                return
            msg = await rt.recv(timeout=self.params.peer_timeout, match=kinds)
            if msg is None:
                self.silent.update(behind)
                rt.log("ssp_timeouts", len(behind))
            else:
                self._keep(msg)

    async def finish(self, rt: Runtime) -> None:
        """Tell every peer this worker is done (after its last gradient, on the same links)
        and wait until every live peer has said the same."""
        done = Message("ako_done", {"it": self.t})
        for j in rt.neighbors:
            await rt.send(j, done)
        await self.wait_for(rt, None)

    def apply(self, t: float, n_workers: int) -> None:
        """One optimizer step with the own last gradient and the peers' gradients of
        iterations < t, summed (or averaged, ``aggregate: mean``)."""
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
            if self.params.aggregate == "mean":
                u.div_(n_workers)
            self.learner.set_grad_flat(u)
            self.learner.apply_update()

    async def run(self, rt: Runtime) -> None:
        learner, bound = self.learner, self.params.ssp_bound
        n_workers = len(rt.neighbors) + 1
        if self.parts is None:
            p = self.resolve_p(n_workers)
            self.parts = partition_bounds(learner.num_params, p)
            rt.log("ako_P", float(p))
        spe = self.iterations_per_epoch(rt)
        total = self.total_iterations(spe)
        if self.t == 0:
            self.end_epoch(rt, 0)
        while True:
            t = self.t
            total = await self.planned_total(rt, total)
            last = t >= total
            if last:
                await self.finish(rt)
            else:  # without a bound this only takes in what has arrived
                await self.wait_for(rt, t - bound if bound is not None else 0)
                if (changed := await self.planned_total(rt, total)) != total:  # a stop came in while waiting
                    total = changed
                    continue
            known = [self.heard.get(j, -1) + 1 for j in rt.neighbors if j not in self.silent | self.finished]
            rt.log("ssp_gap", float(t - min(known)) if known else 0.0)
            self.apply(math.inf if last else t, n_workers)
            if t > 0 and t % spe == 0:
                self.end_epoch(rt, t // spe)
                if not last:
                    total = await self.planned_total(rt, total)
                    if t >= total:  # told to stop at this very iteration: finish, no second evaluation
                        await self.finish(rt)
                        self.apply(math.inf, n_workers)
                        return
            if last:
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
