"""More of each algorithm's rules against hand-computed cases (docs/mutation.md), for the
algorithms and shared helpers that ``test_rules_algorithms.py`` does not reach: Ako's partial
exchange and SSP bound, DEGAN, MD-GAN, the synchronous parameter server, consensus ADMM,
FL-GAN / FeGAN, FedAvg's group size and client, and ``kit``'s round gathering, averaging
and step clock. Inputs are chosen where the rule matters (unequal shard or batch sizes,
unequal degrees, stale or late messages, non-uniform class mixes), and most tests drive a
node's coroutine on :class:`FakeRt`, a runtime without a simulator whose messages arrive
at scripted times, so each test runs in milliseconds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import torch

from simbench.algorithms import kit
from simbench.algorithms.ako import AkoParams, AkoWorker, auto_partitions, partition_bounds
from simbench.algorithms.cadmm import CADMMNode, CADMMParams, cadmm_dual, cadmm_grad
from simbench.algorithms.degan import DeganParams, DeganWorker, batches_of
from simbench.algorithms.fedavg import FedAvgClient, FedAvgParams, FedAvgServer
from simbench.algorithms.fegan import BalancedSampler, FeGanParams, FeGanServer, kl_scores, kl_weights
from simbench.algorithms.flgan import FedGanDevice, FedGanServer, FLGanParams
from simbench.algorithms.mdgan import MDGanParams, MDGanServer, MDGanWorker
from simbench.algorithms.ps import (PSSyncParams, PSSyncServer, ps_roles, servers_of, shard_ranges, workers_of)
from simbench.core.message import Message
from simbench.core.node import NodeContext
from simbench.core.runtime import matcher
from simbench.core.schema import ConfigError

from simhelpers import QuadLearner


# -- a runtime without a simulator ----------------------------------------------------------------
class FakeRt:
    """Messages arrive at scripted times (:meth:`deliver`); ``recv`` takes the oldest matching
    message that has arrived by ``now + timeout`` and moves the clock to its arrival (or to the
    deadline); ``compute`` and ``send`` take no time; ``spawn`` keeps a task for ``gather`` to run. What is
    sent, logged and spawned is recorded."""

    def __init__(self, node_id=0, neighbors=(), nodes=None, seed=0, online=None):
        self.node_id = node_id
        self.neighbors = tuple(neighbors)
        self.nodes = tuple(nodes) if nodes is not None else (node_id, *neighbors)
        self.t = 0.0
        self.queue: list[tuple[float, int, Message]] = []
        self.sent: list[tuple[float, int, Message]] = []
        self.logs: list[tuple[str, float]] = []
        self.log_kw: list[tuple[str, dict]] = []
        self.rng = np.random.default_rng(seed)
        self._online = online
        self.costs: list = []
        self.spawned: list = []

    def deliver(self, at, src, kind, meta=None, tensors=None):
        msg = Message(kind, dict(meta or {}), {k: torch.as_tensor(v, dtype=torch.float32) for k, v in (tensors or {}).items()})
        msg.src = src
        self.queue.append((at, len(self.queue), msg))
        self.queue.sort(key=lambda e: (e[0], e[1]))
        return msg

    def now(self):
        return self.t

    def log(self, name, value, **kw):
        self.logs.append((name, value))
        self.log_kw.append((name, kw))

    def logged(self, name):
        return [v for n, v in self.logs if n == name]

    async def send(self, dst, msg):
        copy = Message(msg.kind, dict(msg.meta), {k: v.clone() for k, v in msg.tensors.items()})
        copy.src = self.node_id
        self.sent.append((self.t, dst, copy))

    def sent_of(self, kind):
        return [(dst, m) for _t, dst, m in self.sent if m.kind == kind]

    async def recv(self, timeout=None, match=None):
        accept = matcher(match) or (lambda m: True)
        limit = math.inf if timeout is None else self.t + timeout
        for entry in self.queue:
            at, _seq, msg = entry
            if at <= limit and accept(msg):
                self.queue.remove(entry)
                self.t = max(self.t, at)
                return msg
        if timeout is None:
            raise AssertionError(f"node {self.node_id} would wait forever at t={self.t}")
        self.t = limit
        return None

    async def sleep(self, seconds):
        self.t += seconds

    async def compute(self, fn, *args, cost=None):
        self.costs.append(cost)
        return fn(*args)

    def spawn(self, coro, name=""):
        """Keep the coroutine (``gather`` runs it) and record its name."""
        self.spawned.append(name)
        return coro

    async def gather(self, *tasks):
        return [drive(t) for t in tasks]

    def online(self, nodes):
        return list(nodes) if self._online is None else [n for n in nodes if n in self._online(self.t)]


def drive(coro):
    """Run a coroutine that never really suspends (everything it awaits is FakeRt's)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


class Quad(QuadLearner):
    """1/2 |x - c|^2 with plain SGD of step ``lr`` (QuadLearner), and what nodes read of a
    learner besides: sample and batch counts, a device, idle. ``grads``: scripted gradients,
    one per ``compute_grad``, instead of x - c."""

    def __init__(self, c, x0=None, lr=1.0, spe=1, n=1, batch=1, grads=None):
        c = torch.as_tensor(c, dtype=torch.float32)
        x0 = torch.zeros_like(c) if x0 is None else torch.as_tensor(x0, dtype=torch.float32)
        super().__init__(c, x0, lr, spe=spe)
        self.num_samples, self.batch_size, self.device = n, batch, torch.device("cpu")
        self.scripted = None if grads is None else [torch.as_tensor(g, dtype=torch.float32) for g in grads]
        self.handed: list[torch.Tensor] = []

    def compute_grad(self):
        loss = super().compute_grad()
        if self.scripted is not None:
            self.grad = self.scripted.pop(0)
        return loss

    def set_grad_flat(self, g):
        self.handed.append(g.clone())
        super().set_grad_flat(g)

    def train_steps(self, k):
        for _ in range(k):
            self.train_step()

    idles = 0

    def idle(self):
        self.idles += 1

    def layer_slices(self):
        return [("w", 0, self.num_params, "fc")]


def ctx(node_id, params, learner=None, roles=None, **kw):
    return NodeContext(node_id=node_id, role=(roles or {}).get(node_id, "worker"), params=params, learner=learner,
                       roles=roles or {}, **kw)


def no_eval(node):
    """Replace a node's evaluation by a record of the epochs it reports."""
    node.ends = []
    node.end_epoch = lambda rt, epoch: node.ends.append(epoch)
    return node


# -- kit: averaging ---------------------------------------------------------------------------------
def test_average_weights_each_vector_by_its_weight_and_skips_zero_weights():
    """sum_k w_k v_k / sum_k w_k: weights 1, 3, 6 on 10, 20, 40 give 31 (the plain mean 23.3);
    a vector of weight 0 is never added (a NaN there does not spread)."""
    vs = [torch.tensor([10.0, -1.0]), torch.tensor([20.0, 0.0]), torch.tensor([40.0, 5.0])]
    assert kit.average(vs, [1, 3, 6]).tolist() == pytest.approx([31.0, 2.9])
    assert kit.average(vs).tolist() == pytest.approx([70 / 3, 4 / 3])
    assert kit.average(vs, [0.5, 1.5, 0.0]).tolist() == pytest.approx([17.5, -0.25])
    nan = torch.tensor([float("nan"), 1.0])
    assert kit.average([vs[0], nan], [2, 0]).tolist() == [10.0, -1.0]
    out = kit.average([vs[0]])
    out += 1
    assert vs[0].tolist() == [10.0, -1.0]  # a new tensor
    for bad in ([0, 0, 0], [1, -1, 0], [-1, -2, -3]):
        with pytest.raises(ValueError, match="positive sum"):
            kit.average(vs, bad)
    with pytest.raises(ValueError, match="nothing to average"):
        kit.average([])


# -- kit: gathering a round -----------------------------------------------------------------------
def _round_traffic(rt):
    rt.deliver(0.1, 1, "update", {"round": 1}, {"x": [1.0]})   # an older round: a straggler
    rt.deliver(0.2, 1, "update", {"round": 2}, {"x": [2.0]})
    rt.deliver(0.25, 1, "update", {"round": 2}, {"x": [99.0]})  # a duplicate: the first one counts
    rt.deliver(0.28, 2, "update", {"round": 0}, {"x": [3.0]})
    rt.deliver(0.3, 2, "update", {"round": 1}, {"x": [4.0]})   # 2's newest older round
    rt.deliver(0.4, 3, "update", {"round": 3}, {"x": [5.0]})   # a later round: left queued
    rt.deliver(0.5, 5, "update", {"round": 2}, {"x": [6.0]})   # not expected: dropped
    rt.deliver(0.6, 4, "other", {"round": 2}, {"x": [7.0]})    # another kind: left queued
    rt.deliver(2.0, 4, "update", {"round": 2}, {"x": [8.0]})   # after the deadline: left queued


def test_collect_round_takes_each_peers_round_message_and_stale_ones_only_when_asked():
    """Peers 1..4, round 2, 1 s: peer 1 comes in time (its first copy), peer 2 only with rounds
    0 and 1 (stale: the newest, round 1, enters), peer 3 only with round 3 (left queued for
    later), peer 4 after the deadline. Peer 5 is not expected."""
    rt = FakeRt()
    _round_traffic(rt)
    got = drive(kit.collect_round(rt, "update", 2, {1, 2, 3, 4}, 1.0, stale=True))
    assert {j: m.tensors["x"].item() for j, m in got.items()} == {1: 2.0, 2: 4.0}
    assert rt.logged("update_timeouts") == [3] and rt.logged("update_stale") == [1]
    assert rt.t == pytest.approx(1.0)
    assert [(m.src, m.kind, m["round"]) for _t, _s, m in rt.queue] == [(3, "update", 3), (4, "other", 2), (4, "update", 2)]

    rt = FakeRt()
    _round_traffic(rt)
    got = drive(kit.collect_round(rt, "update", 2, {1, 2, 3, 4}, 1.0))
    assert {j: m.tensors["x"].item() for j, m in got.items()} == {1: 2.0}
    assert rt.logged("update_timeouts") == [3] and rt.logged("update_stale") == []


def test_collect_round_stops_waiting_once_everyone_answered_and_waits_for_all_without_a_timeout():
    rt = FakeRt()
    rt.deliver(0.3, 2, "grad", {"round": 0})
    rt.deliver(0.7, 1, "grad", {"round": 0})
    rt.deliver(0.9, 3, "grad", {"round": 0})
    got = drive(kit.collect_round(rt, "grad", 0, {1, 2}, 5.0))
    assert sorted(got) == [1, 2] and rt.t == pytest.approx(0.7) and rt.logs == []
    rt = FakeRt()
    rt.deliver(30.0, 1, "grad", {"round": 0})
    assert sorted(drive(kit.collect_round(rt, "grad", 0, {1}, None))) == [1] and rt.t == 30.0


def test_drain_takes_only_what_has_arrived_and_drain_latest_keeps_each_senders_last():
    rt = FakeRt()
    rt.deliver(0.0, 1, "a", {"i": 0})
    rt.deliver(0.0, 2, "a", {"i": 1})
    rt.deliver(0.0, 1, "b", {"i": 2})
    rt.deliver(0.0, 1, "a", {"i": 3})
    rt.deliver(1.0, 2, "a", {"i": 4})  # not yet here
    latest = drive(kit.drain_latest(rt, "a"))
    assert {j: m["i"] for j, m in latest.items()} == {1: 3, 2: 1}
    assert [m["i"] for _t, _s, m in rt.queue] == [2, 4] and rt.t == 0.0


# -- kit: step clock, local work, roles --------------------------------------------------------------
def test_step_clock_reports_every_epoch_boundary_crossed():
    """3 steps per epoch, 2 epochs: steps of 2, 2 and 5 cross epoch 1 (at 3), then 2 and 3
    (at 6 and 9) in one advance; epoch 0 is reported by start only before any step."""
    node = SimpleNamespace(ctx=SimpleNamespace(epochs=2), learner=SimpleNamespace(steps_per_epoch=3))
    no_eval(node)
    clock = kit.StepClock(node)
    assert (clock.total, clock.left) == (6, 6)
    clock.start(None)
    clock.advance(None, 2)
    assert node.ends == [0] and clock.left == 4
    clock.advance(None, 2)
    assert node.ends == [0, 1] and clock.steps == 4
    clock.advance(None, 5)
    assert node.ends == [0, 1, 2, 3] and clock.left == -3
    clock.start(None)  # resumed after steps: no second epoch 0
    assert node.ends == [0, 1, 2, 3]


def test_local_work_is_steps_or_epochs_of_the_shard():
    p = lambda steps=None, epochs=None: SimpleNamespace(local_steps=steps, local_epochs=epochs)  # noqa: E731
    assert kit.local_work(p(steps=5), 3) == 5
    assert kit.local_work(p(epochs=2), 3) == 6
    assert kit.local_work(p(epochs=2), 0) == 2      # a shard of less than a batch: one step per epoch
    assert kit.local_work(p(), 3) == 3
    assert kit.local_work(p(), 0) == 1
    assert kit.local_work(p(), 3, default=100) == 100
    assert kit.local_work(p(epochs=2), 3, default=100) == 6
    kit.check_local_work(p(steps=1))
    kit.check_local_work(p(epochs=1))
    with pytest.raises(ConfigError, match="^algorithm.local_epochs: .* got local_steps 1 and local_epochs 2$"):
        kit.check_local_work(p(1, 2))


def test_swap_slots_spread_a_nodes_swaps_over_the_round():
    """The k-th neighbour, nearest below first (cyclically), swaps at (node + k gap) mod period,
    gap = period // degree: seed 003's ring of 8 (i - 1 at step i, i + 1 at step i + 4)."""
    assert kit.swap_slots(0, [1, 7], 8, 8) == {7: 0, 1: 4}
    assert kit.swap_slots(5, [6, 4], 8, 8) == {4: 5, 6: 1}
    # degree 3 on a period of 6: order 2 (distance 1), 6 (5), 4 (7); gap 2
    assert kit.swap_slots(3, [4, 6, 2], 8, 6) == {2: 3, 6: 5, 4: 1}
    assert kit.swap_slots(1, [0, 2, 3], 4, 2) == {0: 1, 3: 0, 2: 1}  # gap max(1, 2 // 3) = 1


def test_server_roles_take_the_declared_server_or_the_best_connected_lowest_id():
    g = nx.star_graph(3)
    g = nx.relabel_nodes(g, {0: 2, 2: 0})  # the hub is node 2
    assert kit.server_roles(g, "x") == {0: "worker", 1: "worker", 2: "server", 3: "worker"}
    k = nx.complete_graph(3)
    assert kit.server_roles(k, "x") == {0: "server", 1: "worker", 2: "worker"}
    k.nodes[1]["role"] = "server"
    assert kit.server_roles(k, "x")[1] == "server"
    with pytest.raises(ConfigError, match="^topology: x needs a server .* node 1 reaches only 2 of 3$"):
        kit.server_roles(nx.path_graph(4), "x")
    two = nx.complete_bipartite_graph(2, 3)
    two.add_edge(0, 1)
    assert kit.fed_roles(two, "x", 2) == {0: "server", 1: "server", 2: "worker", 3: "worker", 4: "worker"}
    with pytest.raises(ConfigError, match="^algorithm.num_servers: 5 servers leave no device among 5 nodes$"):
        kit.fed_roles(two, "x", 5)
    with pytest.raises(ConfigError, match=r"^topology: x needs server node 2 .*hubs: 3.* it reaches 2 of 4$"):
        kit.fed_roles(two, "x", 3)


# -- kit: the federated round -------------------------------------------------------------------------
def _fed_server(cls, params, clients=4, learner=None, selection="any"):
    roles = {0: "server", **{i: "worker" for i in range(1, clients + 1)}}
    node = cls(ctx(0, params, learner or Quad([0.0, 0.0], lr=1.0), roles, selection=selection))
    return no_eval(node)


def test_federated_server_chooses_among_the_online_clients():
    server = _fed_server(FedAvgServer, FedAvgParams(), clients=6, selection="online")
    rt = FakeRt(online=lambda t: {2, 4, 5})
    for _ in range(20):
        chosen = server.choose(rt, 2)
        assert len(set(chosen)) == 2 and set(chosen) <= {2, 4, 5} and chosen == sorted(chosen)
    assert server.choose(rt, 5) == [2, 4, 5]
    assert server.choose(FakeRt(online=lambda t: set()), 3) == []
    anyone = _fed_server(FedAvgServer, FedAvgParams(), clients=6, selection="any")
    assert anyone.choose(FakeRt(online=lambda t: set()), 6) == [1, 2, 3, 4, 5, 6]


def test_a_federated_round_waits_for_an_online_client_then_averages_by_shard_size():
    """Nobody is online before t = 2: the server looks again every second, logs the 2 s it
    waited, then sends the global model to the online clients 1, 2, 3 and sets it to the
    n-weighted mean of their updates (n = 1, 3, 6: 31, not 23.3); client 4 is offline."""
    server = _fed_server(FedAvgServer, FedAvgParams(), clients=4, selection="online")
    server.learner.set_flat(torch.tensor([5.0, 5.0]))
    rt = FakeRt(online=lambda t: {1, 2, 3} if t >= 2.0 else set())
    for j, (n, x) in {3: (6, [40.0, 5.0]), 1: (1, [10.0, -1.0]), 2: (3, [20.0, 0.0])}.items():
        rt.deliver(2.5 + 0.1 * j, j, "update", {"round": 0, "n": n}, {"x": x})
    updates = drive(server.train_round(rt))
    assert [u.src for u in updates] == [1, 2, 3]
    assert rt.logged("waited_for_clients") == [2.0] and rt.logged("clients_heard") == [3]
    assert [(dst, m["round"], m.tensors["x"].tolist()) for dst, m in rt.sent_of("global")] == \
        [(j, 0, [5.0, 5.0]) for j in (1, 2, 3)]
    assert server.learner.flat.tolist() == pytest.approx([31.0, 2.9])
    assert server.round == 1
    assert rt.sent[0][0] == 2.0


def test_fedavg_group_size_rounds_c_times_k_and_never_drops_below_one():
    """m = max(1, round(C K)): 0.7 of 5 is 4 (FL-GAN's int() gives 3), 0.1 of 4 is 1."""
    for frac, k, m in [(0.7, 5, 4), (0.1, 4, 1), (0.5, 6, 3), (1.0, 3, 3), (0.6, 5, 3)]:
        assert _fed_server(FedAvgServer, FedAvgParams(frac_clients=frac), clients=k).group_size() == m


def test_fedavg_client_trains_its_local_epochs_from_the_global_model_and_reports_its_shard_size():
    """E = 2 passes over a shard of 3 steps: 6 SGD steps of lr 1/2 on 1/2 |x - 8|^2 from the
    global x = 0: 8 (1 - 2^-6); the update carries n = 7 and the round."""
    learner = Quad([8.0], lr=0.5, spe=3, n=7)
    client = FedAvgClient(ctx(1, FedAvgParams(local_epochs=2), learner, {0: "server", 1: "worker"}))
    assert client.local_steps() == 6
    assert FedAvgClient(ctx(1, FedAvgParams(local_steps=4), learner, {})).local_steps() == 4
    assert FedAvgClient(ctx(1, FedAvgParams(), learner, {})).local_steps() == 3
    learner.set_flat(torch.tensor([3.0]))
    rt = FakeRt(node_id=1)
    rt.deliver(0.0, 0, "global", {"round": 4}, {"x": [0.0]})
    rt.deliver(1.0, 0, "stop")
    drive(client.run(rt))
    (dst, update), = rt.sent_of("update")
    assert dst == 0 and update.meta == {"round": 4, "n": 7}
    assert update.tensors["x"].item() == pytest.approx(8 * (1 - 2 ** -6))
    assert learner.steps_done == 6


def test_fedavg_server_runs_its_rounds_and_stops_at_the_target_accuracy():
    server = _fed_server(FedAvgServer, FedAvgParams(rounds=5, stop_accuracy=0.5), clients=2)
    accs = iter([0.1, 0.3, 0.5, 0.9, 0.9, 0.9])
    server.end_epoch = lambda rt, e: (server.ends.append(e), setattr(server, "last_metrics", {"test_acc": next(accs)}))
    rt = FakeRt()
    for r in range(5):
        for j in (1, 2):
            rt.deliver(r + 0.5, j, "update", {"round": r, "n": 1}, {"x": [float(r), 0.0]})
    drive(server.run(rt))
    assert server.ends == [0, 1, 2] and server.round == 2 and rt.logged("stopped_at_accuracy") == [2]
    assert sorted(dst for dst, _m in rt.sent_of("stop")) == [1, 2]
    plain = _fed_server(FedAvgServer, FedAvgParams(rounds=3), clients=2)
    rt = FakeRt()
    for r in range(5):
        for j in (1, 2):
            rt.deliver(r + 0.5, j, "update", {"round": r, "n": 1}, {"x": [float(r), 0.0]})
    drive(plain.run(rt))
    assert plain.ends == [0, 1, 2, 3] and plain.round == 3
    by_epochs = _fed_server(FedAvgServer, FedAvgParams(), clients=2)
    by_epochs.ctx.epochs = 2
    rt = FakeRt()
    for r in range(5):
        for j in (1, 2):
            rt.deliver(r + 0.5, j, "update", {"round": r, "n": 1}, {"x": [float(r), 0.0]})
    drive(by_epochs.run(rt))
    assert by_epochs.round == 2


# -- the synchronous parameter server ----------------------------------------------------------------
PS_ROLES = {0: "server", 1: "worker", 2: "worker", 3: "worker", 4: "supervisor"}


def _ps_server(timeout, rounds=2):
    learner = Quad([0.0, 0.0], lr=1.0)
    node = PSSyncServer(ctx(0, PSSyncParams(timeout=timeout), learner, PS_ROLES, epochs=rounds, steps_per_epoch=1))
    return no_eval(node), FakeRt(0, nodes=range(5))


def test_ps_sync_averages_the_gradients_by_batch_size_over_every_worker_but_the_supervisor():
    """g = sum_k b_k g_k / sum_k b_k over workers 1..3 (batches 1, 3, 6: 31, not 23.3), sent
    the round's parameters; the supervisor (node 4) is neither sent them nor waited for. With
    no timeout the server waits for the slow worker 3 (at t = 30 s)."""
    server, rt = _ps_server(None, rounds=1)
    rt.deliver(0.1, 1, "grad", {"round": 0, "n": 1}, {"g": [10.0, -1.0]})
    rt.deliver(0.2, 2, "grad", {"round": 0, "n": 3}, {"g": [20.0, 0.0]})
    rt.deliver(30.0, 3, "grad", {"round": 0, "n": 6}, {"g": [40.0, 5.0]})
    drive(server.run(rt))
    assert [dst for dst, _m in rt.sent_of("params")] == [1, 2, 3]
    assert server.learner.flat.tolist() == pytest.approx([-31.0, -2.9])
    assert server.learner.handed[-1].tolist() == pytest.approx([31.0, 2.9])
    assert server.ends == [0, 1] and server.round == 1
    assert sorted(dst for dst, _m in rt.sent_of("stop")) == [1, 2, 3, 4]


def test_ps_sync_with_a_timeout_averages_the_gradients_that_came():
    """Round 0: all three (31); round 1 (from t = 0.3, 1 s): worker 3's gradient comes at 5 s,
    too late, so g = (1 * 2 + 3 * 4) / 4 = 3.5 over workers 1 and 2; its late round-1
    gradient does not count in round 0 either."""
    server, rt = _ps_server(1.0)
    rt.deliver(0.1, 1, "grad", {"round": 0, "n": 1}, {"g": [10.0, -1.0]})
    rt.deliver(0.2, 2, "grad", {"round": 0, "n": 3}, {"g": [20.0, 0.0]})
    rt.deliver(0.3, 3, "grad", {"round": 0, "n": 6}, {"g": [40.0, 5.0]})
    rt.deliver(0.4, 1, "grad", {"round": 1, "n": 1}, {"g": [2.0, 0.0]})
    rt.deliver(0.5, 2, "grad", {"round": 1, "n": 3}, {"g": [4.0, 8.0]})
    rt.deliver(5.0, 3, "grad", {"round": 1, "n": 6}, {"g": [1000.0, 1000.0]})
    drive(server.run(rt))
    assert [h.tolist() for h in server.learner.handed] == [pytest.approx([31.0, 2.9]), pytest.approx([3.5, 6.0])]
    assert server.learner.flat.tolist() == pytest.approx([-34.5, -8.9])
    assert [(dst, m["round"]) for dst, m in rt.sent_of("params")] == [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)]
    assert rt.logged("grad_timeouts") == [1] and server.ends == [0, 1, 2]


