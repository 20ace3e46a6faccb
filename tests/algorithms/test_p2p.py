"""P2P algorithms (dsgd, gossip, ECL admm/pdmm(+isvr), cadmm) on a strongly convex problem
with a known optimum: f_i(x) = 1/2 |x - c_i|^2 on a ring, optimum mean(c_i)."""

from __future__ import annotations


import networkx as nx
import pytest
import torch

from simhelpers import QuadLearner, make_world, net  # noqa: E402

from simbench.algorithms import ALGORITHMS  # noqa: E402
from simbench.core.node import NodeContext  # noqa: E402
from simbench.core.scenario import ComputeSpec, Crash, Scenario  # noqa: E402
from simbench.experiment.config import parse_config  # noqa: E402

DIM = 4
LAST: dict = {}  # the last simulation's end time
P2P = ("dsgd", "gossip", "admm", "pdmm", "admm_isvr", "pdmm_isvr", "cadmm")


def targets(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, DIM, generator=g) * 3.0  # far apart: a strongly non-iid problem


def params_of(algo: str, **kw):
    return parse_config({"name": "t", "nodes": 4, "topology": {"kind": "ring"}, "algorithm": {"name": algo, **kw},
                         "dataset": {"name": "synthetic"}}).algorithm_params


def simulate(algo: str, *, n: int = 4, epochs: int = 30, lr: float = 0.1, scenario: Scenario | None = None,
             latency: float = 0.001, step_time: float = 0.002, graph: nx.Graph | None = None, **kw):
    graph = nx.cycle_graph(n) if graph is None else graph
    c = targets(n)
    p = params_of(algo, **kw)
    cls = ALGORITHMS[algo]
    learners = {i: QuadLearner(c[i], torch.zeros(DIM) + i, lr, seed=i) for i in range(n)}
    nodes = {i: cls.make_node(NodeContext(node_id=i, role="worker", params=p, learner=learners[i], epochs=epochs,
                                          graph=graph)) for i in range(n)}
    world = make_world(graph, nodes, network=net(latency), compute=ComputeSpec(step_time=step_time), scenario=scenario or Scenario())
    world.run()
    LAST["end"] = world.now
    xs = torch.stack([learners[i].flat for i in range(n)])
    return xs, c.mean(0), learners


@pytest.mark.parametrize("algo", ["admm", "pdmm", "admm_isvr", "pdmm_isvr", "cadmm"])
def test_primal_dual_reach_global_optimum_on_ring(algo):
    kw = {"rho": 0.5} if algo == "cadmm" else {}
    xs, opt, _ = simulate(algo, epochs=40, **kw)
    assert torch.isfinite(xs).all()
    err = (xs - opt).norm(dim=1).max().item()
    assert err < 1e-4, f"{algo}: max |x_i - x*| = {err:.4g}"


@pytest.mark.parametrize("algo", ["dsgd", "gossip"])
def test_diffusion_methods_reach_optimum_up_to_an_lr_bias(algo):
    """Constant-step D-SGD/gossip stop at O(lr |c_i - mean c|) from x*: the network mean is
    exact, the per-node bias shrinks with lr."""
    errs = {}
    for lr in (0.1, 0.02):
        xs, opt, _ = simulate(algo, epochs=40, lr=lr)
        assert (xs.mean(0) - opt).norm().item() < 0.05  # averaging conserves the mean
        errs[lr] = (xs - opt).norm(dim=1).max().item()
    assert errs[0.02] < 0.6 and errs[0.02] < 0.4 * errs[0.1], errs


@pytest.mark.parametrize("algo", ["admm", "pdmm", "admm_isvr", "pdmm_isvr", "cadmm"])
def test_primal_dual_reach_consensus_where_local_sgd_does_not(algo):
    kw = {"rho": 0.5} if algo == "cadmm" else {}
    xs, opt, _ = simulate(algo, epochs=40, **kw)
    spread = (xs - xs.mean(0)).norm(dim=1).max().item()
    # local SGD (dsgd on a graph without edges: no communication) leaves every node at its own c_i
    local, _, _ = simulate("dsgd", epochs=40, graph=nx.empty_graph(4))
    assert torch.allclose(local, targets(4), atol=1e-3)
    local_spread = (local - local.mean(0)).norm(dim=1).max().item()
    assert local_spread > 3.0
    assert spread < 1e-3 * local_spread


