"""Edge-consensus ADMM/PDMM (plain and ISVR) and consensus ADMM, rule by rule against hand-computed
cases (docs/mutation.md): the primal steps, the dual send buffer y = z - 2 A x with A_{i|j} = +1
for the lower id and -1 for the higher, the dual receipt z <- (1 - theta) z + theta y, the
running dual average, ECL's eta and gradient coefficient, the reference's per-layer metric, and
the nodes' coroutines on :class:`FakeRt` with late and missing answers. Specifications:
``simbench/algorithms/admm.py`` and ``cadmm.py`` (module docstrings and the references they cite).

Inputs are chosen where the rule matters: a node whose neighbours sit on both sides of its id
(signs -1 and +1), unequal degrees (the graph G below), eta, lr and rho away from 1 so that
x * a and x / a differ, and two-coordinate vectors whose coordinates move differently."""

from __future__ import annotations

import math
from types import SimpleNamespace

import networkx as nx
import pytest
import torch

from simbench.algorithms.admm import (ADMM, PDMM, AdmmISVR, EdgeConsensusParams, PdmmISVR,
                                      averages_duals, dual_in, dual_out, edge_sign, grad_coef, isvr_primal,
                                      layer_dims, layer_metric, penalty_eta, penalty_grad, reference_primal)
from simbench.algorithms.cadmm import CADMM, CADMMParams, cadmm_dual, cadmm_grad
from simbench.core.schema import ConfigError

from algorithms.test_rules_algorithms import Layered  # weight (1, 4) and bias: metric 2 on 5 values; (1, 1) and bias: 1 on 2
from algorithms.test_rules_by_hand import FakeRt, Quad, ctx, drive

G = nx.Graph([(0, 1), (0, 2), (0, 3), (2, 3)])
"""Degrees 3, 1, 2, 2. Node 2's neighbours are 0 (A_{2|0} = -1) and 3 (A_{2|3} = +1)."""

T = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731


def ecl(cls, node_id=2, learner=None, graph=G, epochs=1, **params):
    learner = learner if learner is not None else Quad([0.0, 0.5], [1.0, 2.0], lr=0.1)
    return cls.make_node(ctx(node_id, EdgeConsensusParams(**params), learner, graph=graph, epochs=epochs))


def recorded(node):
    """Record the (runtime, epoch) of every epoch end instead of evaluating."""
    node.ends = []
    node.end_epoch = lambda rt, epoch: node.ends.append((rt, epoch))
    return node


def _received(node, **z):
    """Hand ``node`` the duals ``z<j>=(values)`` as if neighbour j had answered a swap."""
    for j, v in z.items():
        node.receive(int(j[1:]), T(*v))
    return node


class SwapRt(FakeRt):
    """FakeRt that keeps the spawned swap server (run later by hand) and its name."""

    def spawn(self, coro, name):
        self.spawned = (coro, name)
        return SimpleNamespace(cancel=lambda: None)


# -- the closed-form pieces ------------------------------------------------------------------------
def test_ecl_edge_sign_penalty_and_gradient_coefficient_by_hand():
    assert (edge_sign(0, 3), edge_sign(3, 0)) == (1.0, -1.0)
    # eta = piw / (lr (K E + K - piw E)): lr 0.1, piw 0.5, E 2, K 3: 0.5 / (0.1 (6 + 3 - 1)) = 0.625
    assert penalty_eta(0.1, 0.5, 2, 3) == pytest.approx(0.625)
    assert penalty_eta(0.1, 0.5, 1, 3) == pytest.approx(0.5 / 0.55)
    # K (E + 1) = piw E: eta undefined (denominator 0), and so below it
    for piw, degree, k in ((2.0, 1, 1), (2.0, 3, 1)):
        with pytest.raises(ValueError, match=rf"^eta is undefined for piw={piw}, degree={degree}, round_cnt={k}; raise round_cnt$"):
            penalty_eta(0.1, piw, degree, k)
    # c = 1 - lr eta E (K/piw - 1) = 1 - 0.1 0.625 2 (6 - 1) = 0.375
    assert grad_coef(0.1, 0.625, 2, 3, 0.5) == pytest.approx(0.375)