def test_ps_roles_shards_and_supervisor():
    """The supervisor is the highest-id worker; shards own [j n / k, (j+1) n / k)."""
    assert shard_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_ranges(5, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert shard_ranges(7, 1) == [(0, 7)]
    for k in (0, 8):
        with pytest.raises(ConfigError, match=f"^algorithm.shards: {k} shards for a model of 7 parameters"):
            shard_ranges(7, k)
    assert servers_of({3: "shard", 0: "worker", 1: "server", 2: "shard"}) == [1, 2, 3]
    roles = ps_roles(nx.star_graph(4), "ps_sync", PSSyncParams(supervisor=True))
    assert roles == {0: "server", 1: "worker", 2: "worker", 3: "worker", 4: "supervisor"}
    assert ps_roles(nx.star_graph(4), "ps_sync", PSSyncParams()) == {0: "server", 1: "worker", 2: "worker", 3: "worker", 4: "worker"}
    with pytest.raises(ConfigError, match="at least 2 non-server nodes"):
        ps_roles(nx.star_graph(1), "ps_sync", PSSyncParams(supervisor=True))
    c = SimpleNamespace(roles={0: "shard", 1: "server", 2: "worker", 3: "supervisor", 4: "worker"})
    assert workers_of(c, SimpleNamespace(nodes=[0, 1, 2, 3, 4, 5], node_id=2)) == [4, 5]


# -- Ako -------------------------------------------------------------------------------------------------
def _ako(params, learner, neighbors=(1,), node_id=0, epochs=1):
    worker = AkoWorker(ctx(node_id, params, learner, epochs=epochs))
    return no_eval(worker), FakeRt(node_id, neighbors)


def test_ako_apply_sums_the_own_gradient_and_the_peers_partitions_of_earlier_iterations():
    """At t = 2: u = own + the partitions of iterations 0 and 1, each at its offset; the one
    of iteration 2 waits for the next step. ``mean`` divides u by N = 3."""
    def held():
        return [Message("ako", {"it": 0, "lo": 0}, {"g": torch.tensor([10.0, 10.0])}),
                Message("ako", {"it": 1, "lo": 2}, {"g": torch.tensor([100.0, 100.0])}),
                Message("ako", {"it": 2, "lo": 1}, {"g": torch.tensor([5.0, 5.0])})]

    for aggregate, scale in [("sum", 1.0), ("mean", 1 / 3)]:
        learner = Quad([0.0] * 4, lr=1.0)
        worker, _ = _ako(AkoParams(P=1, aggregate=aggregate), learner)
        worker.own, worker.held = torch.tensor([1.0, 2.0, 3.0, 4.0]), held()
        worker.apply(2, 3)
        assert learner.handed[-1].tolist() == pytest.approx([11 * scale, 12 * scale, 103 * scale, 104 * scale])
        assert learner.flat.tolist() == pytest.approx([-11 * scale, -12 * scale, -103 * scale, -104 * scale])
        assert [m["it"] for m in worker.held] == [2] and worker.own is None
        worker.apply(math.inf, 3)  # no own gradient: the peers' partitions alone make a step
        assert learner.handed[-1].tolist() == pytest.approx([0.0, 5 * scale, 5 * scale, 0.0])
        assert worker.held == []
        steps = len(learner.handed)
        worker.apply(math.inf, 3)  # nothing at all: no step
        assert len(learner.handed) == steps


def test_ako_sends_partition_t_mod_p_of_what_it_accumulated_and_keeps_the_rest():
    """P = 2 over 3 parameters: slices [0, 2) and [2, 3). Gradients g_t = (t+1) (1, 10, 100):
    iteration 0 sends g_0[0:2]; 1 sends g_0[2] + g_1[2] = 300; 2 sends (g_1 + g_2)[0:2]
    = (5, 50); the unsent 300 of g_2 stays. Then ``ako_done`` at it 3, after the peer's
    gradients are applied."""
    grads = [[(t + 1) * 1.0, (t + 1) * 10.0, (t + 1) * 100.0] for t in range(3)]
    learner = Quad([0.0, 0.0, 0.0], lr=1.0, spe=3, grads=grads)
    worker, rt = _ako(AkoParams(P=2), learner)
    rt.deliver(10.0, 1, "ako", {"it": 0, "lo": 1}, {"g": [7.0, 7.0]})
    rt.deliver(10.0, 1, "ako_done", {"it": 1})
    drive(worker.run(rt))
    sent = [(dst, m["it"], m["lo"], m.tensors["g"].tolist()) for dst, m in rt.sent_of("ako")]
    assert sent == [(1, 0, 0, [1.0, 10.0]), (1, 1, 2, [300.0]), (1, 2, 0, [5.0, 50.0])]
    assert worker.acc.tolist() == [0.0, 0.0, 300.0]
    assert [(dst, m["it"]) for dst, m in rt.sent_of("ako_done")] == [(1, 3)]
    # own steps: g_0, g_1, g_2 at t = 1, 2, 3 (the last with the peer's partition)
    assert [h.tolist() for h in learner.handed] == [grads[0], grads[1], [3.0, 37.0, 307.0]]
    assert rt.logged("ako_P") == [2.0] and worker.ends == [0, 1] and worker.t == 3


def test_ako_partition_count_is_the_given_p_capped_at_the_parameters_or_one_without_a_network():
    learner = Quad([0.0] * 3)
    assert _ako(AkoParams(P=2), learner)[0].resolve_p(4) == 2
    assert _ako(AkoParams(P=5), learner)[0].resolve_p(4) == 3
    assert _ako(AkoParams(P="auto"), learner)[0].resolve_p(4) == 1
    assert auto_partitions(4, 100.0, 10.0, 0.0, 7) == 7        # no compute time: every parameter its own
    assert auto_partitions(4, 100.0, math.inf, 0.0, 7) == 1
    assert auto_partitions(2, 100.0, 10.0, 1.0, 50) == 10     # ceil(1 * 100 / 10)
    assert auto_partitions(3, 100.0, 30.0, 1.0, 50) == 7      # ceil(2 * 100 / 30)
    assert partition_bounds(3, 2) == [(0, 2), (2, 3)]
    assert partition_bounds(7, 7) == [(k, k + 1) for k in range(7)]


def test_ako_waits_until_every_live_peer_completed_the_iterations_the_bound_needs():
    """SSP: a worker needing iteration count 3 waits until each unfinished, live peer is known
    to have completed 3 iterations (its message of it 2): peer 1 has (it 4), peer 3 said it is
    done, peer 2 comes with it 0, 1, 2 (at t = 2), and its it 3 is left for later."""
    worker, rt = _ako(AkoParams(P=1, peer_timeout=1.0), Quad([0.0]), neighbors=(1, 2, 3))
    worker.heard = {1: 4}
    rt.deliver(0.0, 3, "ako_done", {"it": 2})
    for it in range(4):
        rt.deliver(0.5 + 0.5 * it, 2, "ako", {"it": it, "lo": 0}, {"g": [1.0]})
    drive(worker.wait_for(rt, 3))
    assert rt.t == pytest.approx(1.5) and worker.heard == {1: 4, 2: 2} and worker.finished == {3}
    assert [m["it"] for m in worker.held] == [0, 1, 2] and len(rt.queue) == 1
    drive(worker.wait_for(rt, 0))  # the bound of a worker at t = bound: never waits
    assert rt.t == pytest.approx(1.5) and len(rt.queue) == 1
    # needing 5: peer 1 (it 4) is there; peer 2 (it 3 at 2 s) falls silent for the 1 s timeout
    drive(worker.wait_for(rt, 5))
    assert worker.silent == {2} and rt.logged("ssp_timeouts") == [1] and rt.t == pytest.approx(3.0)
    rt.deliver(4.0, 2, "ako", {"it": 4, "lo": 0}, {"g": [1.0]})
    rt.t = 4.0
    drive(worker.wait_for(rt, 6))  # heard from again: waited for again, and a silent 1 times out
    assert worker.heard[2] == 4 and worker.silent == {1, 2} and rt.logged("ssp_timeouts") == [1, 2]


def test_ako_with_a_bound_waits_for_the_slow_peer_before_each_iteration():
    """ssp_bound 1, 3 iterations: iteration t needs the peer's it t - 2. The peer's messages
    of it 0 and 1 come at 5 s and 9 s: the worker runs its iterations 0 and 1 at once, starts
    iteration 2 at 5 s (with the peer's it 0) and finishes when the peer is done (at 9 s)."""
    learner = Quad([0.0], lr=1.0, spe=3, grads=[[1.0], [2.0], [4.0]])
    worker, rt = _ako(AkoParams(P=1, ssp_bound=1), learner)
    rt.deliver(5.0, 1, "ako", {"it": 0, "lo": 0}, {"g": [10.0]})
    rt.deliver(9.0, 1, "ako", {"it": 1, "lo": 0}, {"g": [20.0]})
    rt.deliver(9.0, 1, "ako_done", {"it": 2})
    drive(worker.run(rt))
    assert [t for t, _d, m in rt.sent if m.kind == "ako"] == [0.0, 0.0, 5.0]
    assert rt.logged("ssp_gap") == [0.0, 1.0, 1.0, 0.0]  # at the end the peer has finished
    # steps at t = 1, 2 and the end: g0 | g1 + the peer's it 0 | g2 + its it 1
    assert [h.tolist() for h in learner.handed] == [[1.0], [12.0], [24.0]]


# -- DEGAN ----------------------------------------------------------------------------------------------
class FakeGan(Quad):
    def sample(self, z=None):
        return z.sum() * torch.ones(2)


def _degan(node_id=0, neighbors=(1, 2), **params):
    p = DeganParams(**{"P": 1, "fid_batch": 4, "latent_dim": 3, **params})
    scores = []
    workload = SimpleNamespace(evaluate=lambda rt, c, epoch, learner: {}, fid=lambda samples: scores.pop(0))
    worker = DeganWorker(ctx(node_id, p, FakeGan([0.0, 0.0]), epochs=3, workload=workload))
    return worker, FakeRt(node_id, neighbors), scores


def test_degan_deals_batches_round_robin_by_rank_and_caps_the_iterations():
    """10 batches on workers 3, 5, 8, 9 (ranks 0..3): 3, 3, 2, 2; the cap bounds the total."""
    assert [batches_of(r, 4, 10) for r in range(4)] == [3, 3, 2, 2]
    for node, n in [(3, 3), (5, 3), (8, 2), (9, 2)]:
        others = tuple(i for i in (3, 5, 8, 9) if i != node)
        worker, rt, _ = _degan(node, others, batches=10)
        assert worker.iterations_per_epoch(rt) == n
    worker, rt, _ = _degan(batches=None)
    assert worker.iterations_per_epoch(rt) == 1  # one pass over its shard (Quad: 1 step per epoch)
    assert _degan(max_iterations=10)[0].total_iterations(4) == 10
    assert _degan(max_iterations=20)[0].total_iterations(4) == 12
    assert _degan()[0].total_iterations(4) == 12
    assert _degan(synchronous=True, ssp_bound=3)[0].params.ssp_bound == 0
    assert _degan(ssp_bound=3)[0].params.ssp_bound == 3


def test_degan_judge_stops_everyone_bound_plus_one_iterations_after_reaching_the_target():
    """Worker 0 (the lowest id) scores its generator at each epoch end from epoch 1: at t = 4
    the FID 3 reaches the target 5, so the run stops at 4 + 2 + 1 = 7 with bound 2 (5 without
    one); the stop goes to every peer before the next gradient. A peer takes the earliest stop
    it hears of, and never one before its own iteration."""
    judge, rt, scores = _degan(target_fid=5.0, ssp_bound=2)
    scores += [9.0, 3.0, 1.0]
    judge.t = 2
    judge.end_epoch(rt, 0)           # the untrained start is not scored
    judge.end_epoch(rt, 1)           # 9 > 5
    assert judge.stop_at is None and rt.logged("judge_fid") == [9.0]
    judge.t = 4
    judge.end_epoch(rt, 2)
    assert judge.stop_at == 7 and rt.logged("target_reached") == [3.0]
    judge.t = 6
    judge.end_epoch(rt, 3)           # already stopping: the stop stays at 7
    assert judge.stop_at == 7
    assert drive(judge.planned_total(rt, 20)) == 7
    assert [(dst, m["at"]) for dst, m in rt.sent_of("degan_stop")] == [(1, 7), (2, 7)]
    assert drive(judge.planned_total(rt, 20)) == 7 and len(rt.sent_of("degan_stop")) == 2  # sent once

    free, rt, scores = _degan(target_fid=5.0)
    scores.append(2.0)
    free.t = 4
    free.end_epoch(rt, 1)
    assert free.stop_at == 5
    peer, rt, scores = _degan(node_id=2, neighbors=(0, 1), target_fid=5.0)
    peer.end_epoch(rt, 1)            # not the judge: no FID (scores is empty)
    rt.deliver(0.0, 1, "degan_stop", {"at": 6})
    rt.deliver(0.0, 0, "degan_stop", {"at": 9})
    peer.t = 4
    assert drive(peer.planned_total(rt, 20)) == 6 and peer.stop_at == 6
    peer.t = 8                       # already past the stop: it stops where it is
    assert drive(peer.planned_total(rt, 20)) == 8
    assert drive(peer.planned_total(rt, 5)) == 5
    assert drive(_degan()[0].planned_total(FakeRt(), 11)) == 11


# -- MD-GAN --------------------------------------------------------------------------------------------
class FakeGenerator:
    """A server's generator: noise batches 1, 2, 3, ... (each a batch of 2 of that value);
    sample(z) = 10 z; records what the feedback step gets."""

    batch_size = 2

    def __init__(self):
        self.k = 0
        self.fed: list = []
        self.last_losses = (0.0, 0.0)

    def flops_per_step(self, part=None):
        return 1.0

    def noise(self, n):
        self.k += 1
        return torch.full((n,), float(self.k))

    def sample(self, z):
        return 10 * z

    def g_step_feedback(self, zs, fs):
        self.fed.append(([z.tolist() for z in zs], [f.tolist() for f in fs]))


def test_mdgan_rounds_per_epoch_cover_a_shard_with_l_discriminator_steps_each():
    for spe, steps, rounds in [(25, 12, 3), (24, 12, 2), (5, 12, 1), (12, 1, 12)]:
        node = MDGanServer(ctx(0, MDGanParams(disc_steps=steps), FakeGenerator(), steps_per_epoch=spe))
        assert node.rounds_per_epoch() == rounds


def test_mdgan_server_pairs_each_feedback_with_the_noise_it_sent_that_worker():
    """Worker w gets X_d = G(z_d,w), X_g = G(z_g,w) of its own noise; the server back-propagates
    the feedbacks that came within the timeout through G at the z_g of their senders (1 and 3,
    sorted, though 3 answered first; 2 is late) and logs the mean of their losses. Two rounds
    per epoch and swap_epochs 1: round 1 asks for the discriminators."""
    gen = FakeGenerator()
    server = no_eval(MDGanServer(ctx(0, MDGanParams(disc_steps=12, timeout=1.0), gen, epochs=1, steps_per_epoch=24)))
    rt = FakeRt(0, nodes=(0, 1, 2, 3))
    rt.deliver(0.2, 3, "feedback", {"round": 0, "d_loss": 1.0, "g_loss": 4.0}, {"f": [3.0, 3.0]})
    rt.deliver(0.3, 1, "feedback", {"round": 0, "d_loss": 3.0, "g_loss": 8.0}, {"f": [1.0, 1.0]})
    rt.deliver(5.0, 2, "feedback", {"round": 0, "d_loss": 100.0, "g_loss": 100.0}, {"f": [2.0, 2.0]})
    for w in (1, 2, 3):
        rt.deliver(1.5, w, "feedback", {"round": 1, "d_loss": 0.0, "g_loss": 0.0}, {"f": [0.0, 0.0], "d": [float(w)]})
    drive(server.run(rt))
    batches = rt.sent_of("batches")
    assert [(dst, m["round"], m["swap"]) for dst, m in batches] == \
        [(1, 0, False), (2, 0, False), (3, 0, False), (1, 1, True), (2, 1, True), (3, 1, True)]
    # round 0's noise: worker 1 gets z = 1, 2; worker 2: 3, 4; worker 3: 5, 6
    assert [(m.tensors["xd"][0].item(), m.tensors["xg"][0].item()) for _d, m in batches[:3]] == [(10, 20), (30, 40), (50, 60)]
    assert gen.fed[0] == ([[2.0, 2.0], [6.0, 6.0]], [[1.0, 1.0], [3.0, 3.0]])
    assert rt.logged("clients_heard") == [2, 3]
    assert gen.last_losses == pytest.approx((0.0, 0.0))  # round 1's
    assert server.ends == [0, 1] and sorted(dst for dst, _m in rt.sent_of("stop")) == [1, 2, 3]
    assert len(server.handoff) == 3 and rt.logged("swaps") == [3]


def test_mdgan_server_logs_the_mean_loss_of_the_feedbacks():
    gen = FakeGenerator()
    server = no_eval(MDGanServer(ctx(0, MDGanParams(disc_steps=1, swap_epochs=0), gen, epochs=1, steps_per_epoch=1)))
    rt = FakeRt(0, nodes=(0, 1, 2))
    rt.deliver(0.2, 2, "feedback", {"round": 0, "d_loss": 1.0, "g_loss": 4.0}, {"f": [3.0, 3.0], "d": [1.0]})
    rt.deliver(0.3, 1, "feedback", {"round": 0, "d_loss": 3.0, "g_loss": 8.0}, {"f": [1.0, 1.0], "d": [2.0]})
    drive(server.run(rt))
    assert gen.last_losses == pytest.approx((2.0, 6.0)) and server.handoff == {}
    assert [m["swap"] for _d, m in rt.sent_of("batches")] == [False, False]


def test_mdgan_swap_hands_each_discriminator_to_the_next_worker_of_a_random_cycle():
    """The senders in a random order o (the node's stream): worker o[j+1] gets o[j]'s D, the
    first gets the last's; a sender that sent no D hands nothing; one sender keeps its own."""
    server = MDGanServer(ctx(0, MDGanParams(), FakeGenerator()))
    got = {s: Message("feedback", {}, {"d": torch.tensor([float(s)])}) for s in (2, 4, 7)}
    got[9] = Message("feedback", {}, {})
    rt = FakeRt(seed=3)
    server._plan_swap(rt, got, [2, 4, 7, 9])
    order = [[2, 4, 7, 9][i] for i in np.random.default_rng(3).permutation(4)]
    expected = {order[(j + 1) % 4]: float(src) for j, src in enumerate(order) if src != 9}
    assert {dst: d.item() for dst, d in server.handoff.items()} == expected
    assert rt.logged("swaps") == [3]
    alone = MDGanServer(ctx(0, MDGanParams(), FakeGenerator()))
    alone._plan_swap(FakeRt(), {5: got[2]}, [5])
    assert alone.handoff == {}


class FakeDisc:
    steps_per_epoch = 1

    def __init__(self):
        self.d_steps, self.d = [], torch.tensor([0.0])
        self.last_losses = (0.5, 0.0)

    def flops_per_step(self, part=None):
        return 1.0

    def d_step(self, xd):
        self.d_steps.append(xd.tolist())

    def feedback(self, xg):
        return -xg, 7.0

    def set_d(self, d):
        self.d = d.clone()

    def get_d(self):
        return self.d + 1


def test_mdgan_worker_takes_l_steps_on_x_d_and_returns_the_feedback_on_x_g():
    learner = FakeDisc()
    worker = MDGanWorker(ctx(1, MDGanParams(disc_steps=3), learner))
    rt = FakeRt(1)
    rt.deliver(0.0, 0, "batches", {"round": 0, "swap": False}, {"xd": [1.0], "xg": [2.0]})
    rt.deliver(1.0, 0, "batches", {"round": 1, "swap": True}, {"xd": [3.0], "xg": [4.0], "d": [9.0]})
    rt.deliver(2.0, 0, "stop")
    drive(worker.run(rt))
    assert learner.d_steps == [[1.0]] * 3 + [[3.0]] * 3
    (d0, m0), (d1, m1) = rt.sent_of("feedback")
    assert (d0, m0.meta, m0.tensors["f"].tolist(), "d" in m0.tensors) == (0, {"round": 0, "d_loss": 0.5, "g_loss": 7.0}, [-2.0], False)
    assert m1["round"] == 1 and m1.tensors["f"].tolist() == [-4.0] and m1.tensors["d"].tolist() == [10.0]


# -- consensus ADMM -------------------------------------------------------------------------------------
def test_cadmm_dual_and_primal_gradient_by_hand():
    """alpha += rho sum_j (x - x_j); g + alpha + 2 rho sum_j (x - m_j): x = (2, 2), two
    neighbours (0, 0) and (1, 3), rho 1/2."""
    alpha = torch.tensor([1.0, 0.0])
    x = torch.tensor([2.0, 2.0])
    out = cadmm_dual(alpha, x, [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0])], 0.5)
    assert out is alpha and alpha.tolist() == [2.5, 0.5]
    g = torch.tensor([1.0, 1.0])
    out = cadmm_grad(g, x, alpha, [torch.tensor([1.0, 1.0]), torch.tensor([1.5, 2.5])], 0.5)
    assert out is g and g.tolist() == [5.0, 2.0]