@pytest.mark.parametrize("algo", ["admm_isvr", "pdmm_isvr"])
@pytest.mark.parametrize("piw,gcoef", [(0.5, False), (2.0, False), (1.0, True)])
def test_ecl_flags_converge(algo, piw, gcoef):
    xs, opt, _ = simulate(algo, epochs=60, piw=piw, use_gcoef=gcoef)
    assert (xs - opt).norm(dim=1).max().item() < 1e-2


@pytest.mark.parametrize("algo", ["admm_isvr", "pdmm_isvr", "admm"])
def test_async_step_converges(algo):
    xs, opt, _ = simulate(algo, epochs=60, async_step=True, latency=0.0005)
    assert (xs - opt).norm(dim=1).max().item() < 5e-2


def test_dsgd_async_step_mixes_without_waiting():
    # latency of 3 steps: synchronous rounds wait for it, async rounds do not, and mixing with
    # 3-step-old neighbours still lands on the same (lr-biased) point
    sync, opt, _ = simulate("dsgd", epochs=20, lr=0.1, latency=0.006)
    t_sync = LAST["end"]
    asyn, _, la = simulate("dsgd", epochs=20, lr=0.1, latency=0.006, async_step=True)
    assert LAST["end"] < 0.5 * t_sync
    assert all(lr.steps_done == 200 for lr in la.values())
    assert (asyn.mean(0) - opt).norm().item() < 0.02
    assert (asyn - sync).norm(dim=1).max().item() < 0.05


@pytest.mark.parametrize("algo", P2P)
def test_crashed_neighbour_does_not_block(algo):
    kw = {"rho": 0.5} if algo == "cadmm" else {}
    if algo != "gossip":
        kw["swap_timeout"] = "20ms"
    xs, _, learners = simulate(algo, epochs=5, scenario=Scenario(crashes=(Crash(node=1, at=0.01),)), **kw)
    for i in (0, 2, 3):  # everybody else, including both of node 1's neighbours, finishes
        assert learners[i].steps_done == 5 * 10, (algo, i, learners[i].steps_done)
    assert learners[1].steps_done < 50
    assert torch.isfinite(xs).all()


@pytest.mark.parametrize("algo", ["gossip", "pdmm_isvr", "cadmm"])
def test_runs_end_to_end_on_synthetic(tmp_path, algo):
    from simbench.experiment.run import run_experiment
    cfg = parse_config({"name": "t", "seed": 0, "nodes": 4, "topology": {"kind": "ring"}, "algorithm": algo,
                        "dataset": {"name": "synthetic", "partition": "k_classes", "classes_per_node": 2, "max_train": 800},
                        "model": {"name": "logistic"}, "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
                        "output": {"wall_clock": False, "plot": False, "progress": False}})
    res = run_experiment(cfg, tmp_path)
    assert res.status == "finished"
    avg = res.epochs[res.epochs["node"] == "avg"]
    assert avg["epoch"].max() == 2


def test_sleep_factor_stretches_simulated_time_by_one_plus_the_factor():
    """Seed 003's ``--sleep_factor``: a node sleeps factor x its compute time after each step.
    With compute-bound rounds (tiny latency), the run takes about (1 + factor) times as long."""
    simulate("dsgd", epochs=10, latency=1e-6)
    base = LAST["end"]
    xs, _, _ = simulate("dsgd", epochs=10, latency=1e-6, scenario=Scenario(sleep_factor=2.0))
    assert torch.isfinite(xs).all()
    assert LAST["end"] == pytest.approx(3 * base, rel=0.02), (base, LAST["end"])


def test_cadmm_holds_a_silent_neighbour_at_its_latest_parameters():
    """After node 1 of a 4-ring stops, its neighbours keep it in the dual step at its last
    parameters, so the survivors reach consensus with them (the consensus solution once x_1
    is fixed). Dropping the edge instead froze node 1's share of the duals: the survivors
    then settled elsewhere on quadratics and diverged on a neural network (FashionMNIST)."""
    xs, opt, learners = simulate("cadmm", epochs=80, rho=0.5, swap_timeout="20ms",
                                 scenario=Scenario(crashes=(Crash(node=1, at=0.05),)))
    assert learners[1].steps_done < 80 * 10
    x1 = xs[1]
    assert (x1 - opt).norm() > 0.5  # it stopped far from the global optimum ...
    err = (xs[[0, 2, 3]] - x1).norm(dim=1).max().item()
    assert err < 1e-3, err  # ... and the survivors agree with the parameters it left behind