def test_isvr_primal_by_hand():
    """(x/lr - c g + eta sum_j A_j z_j) / (1/lr + E eta): x = (1, 2), g = (0.5, -1), z from
    node 0 (A = -1) (2, 4) and from node 3 (A = +1) (1, -2), lr 0.5, eta 0.25, E 2, c 0.5:
    ((2, 4) - (0.25, -0.5) - 0.25 (2, 4) + 0.25 (1, -2)) / (2 + 0.5) = (1.5, 3) / 2.5.
    Without c (default 1): ((2, 4) - (0.5, -1) - (0.5, 1) + (0.25, -0.5)) / 2.5 = (1.25, 3.5) / 2.5."""
    x, g = T(1.0, 2.0), T(0.5, -1.0)
    duals, signs = {0: T(2.0, 4.0), 3: T(1.0, -2.0)}, {0: -1.0, 3: 1.0}
    assert isvr_primal(x, g, duals, signs, 0.5, 0.25, 2, 0.5).tolist() == pytest.approx([0.6, 1.2])
    assert isvr_primal(x, g, duals, signs, 0.5, 0.25, 2).tolist() == pytest.approx([0.5, 1.4])
    assert x.tolist() == [1.0, 2.0]


def test_reference_primal_by_hand_with_and_without_neighbours_states_and_edges():
    """(mu x - g + m eta/E sum_j A_j z_j + m rho/E sum_j s_j) / (mu + m (eta + rho)), per
    coordinate metric m = (4, 1): x = (1, 2), g = (0.5, -1), mu 10, eta 0.5, rho 0.2, z and A as
    for ISVR, s_0 = (3, 1), s_3 = (-1, 5). mu x - g = (9.5, 21); pull = 0.25 ((-2, -4) + (1, -2))
    + 0.1 ((3, 1) + (-1, 5)) = (-0.05, -0.9); x = (9.5 - 0.2, 21 - 0.9) / (4 0.7 + 10, 0.7 + 10).
    No states (rho = 0): (9.5 - 1, 21 - 1.5) / (4 0.5 + 10, 0.5 + 10). One edge (to 0):
    (9.5 - 4, 21 - 2) / (12, 10.5). No edges: x - g/mu = (0.95, 2.1)."""
    x, g, m = T(1.0, 2.0), T(0.5, -1.0), T(4.0, 1.0)
    duals, signs = {0: T(2.0, 4.0), 3: T(1.0, -2.0)}, {0: -1.0, 3: 1.0}
    states = {0: T(3.0, 1.0), 3: T(-1.0, 5.0)}
    got = reference_primal(x, g, duals, states, signs, 10.0, 0.5, 0.2, m)
    assert got.tolist() == pytest.approx([9.3 / 12.8, 20.1 / 10.7])
    got = reference_primal(x, g, duals, {}, signs, 10.0, 0.5, 0.2, m)
    assert got.tolist() == pytest.approx([8.5 / 12.0, 19.5 / 10.5])
    got = reference_primal(x, g, {0: duals[0]}, {}, {0: -1.0}, 10.0, 0.5, 0.2, m)
    assert got.tolist() == pytest.approx([5.5 / 12.0, 19.0 / 10.5])
    assert reference_primal(x, g, {}, {}, {}, 10.0, 0.5, 0.2, m).tolist() == pytest.approx([0.95, 2.1])
    assert x.tolist() == [1.0, 2.0]


def test_argmin_penalty_gradient_by_hand():
    """eta (E x - sum_j A_j z_j), eta 0.25, E 2: 0.25 (2 (1, 2) + (2, 4) - (1, -2)) = (0.75, 2.5)."""
    duals, signs = {0: T(2.0, 4.0), 3: T(1.0, -2.0)}, {0: -1.0, 3: 1.0}
    assert penalty_grad(T(1.0, 2.0), duals, signs, 0.25, 2).tolist() == pytest.approx([0.75, 2.5])


