"""Gossip SGD (seed 003's gossip snippet): a local step, then pairwise averaging with ONE peer.

Update of node i after each local step (asynchronous, no rounds)::

    x_i <- x_i - lr * g_i(x_i)                      (local SGD step)
    pick one neighbour j (``random`` or ``round_robin``); push x_i to j
    for every x_k that has arrived meanwhile:  x_i <- (x_i + x_k) / 2
        and (``symmetric``, default) reply d = (x_k - x_i_old) / 2 to k, who applies x_k <- x_k - d

A node keeps one push in flight (it pushes again when the reply came or after
``reply_timeout``), so a reply never corrects a long-stale value. The reply makes every exchange conserve the pair's sum (x_i + x_k) exactly even when x_k has
moved on in the meantime, so the network mean follows the average gradient as in D-SGD.
Without it (``symmetric: false``, seed 003's one-way push) the receiver alone averages: the
mean is not conserved and drifts as a random walk whose size grows as lr shrinks.

A node never waits for a particular peer: it drains what has arrived with ``recv(timeout=0)``,
so a crashed or finished neighbour costs nothing but its missing contributions, and a node
that finishes leaves nobody blocked. ``max_staleness`` (steps) optionally ignores parameters
sent that many local steps of the *sender* ago or earlier than the receiver's own step count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .kit import drain

PEER_SELECTIONS = ("random", "round_robin")


@dataclass(frozen=True)
class GossipParams:
    peer_selection: str = field(default="random", metadata={"choices": PEER_SELECTIONS})
    """``random``: a uniformly drawn neighbour each step; ``round_robin``: neighbours in turn."""
    max_staleness: Optional[int] = None
    """Ignore received parameters more than this many steps behind this node (null: use all)."""
    symmetric: bool = True
    """Reply with the half-difference so the sender moves too (sum-preserving pairwise averaging)."""
    reply_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """Symmetric mode keeps one exchange in flight: a node pushes again once the reply arrived or
    after this many seconds (a crashed peer never replies); null waits for the reply forever."""


def gossip_average(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Seed 003's pairwise gossip average x <- (x + y) / 2, into ``x``."""
    return x.add_(y).mul_(0.5)


def choose_peer(neighbors: tuple[int, ...], selection: str, step: int, rng) -> int:
    """The neighbour to push to at local step ``step``."""
    if selection == "round_robin":
        return neighbors[step % len(neighbors)]
    return neighbors[int(rng.integers(len(neighbors)))]


class GossipNode(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.step = 0
        self.pending_since: float | None = None
        """Symmetric mode: when this node's outstanding push was sent (None: none in flight)."""

    async def mix_arrived(self, rt: Runtime, x: torch.Tensor) -> int:
        """Average in every gossip message already queued (and apply replies); never waits.
        Returns how many peers' parameters were averaged in."""
        used = 0
        limit = self.params.max_staleness
        for msg in await drain(rt, ("gossip", "gossip_reply")):
            if msg.kind == "gossip_reply":
                with torch.no_grad():
                    x.sub_(msg.tensors["d"])
                self.pending_since = None
                continue
            if limit is not None and msg["step"] < self.step - limit:
                rt.log("gossip_stale", 1)
                continue
            with torch.no_grad():
                if self.params.symmetric:
                    d = (msg.tensors["x"] - x).mul_(0.5)
                    x.add_(d)
                    await rt.send(msg.src, Message("gossip_reply", {"step": self.step}, {"d": d}))
                else:
                    gossip_average(x, msg.tensors["x"])
            used += 1
        return used

    def may_push(self, rt: Runtime) -> bool:
        """One-way push always; symmetric mode: when no exchange is in flight (or it timed out)."""
        p = self.params
        if not p.symmetric or self.pending_since is None:
            return True
        if p.reply_timeout is not None and rt.now() - self.pending_since >= p.reply_timeout:
            rt.log("gossip_timeouts", 1)
            return True
        return False

    async def run(self, rt: Runtime) -> None:
        learner, p = self.learner, self.params
        spe = learner.steps_per_epoch
        total = self.ctx.epochs * spe
        if self.step == 0:
            self.end_epoch(rt, 0)
        neighbors = tuple(rt.neighbors)
        while self.step < total:
            await self.local_step(rt)
            x = learner.flat_params()
            if neighbors:
                if self.may_push(rt):
                    peer = choose_peer(neighbors, p.peer_selection, self.step, rt.rng)
                    await rt.send(peer, Message("gossip", {"step": self.step}, {"x": x}))
                    if p.symmetric:
                        self.pending_since = rt.now()
                await self.mix_arrived(rt, x)
            self.step += 1
            if self.step % spe == 0:
                self.end_epoch(rt, self.step // spe)


class Gossip(Algorithm):
    name = "gossip"
    Params = GossipParams
    summary = "gossip SGD: local step, push to one neighbour, average (x + x_j)/2 on receipt (seed 003)"

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return GossipNode(ctx)
