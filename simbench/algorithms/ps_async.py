"""Asynchronous SGD with a parameter server (``ps_async``; Dean et al., NIPS 2012, Downpour
SGD; seed 002's ASGD with PS_Single / PS_Multi).

Worker k loops: pull (x, v) from the server, compute g_k on one minibatch at x, push
``(compress(g_k), v)``. The server applies every gradient on arrival with its optimizer,
``x <- opt(x, decompress(g_k))``, bumps its version ``v_s`` and answers the push with the
new (x, v_s), which is the worker's next pull. The staleness of an update is
``v_s - v`` at the moment it is applied (0 when no other update came in between) and is
logged per update as ``staleness``. With ``staleness_aware: true`` an update of staleness
s > 1 is applied as ``g / s`` (learning rate ``lr / s`` for plain SGD; Zhang, Gupta, Lian and Liu, "Staleness-aware
Async-SGD for Distributed Deep Learning", IJCAI 2016): with N workers the staleness is
about N - 1, so the server's steps shrink as in synchronous averaging over N gradients.

Server concurrency (``ps_mode``): ``single`` is one handler — requests queue in the
server's mailbox and are served one after another, each taking ``handle_time``
(decode, apply, encode; null: the FLOPs of the update, 4 per parameter, at the server's
device speed); ``multi`` runs ``handlers`` handlers that serve requests concurrently
(the seed's threaded PS_Multi). Both read the one central model; an update is applied at
the end of its handling time.

Epochs: one server epoch is ``workers * steps_per_epoch`` updates (every worker one pass
over its shard on average); the server evaluates the central model after each. Every
worker stops after ``epochs`` passes over its own shard and tells the server ``done``. A
worker that crashed never says it: the server counts a worker gone after ``worker_timeout``
seconds of silence, stretched to 4x the longest silence it has seen between two messages of
one worker and to 4x the time all workers' dense pushes and replies take at the nominal
bandwidth, if longer (a slow network makes every worker's step long).

Shards (``shards: k``, see :mod:`.ps`): each of the k servers runs the rules above on its
slice, with its own version counter, handlers and staleness. A worker pulls every slice,
pushes each shard its part of the gradient tagged with that shard's version, and takes
the k replies as its next pull.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime, Work
from ..core.units import parse_duration
from .compression import CompressionParams, decompress
from .ps import PSAlgorithm, PSWorker, ServerShard, ShardParams, SupervisorParams, stop_others, workers_of

PS_MODES = ("single", "multi")


@dataclass(frozen=True)
class PSAsyncParams(CompressionParams, SupervisorParams, ShardParams):
    ps_mode: str = field(default="single", metadata={"choices": PS_MODES})
    """``single``: one server handler, requests queue (PS_Single); ``multi``: ``handlers`` concurrent handlers (PS_Multi)."""
    handlers: int = field(default=4, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """Concurrent request handlers of the server in ``multi`` mode."""
    handle_time: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Server time per request (decode, apply, encode); null: the update's FLOPs (4 per parameter) at device speed."""
    staleness_aware: bool = False
    """Scale an update by 1 / staleness (when > 1), i.e. lr / staleness for SGD: Zhang et al., IJCAI 2016."""
    worker_timeout: Optional[float] = field(default=10.0, metadata={"parse": parse_duration})
    """Seconds of silence after which the server counts a worker as gone (crashed), stretched to 4x the longest silence seen between a live worker's messages and to 4x all workers' pushes and replies at the nominal bandwidth; null waits forever."""


