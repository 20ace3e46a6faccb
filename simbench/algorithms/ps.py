"""Parameter-server SGD with synchronous gradient averaging (``ps_sync``), and the pieces
every parameter-server algorithm shares: push-path compression and the supervisor role.

Round t: the server sends x_t to every worker; each computes g_k on one minibatch at
x_t and pushes it (compressed by ``compression``, see :mod:`.compression`: the server
gets ``decompress(payload)``; the worker keeps what it did not send as a residual); the
server waits for all (or ``timeout``), sets ``g = sum_k b_k g_k / sum_k b_k`` (b_k: the
worker's batch size) and applies it with its optimizer (the configured ``train``
optimizer and lr): ``x_{t+1} = opt(x_t, g)``. One epoch is one pass of an average worker
over its shard; the server evaluates the central model after every epoch (its rows are
the global model's).

Supervisor (seed 002's ``Supervisor.py``), with ``supervisor: true``: the last node holds
no training data; every ``supervise_every`` simulated seconds it pulls the central model
(``pull_sup`` -> ``model``) and logs ``sup_test_acc``/``sup_test_loss`` on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.schema import ConfigError
from ..core.units import parse_duration
from .common import ServerAlgorithm, server_roles, weighted_average
from .compression import CompressionParams, Compressor, Layer, decompress
from .dsgd import collect_round


@dataclass(frozen=True)
class SupervisorParams:
    supervisor: bool = False
    """The last node becomes a supervisor: it pulls the central model every ``supervise_every`` seconds and logs its test accuracy and loss (seed 002)."""
    supervise_every: float = field(default=1.0, metadata={"parse": parse_duration,
                                                          "check": (lambda x: x > 0, "must be > 0")})
    """Simulated seconds between two pulls of the supervisor."""


@dataclass(frozen=True)
class PSSyncParams(CompressionParams, SupervisorParams):
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the server waits for gradients each round; null waits for all workers."""


def ps_roles(graph, algorithm: str, params) -> dict[int, str]:
    """The hub is the server, the others workers; with ``supervisor`` the last worker supervises."""
    roles = server_roles(graph, algorithm)
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


async def serve_pulls(rt: Runtime, learner, version: int) -> None:
    """Answer every queued supervisor pull with the current central model (never waits)."""
    while True:
        msg = await rt.recv(timeout=0, match="pull_sup")
        if msg is None:
            return
        await rt.send(msg.src, Message("model", {"version": version}, {"x": learner.get_flat()}))


async def stop_others(rt: Runtime) -> None:
    for i in rt.nodes:
        if i != rt.node_id:
            await rt.send(i, Message("stop"))


class Supervisor(Node):
    """Holds the test set; pulls the central model periodically and logs its accuracy."""

    async def run(self, rt: Runtime) -> None:
        server = next(i for i, r in self.ctx.roles.items() if r == "server")
        period = self.params.supervise_every
        while True:
            if await rt.recv(timeout=period, match="stop") is not None:
                return
            await rt.send(server, Message("pull_sup"))
            reply = await rt.recv(match=("model", "stop"))
            if reply.kind == "stop":
                return
            self.learner.set_flat(reply.tensors["x"])
            loss, acc = self.learner.evaluate(*self.ctx.test)
            rt.log("sup_test_acc", acc)
            rt.log("sup_test_loss", loss)
            rt.log("sup_version", float(reply["version"]))


class PSSyncServer(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0

    async def run(self, rt: Runtime) -> None:
        workers = workers_of(self.ctx, rt)
        n = self.learner.num_params
        spe = self.ctx.steps_per_epoch
        total = self.ctx.epochs * spe
        if self.round == 0:
            self.end_epoch(rt, 0)
        while self.round < total:
            r = self.round
            msg = Message("params", {"round": r}, {"x": self.learner.get_flat()})
            for w in workers:
                await rt.send(w, msg)
            got = await collect_round(rt, "grad", r, set(workers), self.params.timeout)
            if got:
                grad = weighted_average([decompress(m.tensors, n) for m in got.values()], [m["n"] for m in got.values()])
                self.learner.set_grad_flat(grad)
                self.learner.apply_update()
            self.round += 1
            await serve_pulls(rt, self.learner, self.round)
            if self.round % spe == 0:
                self.end_epoch(rt, self.round // spe)
        await stop_others(rt)


class PSWorker(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.compressor = make_compressor(ctx)
        self.pushes = 0

    def payload(self, rt: Runtime) -> dict:
        """This step's gradient as wire tensors (compressed; the residual stays here)."""
        grad = self.learner.get_grad_flat()
        if not self.compressor.active:
            return {"g": grad}
        payload = self.compressor(grad)
        self.pushes += 1
        if self.pushes % self.learner.steps_per_epoch == 0:
            rt.log("compression_ratio", self.compressor.ratio)
        return payload

    async def run(self, rt: Runtime) -> None:
        learner = self.learner
        while True:
            msg = await rt.recv(match=("params", "stop"))
            if msg.kind == "stop":
                return
            learner.set_flat(msg.tensors["x"])
            await self.local_grad(rt)
            grad = Message("grad", {"round": msg["round"], "n": learner.batch_size}, self.payload(rt))
            await rt.send(msg.src, grad)


class PSAlgorithm(ServerAlgorithm):
    """A parameter server on a star (optionally with a supervisor): its server and worker node classes."""

    model_holders = ("worker", "server", "supervisor")
    server_node: type[Node]
    worker_node: type[Node]

    @classmethod
    def roles(cls, graph, params):
        return ps_roles(graph, cls.name, params)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        if ctx.role == "supervisor":
            return Supervisor(ctx)
        return cls.server_node(ctx) if ctx.role == "server" else cls.worker_node(ctx)


class PSSync(PSAlgorithm):
    name = "ps_sync"
    Params = PSSyncParams
    summary = "parameter server, synchronous gradient averaging over all workers"
    server_node, worker_node = PSSyncServer, PSWorker
