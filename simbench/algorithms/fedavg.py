"""Federated averaging (McMahan et al., AISTATS 2017) over a server and its clients.

Round t: the server samples ``m = max(1, round(C K))`` of its K clients (``frac_clients``
= C), sends them the global model x_t; each runs ``local_steps`` minibatch steps (E; by
default one local epoch) from x_t and returns x_t^k with its shard size n_k; the server
sets ``x_{t+1} = sum_k n_k x_t^k / sum_k n_k`` over the updates that arrived within
``timeout`` (all of them when null). The server evaluates the global model every round;
its rows in epochs.csv are the global (average) model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .common import ServerAlgorithm, server_roles, weighted_average
from .dsgd import collect_round


@dataclass(frozen=True)
class FedAvgParams:
    frac_clients: float = field(default=1.0, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """C: fraction of clients sampled per round."""
    local_steps: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """E as minibatch steps per round; null = one local epoch."""
    rounds: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Number of rounds; null = train.epochs."""
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the server waits for client updates each round; null waits for all."""


class FedAvgServer(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0

    async def run(self, rt: Runtime) -> None:
        p = self.params
        clients = [i for i in rt.nodes if i != rt.node_id]
        rounds = p.rounds or self.ctx.epochs
        m = max(1, round(p.frac_clients * len(clients)))
        if self.round == 0:
            self.end_epoch(rt, 0)
        while self.round < rounds:
            r = self.round
            chosen = sorted(int(c) for c in rt.rng.choice(clients, size=m, replace=False))
            msg = Message("global", {"round": r}, {"x": self.learner.get_flat()})
            for c in chosen:
                await rt.send(c, msg)
            got = await collect_round(rt, "update", r, set(chosen), p.timeout)
            if got:
                self.learner.set_flat(weighted_average(
                    [u.tensors["x"] for u in got.values()], [u["n"] for u in got.values()]))
            rt.log("clients_heard", len(got))
            self.round += 1
            self.end_epoch(rt, self.round)
        for c in clients:
            await rt.send(c, Message("stop"))


class FedAvgClient(Node):
    async def run(self, rt: Runtime) -> None:
        learner = self.learner
        steps = self.params.local_steps or learner.steps_per_epoch
        while True:
            msg = await rt.recv(match=("global", "stop"))
            if msg.kind == "stop":
                return
            learner.set_flat(msg.tensors["x"])
            await rt.compute(self._train, steps, cost=self.step_cost(steps))
            update = Message("update", {"round": msg["round"], "n": learner.num_samples}, {"x": learner.get_flat()})
            await rt.send(msg.src, update)

    def _train(self, steps: int) -> None:
        for _ in range(steps):
            self.learner.train_step()


class FedAvg(ServerAlgorithm):
    name = "fedavg"
    Params = FedAvgParams
    summary = "federated averaging: sampled clients train locally, the server averages by shard size"

    @classmethod
    def roles(cls, graph, params):
        return server_roles(graph, cls.name)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return FedAvgServer(ctx) if ctx.role == "server" else FedAvgClient(ctx)