def test_dual_send_buffer_and_receipt_by_hand():
    """y = z - 2 A x; z <- (1 - theta) z + theta y in place, theta 1 a plain replacement (a
    diverged dual is replaced whole, not mixed in)."""
    z, x = T(1.0, -1.0), T(2.0, 3.0)
    assert dual_out(z, x, -1.0).tolist() == [5.0, 5.0]
    assert dual_out(z, x, 1.0).tolist() == [-3.0, -7.0]
    z = T(math.inf, 1.0)
    assert dual_in(z, T(2.0, 3.0), 1.0) is z and z.tolist() == [2.0, 3.0]
    z = T(4.0, 0.0)
    assert dual_in(z, T(0.0, 4.0), 0.25) is z and z.tolist() == [3.0, 1.0]  # 0.75 (4, 0) + 0.25 (0, 4)
    z = T(4.0, 0.0)
    assert dual_in(z, T(2.0, 2.0), 0.5).tolist() == [3.0, 1.0]


def test_dual_average_rule_by_variant_and_flag():
    """The seed's plain ADMM always averages, the ISVR variants only with piw 2, plain PDMM
    never; ``dual_avg`` overrides. Arguments: (params, always, isvr)."""
    p = EdgeConsensusParams
    assert averages_duals(p(), True, False) is True and averages_duals(p(), False, True) is False
    assert averages_duals(p(piw=2.0), False, True) is True and averages_duals(p(piw=0.5), False, True) is False
    assert averages_duals(p(piw=2.0), False, False) is False
    assert averages_duals(p(dual_avg=False), True, False) is False and averages_duals(p(dual_avg=True), False, False) is True


def test_ecl_layer_dims_and_metric_follow_the_references_dim_num():
    shapes = [("bias", (4,)), ("weight", (4, 5)), ("conv.weight", (8, 3, 3, 3)), ("conv.bias", (8,)),
              ("gn.weight", (8,)), ("gn.bias", (8,)), ("fc.weight", (10, 72)), ("fc.bias", (10,)),
              ("s.weight", ()), ("s.bias", ())]
    assert layer_dims(shapes) == [1, 1, 27, 27, 8, 8, 72, 72, 1, 1]
    named = {"a.weight": torch.zeros(1, 4), "a.bias": torch.zeros(1), "n.weight": torch.zeros(3), "n.bias": torch.zeros(3)}
    like = torch.zeros(11, dtype=torch.float64)
    got = layer_metric(SimpleNamespace(named_tensors=lambda: named), like)
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx([2.0] * 5 + [math.sqrt(3.0)] * 6, rel=1e-12)
    assert layer_metric(SimpleNamespace(), like).tolist() == [1.0] * 11  # no names: one tensor
    assert layer_metric(SimpleNamespace(named_tensors=dict), like).tolist() == [1.0] * 11
    with pytest.raises(ValueError, match="^the named tensors hold 11 values, the flat vector 12$"):
        layer_metric(SimpleNamespace(named_tensors=lambda: named), torch.zeros(12))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ecl_layer_metric_lives_on_the_models_device():
    """The metric multiplies the flat parameters in the primal step: it is built where they are
    (kills the CPU-only device mutants of ``layer_metric`` where a GPU is)."""
    named = {"a.weight": torch.zeros(1, 4), "a.bias": torch.zeros(1), "n.weight": torch.zeros(3), "n.bias": torch.zeros(3)}
    like = torch.zeros(11, device="cuda")
    got = layer_metric(SimpleNamespace(named_tensors=lambda: named), like)
    assert got.device == like.device
    assert got.cpu().tolist() == pytest.approx([2.0] * 5 + [math.sqrt(3.0)] * 6, rel=1e-6)


def test_ecl_local_steps_need_the_argmin_primal():
    with pytest.raises(ConfigError, match="^algorithm.local_steps: 2 optimizer steps per step are the argmin "
                                          "primal's; set primal: argmin \\(primal 'reference' takes one step\\)$"):
        EdgeConsensusParams(local_steps=2)
    assert EdgeConsensusParams(local_steps=2, primal="argmin").local_steps == 2
    assert EdgeConsensusParams(local_steps=1).primal == "reference"


