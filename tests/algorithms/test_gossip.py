"""Gossip SGD: seed 003's edge-by-edge rule (the default) and the push variant.

Seed 003's README gossip snippet: for each edge in turn ``param = (param + rcv) / 2`` and
``snd = param``, on the edge buffers and swap schedule of its D-SGD (nttcslab/ecl-isvr
``edgecons/contract.py``, ``edgecons/mnw/edge.py``)."""

from __future__ import annotations

import networkx as nx
import torch

from algorithms.test_p2p import DIM, LAST, params_of, simulate, targets

from simbench.algorithms.gossip import mix_edges
from simbench.core.scenario import Crash, Scenario


def test_the_seeds_rule_is_the_default():
    p = params_of("gossip")
    assert (p.variant, p.round_cnt) == ("seed", 10)


def test_edges_are_averaged_one_after_another_in_neighbour_order():
    """x = 8, r_1 = 4, r_3 = 0: edge 1 first, x = (8 + 4)/2 = 6 = s_1, then edge 3,
    x = (6 + 0)/2 = 3 = s_3 (own weight 1/4, neighbour 1 1/4, neighbour 3 1/2). The other
    order would give 4 and a plain average (8 + 4 + 0)/3 = 4 too."""
    x = torch.full((DIM,), 8.0)
    rcv = {3: torch.zeros(DIM), 1: torch.full((DIM,), 4.0)}
    snd: dict[int, torch.Tensor] = {}
    mix_edges(x, rcv, snd)
    assert torch.equal(x, torch.full((DIM,), 3.0))
    assert torch.equal(snd[1], torch.full((DIM,), 6.0)) and torch.equal(snd[3], torch.full((DIM,), 3.0))
    x.add_(100.0)  # the send buffers are the states at that point, not views of x
    assert snd[3][0].item() == 3.0


def lockstep(c: torch.Tensor, x0: torch.Tensor, graph: nx.Graph, lr: float, steps: int) -> torch.Tensor:
    """The seed's rule by hand, every edge swapping after every step (K = 1): a local step,
    the edge-by-edge average with the buffers received last step, then every edge delivers
    the other end's send buffer."""
    n = len(c)
    x = [x0[i].clone() for i in range(n)]
    rcv = {i: {j: x0[i].clone() for j in graph.neighbors(i)} for i in range(n)}
    for _ in range(steps):
        snd = {}
        for i in range(n):
            x[i] = x[i] - lr * (x[i] - c[i])
            s = {}
            for j in sorted(graph.neighbors(i)):
                x[i] = (x[i] + rcv[i][j]) / 2
                s[j] = x[i].clone()
            snd[i] = s
        rcv = {i: {j: snd[j][i] for j in graph.neighbors(i)} for i in range(n)}
    return torch.stack(x)


def test_simulated_run_matches_the_rule_computed_by_hand():
    """A path 0 - 1 - 2 (node 1 averages two edges, in order), K = 1, 3 epochs of 10 steps."""
    g = nx.path_graph(3)
    xs, _, _ = simulate("gossip", n=3, graph=g, epochs=3, round_cnt=1)
    x0 = torch.stack([torch.zeros(DIM) + i for i in range(3)])
    want = lockstep(targets(3), x0, g, 0.1, 30)
    assert torch.allclose(xs, want, atol=1e-6), (xs - want).abs().max()


def test_seed_gossip_does_not_conserve_the_mean_where_push_gossip_does():
    """The edge-by-edge weights (1/4, 1/4, 1/2 on a ring) are not doubly stochastic: the
    network settles off the global optimum, the symmetric push variant on it (up to lr)."""
    seed, opt, _ = simulate("gossip", epochs=40, round_cnt=1, lr=0.02)
    push, _, _ = simulate("gossip", epochs=40, variant="push", lr=0.02)
    assert (push.mean(0) - opt).norm().item() < 0.05
    assert (seed.mean(0) - opt).norm().item() > 0.1


def test_push_gossip_survives_a_crashed_neighbour():
    xs, _, learners = simulate("gossip", variant="push", epochs=5, scenario=Scenario(crashes=(Crash(node=1, at=0.01),)))
    for i in (0, 2, 3):
        assert learners[i].steps_done == 50
    assert torch.isfinite(xs).all()
    assert LAST["end"] < 1.0
