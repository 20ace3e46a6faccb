"""FL-GAN: federated averaging of a whole GAN (generator AND discriminator) over devices,
as seed 001's ``dist-lsgan.py`` runs with ``--sample 0 --weight_avg 0``.

Round t: the server picks ``m = max(1, int(C K))`` of its K devices uniformly at random
(``frac_workers`` = C), sends them (G_t, D_t); each runs ``local_steps`` (E) GAN steps
(a G step then a D step on a minibatch of B = ``train.batch_size``) from them, keeping
its own Adam state across rounds, and returns its (G, D); the server sets both to the
plain average of the updates that arrived within ``timeout`` (the seed divides by the
group size, not by sample counts). An epoch is ``ceil(K · S / (m · E))`` rounds, S being
an average device's steps per pass over its shard, so one epoch does as many device steps
as K devices each going once over their data (the seed scales ``n_epochs`` for the same
reason). The server is evaluated (FID, classifier score, coverage, grid) after each epoch.

Devices send their class counts to the servers once, at the start (the seed's
``gather_lbl_count``); FeGAN (:mod:`simbench.algorithms.fegan`) uses them. With several
servers (FeGAN's ``num_servers``) the lowest-id live server is the primary: after every
round it sends its state (round, G, D, sampler state) to the backups; a backup that hears
nothing for ``failover`` × (its rank among backups) seconds takes over from the last state
it received and drives the devices, which answer whichever server sent them the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime, Work
from ..core.schema import ConfigError
from ..core.units import parse_duration
from .common import ServerAlgorithm, require_hubs
from .dsgd import collect_round
from .gan_common import GanNode, GanParams


@dataclass(frozen=True)
class FLGanParams(GanParams):
    frac_workers: float = field(default=0.1, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """C: fraction of the devices that train in each round (seed ``--frac_workers``)."""
    local_steps: int = field(default=100, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """E: GAN steps a device runs per round (seed ``--local_steps``)."""
    rounds_per_epoch: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Rounds between evaluations; null = ceil(K·S / (m·E)) (one pass over all data)."""
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds a server waits for the sub-group's updates (seed ``--timeout``); null waits for all."""