def test_cadmm_rounds_by_hand_with_a_late_and_a_silent_neighbour():
    """f = 1/2 (x - 1)^2, lr 0.1, rho 0.5, x = 0; neighbours 1, 2, 3. Round 0 (1 s): only 1
    (x = 2) comes: alpha = -1, g = -1 - 1 + (0 - 1) = -3, x = 0.3. Round 1: 1 sends 4; 2's
    round-0 x = -1 comes late and enters stale; 3 is never heard from and is left out:
    alpha = -1 + 0.5 (-3.7 + 1.3) = -2.2, g = -0.7 - 2.2 + (-1.85 + 0.65) = -4.1, x = 0.71."""
    learner = Quad([1.0], lr=0.1, spe=2)
    node = no_eval(CADMMNode(ctx(0, CADMMParams(rho=0.5, local_steps=1, swap_timeout=1.0), learner)))
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.1, 1, "params", {"round": 0}, {"x": [2.0]})
    rt.deliver(1.1, 1, "params", {"round": 1}, {"x": [4.0]})
    rt.deliver(1.5, 2, "params", {"round": 0}, {"x": [-1.0]})
    drive(node.run(rt))
    assert learner.flat.item() == pytest.approx(0.71)
    assert [h.item() for h in learner.handed] == pytest.approx([-3.0, -4.1])
    assert node.alpha.item() == pytest.approx(-2.2)
    assert [(dst, m["round"], m.tensors["x"].item()) for dst, m in rt.sent_of("params")] == \
        [(1, 0, 0.0), (2, 0, 0.0), (3, 0, 0.0), (1, 1, pytest.approx(0.3)), (2, 1, pytest.approx(0.3)), (3, 1, pytest.approx(0.3))]
    assert rt.logged("params_timeouts") == [2, 2] and rt.logged("params_stale") == [1]
    assert node.ends == [0, 1] and node.round == 2


