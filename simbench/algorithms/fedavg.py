"""Federated averaging (McMahan et al., AISTATS 2017) over a server and its clients.

Round t: the server samples ``m = max(1, round(C K))`` of its K clients (``frac_clients``
= C) without replacement, sends them the global model x_t; each runs ``local_steps``
minibatch steps (E; by default one local epoch) from x_t and returns x_t^k with its shard
size n_k; the server sets ``x_{t+1} = sum_k n_k x_t^k / sum_k n_k`` over the updates that
arrived within ``timeout`` (all of them when null). The server evaluates the global model
every round; its rows in epochs.csv are the global (average) model. ``rounds`` rounds are
run, or fewer with ``stop_accuracy``: the run ends at the first round whose global model
reaches that test accuracy.

The round itself is :class:`~simbench.algorithms.kit.FederatedServer`'s; this module
only sets its size and the number of rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .kit import FederatedClient, FederatedServer, ServerAlgorithm, check_local_work, local_work, server_roles


@dataclass(frozen=True)
class FedAvgParams:
    frac_clients: float = field(default=1.0, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """C: fraction of clients sampled per round."""
    local_epochs: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """E: passes over its shard a client makes per round (the paper's E); null = one, unless
    local_steps is set."""
    local_steps: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Minibatch steps per round instead of local_epochs (not both); null = one local epoch."""
    rounds: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Number of rounds; null = train.epochs (one evaluation per round)."""
    stop_accuracy: Optional[float] = field(default=None, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """Stop once the global model's test accuracy reaches this (rounds to target, as McMahan et
    al. report); null: run every round."""
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the server waits for client updates each round; null waits for all."""

    def __post_init__(self) -> None:
        check_local_work(self)


class FedAvgServer(FederatedServer):
    def group_size(self) -> int:
        return max(1, round(self.params.frac_clients * len(self.clients)))

    async def run(self, rt: Runtime) -> None:
        rounds = self.params.rounds or self.ctx.epochs
        if self.round == 0:
            self.end_epoch(rt, 0)
        target = self.params.stop_accuracy
        while self.round < rounds:
            await self.train_round(rt)
            self.end_epoch(rt, self.round)
            if target is not None and (getattr(self, "last_metrics", None) or {}).get("test_acc", 0.0) >= target:
                rt.log("stopped_at_accuracy", self.round)
                break
        await self.stop(rt)


class FedAvgClient(FederatedClient):
    def local_steps(self) -> int:
        return local_work(self.params, self.learner.steps_per_epoch)


class FedAvg(ServerAlgorithm):
    name = "fedavg"
    Params = FedAvgParams
    summary = "federated averaging: sampled clients train locally, the server averages by shard size"
    example = {"topology": {"kind": "star"}, "algorithm": {"frac_clients": 0.5, "timeout": "1s"}}

    @classmethod
    def roles(cls, graph, params):
        return server_roles(graph, cls.name)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return FedAvgServer(ctx) if ctx.role == "server" else FedAvgClient(ctx)
