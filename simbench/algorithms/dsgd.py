"""Decentralized SGD (D-SGD) as in seed 003: a local step, then average with neighbours.

Update of node i in round r (synchronous rounds, seed 003's ``DSGD`` optimizer)::

    x_i <- x_i - lr * g_i(x_i)                                  (local SGD step)
    x_i <- (w * x_i + sum_{j in N_i} x_j) / (w + |N_i|)          (mixing = "seed")
    x_i <- x_i + sum_{j in N_i} W_ij (x_j - x_i)                 (mixing = "metropolis")

``w`` is the seed's ``--weight`` (self weight, 1.0 = plain average over the closed
neighbourhood); ``W`` are Metropolis–Hastings weights 1/(1 + max(d_i, d_j)). A node waits
at most ``swap_timeout`` simulated seconds for its neighbours' round-r parameters and
mixes with those that arrived (seed 003's ``--swap_timeout``), so a crashed neighbour
slows its peers down but does not block them. A neighbour that missed the deadline but
whose parameters of an earlier round arrived meanwhile is mixed in with those (stale but
unused): otherwise a node that once ran ahead of a slower neighbour would never mix with it
again (see :func:`collect_round`).

``async_step: true`` (seed 003's ``--async_step``): a node never waits; it mixes with the
latest parameters it has heard from each neighbour (possibly several rounds old), draining
what has arrived with ``recv(timeout=0)``; a neighbour silent for longer than
``swap_timeout`` is left out until it is heard from again (a crashed peer's last model is
not mixed in forever).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .kit import collect_round, drain

MIXINGS = ("seed", "metropolis")


@dataclass(frozen=True)
class DSGDParams:
    weight: float = 1.0
    """Self weight in the neighbourhood average (seed 003 ``--weight``)."""
    mixing: str = field(default="seed", metadata={"choices": MIXINGS})
    """``seed``: (w x_i + sum x_j)/(w + deg); ``metropolis``: Metropolis–Hastings weights."""
    swap_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """Seconds to wait for a neighbour's parameters before mixing without them; null waits forever."""
    async_step: bool = False
    """Seed 003's ``--async_step``: never wait; mix with the latest parameters heard from each neighbour."""


def mix_seed(x: torch.Tensor, neighbours: list[torch.Tensor], weight: float) -> torch.Tensor:
    """Seed 003's average: (weight * x + sum of neighbours) / (weight + count), into ``x``."""
    if weight != 1.0:
        x.mul_(weight)
    for y in neighbours:
        x.add_(y)
    return x.div_(weight + len(neighbours))


def mix_metropolis(x: torch.Tensor, neighbours: dict[int, torch.Tensor], w_row: dict[int, float]) -> torch.Tensor:
    """x + sum_j W_ij (x_j - x) over the neighbours that were heard from, into ``x``."""
    keep = 1.0 - sum(w_row[j] for j in neighbours)
    x.mul_(keep)
    for j, y in neighbours.items():
        x.add_(y, alpha=w_row[j])
    return x


class DSGDNode(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0
        g = ctx.graph
        i = ctx.node_id
        self.w_row = {j: 1.0 / (1 + max(g.degree(i), g.degree(j))) for j in g.neighbors(i)} if g is not None else {}
        self.latest: dict[int, tuple[float, torch.Tensor]] = {}
        """Async mode: (arrival time, parameters) of the latest message from each neighbour."""

    async def heard(self, rt: Runtime) -> dict[int, torch.Tensor]:
        """Async mode: fold every queued ``params`` message into ``latest`` (never waits); the
        latest parameters of the neighbours heard from within ``swap_timeout``."""
        for msg in await drain(rt, "params"):
            self.latest[msg.src] = (rt.now(), msg.tensors["x"])
        limit, now = self.params.swap_timeout, rt.now()
        return {j: x for j, (t, x) in self.latest.items() if limit is None or now - t <= limit}

    async def run(self, rt: Runtime) -> None:
        learner, p = self.learner, self.params
        spe = learner.steps_per_epoch
        total = self.ctx.epochs * spe
        if self.round == 0:
            self.end_epoch(rt, 0)  # the starting point, so curves begin at t = 0
        while self.round < total:
            r = self.round
            await self.local_step(rt)
            x = learner.flat_params()  # sending encodes a copy at once, so mixing may overwrite x
            msg = Message("params", {"round": r}, {"x": x})
            for j in rt.neighbors:
                await rt.send(j, msg)
            if not p.async_step:
                got = {j: m.tensors["x"] for j, m in
                       (await collect_round(rt, "params", r, set(rt.neighbors), p.swap_timeout, stale=True)).items()}
            else:
                got = await self.heard(rt)
            with torch.no_grad():
                if p.mixing == "seed":
                    mix_seed(x, list(got.values()), p.weight)
                else:
                    mix_metropolis(x, got, self.w_row)
            self.round += 1
            if self.round % spe == 0:
                self.end_epoch(rt, self.round // spe)


class DSGD(Algorithm):
    name = "dsgd"
    Params = DSGDParams
    summary = "decentralized SGD: local step, then average with neighbours (seed 003)"

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return DSGDNode(ctx)