def test_cadmm_takes_local_steps_at_the_rounds_midpoints_and_stops_at_the_epochs_end():
    """local_steps 2 on 3 steps in all: round 0 takes 2 steps, round 1 the 1 left. Each step's
    gradient is at the live x but with the round's alpha and midpoints (x_i^k + x_j^k)/2."""
    learner = Quad([0.0], lr=0.5, spe=3)
    node = no_eval(CADMMNode(ctx(0, CADMMParams(rho=0.25, local_steps=2, swap_timeout=None), learner)))
    rt = FakeRt(0, (1,))
    rt.deliver(0.0, 1, "params", {"round": 0}, {"x": [4.0]})
    rt.deliver(0.0, 1, "params", {"round": 1}, {"x": [4.0]})
    learner.flat.fill_(2.0)
    drive(node.run(rt))
    # round 0: alpha = 0.25 (2 - 4) = -0.5, midpoint 3. step 1 at x = 2: g = 2 - 0.5 + 0.5 (2 - 3) = 1, x = 1.5
    # step 2 at x = 1.5: g = 1.5 - 0.5 + 0.5 (1.5 - 3) = 0.25, x = 1.375
    # round 1: alpha = -0.5 + 0.25 (1.375 - 4) = -1.15625, midpoint 2.6875; g = 1.375 - 1.15625 + 0.5 (1.375 - 2.6875)
    g3 = 1.375 - 1.15625 + 0.5 * (1.375 - 2.6875)
    assert [h.item() for h in learner.handed] == pytest.approx([1.0, 0.25, g3])
    assert node.round == 2 and node.ends == [0, 1] and learner.steps_done == 3


# -- FL-GAN and FeGAN ----------------------------------------------------------------------------------
def _gan_server(cls, params, clients=5, spe=7, servers=1):
    roles = {**{i: "server" for i in range(servers)}, **{i: "worker" for i in range(servers, servers + clients)}}
    learner = Quad([0.0, 0.0], lr=1.0)
    learner.last_losses = (0.0, 0.0)
    return no_eval(cls(ctx(0, params, learner, roles, steps_per_epoch=spe, epochs=1)))


def test_flgan_group_size_truncates_c_times_k_and_rounds_per_epoch_cover_the_data():
    """m = max(1, int(C K)): 0.7 of 5 is 3 (FedAvg rounds to 4). An epoch is ceil(K S / (m E))
    rounds: K 5, S 7, m 3, E 4: ceil(35 / 12) = 3; E = 100 (the seed's default): 1."""
    server = lambda **p: _gan_server(FedGanServer, FLGanParams(**p))  # noqa: E731
    assert server(frac_workers=0.7).group_size() == 3
    assert server(frac_workers=0.1).group_size() == 1
    assert server(frac_workers=1.0).group_size() == 5
    assert server(frac_workers=0.7, local_steps=4).rounds_per_epoch() == 3
    assert server(frac_workers=0.7).rounds_per_epoch() == 1
    assert server(frac_workers=0.2, local_epochs=1).rounds_per_epoch() == 5    # E = S: each device once per round
    assert server(frac_workers=0.4, local_steps=3).rounds_per_epoch() == 6     # ceil(35 / 6)
    assert server(frac_workers=0.7, rounds_per_epoch=2).rounds_per_epoch() == 2


def test_flgan_averages_g_and_d_plainly_whatever_the_shard_sizes():
    """The seed divides by the group size: updates of devices with 1 and 3 samples at 10 and
    20 give 15 (not FedAvg's 17.5); the losses are the updates' means."""
    server = _gan_server(FedGanServer, FLGanParams())
    ups = [Message("update", {"n": 1, "d_loss": 1.0, "g_loss": 2.0}, {"x": torch.tensor([10.0, 0.0])}, src=1),
           Message("update", {"n": 3, "d_loss": 3.0, "g_loss": 6.0}, {"x": torch.tensor([20.0, 4.0])}, src=2)]
    assert server.aggregate(ups).tolist() == [15.0, 2.0]
    server.absorb(ups)
    assert server.learner.last_losses == (2.0, 4.0)


def test_flgan_device_runs_e_steps_or_half_of_them_when_weak_and_sends_its_counts_to_every_server():
    learner = Quad([0.0], spe=3, n=11)
    learner.last_losses = (0.25, 0.75)
    learner.class_counts = lambda: torch.tensor([3, 0, 8])
    roles = {0: "server", 1: "server", 2: "worker"}
    device = lambda params, profile=None: FedGanDevice(ctx(2, params, learner, roles, profile=profile))  # noqa: E731
    assert device(FLGanParams()).local_steps() == 100
    assert device(FLGanParams(local_steps=5)).local_steps() == 5
    assert device(FLGanParams(local_steps=5), SimpleNamespace(local_steps=0.5)).local_steps() == 2
    assert device(FLGanParams(local_steps=1), SimpleNamespace(local_steps=0.5)).local_steps() == 1
    assert device(FLGanParams(local_epochs=2)).local_steps() == 6
    assert device(FLGanParams(local_epochs=2), SimpleNamespace(local_steps=0.5)).local_steps() == 3
    assert device(FLGanParams()).update_meta() == {"n": 11, "d_loss": 0.25, "g_loss": 0.75}
    rt = FakeRt(2, nodes=(0, 1, 2))
    drive(device(FLGanParams()).start(rt))
    assert [(dst, m["round"], m.tensors["c"].tolist()) for dst, m in rt.sent_of("counts")] == \
        [(0, 0, [3.0, 0.0, 8.0]), (1, 0, [3.0, 0.0, 8.0])]


def test_flgan_backup_follows_the_primarys_state_and_takes_over_after_its_silence():
    """A backup of rank 2 with failover 5 s waits 10 s of silence: it adopts the state sent at
    t = 3 (round 4, G and D, the sampler), and takes over at t = 13; a stop ends it instead."""
    server = _gan_server(FedGanServer, FeGanParams(failover=5.0), servers=3)
    rt = FakeRt(2)
    rt.deliver(3.0, 0, "state", {"round": 4, "sampler": {"taken": [1.0]}}, {"x": [6.0, 7.0]})
    assert drive(server.follow(rt, 2)) is True
    assert rt.t == pytest.approx(13.0) and rt.logged("takeover") == [4]
    assert server.round == 4 and server.sampler_state == {"taken": [1.0]} and server.learner.flat.tolist() == [6.0, 7.0]
    other = _gan_server(FedGanServer, FeGanParams(failover=5.0), servers=3)
    rt = FakeRt(1)
    rt.deliver(4.0, 0, "stop")
    assert drive(other.follow(rt, 1)) is False and other.round == 0


