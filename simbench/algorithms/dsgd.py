"""Decentralized SGD (D-SGD) as in seed 003: a local step, then average with the neighbours'
last received parameters.

Every step of node i (seed 003's ``DSgd`` optimizer)::

    x_i <- x_i - lr * g_i(x_i)                                   (local SGD step)
    x_i <- (w * x_i + sum_{j in N_i} r_ij) / (w + |N_i|)          (mixing = "seed")
    x_i <- x_i + sum_{j in N_i} W_ij (r_ij - x_i)                 (mixing = "metropolis")

where r_ij is the last state node i *received* from j (x_j's initial value copied at the
start, as the reference's receive buffers are copies of the node's own model). The mixed x_i
is the send buffer of every edge; an edge swaps (both ends receive the other's send buffer)
only once per round of ``round_cnt`` steps at each of its ends
(:class:`~simbench.algorithms.kit.EdgeSwaps`), so most steps mix with states up to a round
old. ``w`` is the seed's ``--weight`` (1.0: plain average over the closed neighbourhood; the
reference's ``DSgd.step`` always averages uniformly); ``W`` are Metropolis-Hastings weights
1/(1 + max(d_i, d_j)).

References: nttcslab/ecl-isvr ``edgecons/d_sgd.py`` (``DSgd.step``), ``edgecons/contract.py``
and ``edgecons/mnw/edge.py`` (the swap schedule), the same as ``optimizer/dsgd.py`` and
``connection/`` of etri-clara/etrl-P2PLearning.

By default (the seed's round step) a node waits at the end of each round for its neighbours'
round, up to ``swap_timeout``; ``async_step: true`` (seed ``--async_step``) never waits there.
A swap waits for its answer up to ``swap_timeout`` and otherwise keeps the old state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .kit import EdgeSwaps

MIXINGS = ("seed", "metropolis")


@dataclass(frozen=True)
class DSGDParams:
    weight: float = 1.0
    """Self weight in the neighbourhood average (seed 003 ``--weight``)."""
    mixing: str = field(default="seed", metadata={"choices": MIXINGS})
    """``seed``: (w x_i + sum x_j)/(w + deg); ``metropolis``: Metropolis–Hastings weights."""
    round_cnt: int = field(default=10, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """Each edge swaps once per this many steps at each end (seed's ``round``, 10 in its ``conf/node_list.json``)."""
    swap_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """Seconds to wait for a swap's answer (and at a round's end) before going on; null waits forever."""
    async_step: bool = False
    """Seed 003's ``--async_step``: no wait for the neighbours at the end of each round."""


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
        nbrs = sorted(g.neighbors(i)) if g is not None else []
        self.w_row = {j: 1.0 / (1 + max(g.degree(i), g.degree(j))) for j in nbrs}
        x0 = self.learner.flat_params().detach()
        self.rcv = {j: x0.clone() for j in nbrs}
        self.snd = {j: x0 for j in nbrs}  # one tensor, refreshed every step, shared by the edges
        n = g.number_of_nodes() if g is not None else 1
        self.swaps = EdgeSwaps("params", i, nbrs, n, self.params.round_cnt, self.snd, self.rcv)

    def mix(self, x: torch.Tensor) -> None:
        """Mix ``x`` with the last received states, in place, and refresh the send buffers."""
        p = self.params
        if p.mixing == "seed":
            mix_seed(x, list(self.rcv.values()), p.weight)
        else:
            mix_metropolis(x, self.rcv, self.w_row)
        sent = x.detach().clone()
        for j in self.snd:
            self.snd[j] = sent

    async def run(self, rt: Runtime) -> None:
        learner, p = self.learner, self.params
        spe = learner.steps_per_epoch
        total = self.ctx.epochs * spe
        if self.round == 0:
            self.end_epoch(rt, 0)  # the starting point, so curves begin at t = 0
        server = rt.spawn(self.swaps.serve(rt), "swaps")
        try:
            while self.round < total:
                await self.local_step(rt)
                with torch.no_grad():
                    self.mix(learner.flat_params())
                await self.swaps.step(rt, p.swap_timeout, barrier=not p.async_step)
                self.round += 1
                if self.round % spe == 0:
                    self.end_epoch(rt, self.round // spe)
            await self.swaps.finish(rt, p.swap_timeout)
        finally:
            server.cancel()


class DSGD(Algorithm):
    name = "dsgd"
    Params = DSGDParams
    summary = "decentralized SGD: local step, then average with neighbours (seed 003)"

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return DSGDNode(ctx)
