"""P2P algorithms (dsgd, gossip, ECL admm/pdmm(+isvr), cadmm) on a strongly convex problem
with a known optimum: f_i(x) = 1/2 |x - c_i|^2 on a ring, optimum mean(c_i)."""

from __future__ import annotations


import networkx as nx
import numpy as np
import pytest
import torch

from simhelpers import QuadLearner, events, make_world, net  # noqa: E402

from simbench.algorithms import ALGORITHMS  # noqa: E402
from simbench.algorithms.kit import swap_slots  # noqa: E402
from simbench.core.message import Message  # noqa: E402
from simbench.core.node import NodeContext  # noqa: E402
from simbench.core.scenario import ComputeSpec, Crash, Scenario  # noqa: E402
from simbench.core.seeding import WorldStreams  # noqa: E402
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
    LAST["end"], LAST["world"] = world.now, world
    xs = torch.stack([learners[i].flat for i in range(n)])
    return xs, c.mean(0), learners


def fast(algo: str) -> dict:
    """Parameters that converge in a few hundred steps: a swap every other step (K = 2)."""
    return {"rho": 0.5} if algo == "cadmm" else {"round_cnt": 2}


@pytest.mark.parametrize("algo", ["admm", "pdmm", "admm_isvr", "pdmm_isvr", "cadmm"])
def test_primal_dual_reach_global_optimum_on_ring(algo):
    kw = fast(algo)
    xs, opt, _ = simulate(algo, epochs=40, **kw)
    assert torch.isfinite(xs).all()
    err = (xs - opt).norm(dim=1).max().item()
    assert err < 1e-4, f"{algo}: max |x_i - x*| = {err:.4g}"


@pytest.mark.parametrize("algo", ["admm", "pdmm"])
def test_plain_ecl_settles_at_the_degree_weighted_optimum_on_a_path(algo):
    """The reference's primal step (edge-consensus-learning ``AdmmSGD.update``/``PdmmSGD.update``)
    weighs each edge by eta/E_i, E_i the node's degree; at a fixed point sum_i g_i(x) E_i / eta = 0,
    so on the path 0-1-2 (degrees 1, 2, 1) the nodes agree on (c_0 + 2 c_1 + c_2)/4, the optimum
    of sum_i E_i f_i, not on mean(c_i). simbench's argmin step weighs by 1/eta_i of the derived
    eta (K E_i + K - E_i: 3, 4, 3 at K = 2) and settles elsewhere."""
    c = targets(3)
    degree_weighted = (c[0] + 2 * c[1] + c[2]) / 4
    xs, opt, _ = simulate(algo, n=3, graph=nx.path_graph(3), epochs=80, round_cnt=2)
    assert (xs - degree_weighted).norm(dim=1).max().item() < 1e-4
    assert (degree_weighted - opt).norm().item() > 0.5
    old, _, _ = simulate(algo, n=3, graph=nx.path_graph(3), epochs=80, round_cnt=2, primal="argmin")
    assert (old - (3 * c[0] + 4 * c[1] + 3 * c[2]) / 10).norm(dim=1).max().item() < 1e-4


@pytest.mark.parametrize("algo", ["dsgd", "gossip"])
def test_diffusion_methods_reach_optimum_up_to_an_lr_bias(algo):
    """Constant-step D-SGD and push gossip stop at O(lr |c_i - mean c|) from x*: the network
    mean is exact, the per-node bias shrinks with lr. (Seed 003's gossip does not conserve
    the mean: tests/algorithms/test_gossip.py.)"""
    errs = {}
    # seed 003's D-SGD mixes with the neighbours' last *sent* (mixed) states, which do not hold
    # their newest gradient step yet: the mean moves at lr / (deg + 1) and needs more steps
    kw = dict(fast(algo), epochs=200) if algo == "dsgd" else {"epochs": 40, "variant": "push"}
    for lr in (0.1, 0.02):
        xs, opt, _ = simulate(algo, lr=lr, **kw)
        assert (xs.mean(0) - opt).norm().item() < 0.05  # averaging conserves the mean
        errs[lr] = (xs - opt).norm(dim=1).max().item()
    assert errs[0.02] < 0.6 and errs[0.02] < 0.4 * errs[0.1], errs