def test_flgan_primary_sends_its_state_to_the_backups_after_every_round():
    server = _gan_server(FedGanServer, FLGanParams(frac_workers=1.0, rounds_per_epoch=2), clients=2, servers=2)
    rt = FakeRt(0, nodes=(0, 1, 2, 3))
    for r in range(2):
        for j in (2, 3):
            rt.deliver(r + 0.5, j, "update", {"round": r, "n": 1, "d_loss": 0.0, "g_loss": 0.0}, {"x": [float(r + j), 0.0]})
    drive(server.lead(rt))
    states = rt.sent_of("state")
    assert [(dst, m["round"], m.tensors["x"].tolist()) for dst, m in states] == [(1, 1, [2.5, 0.0]), (1, 2, [3.5, 0.0])]
    assert server.ends == [0, 1] and sorted(dst for dst, _m in rt.sent_of("stop")) == [1, 2, 3]


def test_flgan_server_gathers_the_class_counts_once():
    server = _gan_server(FedGanServer, FLGanParams(timeout=1.0), clients=3)
    rt = FakeRt(0)
    rt.deliver(0.1, 2, "counts", {"round": 0}, {"c": [1.0, 2.0]})
    rt.deliver(0.2, 1, "counts", {"round": 0}, {"c": [3.0, 0.0]})
    drive(server.gather_counts(rt))
    assert {d: c.tolist() for d, c in server.counts.items()} == {1: [3.0, 0.0], 2: [1.0, 2.0]}
    assert rt.logged("counts_timeouts") == [1]


def test_kl_scores_with_a_non_uniform_class_mix_by_hand():
    """Counts (3, 1), (0, 4), (1, 0): q = (4, 5) / 9, N = 9. e_0 = 4/9 (3/4 ln(27/16) + 1/4
    ln(9/20)), e_1 = 4/9 ln(9/5), e_2 = 1/9 ln(9/4); against given global counts (1, 1) x 6
    (N = 12): e_1 = 4/12 ln 2."""
    counts = np.array([[3, 1], [0, 4], [1, 0]])
    e = kl_scores(counts)
    assert e == pytest.approx([4 / 9 * (0.75 * math.log(27 / 16) + 0.25 * math.log(9 / 20)),
                               4 / 9 * math.log(9 / 5), 1 / 9 * math.log(9 / 4)])
    assert kl_scores(counts, np.array([6, 6])) == pytest.approx(
        [4 / 12 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), 4 / 12 * math.log(2), 1 / 12 * math.log(2)])
    assert kl_scores(np.array([[0, 0], [2, 2]])) == pytest.approx([0.0, 0.0])  # an empty device scores 0
    w = kl_weights([1000.0, 1001.0], "exp")  # large scores: no overflow
    assert w == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    assert kl_weights([0.2, 0.2, 0.6], "dirac") == pytest.approx([0.0, 0.0, 1.0])
    assert kl_weights([0.5, 0.3, 0.2], "dirac") == pytest.approx([1.0, 0.0, 0.0])
    assert kl_weights([0.0, 0.0, 0.0], "dirac") == pytest.approx([1 / 3] * 3)


def _fegan_server(counts, **params):
    server = _gan_server(FeGanServer, FeGanParams(**params), clients=len(counts))
    server.counts = {d: np.array(c, dtype=float) for d, c in counts.items() if c is not None}
    return server


def test_fegan_balanced_sampling_goes_on_from_the_previous_rounds_state():
    """Devices 1..4 with (5, 0, 0), (0, 5, 0), (0, 0, 5), (0, 0, 5): round 1 picks 1 and 2
    (class 0, then class 1); round 2 goes on from the classes taken so far: class 2, then
    class 0 again (devices 3 and 1). Starting afresh would pick 1 and 2 again."""
    counts = {1: [5, 0, 0], 2: [0, 5, 0], 3: [0, 0, 5], 4: [0, 0, 5]}
    server = _fegan_server(counts, sample=True)
    rt = FakeRt()
    assert server.choose(rt, 2) == [1, 2]
    assert server.choose(rt, 2) == [1, 3]
    assert server.sampler_state["taken"] == [10.0, 5.0, 5.0]
    s = BalancedSampler(np.array(list(counts.values())))
    assert [s.sample(2) for _ in range(3)] == [[0, 1], [2, 0], [1, 3]]
    assert server.choose(rt, 2) == [2, 4]


def test_fegan_sampling_and_weights_fall_back_to_flgans_without_counts_or_when_off():
    """Without class counts, or with ``sample: false``, devices are drawn uniformly (FL-GAN's
    choose on the node's stream); ``weight_avg: false`` or no counts: the plain average. A
    device whose counts never came is a row of zeros (score 0) and is never sampled."""
    counts = {1: [5, 0], 2: [0, 5], 3: None}
    uniform = _fegan_server(counts, sample=False)
    expected = sorted(int(c) for c in np.random.default_rng(7).choice([1, 2, 3], size=2, replace=False))
    assert uniform.choose(FakeRt(seed=7), 2) == expected and uniform.sampler_state == {}
    empty = _fegan_server({1: None, 2: None, 3: None})
    assert empty.choose(FakeRt(seed=7), 2) == expected and empty.weights([1, 2]) is None
    assert _fegan_server(counts, weight_avg=False).weights([1, 2]) is None
    sampled = _fegan_server(counts, sample=True)
    assert sampled.choose(FakeRt(), 3) == [1, 2]
    lin = _fegan_server({1: [4, 0], 2: [2, 2], 3: None}, weight_scheme="linear")
    # q = (6, 2) / 8, N = 8: e_1 = 4/8 ln(4/3), e_2 = 4/8 (1/2 ln(2/3) + 1/2 ln 2), e_3 = 0
    e1, e2 = 0.5 * math.log(4 / 3), 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert lin.weights([1, 2, 3]) == pytest.approx([e1 / (e1 + e2), e2 / (e1 + e2), 0.0])
    ups = [Message("update", {}, {"x": torch.tensor([10.0, 0.0])}, src=1),
           Message("update", {}, {"x": torch.tensor([20.0, 0.0])}, src=2)]
    assert lin.aggregate(ups)[0].item() == pytest.approx((10 * e1 + 20 * e2) / (e1 + e2))


# -- found by mutmut (algorithms group) ------------------------------------------------------------------
def test_ako_auto_partitions_is_at_least_one_and_one_worker_sends_nothing():
    """A gradient that fits in one step's link time needs one partition (not two); one worker
    has no peer, whatever the link (even none); two workers without compute time split as far
    as they can."""
    assert auto_partitions(2, 100.0, 100.0, 1.0, 50) == 1
    assert auto_partitions(2, 100.0, 1000.0, 1.0, 50) == 1
    assert auto_partitions(1, 100.0, 0.0, 1.0, 5) == 1
    assert auto_partitions(2, 100.0, 10.0, 0.0, 5) == 5


def test_fedavg_without_a_test_accuracy_runs_every_round():
    """stop_accuracy with no ``test_acc`` among the metrics (no test split): never stops early."""
    server = _fed_server(FedAvgServer, FedAvgParams(rounds=2, stop_accuracy=0.5), clients=1)
    server.end_epoch = lambda rt, e: (server.ends.append(e), setattr(server, "last_metrics", {}))
    rt = FakeRt()
    for r in range(2):
        rt.deliver(r + 0.5, 1, "update", {"round": r, "n": 1}, {"x": [1.0, 0.0]})
    drive(server.run(rt))
    assert server.ends == [0, 1, 2] and rt.logged("stopped_at_accuracy") == []


def test_a_federated_clients_default_local_work_is_that_many_training_steps():
    learner = Quad([8.0], lr=0.5)
    client = FedAvgClient(ctx(1, FedAvgParams(), learner))
    kit.FederatedClient.local_train(client, 3)
    assert learner.steps_done == 3 and learner.flat.item() == pytest.approx(7.0)


def test_ako_auto_p_uses_the_narrowest_link_and_the_modelled_step_time():
    """P = ceil((N - 1) S / (B T)): 30 parameters (S = 120 bytes), N = 3, B = 10 B/s, T = 1 s:
    24; T from the FLOPs (1e6 per step at 2e6 FLOP/s = 0.5 s) when no step_time is set: 30
    (48, capped at the parameter count)."""
    learner = Quad([0.0] * 30)
    net = SimpleNamespace(narrowest=10.0)
    timed = AkoWorker(ctx(0, AkoParams(P="auto"), learner, network=net, compute=SimpleNamespace(step_time=1.0, speed=2e6)))
    assert timed.resolve_p(3) == 24
    flops = AkoWorker(ctx(0, AkoParams(P="auto"), learner, network=net, compute=SimpleNamespace(step_time=None, speed=2e6)))
    assert flops.resolve_p(3) == 30
    faster = AkoWorker(ctx(0, AkoParams(P="auto"), learner, network=SimpleNamespace(narrowest=40.0),
                           compute=SimpleNamespace(step_time=None, speed=2e6)))
    assert faster.resolve_p(3) == 12
    assert AkoWorker(ctx(0, AkoParams(P="auto"), learner, network=net)).resolve_p(3) == 1


def test_fedavg_and_flgan_refuse_both_local_steps_and_local_epochs():
    for params in (FedAvgParams, FLGanParams, FeGanParams):
        with pytest.raises(ConfigError, match="^algorithm.local_epochs: .* not both"):
            params(local_steps=2, local_epochs=1)


def test_fedavg_with_a_target_but_no_metrics_runs_every_round():
    server = _fed_server(FedAvgServer, FedAvgParams(rounds=2, stop_accuracy=0.5), clients=1)
    rt = FakeRt()
    for r in range(2):
        rt.deliver(r + 0.5, 1, "update", {"round": r, "n": 1}, {"x": [1.0, 0.0]})
    drive(server.run(rt))
    assert server.ends == [0, 1, 2] and not hasattr(server, "last_metrics")


def test_flgan_backup_takes_only_the_primarys_state_and_stop_while_it_follows():
    """A device's late class counts (or an update) arriving at a following backup are not the
    primary's state: they neither reset the silence clock nor change the state."""
    server = _gan_server(FedGanServer, FeGanParams(failover=5.0), servers=2)
    rt = FakeRt(1)
    rt.deliver(1.0, 3, "counts", {"round": 0}, {"c": [1.0, 2.0]})
    rt.deliver(3.0, 0, "state", {"round": 4, "sampler": {}}, {"x": [6.0, 7.0]})
    rt.deliver(6.0, 2, "update", {"round": 4, "n": 1}, {"x": [0.0, 0.0]})
    assert drive(server.follow(rt, 1)) is True
    assert rt.t == pytest.approx(8.0) and server.round == 4 and server.learner.flat.tolist() == [6.0, 7.0]
    assert [m.kind for _t, _s, m in rt.queue] == ["counts", "update"]


def test_ps_sync_answers_the_supervisors_pulls_after_each_round_with_its_version():
    """The supervisor's pulls queued during a round are answered at its end with the model
    after it (``model``, version = rounds done, shard 0); a later pull, after the next round."""
    server, rt = _ps_server(1.0)
    rt.deliver(0.05, 4, "pull_sup")
    rt.deliver(0.1, 1, "grad", {"round": 0, "n": 1}, {"g": [10.0, -1.0]})
    rt.deliver(0.2, 2, "grad", {"round": 0, "n": 3}, {"g": [20.0, 0.0]})
    rt.deliver(0.3, 3, "grad", {"round": 0, "n": 6}, {"g": [40.0, 5.0]})
    rt.deliver(0.4, 1, "grad", {"round": 1, "n": 1}, {"g": [2.0, 0.0]})
    rt.deliver(0.5, 2, "grad", {"round": 1, "n": 3}, {"g": [4.0, 8.0]})
    rt.deliver(0.6, 4, "pull_sup")
    rt.deliver(0.7, 3, "grad", {"round": 1, "n": 6}, {"g": [0.0, 0.0]})
    drive(server.run(rt))
    models = [(t, dst, m.meta, m.tensors["x"].tolist()) for t, dst, m in rt.sent if m.kind == "model"]
    assert models == [(0.3, 4, {"version": 1, "shard": 0}, pytest.approx([-31.0, -2.9])),
                      (0.7, 4, {"version": 2, "shard": 0}, pytest.approx([-32.4, -5.3]))]  # g = (2 + 12, 24) / 10


# -- kit: seed 003's edge swaps ----------------------------------------------------------------------------
def _swaps(on_receive=None):
    snd = {j: torch.tensor([float(j)]) for j in (1, 2, 3)}
    rcv: dict = {}
    return kit.EdgeSwaps("params", 0, [1, 2, 3], 4, 3, snd, rcv, on_receive), rcv


