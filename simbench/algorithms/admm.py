"""Edge-consensus learning: PDMM and ADMM over the edges of a P2P graph, plain and ISVR.

After Niwa et al., "Edge-consensus Learning: Deep Learning on P2P Networks with Nonhomogeneous
Data", KDD 2020 (ECL), with the knobs of seed 003's ``PdmmISVR``/``AdmmISVR`` optimizers
(``use_gcoef``, ``piw``, ``--async_step``, ``swap_timeout``). The paper's PDF was not
available here; the equations below are the standard PDMM/ADMM edge-consensus updates,
checked against a public implementation of the seed's ``Ecl`` optimizer (the ``eta`` and
``gcoef`` formulas and the ``piw == 2`` dual averaging come from it).

Problem: min sum_i f_i(x_i)  s.t.  A_{i|j} x_i + A_{j|i} x_j = 0 on every edge (i, j),
with A_{i|j} = +I if i < j else -I. Node i keeps one dual z_{i|j} per neighbour j
(scaled, in units of x); E = deg(i), mu = lr, K = ``round_cnt``::

    eta   = piw / (mu (K E + K - piw E))                  (penalty; must be > 0)
    zbar  = z_{i|j}            (piw != 2)
          = running mean of the received duals, zbar <- (zbar + z_{i|j}) / 2   (piw == 2)

    ISVR  (inexact, one linearised proximal step, closed form):
      x_i <- ( x_i / mu - c g_i(x_i) + eta sum_j A_{i|j} zbar_{i|j} ) / ( 1/mu + E eta )
      c = 1 - mu eta E (K/piw - 1) if use_gcoef else 1
    plain (inexact argmin of f_i(x) + eta sum_j (|x|^2/2 - <A_{i|j} z_{i|j}, x>) by
      ``local_steps`` optimizer steps, gradient g_i(x) + eta (E x - sum_j A_{i|j} z_{i|j}))

    y_{i|j} = z_{i|j} - 2 A_{i|j} x_i          sent to j
    z_{i|j} <- y_{j|i}                              PDMM  (theta = 1)
    z_{i|j} <- (1 - theta) z_{i|j} + theta y_{j|i}   ADMM  (theta = 1/2, Douglas-Rachford)

At a fixed point z_{i|j} = y_{j|i} and z_{j|i} = y_{i|j}, whose sum gives
A_{i|j} x_i + A_{j|i} x_j = 0 (consensus), and sum_i grad f_i(x) = 0 (the global optimum).

By default (the seed's round step) a node waits up to ``swap_timeout`` s for its
neighbours' round-r duals and keeps the old dual of those that stay silent; ``async_step:
true`` (seed ``--async_step``) never waits and uses the latest duals that have arrived.

Stability (measured on f_i = |x - c_i|^2/2, L = 1, 4-ring, derived eta): plain PDMM
diverges once lr L > ~1 (lr (L + eta E) < 2 is necessary; the dual coupling tightens it),
plain ADMM's averaging tolerates a little more (~1.1); the ISVR closed-form step stays
stable to lr L ~ 2. A fixed large ``eta`` with a large lr diverges first (eta = 1, lr = 0.5).

Note: the seed's "ISVR" step as implemented is the linearised (inexact) proximal step
above with the optional gradient coefficient; no SVRG-style snapshot/full-gradient
correction is made (none is in the reference implementation either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .kit import StepClock, collect_round, drain_latest


@dataclass(frozen=True)
class EdgeConsensusParams:
    piw: float = field(default=1.0, metadata={"choices": (0.5, 1.0, 2.0)})
    """Seed's ``--piw``: penalty weight in eta = piw / (lr (K E + K - piw E)); 2 also averages received duals."""
    use_gcoef: bool = False
    """Seed's ``--use_gcoef``: scale the gradient by 1 - lr eta E (K/piw - 1) (ISVR variants)."""
    round_cnt: int = field(default=2, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """K in the eta formula (inner rounds per outer round in ECL); 2 keeps eta > 0 for every piw and degree."""
    eta: Optional[float] = field(default=None, metadata={"check": (lambda e: e is None or e > 0, "must be > 0")})
    """Penalty override; null derives it from lr, piw, K and the degree as above."""
    local_steps: int = field(default=1, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """Plain admm/pdmm: optimizer steps on the augmented local objective per dual exchange."""
    async_step: bool = False
    """Seed's ``--async_step``: never wait, use the latest duals that have arrived (default: rounds, wait up to swap_timeout)."""
    swap_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """Seconds to wait for a neighbour's dual before going on with the old one; null waits forever."""


def edge_sign(i: int, j: int) -> float:
    """A_{i|j}: +1 for the lower id of the edge, -1 for the higher."""
    return 1.0 if i < j else -1.0


def penalty_eta(lr: float, piw: float, degree: int, round_cnt: int) -> float:
    """ECL's eta = piw / (lr (K E + K - piw E))."""
    denom = lr * (round_cnt * degree + round_cnt - piw * degree)
    if denom <= 0:
        raise ValueError(f"eta is undefined for piw={piw}, degree={degree}, round_cnt={round_cnt}; raise round_cnt")
    return piw / denom


def grad_coef(lr: float, eta: float, degree: int, round_cnt: int, piw: float) -> float:
    """ECL's gradient coefficient 1 - lr eta E (K/piw - 1)."""
    return 1.0 - lr * eta * degree * (round_cnt / piw - 1.0)


def isvr_primal(x: torch.Tensor, g: torch.Tensor, duals: dict[int, torch.Tensor], signs: dict[int, float],
                lr: float, eta: float, degree: int, gcoef: float = 1.0) -> torch.Tensor:
    """(x/lr - gcoef g + eta sum_j A_ij z_ij) / (1/lr + degree eta), a new tensor."""
    num = x / lr - gcoef * g
    for j, z in duals.items():
        num.add_(z, alpha=eta * signs[j])
    return num.div_(1.0 / lr + degree * eta)


def penalty_grad(x: torch.Tensor, duals: dict[int, torch.Tensor], signs: dict[int, float], eta: float,
                 degree: int) -> torch.Tensor:
    """Gradient of eta sum_j (|x|^2/2 - <A_ij z_ij, x>) = eta (E x - sum_j A_ij z_ij)."""
    out = x * (eta * degree)
    for j, z in duals.items():
        out.add_(z, alpha=-eta * signs[j])
    return out


def dual_out(z: torch.Tensor, x: torch.Tensor, sign: float) -> torch.Tensor:
    """y_{i|j} = z_{i|j} - 2 A_{i|j} x_i."""
    return z - (2.0 * sign) * x


def dual_in(z: torch.Tensor, y: torch.Tensor, theta: float) -> torch.Tensor:
    """z <- (1 - theta) z + theta y, into ``z`` (theta = 1: PDMM, 1/2: ADMM)."""
    if theta == 1.0:
        return z.copy_(y)
    return z.mul_(1.0 - theta).add_(y, alpha=theta)


class EdgeConsensusNode(Node):
    theta: float = 1.0
    isvr: bool = False

    def __init__(self, ctx: NodeContext, theta: float, isvr: bool) -> None:
        super().__init__(ctx)
        self.theta, self.isvr = theta, isvr
        self.clock = StepClock(self)
        self.round = 0
        i = ctx.node_id
        nbrs = sorted(ctx.graph.neighbors(i)) if ctx.graph is not None else []
        self.signs = {j: edge_sign(i, j) for j in nbrs}
        zeros = lambda: torch.zeros_like(self.learner.flat_params())  # noqa: E731  (on the model's device)
        self.z = {j: zeros() for j in nbrs}
        self.zbar = {j: zeros() for j in nbrs}

    def penalty(self) -> float:
        p = self.params
        if p.eta is not None:
            return p.eta
        return penalty_eta(self.learner.lr, p.piw, max(1, len(self.signs)), p.round_cnt)

    def primal_duals(self) -> dict[int, torch.Tensor]:
        return self.zbar if self.params.piw == 2.0 else self.z

    async def primal(self, rt: Runtime) -> int:
        learner, p = self.learner, self.params
        degree = len(self.signs)
        x = learner.flat_params()
        if self.isvr:
            await self.local_grad(rt)
            lr = learner.lr
            eta = self.penalty()
            gcoef = grad_coef(lr, eta, degree, p.round_cnt, p.piw) if p.use_gcoef else 1.0
            with torch.no_grad():
                x.copy_(isvr_primal(x, learner.get_grad_flat(), self.primal_duals(), self.signs, lr, eta, degree, gcoef))
            return 1
        steps = min(p.local_steps, self.clock.left)
        for _ in range(steps):
            await self.local_grad(rt)
            with torch.no_grad():
                g = learner.get_grad_flat().add_(penalty_grad(x, self.primal_duals(), self.signs, self.penalty(), degree))
            learner.set_grad_flat(g)
            learner.apply_update()
        return steps

    async def run(self, rt: Runtime) -> None:
        p = self.params
        self.clock.start(rt)
        while self.clock.left > 0:
            r = self.round
            steps = await self.primal(rt)
            x = self.learner.flat_params()
            with torch.no_grad():
                for j, sign in self.signs.items():
                    await rt.send(j, Message("dual", {"round": r}, {"y": dual_out(self.z[j], x, sign)}))
            if not p.async_step:
                got = await collect_round(rt, "dual", r, set(self.signs), p.swap_timeout, stale=True)
            else:
                got = await drain_latest(rt, "dual")
            with torch.no_grad():
                for j, msg in got.items():
                    if j in self.z:
                        dual_in(self.z[j], msg.tensors["y"], self.theta)
                        if p.piw == 2.0:
                            self.zbar[j].add_(self.z[j]).mul_(0.5)
            self.round += 1
            self.clock.advance(rt, steps)


class _EdgeConsensus(Algorithm):
    Params = EdgeConsensusParams
    theta: float = 1.0
    isvr: bool = False

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return EdgeConsensusNode(ctx, cls.theta, cls.isvr)


class PDMM(_EdgeConsensus):
    name = "pdmm"
    theta, isvr = 1.0, False
    summary = "edge-consensus PDMM (ECL, Niwa et al. 2020): local optimizer steps on the augmented objective, z <- y"


class ADMM(_EdgeConsensus):
    name = "admm"
    theta, isvr = 0.5, False
    summary = "edge-consensus ADMM (ECL, Niwa et al. 2020): local optimizer steps on the augmented objective, z <- (z + y)/2"


class PdmmISVR(_EdgeConsensus):
    name = "pdmm_isvr"
    theta, isvr = 1.0, True
    summary = "ECL PDMM-ISVR (seed 003 PdmmISVR): linearised proximal primal step, z <- y"


class AdmmISVR(_EdgeConsensus):
    name = "admm_isvr"
    theta, isvr = 0.5, True
    summary = "ECL ADMM-ISVR (seed 003 AdmmISVR): linearised proximal primal step, z <- (z + y)/2"