@pytest.mark.parametrize("algo", ["admm", "pdmm", "admm_isvr", "pdmm_isvr", "cadmm"])
def test_primal_dual_reach_consensus_where_local_sgd_does_not(algo):
    kw = fast(algo)
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
    xs, opt, _ = simulate(algo, epochs=60, piw=piw, use_gcoef=gcoef, round_cnt=2)
    assert (xs - opt).norm(dim=1).max().item() < 1e-2


@pytest.mark.parametrize("algo", ["admm_isvr", "pdmm_isvr", "admm"])
def test_async_step_converges(algo):
    xs, opt, _ = simulate(algo, epochs=60, async_step=True, latency=0.0005, round_cnt=2)
    assert (xs - opt).norm(dim=1).max().item() < 5e-2


def test_dsgd_async_step_skips_the_round_barrier():
    # latency of 3 steps: the round step waits for the neighbours at the end of every round of K
    # steps, async_step does not; both swap at the same slots and land on the same point
    sync, opt, _ = simulate("dsgd", epochs=20, lr=0.1, latency=0.006, round_cnt=5)
    t_sync = LAST["end"]
    asyn, _, la = simulate("dsgd", epochs=20, lr=0.1, latency=0.006, round_cnt=5, async_step=True)
    assert LAST["end"] < t_sync
    assert all(lr.steps_done == 200 for lr in la.values())
    assert (asyn - sync).norm(dim=1).max().item() < 0.1


@pytest.mark.parametrize("algo", P2P)
def test_crashed_neighbour_does_not_block(algo):
    kw = {"rho": 0.5} if algo == "cadmm" else {}
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


def test_sleep_factor_rests_each_node_differently_after_each_epoch():
    """Seed 003's ``--sleep_factor`` (nttcslab/ecl-isvr ``trainer/abstracts.py``, ``Trainer.train``,
    lines 473-479): after each epoch a node sleeps ``train_proc * (0.5 + 0.5 f u)`` with u from
    its own stream, so nodes differ. Without links an epoch takes T = 10 steps x 2 ms exactly."""
    f, n, epochs, t_epoch = 2.0, 4, 6, 10 * 0.002
    simulate("dsgd", n=n, epochs=epochs, graph=nx.empty_graph(n), scenario=Scenario(sleep_factor=f))
    rests = {i: [v for _t, node, v in events(LAST["world"], "sleep_proc") if node == i] for i in range(n)}
    for i in range(n):
        u = WorldStreams(0, n).sleep(i).random(epochs)
        assert rests[i] == pytest.approx(list(t_epoch * (0.5 + 0.5 * f * u)), rel=1e-9)
    firsts = [rests[i][0] for i in range(n)]
    assert len(set(firsts)) == n  # nodes rest differently (the old rule: f x every step, alike)
    every = np.concatenate([rests[i] for i in range(n)]) / t_epoch
    assert every.min() >= 0.5 and every.max() < 0.5 + 0.5 * f
    # the run ends after each node's epochs and its rests (the last epoch's rest is never taken)
    slowest = max(epochs * t_epoch + sum(rests[i][:-1]) for i in range(n))
    assert LAST["end"] == pytest.approx(slowest, abs=1e-6)


def test_no_sleep_without_a_factor():
    simulate("dsgd", n=2, epochs=3, graph=nx.empty_graph(2))
    assert events(LAST["world"], "sleep_proc") == []
    assert LAST["end"] == pytest.approx(3 * 10 * 0.002, abs=1e-6)


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


def swap_bytes(kind: str, width: int = 1) -> int:
    """Encoded size of one swap request plus its answer carrying a (width x DIM)-vector."""
    x = torch.zeros(DIM * width)
    return sum(len(Message(f"{kind}_{k}", {}, {"x": x}).encode(0)) for k in ("swap", "reply"))