def test_edge_swaps_swap_each_edge_at_its_slot_and_wait_only_for_live_neighbours():
    """Node 0 of 4 with neighbours 1, 2, 3 and rounds of 3 steps: slots 3 -> step 0, 2 -> 1,
    1 -> 2. Step 0: 3 answers at 0.2 s. Step 1: 2 said it is done: it still gets its swap
    but is not waited for. Step 2: 1 does not answer within 1 s (a timeout); the round ends
    and the barrier waits for the live neighbours' round 1 (3's comes, 1's only round 0: a
    round timeout). 1's late answer is still news at the next step."""
    swaps, rcv = _swaps()
    assert swaps.slots == {3: 0, 2: 1, 1: 2}
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.1, 2, "params_done")
    rt.deliver(0.2, 3, "params_reply", {}, {"x": [30.0]})
    drive(swaps.step(rt, 1.0, True))
    assert [(dst, m.kind, m.tensors["x"].item()) for _t, dst, m in rt.sent] == [(3, "params_swap", 3.0)]
    assert rcv == {3: torch.tensor([30.0])} and swaps.count == 1 and rt.t == pytest.approx(0.2)
    drive(swaps.step(rt, 1.0, True))
    assert swaps.gone == {2} and (rt.sent[-1][1], rt.sent[-1][2].kind) == (2, "params_swap")
    assert rt.t == pytest.approx(0.2) and swaps.count == 2 and rt.logs == []
    rt.deliver(1.5, 3, "params_round", {"round": 1})
    rt.deliver(1.6, 1, "params_round", {"round": 0})
    rt.deliver(1.7, 1, "params_reply", {}, {"x": [10.0]})  # late, during the barrier
    drive(swaps.step(rt, 1.0, True))
    assert rt.logged("params_timeouts") == [1] and rt.logged("params_round_timeouts") == [1]
    assert swaps.count == 0 and swaps.rounds == 1 and rt.t == pytest.approx(2.2)
    assert sorted((dst, m["round"]) for _t, dst, m in rt.sent if m.kind == "params_round") == [(1, 1), (2, 1), (3, 1)]
    assert 1 not in rcv
    rt.deliver(2.3, 3, "params_reply", {}, {"x": [33.0]})
    drive(swaps.step(rt, 1.0, False))  # step 0 again: swaps with 3; 1's late answer is taken on the way
    assert rcv[1].item() == 10.0 and rcv[3].item() == 33.0 and swaps.count == 1


def test_edge_swaps_serve_answers_each_neighbours_request_with_its_own_buffer():
    got = []
    swaps, rcv = _swaps(on_receive=lambda j, x: got.append((j, x.item())))
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.1, 2, "params_swap", {}, {"x": [20.0]})
    rt.deliver(0.2, 9, "params_swap", {}, {"x": [90.0]})  # not a neighbour: ignored
    rt.deliver(0.3, 1, "params_swap", {}, {"x": [10.0]})
    with pytest.raises(AssertionError, match="wait forever"):
        drive(swaps.serve(rt))
    assert got == [(2, 20.0), (1, 10.0)] and rcv == {}
    assert [(dst, m.kind, m.tensors["x"].item()) for _t, dst, m in rt.sent] == [(2, "params_reply", 2.0), (1, "params_reply", 1.0)]


def test_edge_swaps_finish_says_goodbye_and_waits_for_the_others_goodbyes():
    swaps, _ = _swaps()
    swaps.gone = {3}
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.5, 2, "params_done")
    rt.deliver(0.6, 2, "params_swap", {}, {"x": [0.0]})
    rt.deliver(0.9, 1, "params_done")
    drive(swaps.finish(rt, 5.0))
    assert sorted(dst for _t, dst, m in rt.sent if m.kind == "params_done") == [1, 2, 3]
    assert rt.t == pytest.approx(0.9) and swaps.gone == {1, 2, 3}
    late, _ = _swaps()
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.5, 2, "params_done")
    drive(late.finish(rt, 2.0))
    assert rt.t == pytest.approx(2.0) and late.gone == {2}


# -- what nodes charge to their clock, and other details ------------------------------------------------
def test_mdgan_charges_the_generators_and_discriminators_flops():
    """Server: 2 generator passes per worker to make X_d and X_g (3 workers: 6), 3 per feedback
    used (back-propagation, 2 senders: 6); worker: (L + 1/2) discriminator steps, L steps."""
    gen = FakeGenerator()
    gen.flops_per_step = lambda part=None: {"gen": 5.0}[part]
    server = no_eval(MDGanServer(ctx(0, MDGanParams(disc_steps=12, swap_epochs=0, timeout=1.0), gen, epochs=1, steps_per_epoch=12)))
    rt = FakeRt(0, nodes=(0, 1, 2, 3))
    rt.deliver(0.2, 3, "feedback", {"round": 0, "d_loss": 1.0, "g_loss": 4.0}, {"f": [3.0, 3.0]})
    rt.deliver(0.3, 1, "feedback", {"round": 0, "d_loss": 3.0, "g_loss": 8.0}, {"f": [1.0, 1.0]})
    drive(server.run(rt))
    assert [(c.flops, c.steps) for c in rt.costs] == [(30.0, 0), (30.0, 0)]
    learner = FakeDisc()
    learner.flops_per_step = lambda part=None: {"d": 4.0}[part]
    worker = MDGanWorker(ctx(1, MDGanParams(disc_steps=3), learner))
    rt = FakeRt(1)
    rt.deliver(0.0, 0, "batches", {"round": 0, "swap": False}, {"xd": [1.0], "xg": [2.0]})
    rt.deliver(1.0, 0, "stop")
    drive(worker.run(rt))
    assert [(c.flops, c.steps) for c in rt.costs] == [(14.0, 3)]


def test_a_federated_client_charges_its_local_steps_and_frees_its_model_between_rounds():
    learner = Quad([8.0], lr=0.5, spe=3, n=7)
    client = FedAvgClient(ctx(1, FedAvgParams(local_steps=4), learner, {0: "server", 1: "worker"}))
    rt = FakeRt(node_id=1)
    for r in range(2):
        rt.deliver(float(r), 0, "global", {"round": r}, {"x": [0.0]})
    rt.deliver(5.0, 0, "stop")
    drive(client.run(rt))
    assert [(c.flops, c.steps) for c in rt.costs] == [(4e6, 4), (4e6, 4)]  # QuadLearner: 1e6 FLOPs a step
    assert learner.idles == 2 and [m["round"] for _d, m in rt.sent_of("update")] == [0, 1]


def test_degan_judge_scores_the_same_fixed_noise_at_every_epoch():
    """The judge's noise: fid_batch x latent_dim draws from a generator seeded with its id,
    drawn once: the FID of every epoch is of the same latent points."""
    judge, rt, scores = _degan(target_fid=1.0)
    scores += [9.0, 8.0]
    seen = []
    judge.learner.sample = lambda z=None: seen.append(z.clone()) or z
    judge.end_epoch(rt, 1)
    judge.end_epoch(rt, 2)
    expected = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2 and all(torch.equal(z, expected) for z in seen)
    assert rt.logged("judge_fid") == [9.0, 8.0] and judge.stop_at is None


def test_a_backup_flgan_server_takes_over_the_rounds_or_ends_on_stop():
    """Backup 1 gathers the counts, follows the primary's state (round 4 of 5) and, after
    failover seconds of silence, runs round 4 itself and stops the devices."""
    params = FeGanParams(failover=2.0, frac_workers=1.0, rounds_per_epoch=5, sample=False, weight_avg=False)
    server = _gan_server(FedGanServer, params, clients=2, servers=2)
    server.node_id = 1
    rt = FakeRt(1, nodes=(0, 1, 2, 3))
    rt.deliver(0.1, 2, "counts", {"round": 0}, {"c": [1.0, 0.0]})
    rt.deliver(0.1, 3, "counts", {"round": 0}, {"c": [0.0, 1.0]})
    rt.deliver(1.0, 0, "state", {"round": 4, "sampler": {}}, {"x": [6.0, 7.0]})
    for j in (2, 3):
        rt.deliver(4.0, j, "update", {"round": 4, "n": 1, "d_loss": 0.0, "g_loss": 0.0}, {"x": [float(j), 1.0]})
    drive(server.run(rt))
    assert rt.logged("takeover") == [4] and [(d, m["round"]) for d, m in rt.sent_of("global")] == [(2, 4), (3, 4)]
    assert server.learner.flat.tolist() == [2.5, 1.0] and server.round == 5 and server.ends == [1]
    assert sorted(d for d, _m in rt.sent_of("stop")) == [2, 3]
    stopped = _gan_server(FedGanServer, params, clients=2, servers=2)
    rt = FakeRt(1, nodes=(0, 1, 2, 3))
    rt.deliver(0.1, 2, "counts", {"round": 0}, {"c": [1.0, 0.0]})
    rt.deliver(0.1, 3, "counts", {"round": 0}, {"c": [0.0, 1.0]})
    rt.deliver(1.0, 0, "stop")
    drive(stopped.run(rt))
    assert rt.sent == [] and stopped.ends == []


def test_ps_worker_pushes_its_gradient_at_the_pulled_model_tagged_with_the_round_and_batch():
    from simbench.algorithms.ps import PSWorker
    learner = Quad([1.0, 1.0], batch=5)
    worker = PSWorker(ctx(1, PSSyncParams(), learner, {0: "server", 1: "worker"}))
    rt = FakeRt(1)
    rt.deliver(0.0, 0, "params", {"round": 3, "shard": 0}, {"x": [4.0, -2.0]})
    rt.deliver(1.0, 0, "stop")
    drive(worker.run(rt))
    (dst, grad), = rt.sent_of("grad")
    assert dst == 0 and grad.meta == {"round": 3, "n": 5} and grad.tensors["g"].tolist() == [3.0, -3.0]
    assert learner.idles == 1


def test_the_supervisor_pulls_every_shard_each_period_and_stops_at_once_when_told():
    """Every 1 s it asks both servers for their slice, puts the model together in shard order
    (server 0's slice first, whatever the replies' order), evaluates it on the test set and
    logs accuracy, loss and server 0's version; a stop during the wait ends it at once."""
    from simbench.algorithms.ps import Supervisor
    roles = {0: "server", 1: "shard", 2: "worker", 3: "supervisor"}
    learner = Quad([0.0, 0.0, 0.0])
    seen = []
    learner.evaluate = lambda x, y: (seen.append((learner.flat.tolist(), x.tolist())) or (float(learner.flat.sum()), 0.25))
    sup = Supervisor(ctx(3, PSSyncParams(supervisor=True, supervise_every=1.0), learner, roles,
                         test=(torch.tensor([7.0]), torch.tensor([1]))))
    rt = FakeRt(3, nodes=(0, 1, 2, 3))
    rt.deliver(1.1, 1, "model", {"version": 9, "shard": 1}, {"x": [2.0, 3.0]})
    rt.deliver(1.2, 0, "model", {"version": 4, "shard": 0}, {"x": [1.0]})
    rt.deliver(1.9, 0, "stop")  # during the next wait (from 1.2 s to 2.2 s)
    drive(sup.run(rt))
    assert [(t, d, m.kind) for t, d, m in rt.sent] == [(1.0, 0, "pull_sup"), (1.0, 1, "pull_sup")]
    assert seen == [([1.0, 2.0, 3.0], [7.0])]
    assert rt.logs == [("sup_test_acc", 0.25), ("sup_test_loss", 6.0), ("sup_version", 4.0)]
    assert rt.t == pytest.approx(1.9)
    rt = FakeRt(3, nodes=(0, 1, 2, 3))
    rt.deliver(1.5, 0, "model", {"version": 1, "shard": 0}, {"x": [1.0]})
    rt.deliver(1.8, 0, "stop")  # while it waits for the slices
    drive(sup.run(rt))
    assert len(rt.sent) == 2 and rt.t == pytest.approx(1.8) and len(seen) == 1


def test_shard_roles_make_the_lowest_declared_server_the_reporting_one():
    from simbench.algorithms.ps import shard_roles
    g = nx.complete_bipartite_graph(2, 3)  # nodes 0, 1 linked to 2, 3, 4
    g.add_edge(0, 1)
    g = nx.relabel_nodes(g, {0: 3, 3: 0, 1: 1})  # the hubs are 1 and 3
    for i in (1, 3):
        g.nodes[i]["role"] = "server"
    assert shard_roles(g, "ps_sync", 2) == {0: "worker", 1: "server", 2: "worker", 3: "shard", 4: "worker"}
    assert ps_roles(g, "ps_sync", PSSyncParams(shards=2, supervisor=True))[4] == "supervisor"
    g.remove_edge(3, 0)
    with pytest.raises(ConfigError, match=r"^topology: ps_sync needs server node 3 linked to every other node "
                                          r"\(topology: \{kind: star, hubs: 2\}\); it reaches 3 of 4$"):
        shard_roles(g, "ps_sync", 2)
    with pytest.raises(ConfigError, match=r"^algorithm.shards: 3 shards need 3 server nodes .*; the topology has 2$"):
        shard_roles(g, "ps_sync", 3)


def test_degan_target_is_reached_at_an_equal_fid_and_logged_with_its_epoch():
    judge, rt, scores = _degan(target_fid=5.0)
    scores.append(5.0)
    judge.t = 4
    judge.end_epoch(rt, 2)
    assert judge.stop_at == 5
    assert [(n, kw) for n, kw in rt.log_kw] == [("judge_fid", {"epoch": 2}), ("target_reached", {"epoch": 2})]


def test_degan_needs_at_least_one_batch_per_worker():
    from simbench.algorithms.degan import Degan
    assert Degan.roles(nx.complete_graph(3), DeganParams(batches=3)) == {0: "worker", 1: "worker", 2: "worker"}
    with pytest.raises(ConfigError, match="^algorithm.batches: 2 minibatches per epoch are dealt round robin to 3 workers"):
        Degan.roles(nx.complete_graph(3), DeganParams(batches=2))


def test_ako_run_picks_p_for_its_worker_count():
    """P auto in a run: N = 3 workers (2 peers), 30 parameters, 10 B/s, 1 s steps: P = 24."""
    learner = Quad([0.0] * 30)
    c = ctx(0, AkoParams(P="auto"), learner, network=SimpleNamespace(narrowest=10.0),
            compute=SimpleNamespace(step_time=1.0, speed=1.0))
    worker = no_eval(AkoWorker(c))
    rt = FakeRt(0, (1, 2))
    rt.deliver(1.0, 1, "ako_done", {"it": 1})
    rt.deliver(1.0, 2, "ako_done", {"it": 1})
    drive(worker.run(rt))
    assert rt.logged("ako_P") == [24.0] and rt.sent_of("ako")[0][1].tensors["g"].numel() == 1


