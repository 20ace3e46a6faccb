"""Parameter-server SGD with synchronous gradient averaging (``ps_sync``), and the pieces
every parameter-server algorithm shares: push-path compression and the supervisor role.

Round t: the server sends x_t to every worker; each computes g_k on one minibatch at
x_t and pushes it (compressed by ``compression``, see :mod:`.compression`: the server
gets ``decompress(payload)``; with a residual compressor the worker keeps what it did not
send for its next push, with ``adacomp``, Hardy's, it drops it); the
server waits for all (or ``timeout``), sets ``g = sum_k b_k g_k / sum_k b_k`` (b_k: the
worker's batch size) and applies it with its optimizer (the configured ``train``
optimizer and lr): ``x_{t+1} = opt(x_t, g)``. One epoch is one pass of an average worker
over its shard; the server evaluates the central model after every epoch (its rows are
the global model's).

Shards (``shards: k``, both ``ps_sync`` and ``ps_async``; the key-range partitioning of
Li et al.'s parameter server, OSDI 2014, and MXNet's split of large arrays across servers):
servers ``0..k-1`` (``topology: {kind: star, hubs: k}``) each own the contiguous slice
``[j n / k, (j+1) n / k)`` of the flat parameter vector, whatever the layer sizes, and run
the server's rules on that slice alone with their own optimizer state. A worker pulls every
slice, computes its gradient at the concatenation, compresses it whole (per layer, so the
selection does not depend on the shards; residuals stay per worker) and pushes each shard its part, so every server link carries 1/k of the load.
Server 0 reports the central model: at each epoch boundary the other shards send it their
slice, and it evaluates the concatenation.

Supervisor (seed 002's ``Supervisor.py``), with ``supervisor: true``: the last node holds
no training data; every ``supervise_every`` simulated seconds it pulls the central model
(``pull_sup`` -> ``model``) and logs ``sup_test_acc``/``sup_test_loss`` on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.schema import ConfigError
from ..core.units import parse_duration
from .compression import CompressionParams, Compressor, Layer, decompress, split_payload
from .kit import ServerAlgorithm, average, collect_round, drain, require_hubs, server_roles


@dataclass(frozen=True)
class SupervisorParams:
    supervisor: bool = False
    """The last node becomes a supervisor: it pulls the central model every ``supervise_every`` seconds and logs its test accuracy and loss (seed 002)."""
    supervise_every: float = field(default=1.0, metadata={"parse": parse_duration,
                                                          "check": (lambda x: x > 0, "must be > 0")})
    """Simulated seconds between two pulls of the supervisor."""


@dataclass(frozen=True)
class ShardParams:
    shards: int = field(default=1, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """Parameter-server shards: servers 0..shards-1 each own a contiguous 1/shards of the parameters (``topology: {kind: star, hubs: shards}``)."""


@dataclass(frozen=True)
class PSSyncParams(CompressionParams, SupervisorParams, ShardParams):
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the server waits for gradients each round; null waits for all workers."""


def shard_roles(graph, algorithm: str, k: int) -> dict[int, str]:
    """The ``k`` nodes with ``role: server``, each linked to every other node: the lowest id is
    ``server`` (shard 0, which reports the central model), the others ``shard``."""
    servers = sorted(i for i, r in graph.nodes(data="role") if r == "server")
    hint = f"topology: {{kind: star, hubs: {k}}}"
    if len(servers) != k:
        raise ConfigError(f"algorithm.shards: {k} shards need {k} server nodes ({hint}); the topology has {len(servers)}")
    require_hubs(graph, algorithm, servers, hint)
    return {i: ("server" if i == servers[0] else "shard" if i in servers else "worker") for i in graph.nodes}


def ps_roles(graph, algorithm: str, params) -> dict[int, str]:
    """The hub is the server (or the ``shards`` hubs), the others workers; with ``supervisor``
    the last worker supervises."""
    k = getattr(params, "shards", 1)
    roles = server_roles(graph, algorithm) if k == 1 else shard_roles(graph, algorithm, k)
    if getattr(params, "supervisor", False):
        workers = [i for i, r in roles.items() if r == "worker"]
        if len(workers) < 2:
            raise ConfigError(f"algorithm.supervisor: {algorithm} needs at least 2 non-server nodes for a supervisor")
        roles[max(workers)] = "supervisor"
    return roles


def make_compressor(ctx: NodeContext) -> Compressor:
    """A worker's compression state over its learner's layers."""
    learner = ctx.learner
    layers = [Layer(*t) for t in learner.layer_slices()]
    params = ctx.params if isinstance(ctx.params, CompressionParams) else CompressionParams()
    return Compressor(params, layers, learner.num_params, seed=1000003 * (ctx.node_id + 1))