@pytest.mark.parametrize("algo,kind,kw,width", [("dsgd", "params", {}, 1), ("gossip", "params", {}, 1),
                                                ("pdmm_isvr", "dual", {}, 1),
                                                ("admm", "dual", {}, 2), ("pdmm", "dual", {"rho": 0.0}, 1),
                                                ("admm", "dual", {"primal": "argmin"}, 1)])
def test_each_edge_swaps_once_per_round_at_each_end(algo, kind, kw, width):
    """Seed 003's schedule (nttcslab/ecl-isvr ``edgecons/contract.py`` ``swap_params``/``round_update``,
    ``edgecons/mnw/edge.py`` ``is_swap_cnt``): node i swaps with a neighbour only at that edge's
    slot of each round of K steps, and the neighbour answers with its own buffer. Hand figure
    for a 4-ring, K = 10 = steps per epoch, 2 epochs: per node and epoch 1 round x 2 edges x
    (one swap it starts + one it answers) = 4 messages of 4 x DIM = 16 tensor bytes: 64 bytes
    of payload per epoch (the old exchange sent every step: 20 messages, 320 bytes). Plain
    admm/pdmm with the reference's primal and rho > 0 send their parameters with the dual
    (edge-consensus-learning ``Edge.update`` fills ``state`` and ``dual``): width 2, 128 bytes."""
    n, epochs, spe, k = 4, 2, 10, 10
    simulate(algo, n=n, epochs=epochs, round_cnt=k, async_step=True, **kw)
    world = LAST["world"]
    rounds = epochs * spe // k
    reference_payload_per_epoch = (spe // k) * 2 * 2 * 4 * DIM * width
    assert reference_payload_per_epoch == 64 * width
    bye = len(Message(f"{kind}_done").encode(0))  # and a goodbye to each neighbour at the end
    for i in range(n):
        assert world.network.msgs_sent[i] == rounds * 2 * 2 + 2
        assert world.network.bytes_sent[i] == rounds * 2 * swap_bytes(kind, width) + 2 * bye
        payload = (world.network.msgs_sent[i] - 2) * 4 * DIM * width / epochs
        assert payload == reference_payload_per_epoch
    assert events(world, f"{kind}_timeouts") == []


def test_round_step_adds_a_small_barrier_message_per_edge_and_round():
    """Without ``async_step`` a node also tells each neighbour that its round is done (the
    reference's ``Contract._round_step``): deg tensor-free messages per round (and, at the
    end, a goodbye to each neighbour)."""
    simulate("dsgd", n=4, epochs=2, round_cnt=10)
    net_ = LAST["world"].network
    assert all(net_.msgs_sent[i] == 2 * (2 * 2 + 2) + 2 for i in range(4))


def test_swap_slots_follow_the_seeds_ring_schedule():
    """``conf/node_list.n8.ring.round8.json`` of nttcslab/ecl-isvr: node i swaps with i-1 at step i
    and with i+1 at step i+4 of a round of 8 (its node7 -> node0 entry, 0, is a hand-made
    exception to the pattern)."""
    for i in range(7):
        assert swap_slots(i, [(i - 1) % 8, (i + 1) % 8], 8, 8) == {(i - 1) % 8: i, (i + 1) % 8: (i + 4) % 8}


def test_admm_isvr_takes_the_received_dual_as_the_seed_does():
    """The seed's AdmmISVR (nttcslab/ecl-isvr ``edgecons/ecl.py``, ``Ecl.step``; ``edge.py`` replaces
    ``prm_dual["rcv"]`` on a swap) is PdmmISVR's code unless piw == 2: no averaging on receipt.
    The old admm_isvr averaged, z <- (z + y)/2; that is now the ``theta: 0.5`` option."""
    a, _, _ = simulate("admm_isvr", epochs=3)
    p, _, _ = simulate("pdmm_isvr", epochs=3)
    assert torch.equal(a, p)
    relaxed, _, _ = simulate("admm_isvr", epochs=3, theta=0.5)
    assert (relaxed - a).abs().max().item() > 1e-3


@pytest.mark.parametrize("algo,piw,averages", [("admm_isvr", 1.0, False), ("admm_isvr", 2.0, True),
                                                ("pdmm_isvr", 1.0, False), ("admm", 1.0, True), ("pdmm", 1.0, False)])
def test_dual_average_only_where_the_seed_averages(algo, piw, averages):
    """``Ecl.step`` (ecl-isvr ``edgecons/ecl.py`` lines 62-68) averages the received dual, zbar <-
    (zbar + z)/2 every step from zbar = the initial parameters (``mnw/edge.py`` line 42), only when
    piw == 2; plain ADMM always does (edge-consensus-learning ``edgecons/admm_sgd.py``, ``dual_avg``)."""
    g = nx.cycle_graph(4)
    x0 = torch.arange(float(DIM))
    node = ALGORITHMS[algo].make_node(NodeContext(node_id=0, role="worker", params=params_of(algo, piw=piw),
                                                  learner=QuadLearner(torch.zeros(DIM), x0, 0.1), graph=g))
    assert node.averaging is averages
    z = torch.full((DIM,), 4.0)
    for j in node.z:
        node.z[j].copy_(z)
    node.average_duals()
    node.average_duals()
    want = ((x0 + z) / 2 + z) / 2 if averages else z
    for j in node.z:
        assert torch.allclose(node.zbar[j], want)
    forced = ALGORITHMS[algo].make_node(NodeContext(node_id=0, role="worker", params=params_of(algo, piw=piw, dual_avg=not averages),
                                                    learner=QuadLearner(torch.zeros(DIM), x0, 0.1), graph=g))
    assert forced.averaging is (not averages)


@pytest.mark.parametrize("name", ["dsgd", "pdmm_isvr"])
def test_a_node_that_finishes_first_lets_its_neighbours_finish_without_timeouts(name, tmp_path):
    """1,797 digits over 4 nodes: shards of 449 and 450 images, so nodes take different numbers of
    steps. With no swap timeout, a neighbour still running would wait forever for the answer or
    round of a node that has finished; the finished node's goodbye releases it."""
    from simbench.experiment.run import run_experiment

    cfg = parse_config({"name": "uneven", "seed": 0, "nodes": 4, "topology": {"kind": "ring"},
                        "algorithm": {"name": name, "swap_timeout": None},
                        "dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [16]}},
                        "train": {"epochs": 2, "batch_size": 16, "eval_samples": 100},
                        "output": {"plot": False, "wall_clock": False, "progress": False}})
    res = run_experiment(cfg, tmp_path)
    assert res.status == "finished"
    ep = res.epochs[res.epochs["node"] != "avg"]
    assert set(ep.groupby("node")["epoch"].max()) == {2}


def test_a_swap_request_that_comes_with_the_goodbye_is_answered_before_the_server_stops():
    """Peer 1 asks node 0 for a swap and says goodbye at once; both arrive at 1.0 s, the instant
    node 0's own last step ends. The request has woken node 0's server task, which has not run
    yet when node 0's finish finds the goodbye queued: finish lets it run before the node stops
    its server, so the request gets its answer (on real processes a request and a goodbye often
    come in one read of the socket, and the launch test's byte counts then differed)."""
    from simbench.algorithms.kit import EdgeSwaps

    class Finisher:
        async def run(self, rt):
            self.rcv = {1: torch.zeros(2)}
            swaps = EdgeSwaps("params", 0, [1], 2, 1, {1: torch.tensor([7.0, 8.0])}, self.rcv)
            server = rt.spawn(swaps.serve(rt), "swaps")
            await rt.sleep(1.0)  # timed before peer 1 sends: in the 1.0 s instant it wakes first
            await swaps.finish(rt, None)
            server.cancel()

    class Asker:
        async def run(self, rt):
            await rt.send(0, Message("params_swap", {}, {"x": torch.tensor([1.0, 2.0])}))
            await rt.send(0, Message("params_done"))
            self.reply = await rt.recv(timeout=5.0, match="params_reply")

    nodes = {0: Finisher(), 1: Asker()}
    world = make_world(nx.path_graph(2), nodes, latency=1.0)
    world.run()
    assert nodes[0].rcv[1].tolist() == [1.0, 2.0]
    assert nodes[1].reply is not None and nodes[1].reply.tensors["x"].tolist() == [7.0, 8.0]
