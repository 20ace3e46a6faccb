"""Parameter-server SGD with synchronous gradient averaging (``ps_sync``).

Round t: the server sends x_t to every worker; each computes g_k on one minibatch at
x_t and pushes it; the server waits for all (or ``timeout``), sets
``g = sum_k b_k g_k / sum_k b_k`` (b_k: the worker's batch size) and applies it with its
optimizer (the configured ``train`` optimizer and lr): ``x_{t+1} = opt(x_t, g)``. One
epoch is one pass of an average worker over its shard; the server evaluates the central
model after every epoch (its rows are the global model's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .common import server_roles, weighted_average
from .dsgd import collect_round


@dataclass(frozen=True)
class PSSyncParams:
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the server waits for gradients each round; null waits for all workers."""


class PSSyncServer(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0

    async def run(self, rt: Runtime) -> None:
        workers = [i for i in rt.nodes if i != rt.node_id]
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
                grad = weighted_average([m.tensors["g"] for m in got.values()], [m["n"] for m in got.values()])
                self.learner.set_grad_flat(grad)
                self.learner.apply_update()
            self.round += 1
            if self.round % spe == 0:
                self.end_epoch(rt, self.round // spe)
        for w in workers:
            await rt.send(w, Message("stop"))


class PSWorker(Node):
    async def run(self, rt: Runtime) -> None:
        learner = self.learner
        while True:
            msg = await rt.recv(match=("params", "stop"))
            if msg.kind == "stop":
                return
            learner.set_flat(msg.tensors["x"])
            await self.local_grad(rt)
            grad = Message("grad", {"round": msg["round"], "n": learner.batch_size}, {"g": learner.get_grad_flat()})
            await rt.send(msg.src, grad)


class PSSync(Algorithm):
    name = "ps_sync"
    Params = PSSyncParams
    summary = "parameter server, synchronous gradient averaging over all workers"

    @classmethod
    def roles(cls, graph, params):
        return server_roles(graph, cls.name)

    @classmethod
    def model_roles(cls):
        return ("worker", "server")

    @classmethod
    def reporting_roles(cls):
        return ("server",)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return PSSyncServer(ctx) if ctx.role == "server" else PSWorker(ctx)