def plain_average(vectors: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """sum_k w_k v_k with weights summing to one (uniform when None)."""
    w = [1.0 / len(vectors)] * len(vectors) if weights is None else weights
    out = torch.zeros_like(vectors[0])
    for v, a in zip(vectors, w):
        if a:
            out.add_(v, alpha=float(a))
    return out


class FedGanServer(GanNode):
    """Server of FL-GAN / FeGAN; subclasses override :meth:`choose` and :meth:`weights`."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0
        self.servers = sorted(i for i, r in ctx.roles.items() if r == "server")
        self.devices = sorted(i for i, r in ctx.roles.items() if r == "worker")
        self.counts: dict[int, np.ndarray] = {}
        self.sampler_state: dict = {}

    # -- policy hooks ----------------------------------------------------------------------
    def choose(self, rt: Runtime, m: int) -> list[int]:
        return sorted(int(c) for c in rt.rng.choice(self.devices, size=m, replace=False))

    def weights(self, senders: list[int]) -> list[float] | None:
        return None

    # -- the protocol ----------------------------------------------------------------------
    def group_size(self) -> int:
        return max(1, int(self.params.frac_workers * len(self.devices)))

    def rounds_per_epoch(self) -> int:
        p = self.params
        if p.rounds_per_epoch:
            return p.rounds_per_epoch
        return max(1, math.ceil(len(self.devices) * self.ctx.steps_per_epoch / (self.group_size() * p.local_steps)))

    async def gather_counts(self, rt: Runtime) -> None:
        msgs = await collect_round(rt, "counts", 0, set(self.devices) - set(self.counts), self.params.timeout)
        for src, msg in msgs.items():
            self.counts[src] = msg.tensors["c"].double().cpu().numpy()

    async def run(self, rt: Runtime) -> None:
        await self.gather_counts(rt)
        rank = self.servers.index(rt.node_id)
        if rank > 0 and self.round == 0 and not await self.follow(rt, rank):
            return
        await self.lead(rt)

    async def follow(self, rt: Runtime, rank: int) -> bool:
        """Backup: adopt the primary's states until it goes silent (True: take over) or stops."""
        wait = float(getattr(self.params, "failover", 60.0)) * rank
        while True:
            msg = await rt.recv(timeout=wait, match=("state", "stop"))
            if msg is None:
                rt.log("takeover", self.round)
                return True
            if msg.kind == "stop":
                return False
            self.round = int(msg["round"])
            self.sampler_state = dict(msg["sampler"])
            self.learner.set_flat(msg.tensors["x"])

    async def lead(self, rt: Runtime) -> None:
        p = self.params
        rpe = self.rounds_per_epoch()
        total = rpe * self.ctx.epochs
        others = [s for s in self.servers if s > rt.node_id]
        m = self.group_size()
        if self.round == 0:
            self.end_epoch(rt, 0)
        while self.round < total:
            r = self.round
            chosen = self.choose(rt, m)
            msg = Message("global", {"round": r}, {"x": self.learner.get_flat()})
            for c in chosen:
                await rt.send(c, msg)
            got = await collect_round(rt, "update", r, set(chosen), p.timeout)
            if got:
                senders = sorted(got)
                self.learner.set_flat(plain_average([got[s].tensors["x"] for s in senders], self.weights(senders)))
                self.learner.last_losses = tuple(float(np.mean([got[s][k] for s in senders])) for k in ("d_loss", "g_loss"))
            rt.log("devices_heard", len(got))
            self.round += 1
            if others:
                state = Message("state", {"round": self.round, "sampler": self.sampler_state}, {"x": self.learner.get_flat()})
                for s in others:
                    await rt.send(s, state)
            if self.round % rpe == 0:
                self.end_epoch(rt, self.round // rpe)
        for node in self.devices + others:
            await rt.send(node, Message("stop"))


class FedGanDevice(GanNode):
    async def run(self, rt: Runtime) -> None:
        learner = self.learner
        steps = self.params.local_steps
        cost = Work(flops=learner.flops_per_step() * steps, steps=steps)
        counts = Message("counts", {"round": 0}, {"c": learner.class_counts().float()})
        for s in sorted(i for i, r in self.ctx.roles.items() if r == "server"):
            await rt.send(s, counts)
        while True:
            msg = await rt.recv(match=("global", "stop"))
            if msg.kind == "stop":
                return
            learner.set_flat(msg.tensors["x"])
            await rt.compute(self._train, steps, cost=cost)
            d_loss, g_loss = learner.last_losses
            await rt.send(msg.src, Message("update", {"round": msg["round"], "n": learner.num_samples,
                                                      "d_loss": d_loss, "g_loss": g_loss}, {"x": learner.get_flat()}))

    def _train(self, steps: int) -> None:
        for _ in range(steps):
            self.learner.train_step()


def fed_roles(graph, algorithm: str, num_servers: int = 1) -> dict[int, str]:
    """Nodes 0..num_servers-1 are servers, each linked to every other node; the rest are devices."""
    n = graph.number_of_nodes()
    if num_servers >= n:
        raise ConfigError(f"algorithm.num_servers: {num_servers} servers leave no device among {n} nodes")
    hint = "topology: {kind: star}" if num_servers == 1 else f"topology: {{kind: star, hubs: {num_servers}}}"
    require_hubs(graph, algorithm, range(num_servers), hint)
    return {i: ("server" if i < num_servers else "worker") for i in graph.nodes}


class FLGan(ServerAlgorithm):
    name = "flgan"
    Params = FLGanParams
    summary = "FL-GAN: FedAvg over generator and discriminator, random device sampling"
    gan = True

    @classmethod
    def roles(cls, graph, params):
        return fed_roles(graph, cls.name)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return FedGanServer(ctx) if ctx.role == "server" else FedGanDevice(ctx)