def test_the_gan_algorithms_name_themselves_in_topology_errors():
    from simbench.algorithms.fegan import FeGan
    from simbench.algorithms.flgan import FLGan
    from simbench.algorithms.mdgan import MDGan
    for algo in (FLGan, MDGan):
        with pytest.raises(ConfigError, match=f"^topology: {algo.name} needs server node 0"):
            algo.roles(nx.path_graph(4), algo.Params())
    with pytest.raises(ConfigError, match="^topology: fegan needs server node 1 .*hubs: 2"):
        FeGan.roles(nx.star_graph(3), FeGanParams(num_servers=2))
    assert FLGan.roles(nx.star_graph(2), FLGanParams()) == {0: "server", 1: "worker", 2: "worker"}


def test_ako_applies_a_peers_gradients_only_from_earlier_iterations_until_the_end():
    """A peer far ahead: its gradients of iterations 0..5 are all here at once. Iteration t
    applies only those of t - 1 and before (with its own g_{t-1}); the end applies the rest."""
    learner = Quad([0.0], lr=1.0, spe=3, grads=[[1.0], [2.0], [4.0]])
    worker, rt = _ako(AkoParams(P=1), learner)
    for k in range(6):
        rt.deliver(0.0, 1, "ako", {"it": k, "lo": 0}, {"g": [100.0 * (k + 1)]})
    rt.deliver(0.0, 1, "ako_done", {"it": 6})
    drive(worker.run(rt))
    assert [h.item() for h in learner.handed] == [1 + 100.0, 2 + 200.0, 4 + 300.0 + 400 + 500 + 600]
    assert worker.ends == [0, 1] and all(type(e) is int for e in worker.ends)


def test_a_degan_peer_told_during_its_evaluation_to_stop_where_it_is_finishes_at_once():
    """(In real runs time passes while a node evaluates.) A stop at iteration 1 that comes
    during the evaluation of epoch 1 ends the run there: no gradient of iteration 1, no
    second evaluation; the peer's last gradients are applied (mean over the 2 workers)."""
    worker, rt, _ = _degan(node_id=1, neighbors=(0,), aggregate="mean")
    worker.learner = worker.ctx.learner = Quad([0.0], lr=1.0, spe=1, grads=[[8.0], [99.0]])
    ends = []

    def end_epoch(rt_, epoch):
        ends.append(epoch)
        if epoch == 1:
            rt.deliver(rt.t, 0, "degan_stop", {"at": 1})
    worker.end_epoch = end_epoch
    rt.deliver(5.0, 0, "ako", {"it": 0, "lo": 0}, {"g": [5.0]})
    rt.deliver(5.0, 0, "ako", {"it": 1, "lo": 0}, {"g": [7.0]})
    rt.deliver(5.0, 0, "ako_done", {"it": 2})
    drive(worker.run(rt))
    assert ends == [0, 1] and worker.t == 1
    assert [m["it"] for _d, m in rt.sent_of("ako")] == [0] and [m["it"] for _d, m in rt.sent_of("ako_done")] == [1]
    assert [h.item() for h in worker.learner.handed] == [4.0, 6.0]


def test_ako_p_field_and_topology_error():
    from simbench.algorithms.ako import Ako, parse_p
    assert parse_p("auto") == "auto" and parse_p(3) == 3
    for bad in (0, True, "AUTO", 2.0):
        with pytest.raises(ValueError, match="allowed: an integer >= 1 or auto"):
            parse_p(bad)
    with pytest.raises(ConfigError, match=r"^topology: ako exchanges gradients with every peer; it needs a complete "
                                          r"topology \(topology: \{kind: complete\}\)$"):
        Ako.roles(nx.path_graph(3), AkoParams())


def test_ako_keeps_its_sums_where_the_model_lives():
    """The accumulator and the step's sum are made on the learner's device (here ``meta``)."""
    handed = []
    learner = SimpleNamespace(num_params=2, device=torch.device("meta"), set_grad_flat=handed.append,
                              apply_update=lambda: None)
    worker = AkoWorker(ctx(0, AkoParams(P=1), learner))
    assert worker.acc.device.type == "meta"
    worker.held = [Message("ako", {"it": 0, "lo": 0}, {"g": torch.ones(2, device="meta")})]
    worker.apply(1, 2)
    assert len(handed) == 1 and handed[0].device.type == "meta"


def test_ps_sync_answers_only_pulls_not_a_late_gradient_waiting_in_its_queue():
    """(In real runs the server's optimizer step takes time.) Worker 3's round-0 gradient comes
    after the deadline, while the server steps: it waits in the queue at the round's end, is
    not answered with the model (only the supervisor's pull is), and round 1 discards it."""
    server, rt = _ps_server(1.0, rounds=2)
    step = server.learner.apply_update

    def slow_step():
        step()
        rt.t += 0.5
    server.learner.apply_update = slow_step
    rt.deliver(0.1, 1, "grad", {"round": 0, "n": 1}, {"g": [10.0, -1.0]})
    rt.deliver(0.2, 2, "grad", {"round": 0, "n": 3}, {"g": [20.0, 0.0]})
    rt.deliver(1.2, 3, "grad", {"round": 0, "n": 6}, {"g": [40.0, 5.0]})
    rt.deliver(1.3, 4, "pull_sup")
    for j in (1, 2, 3):
        rt.deliver(1.6, j, "grad", {"round": 1, "n": 1}, {"g": [1.0, 1.0]})
    drive(server.run(rt))
    assert [(d, m["version"]) for d, m in rt.sent_of("model")] == [(4, 1)]
    assert [h.tolist() for h in server.learner.handed] == [pytest.approx([17.5, -0.25]), [1.0, 1.0]]


def test_balanced_sampler_resumes_from_a_state_with_whole_numbers():
    """A backup's state as JSON may give it (taken as integers) resumes like the float one."""
    counts = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    state = {"taken": [5, 0, 5], "queues": [[0], [1], [2]]}
    s = BalancedSampler(counts, state)
    assert s.sample(2) == [1, 0] and s.taken.tolist() == [10.0, 5.0, 5.0]


def test_balanced_sampler_queues_a_device_with_a_single_sample_of_a_class():
    s = BalancedSampler(np.array([[1.0, 0.0], [0.0, 3.0]]))
    assert s.queues == [[0], [1]] and s.sample(1) == [0]


# -- gossip, variant push ----------------------------------------------------------------------------
def _push_node(**kw):
    from simbench.algorithms.gossip import GossipNode, GossipParams

    return GossipNode(ctx(0, GossipParams(variant="push", **kw), Quad([0.0, 0.0])))


def test_push_gossip_peers_round_robin_by_step_or_drawn_from_the_nodes_stream():
    from simbench.algorithms.gossip import choose_peer

    assert [choose_peer((3, 5, 7), "round_robin", s, None) for s in range(5)] == [3, 5, 7, 3, 5]
    rng, ref = np.random.default_rng(4), np.random.default_rng(4)
    assert [choose_peer((3, 5, 7), "random", s, rng) for s in range(6)] == [(3, 5, 7)[int(ref.integers(3))] for _ in range(6)]


def test_push_gossip_one_way_drops_stale_pushes_and_averages_the_rest_in_arrival_order():
    """max_staleness 2 at step 5: a push of step 2 is dropped (2 < 3), one of step 3 is not;
    each kept push halves the distance: x = ((0 + 4)/2 + 8)/2 = 5. Other kinds stay queued."""
    node = _push_node(symmetric=False, max_staleness=2)
    node.step = 5
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.0, 1, "gossip", {"step": 2}, {"x": [100.0, 100.0]})
    rt.deliver(0.0, 9, "other", {}, {})
    rt.deliver(0.0, 2, "gossip", {"step": 3}, {"x": [4.0, 0.0]})
    rt.deliver(0.0, 3, "gossip", {"step": 5}, {"x": [8.0, 2.0]})
    x = torch.zeros(2)
    assert drive(node.mix_arrived(rt, x)) == 2
    assert x.tolist() == [5.0, 1.0] and rt.logged("gossip_stale") == [1]
    assert [m.kind for _at, _s, m in rt.queue] == ["other"]


def test_push_gossip_symmetric_moves_both_ends_halfway_and_applies_replies():
    """Symmetric: x moves by d = (x_j - x)/2 and d goes back to j, which subtracts it; a reply
    also clears the pending exchange, and the pushes after it are still mixed."""
    node = _push_node(symmetric=True)
    node.step, node.pending_since = 4, 0.5
    rt = FakeRt(0, (1, 2))
    rt.deliver(0.0, 2, "gossip_reply", {"step": 3}, {"d": [0.5, -0.5]})
    rt.deliver(0.0, 1, "gossip", {"step": 4}, {"x": [3.0, 5.0]})
    x = torch.tensor([1.0, 1.0])
    assert drive(node.mix_arrived(rt, x)) == 1
    # after the reply x = (0.5, 1.5); the push: d = ((3, 5) - (0.5, 1.5)) / 2 = (1.25, 1.75)
    assert x.tolist() == [1.75, 3.25] and node.pending_since is None
    ((dst, reply),) = rt.sent_of("gossip_reply")
    assert dst == 1 and reply.meta == {"step": 4} and reply.tensors["d"].tolist() == [1.25, 1.75]


def test_push_gossip_waits_for_the_reply_until_the_timeout():
    node = _push_node(symmetric=True, reply_timeout=0.5)
    rt = FakeRt(0, (1,))
    assert node.may_push(rt)  # nothing in flight
    node.pending_since, rt.t = 1.0, 1.4
    assert not node.may_push(rt) and rt.logged("gossip_timeouts") == []
    rt.t = 1.5
    assert node.may_push(rt) and rt.logged("gossip_timeouts") == [1]
    patient = _push_node(symmetric=True, reply_timeout=None)
    patient.pending_since, rt.t = 0.0, 1e9
    assert not patient.may_push(rt)
    one_way = _push_node(symmetric=False)
    one_way.pending_since = 0.0
    assert one_way.may_push(rt)


def test_push_gossip_run_reports_epoch_0_then_pushes_round_robin_each_step():
    from simbench.algorithms.gossip import GossipNode, GossipParams

    learner = Quad([1.0], lr=0.5, spe=2)
    node = no_eval(GossipNode(ctx(0, GossipParams(variant="push", peer_selection="round_robin", symmetric=False),
                                  learner, epochs=2)))
    rt = FakeRt(0, (1, 2, 3))
    drive(node.run(rt))
    assert node.ends == [0, 1, 2] and all(type(e) is int for e in node.ends)
    assert [(dst, m["step"]) for dst, m in rt.sent_of("gossip")] == [(1, 0), (2, 1), (3, 2), (1, 3)]
    resumed = no_eval(GossipNode(ctx(0, GossipParams(variant="push"), Quad([1.0], spe=2), epochs=1)))
    resumed.step = 1
    drive(resumed.run(FakeRt(0, (1,))))
    assert resumed.ends == [1]


# -- D-SGD -------------------------------------------------------------------------------------------
def test_dsgd_seed_mixing_with_self_weight_two():
    """(w x + sum_j x_j)/(w + deg) at w = 2: x = 1 with neighbours 4 and 7 gives 13/4."""
    from simbench.algorithms.dsgd import mix_seed

    assert mix_seed(torch.tensor([1.0]), [torch.tensor([4.0]), torch.tensor([7.0])], 2.0).item() == 3.25
    assert mix_seed(torch.tensor([1.0]), [torch.tensor([4.0])], 1.0).item() == 2.5


def test_dsgd_swap_slots_come_from_the_whole_graph_and_a_lone_node_has_no_edges():
    """Node 0 of a ring of 8 swaps with 7 (its nearest below, cyclically over all 8 nodes) at
    step 0 and with 1 at step 4 of a round of 8 (seed 003's ring schedule); a node built
    without a graph has no neighbours and no slots."""
    from simbench.algorithms.dsgd import DSGDNode, DSGDParams

    node = DSGDNode(ctx(0, DSGDParams(round_cnt=8), Quad([0.0]), graph=nx.cycle_graph(8)))
    assert node.swaps.slots == {7: 0, 1: 4}
    alone = DSGDNode(ctx(0, DSGDParams(), Quad([0.0])))
    assert alone.rcv == {} and alone.swaps.slots == {}


def test_dsgd_names_its_swap_server_task():
    """The helper task answering swaps is named, so deadlock reports say "node0.swaps"."""
    from simbench.algorithms.dsgd import DSGDNode, DSGDParams

    class Stop(Exception):
        pass

    names = []

    def spawn(coro, name):
        coro.close()
        names.append(name)
        raise Stop

    rt = FakeRt(0, (1,))
    rt.spawn = spawn
    node = no_eval(DSGDNode(ctx(0, DSGDParams(), Quad([0.0]), graph=nx.path_graph(2))))
    with pytest.raises(Stop):
        drive(node.run(rt))
    assert names == ["swaps"]


def test_push_gossip_reports_whole_epoch_numbers():
    from simbench.algorithms.gossip import GossipNode, GossipParams

    node = no_eval(GossipNode(ctx(0, GossipParams(variant="push"), Quad([1.0], spe=2), epochs=2)))
    drive(node.run(FakeRt(0, (1,))))
    assert node.ends == [0, 1, 2] and [type(e) for e in node.ends] == [int, int, int]


# -- ps_async: Hardy's per-parameter staleness ------------------------------------------------------
def _bare_async_server(version, pulled, finished, numel=4):
    """The server's per-parameter state alone (the shard and network are not needed)."""
    from simbench.algorithms.ps_async import PSAsyncServer, TouchLog

    srv = object.__new__(PSAsyncServer)
    srv.touches, srv.version, srv.pulled, srv.finished = TouchLog(numel), version, pulled, finished
    srv.param_staleness_sum, srv.param_staleness_count, srv.param_staleness_max = 0.0, 0, 0
    return srv


