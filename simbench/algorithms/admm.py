"""Edge-consensus learning: PDMM and ADMM over the edges of a P2P graph, plain and ISVR.

After Niwa et al., "Edge-consensus Learning: Deep Learning on P2P Networks with Nonhomogeneous
Data", KDD 2020 (ECL), as seed 003 runs it. References:

* nttcslab/ecl-isvr ``edgecons/ecl.py`` (``Ecl.step``: the ISVR primal, eta, gcoef, the
  ``piw == 2`` dual average), ``edgecons/contract.py`` and ``edgecons/mnw/edge.py`` (when an
  edge swaps, what it sends and receives; see :class:`~simbench.algorithms.kit.EdgeSwaps`);
  the same code as ``optimizer/admm_isvr.py``/``pdmm_isvr.py`` and ``connection/`` of
  etri-clara/etrl-P2PLearning.
* nttcslab/edge-consensus-learning for plain ADMM/PDMM: ``edgecons/admm_sgd.py``
  (``AdmmSGD.__init__``: ``dim_num``; ``AdmmSGD.update``: the primal step),
  ``edgecons/pdmm_sgd.py`` (``PdmmSGD``, the same code with the last received dual in place of
  the average) and ``edgecons/edge.py`` (``Edge.update``: the send buffers; ``Edge.dual_avg``:
  the dual average, ADMM only; ``Edge.__init__``: the buffers' initial values).

Problem: min sum_i f_i(x_i)  s.t.  A_{i|j} x_i + A_{j|i} x_j = 0 on every edge (i, j),
with A_{i|j} = +I if i < j else -I. Node i keeps, per neighbour j, the last dual z_{i|j} it
received from j; E = deg(i), mu = 1/lr, K = ``round_cnt``::

    zbar  = z_{i|j}                                        (no dual average)
          = running mean, zbar <- (zbar + z_{i|j}) / 2 at every step, zbar_0 = x_0
                      (``dual_avg``; default: plain ADMM always, the ISVR variants when piw == 2)

    plain, ``primal: reference`` (default; ``AdmmSGD.update``/``PdmmSGD.update``), every step,
      one closed-form step per parameter tensor l (a layer's weight or bias):
      x_l <- ( mu x_l - g_l + m_l eta/E sum_j A_{i|j} zbar_{i|j,l} + m_l rho/E sum_j s_{i|j,l} )
             / ( mu + m_l (eta + rho) )
      m_l = sqrt(dim_l): dim_l = prod(shape[1:]) (the fan-in) of a ``*.weight`` of 2+ dims,
            shape[0] of a 1-d ``*.weight`` (a norm layer), and for any other tensor (a bias)
            the dim of the last ``*.weight`` before it (1 before any);
      s_{i|j} = the parameters last received from j (x_0 before the first swap); eta = 1 and
      rho = 0.1 by default (the reference's); rho = 0 drops the term and sends no parameters.
      With no edges the step is x - lr g.
    plain, ``primal: argmin`` (simbench's, a departure): an inexact argmin of
      f_i(x) + eta sum_j (|x|^2/2 - <A_{i|j} zbar_{i|j}, x>) by ``local_steps`` optimizer
      steps, gradient g_i(x) + eta (E x - sum_j A_{i|j} zbar_{i|j}), eta as ISVR's
    ISVR  (inexact, one linearised proximal step, closed form), every step:
      x_i <- ( x_i / mu - c g_i(x_i) + eta sum_j A_{i|j} zbar_{i|j} ) / ( 1/mu + E eta )
      eta = piw / (lr (K E + K - piw E))   (must be > 0)
      c = 1 - lr eta E (K/piw - 1) if use_gcoef else 1

    y_{i|j} = z_{i|j} - 2 A_{i|j} x_i          the dual send buffer of edge (i, j), every step
    z_{i|j} <- y_{j|i}                          on a swap (theta = 1, the reference)
    z_{i|j} <- (1 - theta) z_{i|j} + theta y_{j|i}   with option ``theta`` (1/2: Douglas-Rachford)
    s_{i|j} <- x_j                              on a swap (``primal: reference`` with rho > 0:
                                                 each swap carries [y, x], twice the dual alone)

Each edge swaps once per round of K steps at each of its ends (:class:`EdgeSwaps`); between
swaps every step uses the last received duals. So K is both the period of the exchange and the
K of eta, as in the reference (``round`` of its node list is both). In the reference
``AdmmISVR`` and ``PdmmISVR`` are the same code (``drs`` only allocates the average), so they
differ only when piw == 2; ``pdmm_isvr`` with piw 2 averages too (the reference would fail).
The dual average starts from the model's parameters, as the reference's (``copy.deepcopy(p)``).
Plain ADMM/PDMM keep ecl-isvr's schedule: edge-consensus-learning's own ``Contract.swap``
swaps one edge, round-robin, every ``interval`` (10) steps, with no round barrier.

Departures of ``primal: reference``: mu is 1/``train.lr`` (the reference's knob is mu,
default 200, i.e. lr 0.005); the reference rescales eta with mu when a scheduler changes the
lr, but this step never steps the learner's schedule, so lr and eta stay constant. ``dim_l``
is computed over the trainable parameters; the reference walks ``model.state_dict()``, which
also lists buffers (BatchNorm statistics) and then misaligns with the parameters; the two agree
on models without buffers (every simbench model).

At a fixed point z_{i|j} = y_{j|i} and z_{j|i} = y_{i|j}, whose sum gives
A_{i|j} x_i + A_{j|i} x_j = 0 (consensus), and sum_i grad f_i(x) / eta_i = 0, eta_i node i's
per-edge penalty: the global optimum when every node has the same eta_i. ``primal: reference``
has eta_i = m eta / E_i, so on a graph of unequal degrees it settles at the optimum of
sum_i E_i f_i (the 3-node path: weights 1, 2, 1); the derived eta of the other rules also
depends on the degree.

By default (the seed's round step) a node waits at the end of each round of K steps for its
neighbours' round, up to ``swap_timeout``; ``async_step: true`` (seed ``--async_step``) never
waits there. A swap itself always waits for the answer, up to ``swap_timeout``.

Note: the seed's "ISVR" step as implemented is the linearised (inexact) proximal step
above with the optional gradient coefficient; no SVRG-style snapshot/full-gradient
correction is made (none is in the reference implementation either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime
from ..core.schema import ConfigError
from ..core.units import parse_duration
from .kit import EdgeSwaps, StepClock


@dataclass(frozen=True)
class EdgeConsensusParams:
    piw: float = field(default=1.0, metadata={"choices": (0.5, 1.0, 2.0)})
    """Seed's ``--piw``: penalty weight in eta = piw / (lr (K E + K - piw E)); 2 also averages received duals (ISVR variants)."""
    use_gcoef: bool = False
    """Seed's ``--use_gcoef``: scale the gradient by 1 - lr eta E (K/piw - 1) (ISVR variants)."""
    round_cnt: int = field(default=10, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """K: each edge swaps once per K steps at each end, and K enters eta (seed's ``round``, 10 in its
    ``conf/node_list.json``); eta needs K (E + 1) > piw E."""
    theta: float = field(default=1.0, metadata={"check": (lambda t: 0 < t <= 1, "must be in (0, 1]")})
    """On a swap z <- (1 - theta) z + theta y; 1 (the seed) replaces the dual, 1/2 is Douglas-Rachford."""
    dual_avg: Optional[bool] = None
    """Primal step with the running average of the received duals; null: the seed's rule (admm:
    always; admm_isvr, pdmm_isvr: when piw == 2; pdmm: never)."""
    primal: str = field(default="reference", metadata={"choices": ("reference", "argmin")})
    """Plain admm/pdmm primal step: ``reference`` (edge-consensus-learning ``AdmmSGD.update``: one
    closed-form step per layer with metric sqrt(fan-in) and the proximity rho to the neighbours'
    parameters) or ``argmin`` (simbench's: ``local_steps`` optimizer steps on the augmented objective)."""
    eta: Optional[float] = field(default=None, metadata={"check": (lambda e: e is None or e > 0, "must be > 0")})
    """Penalty; null: 1.0 for plain admm/pdmm with primal reference (the reference's), else derived
    from lr, piw, K and the degree as above."""
    rho: float = field(default=0.1, metadata={"check": (lambda r: r >= 0, "must be >= 0")})
    """Plain admm/pdmm with primal reference: weight of the proximity to the neighbours' last received
    parameters (the reference's rho); > 0 sends the parameters with the dual on every swap, 0 does not."""
    local_steps: int = field(default=1, metadata={"check": (lambda k: k >= 1, "must be >= 1")})
    """Plain admm/pdmm with primal argmin: optimizer steps on the augmented local objective per step
    of the schedule."""
    async_step: bool = False
    """Seed's ``--async_step``: no wait for the neighbours at the end of each round of K steps."""
    swap_timeout: Optional[float] = field(default=1.0, metadata={"parse": parse_duration})
    """Seconds to wait for a swap's answer (and at a round's end) before going on; null waits forever."""

    def __post_init__(self) -> None:
        if self.local_steps != 1 and self.primal != "argmin":
            raise ConfigError(f"algorithm.local_steps: {self.local_steps} optimizer steps per step are the "
                              f"argmin primal's; set primal: argmin (primal {self.primal!r} takes one step)")


REFERENCE_ETA = 1.0
"""edge-consensus-learning ``AdmmSGD``/``PdmmSGD``'s default eta."""


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


def layer_dims(named_shapes: list[tuple[str, tuple[int, ...]]]) -> list[int]:
    """The reference's ``dim_num`` of every tensor (edge-consensus-learning ``AdmmSGD.__init__``):
    the fan-in ``prod(shape[1:])`` of a ``*.weight`` of 2+ dims, ``shape[0]`` of a 1-d
    ``*.weight`` (a norm layer); any other tensor (a bias) takes the last weight's (1 before any)."""
    dims, prev = [], 1
    for name, shape in named_shapes:
        if name.endswith(".weight"):
            prev = math.prod(shape[1:]) if len(shape) > 1 else (shape[0] if shape else 1)
        dims.append(prev)
    return dims


def layer_metric(learner: Any, like: torch.Tensor) -> torch.Tensor:
    """sqrt(dim_l) for every coordinate of the flat parameter vector (a learner that does not
    name its tensors is one unnamed tensor: metric 1)."""
    named = getattr(learner, "named_tensors", None)
    tensors = list(named().items()) if named is not None else []
    if not tensors:
        return torch.ones_like(like)
    dims = layer_dims([(n, tuple(t.shape)) for n, t in tensors])
    sizes = [t.numel() for _, t in tensors]
    if sum(sizes) != like.numel():
        raise ValueError(f"the named tensors hold {sum(sizes)} values, the flat vector {like.numel()}")
    per = torch.tensor([math.sqrt(d) for d in dims], dtype=like.dtype, device=like.device)
    return torch.repeat_interleave(per, torch.tensor(sizes, device=like.device))


def reference_primal(x: torch.Tensor, g: torch.Tensor, duals: dict[int, torch.Tensor], states: dict[int, torch.Tensor],
                     signs: dict[int, float], mu: float, eta: float, rho: float, metric: torch.Tensor) -> torch.Tensor:
    """edge-consensus-learning ``AdmmSGD.update``/``PdmmSGD.update`` on the flat vector, a new tensor:
    (mu x - g + m eta/E sum_j A_ij zbar_ij + m rho/E sum_j s_ij) / (mu + m (eta + rho)) with m the
    per-coordinate metric, E = len(duals); ``states`` empty (rho = 0) drops the rho terms; no edges:
    x - g/mu."""
    num = x * mu - g
    degree = len(duals)
    if degree == 0:
        return num.div_(mu)
    pull = torch.zeros_like(x)
    for j, z in duals.items():
        pull.add_(z, alpha=eta * signs[j] / degree)
    for s in states.values():
        pull.add_(s, alpha=rho / degree)
    num.addcmul_(metric, pull)
    return num.div_(metric * (eta + (rho if states else 0.0)) + mu)


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
    """z <- (1 - theta) z + theta y, into ``z`` (theta = 1: the seed's swap, 1/2: Douglas-Rachford)."""
    if theta == 1.0:
        return z.copy_(y)
    return z.mul_(1.0 - theta).add_(y, alpha=theta)


def averages_duals(params: EdgeConsensusParams, always: bool, isvr: bool) -> bool:
    """Whether the primal step uses the running dual average (see the module docstring):
    ``dual_avg`` if set, else always for plain ADMM, with piw == 2 for the ISVR variants, never
    for plain PDMM (edge-consensus-learning ``PdmmSGD`` has no average, whatever piw is)."""
    if params.dual_avg is not None:
        return params.dual_avg
    return always or (isvr and params.piw == 2.0)


class EdgeConsensusNode(Node):
    isvr: bool = False

    def __init__(self, ctx: NodeContext, isvr: bool, avg_always: bool) -> None:
        super().__init__(ctx)
        self.rule = "isvr" if isvr else self.params.primal
        """The primal step: ``isvr``, or plain admm/pdmm's ``primal`` (``reference`` | ``argmin``)."""
        self.averaging = averages_duals(self.params, avg_always, isvr)
        self.clock = StepClock(self)
        i = ctx.node_id
        nbrs = sorted(ctx.graph.neighbors(i)) if ctx.graph is not None else []
        n = ctx.graph.number_of_nodes() if ctx.graph is not None else 1
        self.signs = {j: edge_sign(i, j) for j in nbrs}
        x0 = self.learner.flat_params()
        self.z = {j: torch.zeros_like(x0) for j in nbrs}  # on the model's device
        self.zbar = {j: x0.detach().clone() for j in nbrs} if self.averaging else self.z
        reference = self.rule == "reference"
        self.metric = layer_metric(self.learner, x0) if reference else None
        self.states: dict[int, torch.Tensor] = {}
        """s_ij, the parameters last received from j (``primal: reference`` with rho > 0; the
        reference's ``Edge.rcv_state``, a copy of the node's own initial model before a swap)."""
        if reference and self.params.rho > 0:
            self.states = {j: x0.detach().clone() for j in nbrs}
        self.y = {j: self.send_buffer(torch.zeros_like(x0), x0) for j in nbrs}
        self.swaps = EdgeSwaps("dual", i, nbrs, n, self.params.round_cnt, self.y, self.z, self.receive)

    def send_buffer(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What edge (i, j) sends: the dual y_ij, and the parameters x after it when the primal
        step needs them (the reference's ``Edge.update`` fills ``state`` and ``dual``)."""
        return torch.cat([y, x]) if self.states else y

    def receive(self, j: int, y: torch.Tensor) -> None:
        if self.states:
            n = self.z[j].numel()
            dual_in(self.z[j], y[:n], self.params.theta)
            self.states[j].copy_(y[n:])
        else:
            dual_in(self.z[j], y, self.params.theta)

    def penalty(self) -> float:
        p = self.params
        if p.eta is not None:
            return p.eta
        if self.rule == "reference":
            return REFERENCE_ETA
        return penalty_eta(self.learner.lr, p.piw, max(1, len(self.signs)), p.round_cnt)

    def reference_step(self, g: torch.Tensor) -> None:
        """``primal: reference`` with gradient ``g``, on the received (or averaged) duals as they are."""
        x = self.learner.flat_params()
        with torch.no_grad():
            x.copy_(reference_primal(x, g, self.zbar, self.states, self.signs, 1.0 / self.learner.lr,
                                     self.penalty(), self.params.rho, self.metric))

    def average_duals(self) -> None:
        if self.averaging:
            for j, z in self.z.items():
                self.zbar[j].add_(z).mul_(0.5)

    async def primal(self, rt: Runtime) -> int:
        learner, p = self.learner, self.params
        degree = len(self.signs)
        x = learner.flat_params()
        if self.rule == "isvr":
            await self.local_grad(rt)
            lr = learner.lr
            eta = self.penalty()
            gcoef = grad_coef(lr, eta, degree, p.round_cnt, p.piw) if p.use_gcoef else 1.0
            with torch.no_grad():
                self.average_duals()
                x.copy_(isvr_primal(x, learner.get_grad_flat(), self.zbar, self.signs, lr, eta, degree, gcoef))
            return 1
        if self.rule == "reference":
            await self.local_grad(rt)
            with torch.no_grad():
                self.average_duals()
            self.reference_step(learner.get_grad_flat())
            return 1
        steps = min(p.local_steps, self.clock.left)
        with torch.no_grad():
            self.average_duals()
        for _ in range(steps):
            await self.local_grad(rt)
            with torch.no_grad():
                g = learner.get_grad_flat().add_(penalty_grad(x, self.zbar, self.signs, self.penalty(), degree))
            learner.set_grad_flat(g)
            learner.apply_update()
        return steps

    async def run(self, rt: Runtime) -> None:
        p = self.params
        self.clock.start(rt)
        server = rt.spawn(self.swaps.serve(rt), "swaps")
        try:
            while self.clock.left > 0:
                steps = await self.primal(rt)
                x = self.learner.flat_params()
                with torch.no_grad():
                    for j, sign in self.signs.items():
                        self.y[j] = self.send_buffer(dual_out(self.z[j], x, sign), x)
                await self.swaps.step(rt, p.swap_timeout, barrier=not p.async_step)
                self.clock.advance(rt, steps)
            await self.swaps.finish(rt, p.swap_timeout)
        finally:
            server.cancel()


class _EdgeConsensus(Algorithm):
    Params = EdgeConsensusParams
    isvr: bool = False
    avg_always: bool = False
    """The seed's plain ADMM averages the received duals whatever piw is."""

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return EdgeConsensusNode(ctx, cls.isvr, cls.avg_always)


class PDMM(_EdgeConsensus):
    name = "pdmm"
    isvr, avg_always = False, False
    summary = ("edge-consensus PDMM (ECL, Niwa et al. 2020; edge-consensus-learning PdmmSGD): one closed-form "
               "step per layer with metric sqrt(fan-in), z <- y")


class ADMM(_EdgeConsensus):
    name = "admm"
    isvr, avg_always = False, True
    summary = ("edge-consensus ADMM (ECL, Niwa et al. 2020; edge-consensus-learning AdmmSGD): one closed-form "
               "step per layer with metric sqrt(fan-in), z <- y, primal with the running dual average")


class PdmmISVR(_EdgeConsensus):
    name = "pdmm_isvr"
    isvr, avg_always = True, False
    summary = "ECL PDMM-ISVR (seed 003 PdmmISVR): linearised proximal primal step, z <- y"


class AdmmISVR(_EdgeConsensus):
    name = "admm_isvr"
    isvr, avg_always = True, False
    summary = "ECL ADMM-ISVR (seed 003 AdmmISVR): linearised proximal primal step, z <- y; dual average with piw 2"
