"""Gossip SGD as in seed 003, and simbench's pairwise push gossip as an option.

``variant: seed`` (default), seed 003's gossip snippet (README "P2P Training (with Gossip
SGD)"), on the same edge buffers and swap schedule as its D-SGD. Every step of node i::

    x_i <- x_i - lr * g_i(x_i)                    (local SGD step)
    for each edge (i, j), neighbours in increasing id:
        x_i <- (x_i + r_ij) / 2                   (r_ij: the last state received on the edge)
        s_ij <- x_i                               (the edge's send buffer: x_i at that point)

so node i's own state keeps weight 2^-deg and the k-th of its deg neighbours 2^-(deg-k+1)
(not doubly stochastic: the network mean is not conserved). Each edge swaps its buffers
once per round of ``round_cnt`` steps at each end, at the edge's slot, and every step uses
the last received state (:class:`~simbench.algorithms.kit.EdgeSwaps`), as D-SGD does;
``round_cnt``, ``swap_timeout`` and ``async_step`` mean what they mean there. Each edge's send
buffer is the state after averaging with that edge, as the snippet's
``edge.prm_state["snd"][i] = param.data`` inside the loop over the edges holds it.

References: seed 003's README (the gossip snippet over ``edges`` with ``prm_state["rcv"]`` and
``prm_state["snd"]``, etri-clara/etrl-P2PLearning ``optimizer/gossip_sgd.py``), whose edges and
swap schedule are nttcslab/ecl-isvr's ``edgecons/contract.py`` and ``edgecons/mnw/edge.py``.

``variant: push``, simbench's randomized pairwise gossip (not in the seed), after each local
step (asynchronous, no rounds)::

    pick one neighbour j (``peer_selection``: ``random`` or ``round_robin``); push x_i to j
    for every x_k that has arrived meanwhile:  x_i <- (x_i + x_k) / 2
        and (``symmetric``, default) reply d = (x_k - x_i_old) / 2 to k, who applies x_k <- x_k - d

A node keeps one push in flight (it pushes again when the reply came or after
``reply_timeout``), so a reply never corrects a long-stale value. The reply makes every
exchange conserve the pair's sum (x_i + x_k) exactly even when x_k has moved on in the
meantime, so the network mean follows the average gradient as in D-SGD. Without it
(``symmetric: false``, a one-way push) the receiver alone averages: the mean is not conserved.
A push node never waits for a particular peer: it drains what has arrived with
``recv(timeout=0)``. ``max_staleness`` (steps) optionally ignores parameters sent that many
local steps of the *sender* ago or earlier than the receiver's own step count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .dsgd import DSGDNode
from .kit import drain

PEER_SELECTIONS = ("random", "round_robin")
VARIANTS = ("seed", "push")


@dataclass(frozen=True)
class GossipParams:
    variant: str = field(default="seed", metadata={"choices": VARIANTS})
    """``seed``: seed 003's edge-by-edge average on its swap schedule; ``push``: push to one
    neighbour and average pairwise on receipt (simbench's option)."""
    round_cnt: int = field(default=10, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """``seed``: each edge swaps once per this many steps at each end (the seed's ``round``)."""
    swap_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """``seed``: seconds to wait for a swap's answer (and at a round's end); null waits forever."""
    async_step: bool = False
    """``seed``: seed 003's ``--async_step``, no wait for the neighbours at the end of each round."""
    peer_selection: str = field(default="random", metadata={"choices": PEER_SELECTIONS})
    """``push``: ``random``, a uniformly drawn neighbour each step; ``round_robin``, neighbours in turn."""
    max_staleness: Optional[int] = None
    """``push``: ignore received parameters more than this many steps behind this node (null: use all)."""
    symmetric: bool = True
    """``push``: reply with the half-difference so the sender moves too (sum-preserving pairwise averaging)."""
    reply_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """``push``, symmetric mode keeps one exchange in flight: a node pushes again once the reply arrived or
    after this many seconds (a crashed peer never replies); null waits for the reply forever."""


def gossip_average(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Seed 003's pairwise gossip average x <- (x + y) / 2, into ``x``."""
    return x.add_(y).mul_(0.5)


def mix_edges(x: torch.Tensor, rcv: dict[int, torch.Tensor], snd: dict[int, torch.Tensor]) -> torch.Tensor:
    """Seed 003's gossip step over the edges in increasing neighbour id: x <- (x + r_j) / 2,
    then the edge's send buffer s_j <- x (a copy of x at that point), into ``x``."""
    for j in sorted(rcv):
        gossip_average(x, rcv[j])
        snd[j] = x.detach().clone()
    return x


def choose_peer(neighbors: tuple[int, ...], selection: str, step: int, rng) -> int:
    """The neighbour to push to at local step ``step``."""
    if selection == "round_robin":
        return neighbors[step % len(neighbors)]
    return neighbors[int(rng.integers(len(neighbors)))]


class SeedGossipNode(DSGDNode):
    """Seed 003's gossip: D-SGD's edges, buffers and schedule with the edge-by-edge average."""

    def mix(self, x: torch.Tensor) -> None:
        mix_edges(x, self.rcv, self.snd)


class GossipNode(Node):
    """``variant: push``: push to one neighbour, average pairwise on receipt."""

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
    summary = "gossip SGD: local step, then x <- (x + x_j)/2 edge by edge with the last received states (seed 003)"

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        if ctx.params.variant == "push":
            return GossipNode(ctx)
        return SeedGossipNode(ctx)