# -- nodes: construction, receipt, penalty -------------------------------------------------------
def test_ecl_nodes_start_from_the_references_buffers():
    """Every variant's rule, dual average, signs and buffers on G (the reference's ``Edge.__init__``:
    zero duals, the average and the neighbours' states start at the node's own parameters); what
    a node sends before its first step: a zero dual, and its parameters where the rule needs them."""
    x0 = [1.0, 2.0]
    admm = ecl(ADMM)
    assert (admm.rule, admm.averaging, admm.signs) == ("reference", True, {0: -1.0, 3: 1.0})
    assert set(admm.z) == {0, 3} and all(z.tolist() == [0.0, 0.0] for z in admm.z.values())
    assert all(admm.zbar[j].tolist() == x0 and admm.states[j].tolist() == x0 for j in (0, 3))
    assert all(admm.y[j].tolist() == [0.0, 0.0] + x0 for j in (0, 3))
    assert admm.metric.tolist() == [1.0, 1.0]
    admm.learner.flat.fill_(5.0)  # copies, not views of the model
    assert admm.zbar[0].tolist() == x0 and admm.states[3].tolist() == x0
    pdmm = ecl(PDMM, rho=0.0)
    assert (pdmm.rule, pdmm.averaging, pdmm.states) == ("reference", False, {})
    assert pdmm.zbar is pdmm.z and pdmm.y[0].tolist() == [0.0, 0.0]
    argmin = ecl(PDMM, primal="argmin")
    assert (argmin.rule, argmin.states, argmin.y[3].tolist()) == ("argmin", {}, [0.0, 0.0])
    for cls, piw, averaging in ((AdmmISVR, 1.0, False), (AdmmISVR, 2.0, True), (PdmmISVR, 1.0, False), (PdmmISVR, 2.0, True)):
        node = ecl(cls, piw=piw)
        assert (node.rule, node.averaging, node.states, node.y[0].tolist()) == ("isvr", averaging, {}, [0.0, 0.0])
        assert (node.zbar is node.z) is not averaging
    assert ecl(ADMM, piw=2.0).averaging is True
    assert ecl(ADMM, dual_avg=False).averaging is False
    # swap slots: node 0's neighbours from the nearest below, cyclically over the 4 nodes: 3, 2, 1
    hub = ecl(ADMM, node_id=0, round_cnt=3)
    assert (hub.signs, hub.swaps.slots, hub.swaps.period, hub.swaps.kind) == ({1: 1.0, 2: 1.0, 3: 1.0}, {3: 0, 2: 1, 1: 2}, 3, "dual")
    alone = ecl(PdmmISVR, graph=None)
    assert (alone.signs, alone.z, alone.swaps.slots) == ({}, {}, {})


def test_only_the_reference_rule_reads_the_layer_metric():
    """The ISVR and argmin steps move every value alike: a learner whose named tensors do not
    cover its flat vector runs them, and the reference rule's metric refuses it."""

    class Partial(Quad):
        def named_tensors(self):
            return {"a.weight": self.flat[:2].view(1, 2)}

    for cls, kw in ((PdmmISVR, {}), (ADMM, {"primal": "argmin"})):
        assert ecl(cls, learner=Partial([0.0] * 3), **kw).metric is None
    with pytest.raises(ValueError, match="named tensors hold 2 values"):
        ecl(ADMM, learner=Partial([0.0] * 3))
    layered = ecl(PDMM, learner=Layered(torch.zeros(7), torch.ones(7), 0.1))
    assert layered.metric.tolist() == [2.0] * 5 + [1.0] * 2


def test_plain_pdmm_never_averages_the_duals_whatever_piw():
    """edge-consensus-learning ``PdmmSGD`` steps with the last received duals (docs/algorithms.md:
    "``pdmm`` never"); piw is an ISVR and argmin knob. pdmm, rho 0, on node 2 of G: x = (1, 2),
    g = (1, 1.5), mu 10, eta 1, received z_0 = (2, 4) (A = -1), z_3 = (1, -2) (A = +1):
    pull = ((-2, -4) + (1, -2))/2 = (-0.5, -3), x = (10 - 1 - 0.5, 20 - 1.5 - 3) / 11 at piw 1 and 2.
    The old code averaged at piw 2: ((1.5, 3), (1, 0)), x = (8.75, 17) / 11."""
    for piw in (1.0, 2.0):
        node = _received(ecl(PDMM, rho=0.0, piw=piw), z0=(2.0, 4.0), z3=(1.0, -2.0))
        assert node.averaging is False and node.zbar is node.z
        drive(node.primal(FakeRt(2, (0, 3))))
        assert node.learner.flat.tolist() == pytest.approx([8.5 / 11, 15.5 / 11])