def workers_of(ctx: NodeContext, rt: Runtime) -> list[int]:
    """Ids of the training workers (not the server, not the supervisor)."""
    return [i for i in rt.nodes if i != rt.node_id and ctx.roles.get(i, "worker") == "worker"]


def servers_of(roles: dict[int, str]) -> list[int]:
    """The server nodes in shard order: the reporting server first, then the other shards."""
    return [i for i, r in roles.items() if r == "server"] + sorted(i for i, r in roles.items() if r == "shard")


def shard_ranges(numel: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ranges ``[j numel / k, (j+1) numel / k)`` covering a flat vector."""
    if not 1 <= k <= numel:
        raise ConfigError(f"algorithm.shards: {k} shards for a model of {numel} parameters; allowed: 1 to {numel}")
    cuts = [numel * j // k for j in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class ServerShard:
    """One server's part of the central model: the slice it owns, its updates, its epoch reports.

    With one server the slice is the whole model and the learner's own optimizer steps it.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.learner = node.learner
        self.servers = servers_of(node.ctx.roles)
        self.index = self.servers.index(node.node_id)
        self.ranges = shard_ranges(self.learner.num_params, len(self.servers))
        self.start, self.stop = self.ranges[self.index]
        self.numel = self.stop - self.start
        self.sharded = len(self.servers) > 1
        self.reports: list = []
        self.last_epoch = -1

    def x(self) -> torch.Tensor:
        """A copy of the owned slice of the central model."""
        return self.learner.flat_params()[self.start:self.stop].clone()

    def apply(self, grad: torch.Tensor) -> None:
        """One optimizer step of the owned slice with ``grad`` (``numel`` long)."""
        if self.sharded:
            self.learner.apply_update_slice(grad, self.start, self.stop)
        else:
            self.learner.set_grad_flat(grad)
            self.learner.apply_update()

    def reply(self, kind: str, header: dict) -> Message:
        """A message carrying the owned slice, tagged with this shard's index."""
        return Message(kind, {**header, "shard": self.index}, {"x": self.x()})

    async def end_epoch(self, rt: Runtime, epoch: int) -> None:
        """Report the central model after ``epoch``: shard 0 evaluates it once every other
        shard's slice of that epoch has come in; the others send their slice to shard 0."""
        self.last_epoch = epoch
        if not self.sharded:
            self.node.end_epoch(rt, epoch)
        elif self.index:
            await rt.send(self.servers[0], self.reply("slice", {"epoch": epoch}))
        else:
            self.reports.append(rt.spawn(self._report(rt, epoch, self.x()), name=f"report{epoch}"))

    async def _report(self, rt: Runtime, epoch: int, own: torch.Tensor) -> None:
        parts = {0: own}
        while len(parts) < len(self.servers):
            msg = await rt.recv(match=lambda m: m.kind == "slice" and m["epoch"] == epoch)
            parts[int(msg["shard"])] = msg.tensors["x"]
        live = self.learner.get_flat()
        self.learner.set_flat(torch.cat([parts[j] for j in range(len(self.servers))]))
        self.node.end_epoch(rt, epoch)
        self.learner.set_flat(live)

    async def finish(self, rt: Runtime, epochs: int) -> None:
        """Shard 0: wait for its pending reports. Others: send a slice for every epoch up to
        ``epochs`` not yet reported (a worker lost mid-push can leave the shards' counts apart)."""
        if self.index:
            for epoch in range(self.last_epoch + 1, epochs + 1):
                await rt.send(self.servers[0], self.reply("slice", {"epoch": epoch}))
        else:
            await rt.gather(*self.reports)


class ShardedModel:
    """A worker's (or supervisor's) view of the servers: pull every slice, push every part."""

    def __init__(self, ctx: NodeContext) -> None:
        self.servers = servers_of(ctx.roles)
        self.ranges = shard_ranges(ctx.learner.num_params, len(self.servers))

    async def send_all(self, rt: Runtime, msg: Message) -> None:
        for s in self.servers:
            await rt.send(s, msg)

    async def collect(self, rt: Runtime, kind: str) -> list[Message] | None:
        """One ``kind`` message from every server (the newest of each), in shard order;
        None when ``stop`` comes first."""
        got: dict[int, Message] = {}
        while len(got) < len(self.servers):
            msg = await rt.recv(match=(kind, "stop"))
            if msg.kind == "stop":
                return None
            got[msg.src] = msg
        return [got[s] for s in self.servers]

    @staticmethod
    def assemble(msgs: list[Message]) -> torch.Tensor:
        """The central model from its slices."""
        return msgs[0].tensors["x"] if len(msgs) == 1 else torch.cat([m.tensors["x"] for m in msgs])

    def split(self, payload: dict) -> list[dict]:
        """A whole-model push payload cut into each shard's part."""
        return [payload] if len(self.servers) == 1 else split_payload(payload, self.ranges)


async def serve_pulls(rt: Runtime, shard: ServerShard, version: int) -> None:
    """Answer every queued supervisor pull with this server's slice (never waits)."""
    for msg in await drain(rt, "pull_sup"):
        await rt.send(msg.src, shard.reply("model", {"version": version}))


async def stop_others(rt: Runtime) -> None:
    for i in rt.nodes:
        if i != rt.node_id:
            await rt.send(i, Message("stop"))


class Supervisor(Node):
    """Holds the test set; pulls the central model periodically and logs its accuracy."""

    async def run(self, rt: Runtime) -> None:
        servers = ShardedModel(self.ctx)
        period = self.params.supervise_every
        while True:
            if await rt.recv(timeout=period, match="stop") is not None:
                return
            await servers.send_all(rt, Message("pull_sup"))
            replies = await servers.collect(rt, "model")
            if replies is None:
                return
            self.learner.set_flat(servers.assemble(replies))
            loss, acc = self.learner.evaluate(*self.ctx.test)
            rt.log("sup_test_acc", acc)
            rt.log("sup_test_loss", loss)
            rt.log("sup_version", float(replies[0]["version"]))


class PSSyncServer(Node):
    """A server (or one shard of it): averages each round's gradients of its slice."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0
        self.shard = ServerShard(self)

    async def run(self, rt: Runtime) -> None:
        workers = workers_of(self.ctx, rt)
        shard = self.shard
        spe = self.ctx.steps_per_epoch
        total = self.ctx.epochs * spe
        if self.round == 0:
            await shard.end_epoch(rt, 0)
        while self.round < total:
            r = self.round
            msg = shard.reply("params", {"round": r})
            for w in workers:
                await rt.send(w, msg)
            got = await collect_round(rt, "grad", r, set(workers), self.params.timeout)
            if got:
                grads = [decompress(m.tensors, shard.numel) for m in got.values()]
                shard.apply(average(grads, [m["n"] for m in got.values()]))
            self.round += 1
            await serve_pulls(rt, shard, self.round)
            if self.round % spe == 0:
                await shard.end_epoch(rt, self.round // spe)
        await shard.finish(rt, self.ctx.epochs)
        if not shard.index:
            await stop_others(rt)


class PSWorker(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.compressor = make_compressor(ctx)
        self.pushes = 0
        self.servers = ShardedModel(ctx)

    def payload(self, rt: Runtime) -> dict:
        """This step's gradient as wire tensors (compressed; a residual, if any, stays here)."""
        grad = self.learner.get_grad_flat()
        if not self.compressor.active:
            return {"g": grad}
        payload = self.compressor(grad)
        self.pushes += 1
        if self.pushes % self.learner.steps_per_epoch == 0:
            rt.log("compression_ratio", self.compressor.ratio)
        return payload

    async def push(self, rt: Runtime, pulled: list[Message], key: str) -> None:
        """This step's gradient to every server: each its part, tagged with its ``key``
        (round or version) from the pull it was computed on."""
        parts = self.servers.split(self.payload(rt))
        for msg, part in zip(pulled, parts):
            await rt.send(msg.src, Message("grad", {key: msg[key], "n": self.learner.batch_size}, part))

    async def run(self, rt: Runtime) -> None:
        while True:
            pulled = await self.servers.collect(rt, "params")
            if pulled is None:
                return
            self.learner.set_flat(self.servers.assemble(pulled))
            await self.local_grad(rt)
            await self.push(rt, pulled, "round")
            self.learner.idle()  # the next pull brings the whole model again


class PSAlgorithm(ServerAlgorithm):
    """A parameter server on a star (optionally with a supervisor): its server and worker node classes."""

    model_holders = ("worker", "server", "shard", "supervisor")
    server_node: type[Node]
    worker_node: type[Node]

    @classmethod
    def roles(cls, graph, params):
        return ps_roles(graph, cls.name, params)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        if ctx.role == "supervisor":
            return Supervisor(ctx)
        return cls.server_node(ctx) if ctx.role in ("server", "shard") else cls.worker_node(ctx)


class PSSync(PSAlgorithm):
    name = "ps_sync"
    Params = PSSyncParams
    summary = "parameter server, synchronous gradient averaging over all workers"
    example = {"topology": {"kind": "star"}, "algorithm": {"timeout": "1s"}}
    server_node, worker_node = PSSyncServer, PSWorker