def test_per_parameter_staleness_counts_the_updates_that_touched_each_entry_since_the_pull():
    """Updates 1 (entries 0, 1) and 2 (dense) were applied since worker 1 pulled version 1:
    its push to entries 1 and 3 is divided by 2 and 1. The history is kept back to the oldest
    version a live worker other than the sender holds (worker 3's 2; worker 2 finished)."""
    srv = _bare_async_server(version=3, pulled={1: 1, 2: 0, 3: 2}, finished={2})
    srv.touches.record(1, torch.tensor([0, 1]))
    srv.touches.record(2, None)
    grad = torch.full((4,), 6.0)  # the decompressed push: zero but at idx
    push = Message("grad", {"version": 1}, {"idx": torch.tensor([1, 3])})
    push.src = 1
    srv.scale_per_parameter(grad, push)
    assert grad.tolist() == [6.0, 3.0, 6.0, 6.0]
    assert (srv.param_staleness_sum, srv.param_staleness_count, srv.param_staleness_max) == (3.0, 2, 2)
    assert [v for v, _ in srv.touches.entries] == [2, 3]
    # worker 3 (pulled 2) pushes entry 0: touched by update 2 only (update 3 touched 1 and 3)
    grad = torch.full((4,), 5.0)
    srv.version = 4
    push = Message("grad", {"version": 2}, {"idx": torch.tensor([0])})
    push.src = 3
    srv.scale_per_parameter(grad, push)
    assert grad.tolist() == [5.0] * 4
    assert (srv.param_staleness_sum, srv.param_staleness_count, srv.param_staleness_max) == (4.0, 3, 2)


def test_an_empty_sparse_push_leaves_the_staleness_statistics_alone():
    srv = _bare_async_server(version=1, pulled={1: 0}, finished=set())
    srv.touches.record(0, None)
    srv.scale_per_parameter(torch.zeros(4), Message("grad", {"version": 0}, {"idx": torch.zeros(0, dtype=torch.long)}))
    assert (srv.param_staleness_sum, srv.param_staleness_count, srv.param_staleness_max) == (0.0, 0, 0)


def test_dense_per_parameter_division_and_the_servers_update_cost():
    from simbench.algorithms.ps_async import scale_by_parameter_staleness

    grad = torch.tensor([6.0, 6.0, 6.0])
    scale_by_parameter_staleness(grad, None, torch.tensor([0, 2, 3]))
    assert grad.tolist() == [6.0, 3.0, 2.0]  # staleness 0 counts as 1
    srv = _bare_async_server(version=0, pulled={}, finished=set())
    srv.params = SimpleNamespace(handle_time=None)
    srv.shard = SimpleNamespace(numel=10)
    assert srv.service_cost().flops == 40.0  # 4 FLOPs per parameter of the shard
    srv.params.handle_time = 0.25
    assert srv.service_cost() == 0.25


# -- ps_async: the server's and worker's loops ------------------------------------------------------
def _async_server(params, workers=(1,), epochs=1, steps_per_epoch=1, **kw):
    """A one-shard ``ps_async`` server (node 0) over a 4-parameter Quad (lr 0.5), whose epoch
    reports record (time, epoch), on a FakeRt whose ``spawn`` runs each handler at once until
    it has served every queued request (a handler then waits forever); names are recorded."""
    from simbench.algorithms.ps_async import PSAsyncServer

    roles = {0: "server", **{w: "worker" for w in workers}}
    srv = PSAsyncServer(ctx(0, params, Quad([0.0] * 4, lr=0.5), roles, epochs=epochs, steps_per_epoch=steps_per_epoch, **kw))
    srv.ends = []
    srv.end_epoch = lambda rt, epoch: srv.ends.append((rt.t, epoch))
    rt = FakeRt(0, nodes=roles)

    def spawn(coro, name=None):
        rt.spawned.append(name)
        with pytest.raises(AssertionError, match="wait forever"):
            drive(coro)
        return SimpleNamespace(cancel=lambda: None)

    rt.spawn = spawn
    return srv, rt


def test_async_server_counts_staleness_per_update_and_per_entry_and_reports_each_epoch():
    """One worker, one step per epoch, 2 epochs: an epoch is one update. Its second push was
    computed on version 0 after update 1 came in: staleness 1, and each dense entry was touched
    by that one update (per-entry staleness 1, divided by max(1, 1)). The model steps by
    lr * g: 0 -> -2 -> -4; every reply carries the new version."""
    from simbench.algorithms.ps_async import PSAsyncParams

    srv, rt = _async_server(PSAsyncParams(parameter_staleness=True), epochs=2)
    rt.deliver(1.0, 1, "pull")
    rt.deliver(2.0, 1, "grad", {"version": 0, "n": 1}, {"g": [4.0] * 4})
    rt.deliver(3.5, 1, "grad", {"version": 0, "n": 1}, {"g": [4.0] * 4})
    rt.deliver(5.0, 1, "done")
    drive(srv.run(rt))
    assert rt.spawned == ["handler0"]
    assert [(m["version"], m.tensors["x"].tolist()) for _dst, m in rt.sent_of("params")] == \
        [(0, [0.0] * 4), (1, [-2.0] * 4), (2, [-4.0] * 4)]
    assert srv.ends == [(0.0, 0), (2.0, 1), (3.5, 2)]  # one epoch per update, at its arrival
    assert rt.logged("staleness") == [0.0, 1.0] and rt.logged("staleness_mean") == [0.5]
    assert (srv.updates, srv.staleness_sum, srv.longest_gap) == (2, 1, 1.5)
    assert (srv.param_staleness_sum, srv.param_staleness_count) == (4.0, 8)
    assert rt.logged("param_staleness_mean") == [0.5] and rt.logged("param_staleness_max") == [1.0]
    assert rt.sent_of("stop") == [(1, rt.sent_of("stop")[0][1])]


def test_async_server_with_only_fresh_updates_logs_zero_staleness():
    """One update on the newest model: staleness 0 for the update and for every entry."""
    from simbench.algorithms.ps_async import PSAsyncParams

    srv, rt = _async_server(PSAsyncParams(parameter_staleness=True))
    rt.deliver(2.0, 1, "grad", {"version": 0, "n": 1}, {"g": [2.0] * 4})
    rt.deliver(3.0, 1, "done")
    drive(srv.run(rt))
    assert rt.logged("staleness_mean") == [0.0]
    assert rt.logged("param_staleness_mean") == [0.0] and rt.logged("param_staleness_max") == [0.0]
    assert srv.ends == [(0.0, 0), (2.0, 1)]


def test_async_server_counts_silent_workers_gone_after_the_timeout_from_the_start():
    """Workers 1 and 2 never speak: both are counted gone when the run has been silent for
    ``worker_timeout`` (2 s, no gap seen yet, no network to stretch it); the server then
    reports the one epoch its workers owed. ``multi`` spawns ``handlers`` named handlers."""
    from simbench.algorithms.ps_async import PSAsyncParams

    params = PSAsyncParams(worker_timeout=2.0, ps_mode="multi", handlers=3)
    srv, rt = _async_server(params, workers=(1, 2))
    assert srv.silence_limit() == 2.0  # before the run: the timeout as set
    drive(srv.run(rt))
    assert rt.spawned == ["handler0", "handler1", "handler2"]
    assert rt.logged("worker_timeouts") == [2] and rt.t == 2.0
    assert srv.ends == [(0.0, 0), (2.0, 1)] and srv.finished == {1, 2}


def _async_worker(steps_done=0):
    from simbench.algorithms.ps_async import PSAsyncParams, PSAsyncWorker

    learner = Quad([1.0, 1.0], spe=2)
    learner.steps_done = steps_done
    worker = PSAsyncWorker(ctx(1, PSAsyncParams(), learner, {0: "server", 1: "worker"}, epochs=1))
    rt = FakeRt(1, nodes=(0, 1))
    for at, version in ((1.0, 0), (2.0, 1), (3.0, 2)):
        rt.deliver(at, 0, "params", {"version": version}, {"x": [0.0, float(version)]})
    return worker, rt


def test_async_worker_takes_exactly_epochs_times_steps_per_epoch_steps_then_says_done():
    """One epoch of 2 steps: pull, push on version 0, push on version 1, then done on the third
    reply; each push is x - c at the model just received, tagged with its version."""
    worker, rt = _async_worker()
    drive(worker.run(rt))
    assert [m.kind for _t, _dst, m in rt.sent] == ["pull", "grad", "grad", "done"]
    assert [(m["version"], m.tensors["g"].tolist()) for _dst, m in rt.sent_of("grad")] == \
        [(0, [-1.0, -1.0]), (1, [-1.0, 0.0])]
    assert worker.learner.steps_done == 2 and worker.learner.idles == 2


def test_async_worker_that_has_done_its_steps_does_not_pull():
    """Restored with every step done: it sends nothing, not even a pull."""
    worker, rt = _async_worker(steps_done=2)
    drive(worker.run(rt))
    assert rt.sent == [] and len(rt.queue) == 3


# -- gan_single: the centralized baseline ---------------------------------------------------------
def test_gan_single_charges_each_epoch_its_steps_flops_and_reports_every_epoch():
    """One call per epoch of ``steps_per_epoch`` steps, charged steps x the learner's FLOPs
    per step (1e6 for the Quad) with the step count; reports at 0 and after each epoch."""
    from simbench.algorithms.gan_single import GanSingleNode, GanSingleParams
    from simbench.core.runtime import Work

    learner = Quad([1.0], spe=3)
    node = no_eval(GanSingleNode(ctx(0, GanSingleParams(), learner, epochs=2)))
    rt = FakeRt()
    drive(node.run(rt))
    assert rt.costs == [Work(flops=3e6, steps=3)] * 2
    assert node.ends == [0, 1, 2] and learner.steps_done == 6


def test_gan_single_trains_on_the_lowest_node_and_leaves_the_others_idle():
    from simbench.algorithms.gan_single import GanSingle, GanSingleParams, GanSingleNode, IdleNode

    graph = nx.relabel_nodes(nx.path_graph(3), {0: 5, 1: 3, 2: 9})
    roles = GanSingle.roles(graph, GanSingleParams())
    assert roles == {5: "idle", 3: "worker", 9: "idle"}
    assert type(GanSingle.make_node(ctx(3, GanSingleParams(), Quad([0.0]), roles))) is GanSingleNode
    assert type(GanSingle.make_node(ctx(5, GanSingleParams(), None, roles))) is IdleNode


def test_async_server_resumed_means_one_stale_sparse_update_over_itself_and_can_wait_forever():
    """A server resumed at version 3 whose history holds a dense update at version 2: one push
    on version 2 to entry 1 is 1 update stale, and entry 1 was touched once since: both means
    are 1 / 1. Without ``worker_timeout`` the server waits for ``done`` however long it takes."""
    from simbench.algorithms.ps_async import PSAsyncParams

    srv, rt = _async_server(PSAsyncParams(parameter_staleness=True, worker_timeout=None))
    assert srv.silence_limit() is None
    srv.version = 3
    srv.touches.record(2, None)
    rt.deliver(1.0, 1, "grad", {"version": 2, "n": 1}, {"idx": [1], "val": [4.0]})
    rt.deliver(500.0, 1, "done")
    drive(srv.run(rt))
    assert rt.sent_of("params")[0][1].tensors["x"].tolist() == [0.0, -2.0, 0.0, 0.0]
    assert rt.logged("staleness_mean") == [1.0] and rt.logged("param_staleness_mean") == [1.0]
    assert srv.ends == [(1.0, 1)] and rt.t == 500.0 and rt.logged("worker_timeouts") == []


def test_async_server_silence_limit_stretches_to_4x_the_longest_gap_and_the_nominal_cycle():
    """Two workers' dense pushes and replies of 4 float32 parameters through a 64 B/s link:
    2 x 2 x 16 B / 64 B/s = 1 s (0 when the capacity is unknown or infinite). The limit is the
    largest of the timeout, 4x the longest gap and 4x that cycle."""
    from simbench.algorithms.ps_async import PSAsyncParams

    params = PSAsyncParams(worker_timeout=1.0)
    srv, _rt = _async_server(params, workers=(1, 2), network=SimpleNamespace(narrowest=64.0))
    assert srv.cycle_estimate(2) == 1.0 and srv.cycle_estimate(3) == 1.5
    for bw in (math.inf, 0.0):
        assert _async_server(params, network=SimpleNamespace(narrowest=bw))[0].cycle_estimate(2) == 0.0
    assert _async_server(params, network=SimpleNamespace(narrowest=0.5))[0].cycle_estimate(2) == 128.0
    srv.nominal_cycle, srv.longest_gap = 0.5, 0.75
    assert srv.silence_limit() == 3.0
    srv.longest_gap = 0.1
    assert srv.silence_limit() == 2.0
    srv.nominal_cycle = 0.05
    assert srv.silence_limit() == 1.0


def test_staleness_aware_with_adacomp_is_refused_with_the_way_out():
    from simbench.algorithms.ps_async import PSAsyncParams

    with pytest.raises(ConfigError) as err:
        PSAsyncParams(staleness_aware=True, compression="adacomp")
    assert str(err.value) == (
        "algorithm.staleness_aware: true cannot be combined with parameter_staleness (on by default with "
        "compression: adacomp); set parameter_staleness: false for Zhang et al.'s whole-update rule")
    assert PSAsyncParams(staleness_aware=True, compression="adacomp", parameter_staleness=False).staleness_aware