def test_ecl_receive_splits_the_dual_from_the_parameters_and_mixes_by_theta():
    admm = ecl(ADMM, theta=0.5)
    admm.z[0].copy_(T(2.0, -2.0))
    admm.receive(0, T(4.0, 6.0, 7.0, 8.0))
    assert admm.z[0].tolist() == [3.0, 2.0] and admm.states[0].tolist() == [7.0, 8.0]
    assert admm.z[3].tolist() == [0.0, 0.0] and admm.states[3].tolist() == [1.0, 2.0]
    pdmm = ecl(PdmmISVR, theta=0.25)
    pdmm.z[3].copy_(T(4.0, 0.0))
    pdmm.receive(3, T(0.0, 4.0))
    assert pdmm.z[3].tolist() == [3.0, 1.0]


def test_ecl_penalty_reference_default_explicit_and_derived_by_degree():
    """Reference rule: eta 1 unless set. ISVR (and argmin): ECL's eta with the node's degree,
    E = 1 for a node without edges; lr 0.1, piw 0.5, K 3: E 2 -> 0.625, E 1 or 0 -> 0.5/0.55."""
    assert ecl(ADMM).penalty() == 1.0 and ecl(ADMM, eta=0.3).penalty() == 0.3
    assert ecl(PdmmISVR, eta=0.3).penalty() == 0.3
    derived = dict(piw=0.5, round_cnt=3)
    assert ecl(PdmmISVR, **derived).penalty() == pytest.approx(0.625)
    assert ecl(PdmmISVR, primal="argmin", **derived).penalty() == pytest.approx(0.625)
    assert ecl(PdmmISVR, node_id=1, **derived).penalty() == pytest.approx(0.5 / 0.55)
    assert ecl(PdmmISVR, graph=None, **derived).penalty() == pytest.approx(0.5 / 0.55)


# -- nodes: one primal step -----------------------------------------------------------------------
def test_isvr_primal_step_with_gradient_coefficient_and_dual_average_by_hand():
    """admm_isvr, piw 2 (so averaging), use_gcoef, K 3, lr 0.1, E 2: eta = 2 / (0.1 (6 + 3 - 4))
    = 4, c = 1 - 0.1 4 2 (1.5 - 1) = 0.6. x = (1, 2), c_f = (0, 0.5): g = (1, 1.5). Received
    z_0 = (2, 4), z_3 = (1, -2); averages (x0 + z)/2 = (1.5, 3), (1, 0).
    x = ((10, 20) - 0.6 (1, 1.5) - 4 (1.5, 3) + 4 (1, 0)) / (10 + 8) = (7.4, 7.1) / 18."""
    node = _received(ecl(AdmmISVR, piw=2.0, use_gcoef=True, round_cnt=3), z0=(2.0, 4.0), z3=(1.0, -2.0))
    assert drive(node.primal(FakeRt(2, (0, 3)))) == 1
    assert node.learner.flat.tolist() == pytest.approx([7.4 / 18, 7.1 / 18])
    assert node.zbar[0].tolist() == pytest.approx([1.5, 3.0])


def test_isvr_primal_step_without_coefficient_or_average_by_hand():
    """pdmm_isvr, piw 1, K 4, lr 0.1, E 2: eta = 1 / (0.1 (8 + 4 - 2)) = 1, c = 1 (use_gcoef off;
    it would be 1 - 0.1 2 3 = 0.4). x = ((10, 20) - (1, 1.5) - (2, 4) + (1, -2)) / 12."""
    node = _received(ecl(PdmmISVR, round_cnt=4), z0=(2.0, 4.0), z3=(1.0, -2.0))
    assert drive(node.primal(FakeRt(2, (0, 3)))) == 1
    assert node.learner.flat.tolist() == pytest.approx([8.0 / 12, 12.5 / 12])
    alone = ecl(PdmmISVR, graph=None)  # no edges: x - lr g
    drive(alone.primal(FakeRt(0)))
    assert alone.learner.flat.tolist() == pytest.approx([0.9, 1.85])


