"""Each algorithm's rule against a hand-computed case, on inputs where the rule matters:
unequal shard sizes, unequal degrees, stale updates, non-uniform class mixes, a worse
mutant. Symmetric inputs (equal shards, a ring) give the same answer under several rules,
so they cannot tell the right one from a plausible wrong one; these can (docs/mutation.md
lists the mutant each test kills)."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import torch

from simbench.algorithms import ALGORITHMS
from simbench.algorithms.dsgd import DSGD, DSGDParams
from simbench.algorithms.fedavg import FedAvg, FedAvgParams
from simbench.algorithms.fegan import FeGanParams, FeGanServer
from simbench.algorithms.lipizzaner import LipizzanerCell, LipizzanerParams, mutate_weights
from simbench.core.node import NodeContext
from simbench.data.partition import iid
from simbench.experiment.config import parse_config
from simbench.topology.mixing import metropolis_hastings_weights

from simhelpers import QuadLearner, Scripted, make_world


class Target(QuadLearner):
    """A learner whose every training step moves it straight to ``c`` (SGD with lr 1 on
    1/2 |x - c|^2), or leaves it where it is (``still``: lr 0): what a round sends is known."""

    def __init__(self, c, n: int = 1, still: bool = False, x0=None):
        c = torch.as_tensor(c, dtype=torch.float32)
        x0 = torch.zeros_like(c) if x0 is None else torch.as_tensor(x0, dtype=torch.float32)
        super().__init__(c, x0, 0.0 if still else 1.0, spe=1)
        self.num_samples = n

    def train_steps(self, k):
        for _ in range(k):
            self.train_step()

    def idle(self):
        pass


# -- FedAvg -------------------------------------------------------------------------------------
def _fedavg_world(sizes, targets, **params):
    n = len(sizes) + 1
    graph = nx.star_graph(n - 1)
    roles = {0: "server", **{i: "worker" for i in range(1, n)}}
    p = FedAvgParams(**params)
    learners = {0: Target([0.0] * len(targets[0]), still=True), **{i: Target(targets[i - 1], sizes[i - 1]) for i in range(1, n)}}
    nodes = {i: FedAvg.make_node(NodeContext(node_id=i, role=roles[i], params=p, learner=learners[i], epochs=1,
                                             graph=graph, roles=roles, selection="any")) for i in range(n)}
    world = make_world(graph, nodes, roles=roles, latency=0.001, step_time=0.01)
    world.run()
    return learners


def test_fedavg_weights_each_update_by_its_shard_size():
    """McMahan et al.: x = sum_k n_k x_k / sum_k n_k. Shards of 1, 3 and 6 samples whose
    clients end at 10, 20 and 40 (first entry): (10 + 60 + 240) / 10 = 31, where the plain
    mean gives 23.33."""
    learners = _fedavg_world([1, 3, 6], [[10.0, -1.0], [20.0, 0.0], [40.0, 5.0]], rounds=1)
    assert learners[0].flat.tolist() == pytest.approx([31.0, (-1 + 0 + 30) / 10])


class FakeRt:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def online(self, nodes):
        return list(nodes)


def test_fedavg_samples_distinct_clients():
    """C K clients without replacement: with C = 1 every client, once, every round; with
    C = 0.5 of 6, three distinct ones."""
    roles = {0: "server", **{i: "worker" for i in range(1, 7)}}
    ctx = NodeContext(node_id=0, role="server", params=FedAvgParams(frac_clients=0.5), roles=roles, selection="any")
    server = FedAvg.make_node(ctx)
    assert server.group_size() == 3
    rt = FakeRt(0)
    for _ in range(50):
        assert server.choose(rt, 6) == [1, 2, 3, 4, 5, 6]
        chosen = server.choose(rt, 3)
        assert len(set(chosen)) == 3 and chosen == sorted(chosen)


def test_fedavg_round_trains_each_client_once_with_all_clients():
    learners = _fedavg_world([2, 2, 2, 2], [[1.0]] * 4, rounds=3)
    assert [learners[i].steps_done for i in range(1, 5)] == [3, 3, 3, 3]


# -- D-SGD --------------------------------------------------------------------------------------
def _dsgd_one_round(graph, x0, **params):
    # The seed's D-SGD mixes what it received at the previous swap: two steps, one swap on
    # every edge in between, so the second step's mix is one round of the rule.
    p = DSGDParams(**{"round_cnt": 1, **params})
    learners = {i: Target(x0[i], still=True, x0=x0[i]) for i in graph.nodes}
    nodes = {i: DSGD.make_node(NodeContext(node_id=i, role="worker", params=p, learner=learners[i], epochs=2,
                                           graph=graph)) for i in graph.nodes}
    make_world(graph, nodes, latency=0.001, step_time=0.01).run()
    return [float(learners[i].flat[0]) for i in sorted(graph.nodes)]


def test_dsgd_seed_mixing_uses_the_self_weight():
    """Seed 003: x_i <- (w x_i + sum_j x_j) / (w + |N_i|). Path 0-1-2 at x = 0, 1, 5 with w = 3:
    node 0 (3*0 + 1)/4, node 1 (3*1 + 0 + 5)/5, node 2 (3*5 + 1)/4."""
    xs = _dsgd_one_round(nx.path_graph(3), [[0.0], [1.0], [5.0]], weight=3.0)
    assert xs == pytest.approx([0.25, 1.6, 4.0])
    plain = _dsgd_one_round(nx.path_graph(3), [[0.0], [1.0], [5.0]])
    assert plain == pytest.approx([0.5, 2.0, 3.0])  # w = 1: the closed-neighbourhood mean


def test_dsgd_metropolis_weights_use_the_larger_degree_of_each_pair():
    """W_ij = 1/(1 + max(d_i, d_j)) on the path 0-1-2 (degrees 1, 2, 1): every edge 1/3, so
    node 0 keeps 2/3: x = 0, 1, 5 mix to 1/3, (0 + 1 + 5)/3, 2/3*5 + 1/3."""
    xs = _dsgd_one_round(nx.path_graph(3), [[0.0], [1.0], [5.0]], mixing="metropolis")
    assert xs == pytest.approx([1 / 3, 2.0, 11 / 3])


def test_dsgd_metropolis_on_a_star_with_a_pendant():
    """Star 0-{1,2,3} and a pendant 4 on node 3: degrees 3, 1, 1, 2, 1. W_03 = 1/4, W_34 = 1/3,
    so node 3 keeps 1 - 1/4 - 1/3 = 5/12 and node 4 keeps 2/3."""
    g = nx.star_graph(3)
    g.add_edge(3, 4)
    x0 = [[0.0], [4.0], [8.0], [12.0], [24.0]]
    xs = _dsgd_one_round(g, x0, mixing="metropolis")
    assert xs[3] == pytest.approx(5 / 12 * 12 + 0 / 4 + 24 / 3)
    assert xs[4] == pytest.approx(2 / 3 * 24 + 12 / 3)
    assert xs[0] == pytest.approx(0.25 * (4 + 8 + 12))
    assert xs[1] == pytest.approx(0.75 * 4 + 0.25 * 0)


def test_metropolis_matrix_on_unequal_degrees():
    g = nx.star_graph(3)
    g.add_edge(3, 4)
    w = metropolis_hastings_weights(g)
    assert w[0].tolist() == pytest.approx([1 / 4, 1 / 4, 1 / 4, 1 / 4, 0])
    assert w[1].tolist() == pytest.approx([1 / 4, 3 / 4, 0, 0, 0])
    assert w[3].tolist() == pytest.approx([1 / 4, 0, 0, 5 / 12, 1 / 3])
    assert w[4].tolist() == pytest.approx([0, 0, 0, 1 / 3, 2 / 3])


# -- edge-consensus ADMM/PDMM: the reference's plain primal step ---------------------------------
class Layered(QuadLearner):
    """f = 1/2 |x - c|^2 on a flat vector that names two layers, as a model would: ``a`` (one
    neuron on 4 inputs: weight (1, 4), bias (1,)) and ``b`` (one input: weight (1, 1), bias
    (1,)). The reference's metric sqrt(dim_num) is sqrt(4) = 2 on a's 5 values (the bias takes
    its weight's fan-in) and sqrt(1) = 1 on b's 2."""

    LAYERS = (("a.weight", (1, 4)), ("a.bias", (1,)), ("b.weight", (1, 1)), ("b.bias", (1,)))

    def named_tensors(self):
        out, at = {}, 0
        for name, shape in self.LAYERS:
            n = math.prod(shape)
            out[name] = self.flat[at:at + n].view(shape)
            at += n
        return out


class Inline:
    """Just enough runtime for one ``primal`` call: the computation runs at once."""

    async def compute(self, fn, cost=None):
        return fn()


def _ecl_primal(algo: str, node_id: int, received: dict, **params) -> torch.Tensor:
    """One primal step of ``node_id`` on the path 0-1-2 at x = 1 with gradient 0.5 (c = 0.5),
    lr 0.1 (mu = 10), after ``received[j] = (dual, parameters or None)`` came in on edge (i, j)."""
    p = parse_config({"name": "t", "nodes": 3, "topology": {"kind": "line"}, "algorithm": {"name": algo, **params},
                      "dataset": {"name": "synthetic"}}).algorithm_params
    learner = Layered(torch.full((7,), 0.5), torch.ones(7), 0.1)
    node = ALGORITHMS[algo].make_node(NodeContext(node_id=node_id, role="worker", params=p, learner=learner,
                                                  epochs=1, graph=nx.path_graph(3)))
    for j, (z, s) in received.items():  # the wire format: [dual, parameters], or the dual alone
        node.receive(j, torch.full((7,), z) if s is None else torch.cat([torch.full((7,), z), torch.full((7,), s)]))
    asyncio.run(node.primal(Inline()))
    return learner.flat


@pytest.mark.parametrize("algo", ["pdmm", "admm"])
def test_ecl_plain_primal_is_the_references_per_layer_step(algo):
    """edge-consensus-learning ``PdmmSGD.update``/``AdmmSGD.update`` (``edgecons/pdmm_sgd.py``,
    ``admm_sgd.py``), per layer with m = sqrt(fan-in), E = deg(i), eta 1, rho 0.1, mu 10:
    x <- (mu x - g + m eta/E sum_j A_ij zbar_ij + m rho/E sum_j s_ij) / (mu + m (eta + rho)).
    x = 1, g = 0.5; node 1 (E = 2) got (z, s) = (2, 3) from node 0 (A = -1) and (-1, 1) from
    node 2 (A = +1); node 0 (E = 1) got (2, 3) from node 1 (A = +1).
      pdmm node 1: (9.5 + m/2 (-2 - 1) + m 0.05 (3 + 1)) / (10 + 1.1 m) = (9.5 - 1.3 m)/(10 + 1.1 m)
      pdmm node 0: (9.5 + 2 m + 0.3 m) / (10 + 1.1 m)
    ADMM steps with the running dual average, here (x0 + z)/2 = 1.5 and 0:
      admm node 1: (9.5 + m/2 (-1.5 + 0) + 0.2 m) / (10 + 1.1 m) = (9.5 - 0.55 m)/(10 + 1.1 m)
      admm node 0: (9.5 + 1.5 m + 0.3 m) / (10 + 1.1 m)
    at m = 2 on layer a's 5 values, m = 1 on b's 2. simbench's argmin step (the old default)
    moved every value alike: node 1 pdmm 1 - 0.1 (0.5 + (2 + 3)/2.8) = 0.7714."""
    mid = _ecl_primal(algo, 1, {0: (2.0, 3.0), 2: (-1.0, 1.0)})
    end = _ecl_primal(algo, 0, {1: (2.0, 3.0)})
    if algo == "pdmm":
        want_mid, want_end = (6.9 / 12.2, 8.2 / 11.1), (14.1 / 12.2, 11.8 / 11.1)
    else:
        want_mid, want_end = (8.4 / 12.2, 8.95 / 11.1), (13.1 / 12.2, 11.3 / 11.1)
    for got, (a, b) in ((mid, want_mid), (end, want_end)):
        assert got.tolist() == pytest.approx([a] * 5 + [b] * 2, rel=1e-6)


def test_ecl_plain_primal_rho_0_drops_the_proximity_and_sends_the_dual_alone():
    """rho = 0 (the reference's ``is_state = False``): no s term, coefficient mu + m eta, and the
    swap carries the dual only. pdmm node 1 as above: (9.5 - 1.5 m) / (10 + m); the old
    ``argmin`` rule stays reachable and moves every layer alike."""
    mid = _ecl_primal("pdmm", 1, {0: (2.0, None), 2: (-1.0, None)}, rho=0.0)
    assert mid.tolist() == pytest.approx([6.5 / 12] * 5 + [8.0 / 11] * 2, rel=1e-6)
    p = parse_config({"name": "t", "nodes": 3, "topology": {"kind": "line"},
                      "algorithm": {"name": "pdmm", "primal": "argmin"}, "dataset": {"name": "synthetic"}}).algorithm_params
    learner = Layered(torch.full((7,), 0.5), torch.ones(7), 0.1)
    node = ALGORITHMS["pdmm"].make_node(NodeContext(node_id=1, role="worker", params=p, learner=learner, epochs=1,
                                                    graph=nx.path_graph(3)))
    node.receive(0, torch.full((7,), 2.0))
    node.receive(2, torch.full((7,), -1.0))
    asyncio.run(node.primal(Inline()))
    assert learner.flat.tolist() == pytest.approx([1 - 0.1 * (0.5 + 5 / 2.8)] * 7, rel=1e-6)


def test_ecl_local_steps_belong_to_the_argmin_primal():
    from simbench.core.schema import ConfigError

    with pytest.raises(ConfigError, match="^algorithm.local_steps: 3 optimizer steps per step are the argmin primal's"):
        parse_config({"name": "t", "nodes": 3, "algorithm": {"name": "admm", "local_steps": 3}, "dataset": {"name": "synthetic"}})
    assert parse_config({"name": "t", "nodes": 3, "algorithm": {"name": "admm", "primal": "argmin", "local_steps": 3},
                         "dataset": {"name": "synthetic"}}).algorithm_params.local_steps == 3


def test_ecl_metric_follows_the_references_dim_num():
    """``AdmmSGD.__init__``'s ``dim_num``: the fan-in of a weight of 2+ dims (conv: in x kh x kw),
    a 1-d weight's length (GroupNorm), and a bias takes the last weight's (1 before any weight,
    or for a name without the ``.weight`` suffix)."""
    from simbench.algorithms.admm import layer_dims  # here: the module's other tests run without it

    shapes = [("conv.weight", (8, 3, 3, 3)), ("conv.bias", (8,)), ("gn.weight", (8,)), ("gn.bias", (8,)),
              ("fc.weight", (10, 72)), ("fc.bias", (10,))]
    assert layer_dims(shapes) == [27, 27, 8, 8, 72, 72]
    assert layer_dims([("bias", (4,)), ("weight", (4, 5))]) == [1, 1]


# -- the asynchronous parameter server: Zhang et al.'s staleness rule ----------------------------
def test_staleness_aware_server_divides_a_stale_update_by_its_staleness():
    """Zhang et al. (IJCAI 2016): an update of staleness s > 1 is applied as g / s. Four
    workers pull version 0 and push one entry each in turn: staleness 0, 1, 2, 3, so
    the steps are 1, 1, 1/2, 1/3 (lr 0.1); multiplying would give 1, 1, 2, 3."""
    from simbench.experiment.build import build_nodes
    from simbench.experiment.config import parse_config
    from simbench.metrics.recorder import Recorder
    from simbench.sim.world import SimWorld
    scripts = {w: [(0.1 * w, [w - 1], [1.0])] for w in (1, 2, 3, 4)}
    cfg = parse_config({"name": "t", "seed": 0, "nodes": 5, "topology": {"kind": "star"},
                        "dataset": {"name": "digits", "partition": "iid"}, "model": {"name": "logistic"},
                        "train": {"epochs": 1, "batch_size": 16, "lr": 0.1, "eval_samples": 50},
                        "network": {"latency": "5ms"}, "output": {"wall_clock": False, "plot": False, "progress": False},
                        "algorithm": {"name": "ps_async", "handle_time": "1ms", "staleness_aware": True}})
    built = build_nodes(cfg)
    x0 = built.nodes[0].learner.get_flat().clone()
    nodes = {0: built.nodes[0], **{w: Scripted(0, s) for w, s in scripts.items()}}
    SimWorld(built.graph, nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
             scenario=cfg.scenario, profiles=built.profiles, recorder=Recorder("t"), seed=0).run()
    step = torch.zeros_like(x0)
    step[:4] = torch.tensor([1.0, 1.0, 1 / 2, 1 / 3])
    assert torch.allclose(built.nodes[0].learner.get_flat(), x0 - 0.1 * step, atol=1e-7)


# -- FeGAN ----------------------------------------------------------------------------------------
def test_fegan_weights_are_the_senders_own_scores():
    """Devices 1..4 hold class counts [4, 0], [2, 2], [0, 4], [4, 4]: q = (1/2, 1/2), N = 20,
    scores e = (0.2 ln 2, 0, 0.2 ln 2, 0). Senders 2 and 3 under ``exp``: weights
    (1, 2^0.2) / (1 + 2^0.2); under ``linear``: (0, 1); senders in another order follow them."""
    roles = {0: "server", 1: "worker", 2: "worker", 3: "worker", 4: "worker"}
    counts = {1: [4.0, 0.0], 2: [2.0, 2.0], 3: [0.0, 4.0], 4: [4.0, 4.0]}

    def server(scheme):
        s = FeGanServer(NodeContext(node_id=0, role="server", params=FeGanParams(weight_scheme=scheme), roles=roles))
        s.counts = {d: np.array(c) for d, c in counts.items()}
        return s

    b = 2 ** 0.2
    assert server("exp").weights([2, 3]) == pytest.approx([1 / (1 + b), b / (1 + b)])
    assert server("exp").weights([3, 4]) == pytest.approx([b / (1 + b), 1 / (1 + b)])
    assert server("linear").weights([2, 3]) == pytest.approx([0.0, 1.0])
    assert server("linear").weights([1, 3, 4]) == pytest.approx([0.5, 0.5, 0.0])
    assert server("exp").weights([3, 2]) == pytest.approx([b / (1 + b), 1 / (1 + b)])  # the senders' order
    # with a backup server the devices are 2..5: a device's row is found by its id, not id - 1
    roles = {0: "server", 1: "server", 2: "worker", 3: "worker", 4: "worker", 5: "worker"}
    counts = {d + 1: c for d, c in counts.items()}
    assert server("linear").weights([3, 4]) == pytest.approx([0.0, 1.0])


# -- Lipizzaner's mixture ES ---------------------------------------------------------------------
class ScriptedFid:
    def __init__(self, scores):
        self.scores = list(scores)

    def fid(self, samples):
        return self.scores.pop(0)


def _es_cell(scores, generations):
    cell = LipizzanerCell.__new__(LipizzanerCell)  # only the ES state: no model, no grid
    cell.ctx = SimpleNamespace(workload=ScriptedFid(scores))
    cell.params = LipizzanerParams(es_generations=generations, mixture_sigma=0.3, fid_batch=4)
    cell.weights = {0: 0.5, 1: 0.3, 2: 0.2}
    cell.mixture = lambda cells, w: SimpleNamespace(sample=lambda n: torch.zeros(n))
    return cell


def test_mixture_es_never_keeps_a_worse_mixture():
    """The (1+1)-ES keeps the mutated weights only on a strictly lower FID. Generation 1: the
    mutant scores 60 against 50, rejected; generation 2: 40 against 50, kept. The result is
    the second mutant of the *starting* weights, score 40."""
    start = np.array([0.5, 0.3, 0.2])
    cell = _es_cell([50.0, 60.0, 50.0, 40.0], 2)
    cell._evolve_weights([0, 1, 2], np.random.default_rng(5))
    rng = np.random.default_rng(5)
    mutate_weights(start, 0.3, rng)
    second = mutate_weights(start, 0.3, rng)
    assert [cell.weights[c] for c in (0, 1, 2)] == pytest.approx(second.tolist())
    assert cell.score == 40.0
    worse = _es_cell([50.0, 51.0], 1)
    worse._evolve_weights([0, 1, 2], np.random.default_rng(5))
    assert [worse.weights[c] for c in (0, 1, 2)] == pytest.approx(start.tolist()) and worse.score == 50.0


# -- the iid split ------------------------------------------------------------------------------
def test_iid_split_shuffles_before_cutting():
    """On labels sorted by class (10 classes x 30), each of 3 iid shards holds every class,
    about 10 of each; cutting without shuffling gives shard 0 only classes 0-3. The shards
    are the seeded permutation cut into near-equal parts."""
    labels = np.repeat(np.arange(10), 30)
    parts = iid(labels, 3, np.random.default_rng(0))
    assert [len(p) for p in parts] == [100, 100, 100]
    for p in parts:
        counts = np.bincount(labels[p], minlength=10)
        assert (counts > 0).all() and counts.max() <= 20
    perm = np.random.default_rng(0).permutation(300)
    assert [p.tolist() for p in parts] == [sorted(perm[:100]), sorted(perm[100:200]), sorted(perm[200:])]
    assert math.isclose(sum(len(p) for p in iid(labels, 7, np.random.default_rng(1))), 300)


def test_dsgd_reports_whole_epoch_numbers():
    """Epochs are reported as integers 0, 1, 2 (they key the per-epoch tables), not 1.0, 2.0."""
    graph = nx.path_graph(2)
    seen = []
    nodes = {}
    for i in graph.nodes:
        node = DSGD.make_node(NodeContext(node_id=i, role="worker", params=DSGDParams(round_cnt=1),
                                          learner=Target([0.0], still=True, x0=[0.0]), epochs=2, graph=graph))
        node.end_epoch = lambda rt, epoch, i=i: seen.append((i, epoch))
        nodes[i] = node
    make_world(graph, nodes, latency=0.001, step_time=0.01).run()
    assert sorted(seen) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert all(type(epoch) is int for _, epoch in seen)
