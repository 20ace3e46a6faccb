"""MD-GAN (Hardy, Le Merrer, Sericola: "MD-GAN: Multi-Discriminator Generative Adversarial
Networks for Distributed Datasets", IPDPS 2019): one generator on the server, one
discriminator per worker.

Round t (Algorithm 1 of the paper, with k = N generated batches):

1. The server draws, for every worker n, two noise batches z_d, z_g of B samples and sends
   X_d = G(z_d) and X_g = G(z_g).
2. Worker n runs ``disc_steps`` (L) discriminator steps, each on a real minibatch of its
   shard against X_d (the least-squares or BCE loss of the model), then returns the error
   feedback F_n = dL_G/dx at x in X_g, where L_G is the generator's loss through its
   discriminator D_n (the gradient of the loss w.r.t. the images, not w.r.t. weights).
3. The server back-propagates the mean of the feedbacks it received within ``timeout``
   through G — the gradient (1/|S|) sum_n J_G(z_g,n)^T F_n — and takes one Adam step.

Every ``swap_epochs`` epochs the discriminators move: each worker sends its D's
parameters with its feedback, the server draws a random cyclic permutation of the workers
that answered and hands worker pi(j) the D of worker j with the next round's batches
(each worker keeps its own Adam state). The paper swaps peer to peer; with the star
topology the workers are not linked, so the swap is relayed by the server and its bytes
count on the server's links.

An epoch is ``ceil(S / L)`` rounds (S: an average worker's steps per pass over its shard),
so every worker's discriminator sees its data once per epoch. The server is evaluated
after every epoch.

Against seed 001's ``md-gan.py`` (LPD-EPFL/FeGAN): L defaults to the seed's hard-coded
``L = 12`` local discriminator steps per round (on one generated batch X_d, as here). The
exchange follows the paper, not the seed: the seed sends every worker the same X_g and X_d,
lets each worker take one generator step through its own discriminator on fresh noise and
sets the server's G to the plain mean of the workers' generators, and it never swaps
discriminators (``swap_epochs: 0`` turns swaps off here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime, Work
from ..core.units import parse_duration
from .kit import ServerAlgorithm, collect_round, fed_roles
from .gan_common import GanParams


@dataclass(frozen=True)
class MDGanParams(GanParams):
    disc_steps: int = field(default=12, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """L: discriminator steps per worker per round (seed md-gan.py: L = 12)."""
    swap_epochs: int = field(default=1, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Discriminators swap between workers every this many epochs (0: never)."""
    timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the server waits for feedback each round; null waits for all workers."""


class MDGanServer(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0
        self.handoff: dict[int, object] = {}

    def rounds_per_epoch(self) -> int:
        return max(1, math.ceil(self.ctx.steps_per_epoch / self.params.disc_steps))

    async def run(self, rt: Runtime) -> None:
        p, learner = self.params, self.learner
        workers = [i for i in rt.nodes if i != rt.node_id]
        rpe = self.rounds_per_epoch()
        total = rpe * self.ctx.epochs
        swap_every = p.swap_epochs * rpe
        gen = learner.flops_per_step("gen")
        if self.round == 0:
            self.end_epoch(rt, 0)
        while self.round < total:
            r = self.round
            swap = swap_every > 0 and (r + 1) % swap_every == 0
            zs = {w: (learner.noise(learner.batch_size), learner.noise(learner.batch_size)) for w in workers}
            fakes = await rt.compute(lambda: {w: (learner.sample(z=a), learner.sample(z=b)) for w, (a, b) in zs.items()},
                                     cost=Work(flops=2 * gen * len(workers)))
            for w in workers:
                tensors = {"xd": fakes[w][0], "xg": fakes[w][1]}
                if w in self.handoff:
                    tensors["d"] = self.handoff.pop(w)
                await rt.send(w, Message("batches", {"round": r, "swap": swap}, tensors))
            got = await collect_round(rt, "feedback", r, set(workers), p.timeout)
            if got:
                senders = sorted(got)
                await rt.compute(learner.g_step_feedback, [zs[s][1] for s in senders],
                                 [got[s].tensors["f"] for s in senders], cost=Work(flops=3 * gen * len(senders)))
                learner.last_losses = tuple(float(np.mean([got[s][k] for s in senders])) for k in ("d_loss", "g_loss"))
                if swap:
                    self._plan_swap(rt, got, senders)
            rt.log("clients_heard", len(got))
            self.round += 1
            if self.round % rpe == 0:
                self.end_epoch(rt, self.round // rpe)
        for w in workers:
            await rt.send(w, Message("stop"))

    def _plan_swap(self, rt: Runtime, got, senders: list[int]) -> None:
        order = [senders[i] for i in rt.rng.permutation(len(senders))]
        for j, src in enumerate(order):
            dst = order[(j + 1) % len(order)]
            if dst != src and "d" in got[src].tensors:
                self.handoff[dst] = got[src].tensors["d"]
        rt.log("swaps", len(self.handoff))


class MDGanWorker(Node):
    async def run(self, rt: Runtime) -> None:
        learner, p = self.learner, self.params
        d_cost = learner.flops_per_step("d")
        while True:
            msg = await rt.recv(match=("batches", "stop"))
            if msg.kind == "stop":
                return
            if "d" in msg.tensors:
                learner.set_d(msg.tensors["d"])
            f, g_loss = await rt.compute(self._local, msg.tensors["xd"], msg.tensors["xg"],
                                         cost=Work(flops=d_cost * (p.disc_steps + 0.5), steps=p.disc_steps))
            tensors = {"f": f}
            if msg["swap"]:
                tensors["d"] = learner.get_d()
            meta = {"round": msg["round"], "d_loss": learner.last_losses[0], "g_loss": g_loss}
            await rt.send(msg.src, Message("feedback", meta, tensors))

    def _local(self, xd, xg):
        for _ in range(self.params.disc_steps):
            self.learner.d_step(xd)
        return self.learner.feedback(xg)


class MDGan(ServerAlgorithm):
    name = "mdgan"
    Params = MDGanParams
    summary = "MD-GAN: one generator on the server, a discriminator per worker, error feedback, D swaps"
    example = {"algorithm": {"timeout": "1s"}}
    workload = "gan"

    @classmethod
    def roles(cls, graph, params):
        return fed_roles(graph, cls.name)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return MDGanServer(ctx) if ctx.role == "server" else MDGanWorker(ctx)