@pytest.mark.parametrize("cls,rho,want", [
    # admm (averages (1 + 2)/2 = 1.5 and (1 - 1)/2 = 0), rho 0.2: pull = (-1.5 + 0)/2 + 0.1 (3 + 1) = -0.35,
    # x = (9.5 - 0.35 m) / (10 + 1.2 m)
    (ADMM, 0.2, [8.8 / 12.4] * 5 + [9.15 / 11.2] * 2),
    # pdmm, rho 0 (no states): pull = (-2 - 1)/2 = -1.5, x = (9.5 - 1.5 m) / (10 + m)
    (PDMM, 0.0, [6.5 / 12] * 5 + [8.0 / 11] * 2),
])
def test_reference_primal_step_per_layer_on_a_node_by_hand(cls, rho, want):
    """edge-consensus-learning's step on node 2 of G: x = 1, g = 0.5 (c = 0.5), lr 0.1 (mu 10),
    eta 1, metric m = 2 on layer a's 5 values and 1 on b's 2; received (z, s) = (2, 3) from node 0
    (A = -1) and (-1, 1) from node 3 (A = +1)."""
    node = ecl(cls, learner=Layered(torch.full((7,), 0.5), torch.ones(7), 0.1), rho=rho)
    for j, (z, s) in {0: (2.0, 3.0), 3: (-1.0, 1.0)}.items():
        node.receive(j, torch.full((7,), z) if not rho else torch.cat([torch.full((7,), z), torch.full((7,), s)]))
    assert drive(node.primal(FakeRt(2, (0, 3)))) == 1
    assert node.learner.flat.tolist() == pytest.approx(want, rel=1e-6)


def test_argmin_primal_takes_its_local_steps_on_one_dual_average_up_to_the_epochs_end():
    """admm, primal argmin, local_steps 3 but 2 steps left, eta 0.5, lr 0.1, x = 1, c_f = 0.
    Received z_0 = 3, z_3 = -1, averaged once: (1 + 3)/2 = 2 and 0. Gradient
    x + 0.5 (2 x - (-2 + 0)): at 1: 3, x = 0.7; at 0.7: 0.7 + 0.5 (1.4 + 2) = 2.4, x = 0.46."""
    node = _received(ecl(ADMM, learner=Quad([0.0], [1.0], lr=0.1, spe=2), primal="argmin", local_steps=3, eta=0.5),
                     z0=(3.0,), z3=(-1.0,))
    assert drive(node.primal(FakeRt(2, (0, 3)))) == 2
    assert [g.item() for g in node.learner.handed] == pytest.approx([3.0, 2.4])
    assert node.learner.flat.item() == pytest.approx(0.46)
    assert node.zbar[0].item() == pytest.approx(2.0)


