"""Decentralized consensus ADMM (Shi, Ling, Yuan, Wu, Yin 2014, "On the linear convergence of
the ADMM in decentralized consensus optimization"; Boyd et al.'s consensus ADMM on a graph).

Node i keeps its model x_i and a multiplier alpha_i (alpha_i^0 = 0); in round k, after
exchanging x with its neighbours N_i::

    alpha_i <- alpha_i + rho sum_{j in N_i} (x_i^k - x_j^k)                    (dual ascent)
    x_i^{k+1} ~ argmin_x f_i(x) + <alpha_i, x> + rho sum_{j in N_i} |x - (x_i^k + x_j^k)/2|^2

The argmin is solved inexactly by ``local_steps`` steps of the node's optimizer on
g_i(x) + alpha_i + 2 rho sum_j (x - (x_i^k + x_j^k)/2). (The first dual step uses x^0, so
alpha starts in the range of the graph Laplacian, as the method requires.) Stability of the
inexact step needs lr (L_f + 2 rho deg) < 2.

A neighbour silent for ``swap_timeout`` s (crashed, slow, or done with its epochs) enters
that round with the latest parameters heard from it. Leaving it out instead would freeze its
share of alpha_i, sum_i alpha_i = 0 would no longer hold, and the linear term <alpha_i, x>
would be left without its counterweight: on FashionMNIST with non-iid shards (whose sizes
differ, so nodes finish at different rounds) that made every seed diverge once the first
node finished. A neighbour never heard from is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .kit import StepClock, collect_round


@dataclass(frozen=True)
class CADMMParams:
    rho: float = field(default=0.1, metadata={"check": (lambda r: r > 0, "must be > 0")})
    """Penalty rho; the inexact primal step is stable for lr (L + 2 rho deg) < 2."""
    local_steps: int = field(default=1, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """Optimizer steps per primal update (per round)."""
    swap_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """Seconds to wait for a neighbour's parameters; null waits forever."""


def cadmm_dual(alpha: torch.Tensor, x: torch.Tensor, neighbours: list[torch.Tensor], rho: float) -> torch.Tensor:
    """alpha += rho sum_j (x - x_j), into ``alpha``."""
    for y in neighbours:
        alpha.add_(x - y, alpha=rho)
    return alpha


def cadmm_grad(g: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, centres: list[torch.Tensor], rho: float) -> torch.Tensor:
    """g + alpha + 2 rho sum_j (x - m_j) for the edge midpoints m_j = (x_i^k + x_j^k)/2, into ``g``."""
    g.add_(alpha)
    for m in centres:
        g.add_(x - m, alpha=2.0 * rho)
    return g


class CADMMNode(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.clock = StepClock(self)
        self.round = 0
        self.alpha = torch.zeros_like(self.learner.flat_params())
        self.latest: dict[int, torch.Tensor] = {}
        """The latest parameters heard from each neighbour (stand-ins for silent ones)."""

    async def run(self, rt: Runtime) -> None:
        learner, p = self.learner, self.params
        self.clock.start(rt)
        while self.clock.left > 0:
            r = self.round
            x = learner.flat_params()
            await_msg = Message("params", {"round": r}, {"x": x})
            for j in rt.neighbors:
                await rt.send(j, await_msg)
            got = await collect_round(rt, "params", r, set(rt.neighbors), p.swap_timeout, stale=True)
            self.latest.update((j, m.tensors["x"]) for j, m in got.items())
            xs = [self.latest[j] for j in rt.neighbors if j in self.latest]
            with torch.no_grad():
                cadmm_dual(self.alpha, x, xs, p.rho)
                centres = [(x + y) * 0.5 for y in xs]
            steps = min(p.local_steps, self.clock.left)
            for _ in range(steps):
                await self.local_grad(rt)
                with torch.no_grad():
                    g = cadmm_grad(learner.get_grad_flat(), x, self.alpha, centres, p.rho)
                learner.set_grad_flat(g)
                learner.apply_update()
            self.round += 1
            self.clock.advance(rt, steps)


class CADMM(Algorithm):
    name = "cadmm"
    Params = CADMMParams
    summary = "decentralized consensus ADMM (Shi et al. 2014): dual ascent on x_i - x_j, inexact local primal steps"

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return CADMMNode(ctx)
