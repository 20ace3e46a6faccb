"""FL-GAN: federated averaging of a whole GAN (generator AND discriminator) over devices,
as seed 001's ``dist-lsgan.py`` runs with ``--sample 0 --weight_avg 0``.

Round t: the server picks ``m = max(1, int(C K))`` of its K devices uniformly at random
(``frac_workers`` = C), sends them (G_t, D_t); each runs ``local_steps`` (the seed's E,
100 when unset) GAN steps, or ``local_epochs`` passes over its shard (E as epochs, the
way FL papers write it; not both), a step being a G step then a D step on a minibatch of
B = ``train.batch_size``, from them, keeping
its own Adam state across rounds, and returns its (G, D); the server sets both to the
plain average of the updates that arrived within ``timeout`` (the seed divides by the
group size, not by sample counts). An epoch is ``ceil(K · S / (m · E))`` rounds, S being
an average device's steps per pass over its shard, so one epoch does as many device steps
as K devices each going once over their data (the seed scales ``n_epochs`` for the same
reason). The server is evaluated (FID, classifier score, coverage, grid) after each epoch.

**Weak devices** (``scenario.weak_workers``; its ``mode: auto`` is ``half_steps`` here).
``half_steps`` is seed 001's rule (``dist-dcgan.py``, ``--weak_percent``): a weak device runs
int(E/2) local steps in each round it is picked and then answers, at full speed and batch
size; the server weighs its update like any other. (The seed's ``dist-lsgan.py`` has no weak
devices.) Which devices are weak is simbench's rule, the same for every algorithm: a uniform
draw of ``fraction`` of the devices, or the ids in ``nodes``; the seed takes the fixed ranks
1, 1 + s, 1 + 2s, ... with s = round(1 / weak_percent), which ``nodes`` reproduces (with one
server the devices are nodes 1..K, the seed's ranks). ``mode: slow`` (compute at ``speed``,
batch x ``batch_scale``) is the model every other algorithm uses.

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

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .gan_common import GanParams
from .kit import (FederatedClient, FederatedServer, ServerAlgorithm, average, check_local_work, collect_round, fed_roles,
                  holders, local_work)

SEED_LOCAL_STEPS = 100
"""The seed's ``--local_steps`` default."""


@dataclass(frozen=True)
class FLGanParams(GanParams):
    frac_workers: float = field(default=0.1, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """C: fraction of the devices that train in each round (seed ``--frac_workers``)."""
    local_steps: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """E: GAN steps a device runs per round (seed ``--local_steps``); null = 100 (the seed's
    default) unless local_epochs is set."""
    local_epochs: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """E as passes over the device's shard per round, instead of local_steps (not both)."""
    rounds_per_epoch: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Rounds between evaluations; null = ceil(K·S / (m·E)) (one pass over all data)."""
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds a server waits for the sub-group's updates (seed ``--timeout``); null waits for all."""

    def __post_init__(self) -> None:
        check_local_work(self)


class FedGanServer(FederatedServer):
    """Server of FL-GAN / FeGAN; FeGAN overrides :meth:`choose` and :meth:`weights`."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.servers = holders(ctx, "server")
        self.counts: dict[int, np.ndarray] = {}
        self.sampler_state: dict = {}

    # -- policy hooks ----------------------------------------------------------------------
    def weights(self, senders: list[int]) -> list[float] | None:
        """Aggregation weights of the senders' updates; None: the plain average."""
        return None

    def aggregate(self, updates: list[Message]):
        return average([u.tensors["x"] for u in updates], self.weights([u.src for u in updates]))

    def absorb(self, updates: list[Message]) -> None:
        self.learner.last_losses = tuple(float(np.mean([u[k] for u in updates])) for k in ("d_loss", "g_loss"))

    # -- the protocol ----------------------------------------------------------------------
    def group_size(self) -> int:
        return max(1, int(self.params.frac_workers * len(self.clients)))

    def rounds_per_epoch(self) -> int:
        p = self.params
        if p.rounds_per_epoch:
            return p.rounds_per_epoch
        steps = local_work(p, self.ctx.steps_per_epoch, SEED_LOCAL_STEPS)
        return max(1, math.ceil(len(self.clients) * self.ctx.steps_per_epoch / (self.group_size() * steps)))

    async def gather_counts(self, rt: Runtime) -> None:
        msgs = await collect_round(rt, "counts", 0, set(self.clients) - set(self.counts), self.params.timeout)
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
        rpe = self.rounds_per_epoch()
        total = rpe * self.ctx.epochs
        others = [s for s in self.servers if s > rt.node_id]
        if self.round == 0:
            self.end_epoch(rt, 0)
        while self.round < total:
            await self.train_round(rt)
            if others:
                state = Message("state", {"round": self.round, "sampler": self.sampler_state}, {"x": self.learner.get_flat()})
                for s in others:
                    await rt.send(s, state)
            if self.round % rpe == 0:
                self.end_epoch(rt, self.round // rpe)
        await self.stop(rt, others)


class FedGanDevice(FederatedClient):
    def local_steps(self) -> int:
        """E, or int(E/2) (at least 1) on a weak device of mode ``half_steps`` (FeGAN's seed)."""
        share = getattr(self.ctx.profile, "local_steps", 1.0)
        return max(1, int(local_work(self.params, self.learner.steps_per_epoch, SEED_LOCAL_STEPS) * share))

    def update_meta(self) -> dict:
        d_loss, g_loss = self.learner.last_losses
        return {"n": self.learner.num_samples, "d_loss": d_loss, "g_loss": g_loss}

    async def start(self, rt: Runtime) -> None:
        """Send the class counts to every server once (the seed's ``gather_lbl_count``)."""
        counts = Message("counts", {"round": 0}, {"c": self.learner.class_counts().float()})
        for s in holders(self.ctx, "server"):
            await rt.send(s, counts)


class FLGan(ServerAlgorithm):
    name = "flgan"
    Params = FLGanParams
    summary = "FL-GAN: FedAvg over generator and discriminator, random device sampling"
    example = {"algorithm": {"frac_workers": 0.5, "local_steps": 3, "timeout": "1s"}}
    workload = "gan"
    weak_modes = ("half_steps", "slow")

    @classmethod
    def roles(cls, graph, params):
        return fed_roles(graph, cls.name)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return FedGanServer(ctx) if ctx.role == "server" else FedGanDevice(ctx)