# -- nodes: the run on a runtime with late and missing answers -----------------------------------
def test_admm_run_by_hand_with_a_late_answer_a_round_barrier_and_a_silent_goodbye():
    """admm (reference rule, rho 0.2) on node 2 of G, 1-d, x = 1, c_f = 0, lr 0.1 (mu 10), eta 1,
    K 2, 3 steps, swap timeout 1 s. Slots: 0 at step 0 of each round, 3 at step 1.
      step 1: averages (1 + 0)/2 = 0.5, 0.5; pull = (-0.5 + 0.5)/2 + 0.1 (1 + 1) = 0.2;
              x1 = (10 - 1 + 0.2)/11.2; sends [y, x] = [2 x1, x1] to 0, which answers (4, 2) at 0.1 s.
      step 2: averages (0.5 + 4)/2 = 2.25, 0.25; pull = (-2.25 + 0.25)/2 + 0.1 (2 + 1) = -0.7;
              x2 = (9 x1 - 0.7)/11.2; sends [-2 x2, x2] to 3: no answer by 1.1 s (a timeout). The
              round ends: the barrier tells 0 and 3 and waits for their rounds (1.3 s); 3's late
              answer (-3, 5) came at 1.25 s.
      step 3: averages 3.125, 0.125 (3's late dual not taken yet); pull = -1.5 + 0.3;
              x3 = (9 x2 - 1.2)/11.2; sends [4 + 2 x3, x3] to 0, takes 3's late answer on the way
              and 0's (6, 0) at 1.4 s.
    Then goodbyes: 0's comes at 1.5 s, 3's never (wait until 1.4 + 1 s). The swap server answers a
    request with the last send buffer."""
    node = recorded(ecl(ADMM, learner=Quad([0.0], [1.0], lr=0.1, spe=3), rho=0.2, round_cnt=2, swap_timeout=1.0))
    rt = SwapRt(2, (0, 3))
    rt.deliver(0.1, 0, "dual_reply", {}, {"x": [4.0, 2.0]})
    rt.deliver(1.2, 0, "dual_round", {"round": 1})
    rt.deliver(1.25, 3, "dual_reply", {}, {"x": [-3.0, 5.0]})
    rt.deliver(1.3, 3, "dual_round", {"round": 1})
    rt.deliver(1.4, 0, "dual_reply", {}, {"x": [6.0, 0.0]})
    rt.deliver(1.5, 0, "dual_done")
    drive(node.run(rt))
    x1 = 9.2 / 11.2
    x2 = (9 * x1 - 0.7) / 11.2
    x3 = (9 * x2 - 1.2) / 11.2
    assert node.learner.flat.item() == pytest.approx(x3)
    assert [(dst, m.tensors["x"].tolist()) for dst, m in rt.sent_of("dual_swap")] == [
        (0, pytest.approx([2 * x1, x1])), (3, pytest.approx([-2 * x2, x2])), (0, pytest.approx([4 + 2 * x3, x3]))]
    assert [(dst, m["round"]) for dst, m in rt.sent_of("dual_round")] == [(0, 1), (3, 1)]
    assert sorted(dst for dst, _m in rt.sent_of("dual_done")) == [0, 3]
    assert rt.logged("dual_timeouts") == [1] and rt.logged("dual_round_timeouts") == []
    assert {j: z.item() for j, z in node.z.items()} == {0: 6.0, 3: -3.0}
    assert {j: s.item() for j, s in node.states.items()} == {0: 0.0, 3: 5.0}
    assert {j: z.item() for j, z in node.zbar.items()} == pytest.approx({0: 3.125, 3: 0.125})
    assert rt.t == pytest.approx(2.4)
    assert node.ends == [(rt, 0), (rt, 1)] and node.learner.steps_done == 3
    server, name = rt.spawned
    assert name == "swaps"
    rt.deliver(3.0, 3, "dual_swap", {}, {"x": [7.0, 8.0]})
    with pytest.raises(AssertionError, match="wait forever"):
        drive(server)
    assert node.z[3].item() == 7.0 and node.states[3].item() == 8.0
    assert rt.sent[-1][1] == 3 and rt.sent[-1][2].kind == "dual_reply"
    assert rt.sent[-1][2].tensors["x"].tolist() == pytest.approx([-2 * x3, x3])


def test_ecl_async_step_never_waits_for_the_neighbours_round():
    """async_step: no round messages, no round wait; every swap still waits for its answer (none
    come: 0.5 s each) and the goodbye for the neighbours' (0.5 s)."""
    node = recorded(ecl(PdmmISVR, learner=Quad([0.0], [1.0], lr=0.1, spe=2), round_cnt=2, async_step=True,
                        swap_timeout=0.5))
    rt = SwapRt(2, (0, 3))
    drive(node.run(rt))
    assert rt.sent_of("dual_round") == [] and rt.logged("dual_timeouts") == [1, 1]
    assert [dst for dst, _m in rt.sent_of("dual_swap")] == [0, 3] and rt.t == pytest.approx(1.5)
    assert node.ends == [(rt, 0), (rt, 1)]
    server, name = rt.spawned
    server.close()
    assert name == "swaps"


