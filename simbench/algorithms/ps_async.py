"""Asynchronous SGD with a parameter server (``ps_async``; Dean et al., NIPS 2012, Downpour
SGD; seed 002's ASGD with PS_Single / PS_Multi).

Worker k loops: pull (x, v) from the server, compute g_k on one minibatch at x, push
``(compress(g_k), v)``. The server applies every gradient on arrival with its optimizer,
``x <- opt(x, decompress(g_k))``, bumps its version ``v_s`` and answers the push with the
new (x, v_s), which is the worker's next pull. The staleness of an update is
``v_s - v`` at the moment it is applied (0 when no other update came in between) and is
logged per update as ``staleness``. Two staleness rules, at most one of them on:

``parameter_staleness`` (AdaComp's server, Hardy, Le Merrer and Sericola, IEEE NCA 2017;
reference ``Hardy-c/AdaComp``, ``PS.py``: ``count_pred`` and the PUSH branch; on by
default with ``compression: adacomp``, the seed's configuration)
    Every sent entry is scaled by its own staleness: with ``s_i`` the number of updates
    applied since the worker's pull that touched parameter i (sent i)::

        x_i <- x_i - lr * g_i / max(1, s_i)        for every sent i; unsent x_i unchanged

    so s_i = 0 and s_i = 1 both leave the step as it is. The reference keeps a history of
    the index sets of all updates and counts over its last ``delay = v_s - v`` entries;
    with ``delay == 0`` its slice ``history[-0:]`` is the *whole* history, so an update that
    no other came between is divided by the count of every earlier update that touched i
    since training began (always, with one worker). That is a slicing slip, not the rule
    the paper states; here s_i counts only updates since the pull, so it is 0 then. The
    server keeps the index sets of updates as far back as the oldest pull still out (a
    dense push touches every parameter). The scaling multiplies the gradient handed to the
    server's optimizer, which for the seed's plain SGD is exactly the rule above.
    Logged at the end: ``param_staleness_mean`` (over every sent entry) and
    ``param_staleness_max``.
``staleness_aware`` (Zhang, Gupta, Lian and Liu, "Staleness-aware Async-SGD for
Distributed Deep Learning", IJCAI 2016)
    An update of staleness s > 1 is applied as ``g / s`` as a whole (learning rate
    ``lr / s`` for plain SGD): with N workers the staleness is about N - 1, so the server's
    steps shrink as in synchronous averaging over N gradients.

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
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime, Work
from ..core.schema import ConfigError
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
    """Scale a whole update by 1 / staleness (when > 1), i.e. lr / staleness for SGD: Zhang et al., IJCAI 2016."""
    parameter_staleness: Optional[bool] = None
    """Scale each sent entry by 1 / max(1, s_i), s_i = updates since the pull that touched parameter i (AdaComp's server, Hardy et al. 2017); null: on exactly when compression is adacomp."""
    worker_timeout: Optional[float] = field(default=10.0, metadata={"parse": parse_duration})
    """Seconds of silence after which the server counts a worker as gone (crashed), stretched to 4x the longest silence seen between a live worker's messages and to 4x all workers' pushes and replies at the nominal bandwidth; null waits forever."""


    def __post_init__(self) -> None:
        if self.staleness_aware and self.per_parameter:
            raise ConfigError("algorithm.staleness_aware: true cannot be combined with parameter_staleness (on by "
                              "default with compression: adacomp); set parameter_staleness: false for Zhang et al.'s "
                              "whole-update rule")

    @property
    def per_parameter(self) -> bool:
        """Whether the server scales each entry by its own staleness (``parameter_staleness`` resolved)."""
        p = self.parameter_staleness
        return self.compression == "adacomp" if p is None else p


class TouchLog:
    """Which parameters each applied update touched, so the server can count, for any
    pushed entry, the updates since the pusher's pull that touched the same parameter.

    ``record(u, idx)`` notes update number ``u`` (the server version it was applied at)
    with its positions ``idx`` (None: a dense update, every position);
    ``staleness(v, idx)`` counts, per position of ``idx`` (None: every position), the
    recorded updates ``u >= v``; ``forget_before(v)`` drops updates ``u < v``.
    """

    def __init__(self, numel: int) -> None:
        self.numel = numel
        self.entries: deque[tuple[int, Optional[torch.Tensor]]] = deque()
        self._marks = torch.zeros(numel, dtype=torch.long)  # all zero between calls

    def record(self, version: int, idx: Optional[torch.Tensor]) -> None:
        self.entries.append((version, None if idx is None else idx.long().cpu()))

    def forget_before(self, version: int) -> None:
        while self.entries and self.entries[0][0] < version:
            self.entries.popleft()

    def staleness(self, since: int, idx: Optional[torch.Tensor]) -> torch.Tensor:
        recent = [e for v, e in self.entries if v >= since]
        dense = sum(1 for e in recent if e is None)
        sparse = [e for e in recent if e is not None]
        marks = self._marks
        for e in sparse:  # an update's positions are distinct: one mark each
            marks[e] += 1
        counts = marks.clone() if idx is None else marks[idx.long().cpu()]
        for e in sparse:
            marks[e] = 0
        return counts + dense


def scale_by_parameter_staleness(grad: torch.Tensor, idx: Optional[torch.Tensor], staleness: torch.Tensor) -> None:
    """Hardy's rule in place: entry i of ``grad`` (at ``idx``; None: every entry) divided by
    ``max(1, staleness_i)``."""
    div = staleness.clamp(min=1).to(grad.dtype).to(grad.device)
    if idx is None:
        grad.div_(div)
    else:
        i = idx.long().to(grad.device)
        grad[i] = grad[i] / div


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
        self.per_parameter = self.params.per_parameter
        self.touches = TouchLog(self.shard.numel)
        self.pulled: dict[int, int] = {}  # worker -> the version of the last model it was sent
        self.finished: set[int] = set()  # workers that said done or were counted gone
        self.param_staleness_sum = 0.0
        self.param_staleness_count = 0
        self.param_staleness_max = 0

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
        done = self.finished
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
        if self.per_parameter:
            rt.log("param_staleness_mean", self.param_staleness_sum / max(1, self.param_staleness_count))
            rt.log("param_staleness_max", float(self.param_staleness_max))
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
                if self.per_parameter:
                    self.scale_per_parameter(grad, msg)
                shard.apply(grad)
                self.version += 1
                self.updates += 1
                self.staleness_sum += staleness
                rt.log("staleness", float(staleness))
            self.pulled[msg.src] = self.version
            await rt.send(msg.src, shard.reply("params", {"version": self.version}))
            if msg.kind == "grad" and self.updates % self.epoch_updates == 0:
                await shard.end_epoch(rt, self.updates // self.epoch_updates)


    def scale_per_parameter(self, grad: torch.Tensor, msg: Message) -> None:
        """Hardy's rule: divide each pushed entry by the number of updates since the
        pusher's pull that touched it (at least 1), then note which entries this update touches."""
        idx = msg.tensors.get("idx")
        s = self.touches.staleness(int(msg["version"]), idx)
        scale_by_parameter_staleness(grad, idx, s)
        self.param_staleness_sum += float(s.sum())
        self.param_staleness_count += s.numel()
        self.param_staleness_max = max(self.param_staleness_max, int(s.max()) if s.numel() else 0)
        self.touches.record(self.version, idx)
        live = [v for w, v in self.pulled.items() if w not in self.finished and w != msg.src]
        self.touches.forget_before(min(live + [self.version]))


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
            learner.idle()  # the next pull brings the whole model again
            pulled = await servers.collect(rt, "params")
        if pulled is not None:
            await servers.send_all(rt, Message("done"))


class PSAsync(PSAlgorithm):
    name = "ps_async"
    Params = PSAsyncParams
    summary = "parameter server, asynchronous SGD (Downpour / seed 002), single or multi-handler server"
    example = {"topology": {"kind": "star"}, "algorithm": {"worker_timeout": "1s"}}
    server_node, worker_node = PSAsyncServer, PSAsyncWorker