class PSAsyncServer(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.version = 0
        self.staleness_sum = 0
        self.updates = 0
        self.last_heard: dict[int, float] = {}
        self.longest_gap = 0.0
        self.nominal_cycle = 0.0
        self.shard = ServerShard(self)

    def service_cost(self):
        t = self.params.handle_time
        return float(t) if t is not None else Work(flops=4.0 * self.shard.numel)

    async def run(self, rt: Runtime) -> None:
        workers = workers_of(self.ctx, rt)
        self.epoch_updates = max(1, len(workers) * self.ctx.steps_per_epoch)
        self.nominal_cycle = self.cycle_estimate(len(workers))
        if self.version == 0:
            await self.shard.end_epoch(rt, 0)
        k = self.params.handlers if self.params.ps_mode == "multi" else 1
        tasks = [rt.spawn(self.handler(rt), name=f"handler{h}") for h in range(k)]
        done: set[int] = set()
        for w in workers:
            self.last_heard.setdefault(w, rt.now())
        while not set(workers) <= done:
            limit = self.silence_limit()
            msg = await rt.recv(match="done", timeout=limit)
            if msg is not None:
                done.add(msg.src)
                continue
            gone = {w for w in workers if w not in done and rt.now() - self.last_heard[w] >= limit}
            if gone:  # crashed workers never say done: peers learn of a crash only by silence
                rt.log("worker_timeouts", len(gone))
                done |= gone
        for t in tasks:  # every push has been answered before its worker said done
            t.cancel()
        if self.updates // self.epoch_updates < self.ctx.epochs:  # shards of unequal size: log the last epoch
            await self.shard.end_epoch(rt, self.ctx.epochs)
        rt.log("staleness_mean", self.staleness_sum / max(1, self.updates))
        await self.shard.finish(rt, self.ctx.epochs)
        if not self.shard.index:
            await stop_others(rt)

    def silence_limit(self) -> Optional[float]:
        """Silence after which a worker counts as gone: ``worker_timeout``, stretched to 4x the
        longest gap seen between two messages of one worker (an adaptive timer, like TCP's
        retransmission timeout over the measured round trip) and, before any gap is seen, to
        4x the time every worker's dense push and reply take through this server's nominal
        link: with 16 workers pushing a 4.8 MB CNN gradient at 100 Mbit/s a live worker is
        silent for 12 s per step, with 64 workers its first push alone takes 25 s."""
        t = self.params.worker_timeout
        return None if t is None else max(t, 4 * self.longest_gap, 4 * self.nominal_cycle)

    def cycle_estimate(self, workers: int) -> float:
        """Seconds for ``workers`` dense pushes and replies of this shard through the server's
        link at the run's nominal capacity (0 when it is unknown, e.g. in some real runs)."""
        net = self.ctx.network
        if net is None:
            return 0.0
        bw = net.narrowest
        return 2 * workers * 4.0 * self.shard.numel / bw if math.isfinite(bw) and bw > 0 else 0.0

    def heard(self, rt: Runtime, src: int) -> None:
        now = rt.now()
        if src in self.last_heard:
            self.longest_gap = max(self.longest_gap, now - self.last_heard[src])
        self.last_heard[src] = now

    async def handler(self, rt: Runtime) -> None:
        shard = self.shard
        cost = self.service_cost()
        while True:
            msg = await rt.recv(match=("grad", "pull", "pull_sup"))
            if msg.kind == "pull_sup":
                await rt.send(msg.src, shard.reply("model", {"version": self.version}))
                continue
            self.heard(rt, msg.src)
            if msg.kind == "grad":
                grad = decompress(msg.tensors, shard.numel)
                await rt.compute(_noop, cost=cost)
                staleness = self.version - int(msg["version"])
                if self.params.staleness_aware and staleness > 1:
                    grad.div_(staleness)
                shard.apply(grad)
                self.version += 1
                self.updates += 1
                self.staleness_sum += staleness
                rt.log("staleness", float(staleness))
            await rt.send(msg.src, shard.reply("params", {"version": self.version}))
            if msg.kind == "grad" and self.updates % self.epoch_updates == 0:
                await shard.end_epoch(rt, self.updates // self.epoch_updates)


def _noop() -> None:
    return None


class PSAsyncWorker(PSWorker):
    async def run(self, rt: Runtime) -> None:
        learner, servers = self.learner, self.servers
        total = self.ctx.epochs * learner.steps_per_epoch
        if learner.steps_done >= total:
            return
        await servers.send_all(rt, Message("pull"))
        pulled = await servers.collect(rt, "params")
        while pulled is not None and learner.steps_done < total:
            learner.set_flat(servers.assemble(pulled))
            await self.local_grad(rt)
            await self.push(rt, pulled, "version")
            pulled = await servers.collect(rt, "params")
        if pulled is not None:
            await servers.send_all(rt, Message("done"))


class PSAsync(PSAlgorithm):
    name = "ps_async"
    Params = PSAsyncParams
    summary = "parameter server, asynchronous SGD (Downpour / seed 002), single or multi-handler server"
    example = {"topology": {"kind": "star"}, "algorithm": {"worker_timeout": "1s"}}
    server_node, worker_node = PSAsyncServer, PSAsyncWorker