# -- consensus ADMM -------------------------------------------------------------------------------
def test_cadmm_dual_and_gradient_by_hand_with_both_neighbours():
    """alpha += rho sum_j (x - x_j): (1, 0) + 0.5 ((2, 2) + (1, -1)) = (2.5, 0.5);
    g + alpha + 2 rho sum_j (x - m_j): (1, 1) + (2.5, 0.5) + ((1, 1) + (0.5, -0.5)) = (5, 2)."""
    alpha, x = T(1.0, 0.0), T(2.0, 2.0)
    assert cadmm_dual(alpha, x, [T(0.0, 0.0), T(1.0, 3.0)], 0.5) is alpha and alpha.tolist() == [2.5, 0.5]
    g = T(1.0, 1.0)
    assert cadmm_grad(g, x, alpha, [T(1.0, 1.0), T(1.5, 2.5)], 0.5) is g and g.tolist() == [5.0, 2.0]
    g = T(1.0, 1.0)
    assert cadmm_grad(g, x, T(0.0, 0.0), [T(1.0, 3.0)], 0.25).tolist() == [1.5, 0.5]


def test_cadmm_three_rounds_by_hand_with_a_stale_and_a_silent_neighbour():
    """f = 1/2 (x - 1)^2, x = 0, lr 0.1, rho 0.5, local_steps 2 over 5 steps: rounds of 2, 2, 1
    steps. Neighbours 1 (x = 2, 4, 3 on time), 2 (round 0's x = -1 only at 1.5 s: stale in round
    1; round 2's 0.5 on time), 3 (never heard: left out).
      round 0: alpha = 0.5 (0 - 2) = -1, midpoint 1; g = -1 - 1 + (0 - 1) = -3, x = 0.3;
               g = -0.7 - 1 + (0.3 - 1) = -2.4, x = 0.54.
      round 1: alpha = -1 + 0.5 ((0.54 - 4) + (0.54 + 1)) = -1.96, midpoints 2.27, -0.23;
               g = -0.46 - 1.96 + (-1.73 + 0.77) = -3.38, x = 0.878;
               g = -0.122 - 1.96 + (-1.392 + 1.108) = -2.366, x = 1.1146.
      round 2: alpha = -1.96 + 0.5 ((1.1146 - 3) + (1.1146 - 0.5)) = -2.5954, midpoints 2.0573,
               0.8073; g = 0.1146 - 2.5954 + (-0.9427 + 0.3073) = -3.1162, x = 1.42622."""
    learner = Quad([1.0], lr=0.1, spe=5)
    node = recorded(CADMM.make_node(ctx(0, CADMMParams(rho=0.5, local_steps=2, swap_timeout=1.0), learner)))
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.1, 1, "params", {"round": 0}, {"x": [2.0]})
    rt.deliver(1.1, 1, "params", {"round": 1}, {"x": [4.0]})
    rt.deliver(1.5, 2, "params", {"round": 0}, {"x": [-1.0]})
    rt.deliver(2.1, 1, "params", {"round": 2}, {"x": [3.0]})
    rt.deliver(2.2, 2, "params", {"round": 2}, {"x": [0.5]})
    drive(node.run(rt))
    assert [h.item() for h in learner.handed] == pytest.approx([-3.0, -2.4, -3.38, -2.366, -3.1162])
    assert learner.flat.item() == pytest.approx(1.42622)
    assert node.alpha.item() == pytest.approx(-2.5954)
    sent = [(dst, m.kind, m["round"], m.tensors["x"].item()) for _t, dst, m in rt.sent]
    xs = (0.0, 0.54, 1.1146)
    assert sent == [(j, "params", r, pytest.approx(xs[r])) for r in range(3) for j in (1, 2, 3)]
    assert rt.logged("params_timeouts") == [2, 2, 1] and rt.logged("params_stale") == [1]
    assert node.round == 3 and node.ends == [(rt, 0), (rt, 1)] and rt.t == pytest.approx(3.0)
