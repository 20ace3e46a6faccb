"""The synchronous parameter server's rules by hand (``simbench/algorithms/ps.py``, seed 002's
ASGD, Li et al.'s key-range shards): roles of shards and supervisor with their messages,
shard ranges of sizes not divisible by k, a shard's slice, reply, epoch reports and finish,
a worker's view of the shards (collect, assemble, split, push), the supervisor's period and
stop, and ``ps_sync`` rounds on unequal batches with stale and late gradients. Nodes run on
``FakeRt`` (scripted arrival times, no simulator)."""

from __future__ import annotations

from types import SimpleNamespace

import networkx as nx
import pytest
import torch

from algorithms.test_rules_by_hand import FakeRt, Quad, ctx, drive, no_eval
from simbench.algorithms.compression import CompressionParams
from simbench.algorithms.ps import (PSSync, PSSyncParams, PSSyncServer, PSWorker, ShardedModel, Supervisor,
                                    make_compressor, ps_roles, serve_pulls, shard_ranges, shard_roles, stop_others)
from simbench.core.message import Message
from simbench.core.schema import ConfigError


class SliceQuad(Quad):
    """Quad with a shard's slice update (SGD of step lr on ``flat[a:b]``) and an evaluation that
    records the model it was asked about."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.slices, self.evaluated = [], []

    def apply_update_slice(self, grad, start, stop):
        self.slices.append((grad.tolist(), start, stop))
        self.flat[start:stop] -= self._lr * grad

    def evaluate(self, x, y):
        self.evaluated.append(self.flat.tolist())
        return float(self.flat.sum()), float(len(self.evaluated))


def hubs_graph(n, servers):
    """Nodes 0..n-1; ``servers`` (role server) linked to every other node, nothing else."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for s in servers:
        g.nodes[s]["role"] = "server"
        g.add_edges_from((s, j) for j in range(n) if j != s)
    return g


# -- roles and ranges -------------------------------------------------------------------------
def test_shard_ranges_cut_at_floor_of_j_n_over_k():
    assert shard_ranges(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert shard_ranges(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert shard_ranges(1, 1) == [(0, 1)]
    for k in (0, 8):
        with pytest.raises(ConfigError, match=rf"^algorithm.shards: {k} shards for a model of 7 parameters; allowed: 1 to 7$"):
            shard_ranges(7, k)


def test_shard_roles_lowest_server_reports_and_each_server_must_reach_everyone():
    roles = shard_roles(hubs_graph(6, [4, 1, 3]), "ps_sync", 3)
    assert roles == {0: "worker", 1: "server", 2: "worker", 3: "shard", 4: "shard", 5: "worker"}
    with pytest.raises(ConfigError, match=r"^algorithm.shards: 2 shards need 2 server nodes "
                                          r"\(topology: \{kind: star, hubs: 2\}\); the topology has 3$"):
        shard_roles(hubs_graph(6, [4, 1, 3]), "ps_sync", 2)
    g = hubs_graph(5, [0, 1])
    g.remove_edge(1, 4)
    with pytest.raises(ConfigError, match=r"^topology: ps_x needs server node 1 linked to every other node "
                                          r"\(topology: \{kind: star, hubs: 2\}\); it reaches 3 of 4$"):
        shard_roles(g, "ps_x", 2)


def test_ps_roles_with_shards_and_a_supervisor_and_without_params_fields():
    params = PSSyncParams(shards=2, supervisor=True)
    assert ps_roles(hubs_graph(5, [0, 2]), "ps_sync", params) == {0: "server", 1: "worker", 2: "shard", 3: "worker",
                                                                   4: "supervisor"}
    assert PSSync.roles(hubs_graph(5, [0, 2]), params)[4] == "supervisor"
    with pytest.raises(ConfigError, match="^algorithm.supervisor: ps_sync needs"):
        PSSync.roles(nx.star_graph(1), params.__class__(supervisor=True))
    # two workers are enough: the supervisor takes the higher one
    assert ps_roles(nx.star_graph(2), "ps_sync", PSSyncParams(supervisor=True)) == {0: "server", 1: "worker",
                                                                                    2: "supervisor"}
    # params without shards / supervisor fields: one server, no supervisor
    assert ps_roles(nx.star_graph(3), "x", SimpleNamespace()) == {0: "server", 1: "worker", 2: "worker", 3: "worker"}
    with pytest.raises(ConfigError, match="^algorithm.supervisor: ps_y needs at least 2 non-server nodes for a supervisor$"):
        ps_roles(hubs_graph(3, [0, 1]), "ps_y", PSSyncParams(shards=2, supervisor=True))
    with pytest.raises(ConfigError, match="^algorithm.shards: 2 shards need 2 server nodes"):
        ps_roles(nx.star_graph(3), "ps_sync", PSSyncParams(shards=2))
    # the algorithm's name reaches the topology errors of one server and of shards
    with pytest.raises(ConfigError, match="^topology: ps_z needs a server linked to every other node"):
        ps_roles(nx.path_graph(4), "ps_z", PSSyncParams())
    bad = hubs_graph(5, [0, 1])
    bad.remove_edge(1, 4)
    with pytest.raises(ConfigError, match="^topology: ps_z needs server node 1 linked"):
        ps_roles(bad, "ps_z", PSSyncParams(shards=2))


def test_make_node_builds_each_role():
    p = PSSyncParams()
    roles = {0: "server", 1: "shard", 2: "worker", 3: "supervisor"}
    kinds = {i: type(PSSync.make_node(ctx(i, p, Quad([0.0] * 4), roles))) for i in roles}
    assert kinds == {0: PSSyncServer, 1: PSSyncServer, 2: PSWorker, 3: Supervisor}
    assert PSSync.model_holders == ("worker", "server", "shard", "supervisor")


# -- a server shard ---------------------------------------------------------------------------------
SHARD_ROLES = {0: "worker", 1: "shard", 2: "server", 3: "worker", 4: "shard"}


def _shard(node_id, learner, roles=SHARD_ROLES, **kw):
    node = no_eval(PSSyncServer(ctx(node_id, PSSyncParams(), learner, roles, **kw)))
    return node, node.shard


def test_server_shard_owns_its_slice_in_shard_order():
    """Servers in order 2 (server), 1, 4 (shards by id) over 7 parameters: [0,2) [2,4) [4,7)."""
    learner = SliceQuad([0.0] * 7, x0=[0.0, 1, 2, 3, 4, 5, 6])
    _node, sh = _shard(4, learner)
    assert sh.servers == [2, 1, 4] and sh.index == 2 and (sh.start, sh.stop, sh.numel) == (4, 7, 3)
    assert sh.sharded and sh.reports == [] and sh.last_epoch == -1
    x = sh.x()
    assert x.tolist() == [4.0, 5.0, 6.0]
    x += 100
    assert learner.flat.tolist() == [0.0, 1, 2, 3, 4, 5, 6]  # a copy
    msg = sh.reply("params", {"round": 3})
    assert msg.kind == "params" and msg.meta == {"round": 3, "shard": 2} and msg.tensors["x"].tolist() == [4.0, 5.0, 6.0]
    sh.apply(torch.tensor([1.0, 2.0, 3.0]))
    assert learner.slices == [([1.0, 2.0, 3.0], 4, 7)] and learner.handed == []
    assert learner.flat.tolist() == [0.0, 1, 2, 3, 3, 3, 3]
    _node, s1 = _shard(1, SliceQuad([0.0] * 7))
    assert (s1.index, s1.start, s1.stop, s1.numel) == (1, 2, 4, 2)


def test_a_single_server_steps_the_whole_model_with_the_learners_optimizer():
    learner = SliceQuad([0.0] * 3, x0=[1.0, 2.0, 3.0], lr=0.5)
    _node, sh = _shard(0, learner, roles={0: "server", 1: "worker"})
    assert not sh.sharded and (sh.start, sh.stop, sh.numel, sh.index) == (0, 3, 3, 0)
    sh.apply(torch.tensor([2.0, 2.0, 4.0]))
    assert learner.slices == [] and learner.handed[0].tolist() == [2.0, 2.0, 4.0]
    assert learner.flat.tolist() == [0.0, 1.0, 1.0]
    rt = FakeRt(0, nodes=range(2))
    on = []
    _node.end_epoch = lambda r, epoch: on.append((r is rt, epoch))
    drive(sh.end_epoch(rt, 3))
    assert on == [(True, 3)] and sh.last_epoch == 3 and rt.sent == [] and rt.spawned == []


def test_other_shards_send_their_slice_to_shard_0_and_finish_sends_the_missing_epochs():
    learner = SliceQuad([0.0] * 7, x0=[0.0, 1, 2, 3, 4, 5, 6])
    node, sh = _shard(1, learner)
    rt = FakeRt(1, nodes=range(5))
    drive(sh.end_epoch(rt, 0))
    drive(sh.end_epoch(rt, 1))
    assert node.ends == [] and sh.last_epoch == 1
    drive(sh.finish(rt, 3))
    got = [(dst, m.kind, m.meta, m.tensors["x"].tolist()) for _t, dst, m in rt.sent]
    assert got == [(2, "slice", {"epoch": e, "shard": 1}, [2.0, 3.0]) for e in (0, 1, 2, 3)]
    rt = FakeRt(1, nodes=range(5))
    drive(sh.finish(rt, 1))
    assert rt.sent == []


def test_shard_0_reports_the_concatenation_once_every_slice_of_that_epoch_came_in():
    """Shard 0 (node 2) keeps its slice at the epoch's end; shards 1 and 4 send theirs (epoch 1
    of shard 4 before epoch 0's, and a slice of another epoch that must not count); the
    evaluated model is the concatenation in shard order, and the live model comes back."""
    learner = SliceQuad([0.0] * 7, x0=[0.0, 1, 2, 3, 4, 5, 6])
    seen = []
    node = PSSyncServer(ctx(2, PSSyncParams(), learner, SHARD_ROLES))
    node.end_epoch = lambda on, epoch: seen.append((epoch, learner.flat.tolist(), on is rt))
    sh = node.shard
    rt = FakeRt(2, nodes=range(5))
    rt.deliver(1.0, 4, "slice", {"epoch": 1, "shard": 2}, {"x": [60.0, 61.0, 62.0]})
    rt.deliver(2.0, 4, "slice", {"epoch": 0, "shard": 2}, {"x": [40.0, 41.0, 42.0]})
    rt.deliver(3.0, 1, "slice", {"epoch": 0, "shard": 1}, {"x": [20.0, 21.0]})
    rt.deliver(4.0, 1, "slice", {"epoch": 1, "shard": 1}, {"x": [30.0, 31.0]})
    drive(sh.end_epoch(rt, 0))
    learner.flat[:2] = torch.tensor([7.0, 8.0])  # shard 0's slice moves on before epoch 1 ends
    drive(sh.end_epoch(rt, 1))
    assert rt.spawned == ["report0", "report1"] and sh.last_epoch == 1 and rt.sent == []
    learner.flat[:] = torch.tensor([-1.0] * 7)
    drive(sh.finish(rt, 1))
    assert seen == [(0, [0.0, 1.0, 20.0, 21.0, 40.0, 41.0, 42.0], True), (1, [7.0, 8.0, 30.0, 31.0, 60.0, 61.0, 62.0], True)]
    assert learner.flat.tolist() == [-1.0] * 7 and rt.queue == []


# -- a worker's view of the shards -----------------------------------------------------------------
def test_sharded_model_collects_the_newest_of_each_server_in_shard_order_or_stops():
    sm = ShardedModel(ctx(0, PSSyncParams(), Quad([0.0] * 5), SHARD_ROLES))
    assert sm.servers == [2, 1, 4] and sm.ranges == [(0, 1), (1, 3), (3, 5)]
    rt = FakeRt(0, nodes=range(5))
    rt.deliver(0.1, 4, "params", {"round": 0}, {"x": [4.0, 4.5]})
    rt.deliver(0.2, 1, "other", {"round": 0}, {"x": [0.0]})
    rt.deliver(0.3, 1, "params", {"round": 0}, {"x": [1.0, 1.5]})
    rt.deliver(0.4, 1, "params", {"round": 1}, {"x": [3.0, 3.5]})  # comes before 2's: replaces 1's
    rt.deliver(0.5, 2, "params", {"round": 0}, {"x": [2.0]})
    rt.deliver(0.6, 4, "params", {"round": 1}, {"x": [9.0, 9.0]})  # after the set is complete: left
    msgs = drive(sm.collect(rt, "params"))
    assert [m.src for m in msgs] == [2, 1, 4] and msgs[1]["round"] == 1
    assert sm.assemble(msgs).tolist() == [2.0, 3.0, 3.5, 4.0, 4.5]
    assert len(rt.queue) == 2 and rt.t == 0.5
    rt.deliver(1.0, 2, "stop")
    assert drive(sm.collect(rt, "params")) is None
    one = Message("params", {}, {"x": torch.tensor([5.0, 6.0])})
    assert ShardedModel.assemble([one]) is one.tensors["x"]
    parts = sm.split({"g": torch.tensor([1.0, 2, 3, 4, 5])})
    assert [p["g"].tolist() for p in parts] == [[1.0], [2.0, 3.0], [4.0, 5.0]]
    single = ShardedModel(ctx(0, PSSyncParams(), Quad([0.0] * 5), {0: "worker", 3: "server"}))
    payload = {"g": torch.tensor([1.0, 2, 3, 4, 5])}
    assert single.servers == [3] and single.ranges == [(0, 5)] and single.split(payload)[0] is payload
    rt = FakeRt(0, nodes=range(5))
    drive(sm.send_all(rt, Message("pull_sup")))
    assert [(dst, m.kind) for _t, dst, m in rt.sent] == [(2, "pull_sup"), (1, "pull_sup"), (4, "pull_sup")]


def test_serve_pulls_answers_every_queued_pull_with_the_slice_and_stop_others_tells_everyone():
    learner = SliceQuad([0.0] * 5, x0=[0.0, 1, 2, 3, 4])
    _node, sh = _shard(1, learner)
    rt = FakeRt(1, nodes=range(5))
    rt.deliver(0.0, 3, "pull_sup")
    rt.deliver(0.0, 0, "grad", {"round": 0})
    rt.deliver(0.0, 0, "pull_sup")
    rt.deliver(5.0, 3, "pull_sup")  # not yet here: never waited for
    drive(serve_pulls(rt, sh, 7))
    got = [(dst, m.kind, m.meta, m.tensors["x"].tolist()) for _t, dst, m in rt.sent]
    assert got == [(3, "model", {"version": 7, "shard": 1}, [1.0, 2.0]), (0, "model", {"version": 7, "shard": 1}, [1.0, 2.0])]
    assert rt.t == 0.0 and [m.kind for _t, _s, m in rt.queue] == ["grad", "pull_sup"]
    rt = FakeRt(2, nodes=[4, 2, 0, 1])
    drive(stop_others(rt))
    assert [(dst, m.kind) for _t, dst, m in rt.sent] == [(4, "stop"), (0, "stop"), (1, "stop")]


# -- the supervisor --------------------------------------------------------------------------------
def test_supervisor_pulls_every_period_evaluates_the_whole_model_and_stops():
    """Period 2 s: pulls at t = 2 and (after the replies at 2.5) t = 4.5; the model is the
    shards' slices in shard order; a stop while it waits for replies ends it; so does a stop
    within the period."""
    learner = SliceQuad([0.0] * 3)
    roles = {0: "shard", 1: "server", 2: "worker", 3: "supervisor"}
    sup = Supervisor(ctx(3, PSSyncParams(supervisor=True, supervise_every=2.0), learner, roles,
                         test=(torch.zeros(1), torch.zeros(1))))
    rt = FakeRt(3, nodes=range(4))
    rt.deliver(2.5, 0, "model", {"version": 5, "shard": 1}, {"x": [2.0, 3.0]})
    rt.deliver(2.5, 1, "model", {"version": 4, "shard": 0}, {"x": [1.0]})
    rt.deliver(6.0, 1, "model", {"version": 9, "shard": 0}, {"x": [7.0]})
    rt.deliver(6.5, 0, "stop")
    drive(sup.run(rt))
    assert [(t, dst, m.kind) for t, dst, m in rt.sent] == [(2.0, 1, "pull_sup"), (2.0, 0, "pull_sup"),
                                                          (4.5, 1, "pull_sup"), (4.5, 0, "pull_sup")]
    assert learner.evaluated == [[1.0, 2.0, 3.0]]
    assert rt.logs == [("sup_test_acc", 1.0), ("sup_test_loss", 6.0), ("sup_version", 4.0)]
    assert rt.t == 6.5
    rt = FakeRt(3, nodes=range(4))
    rt.deliver(1.5, 1, "stop")
    drive(sup.run(rt))
    assert rt.sent == [] and rt.t == 1.5


# -- ps_sync rounds ---------------------------------------------------------------------------------
def test_a_ps_sync_shard_averages_its_slice_by_batch_size_and_reports_to_shard_0():
    """Shard 1 of 2 (node 1) over 4 parameters owns [2, 4). Two workers with batches 1 and 3,
    2 steps per epoch, 1 epoch: round 0 g = (1 [4, 8] + 3 [8, 0]) / 4 = [7, 2]; round 1 worker
    3's gradient is stale (round 0) and dropped, only worker 2's counts. Epoch 0's slice goes
    out first, epoch 1's after round 1; pulls queued are answered with the new round number;
    shard 1 does not stop the others."""
    roles = {0: "server", 1: "shard", 2: "worker", 3: "worker"}
    learner = SliceQuad([0.0] * 4, x0=[0.0, 0.0, 10.0, 20.0])
    node = no_eval(PSSyncServer(ctx(1, PSSyncParams(shards=2, timeout=1.0), learner, roles, epochs=1, steps_per_epoch=2)))
    rt = FakeRt(1, nodes=range(4))
    rt.deliver(0.1, 2, "grad", {"round": 0, "n": 1}, {"g": [4.0, 8.0]})
    rt.deliver(0.2, 3, "grad", {"round": 0, "n": 3}, {"g": [8.0, 0.0]})
    rt.deliver(0.2, 3, "pull_sup")
    rt.deliver(0.3, 3, "grad", {"round": 0, "n": 3}, {"g": [100.0, 100.0]})
    rt.deliver(0.4, 2, "grad", {"round": 1, "n": 1}, {"g": [1.0, -1.0]})
    drive(node.run(rt))
    assert learner.slices == [([7.0, 2.0], 2, 4), ([1.0, -1.0], 2, 4)]
    assert learner.flat.tolist() == [0.0, 0.0, 2.0, 19.0]
    sent = [(dst, m.kind, m.meta, m.tensors["x"].tolist()) for _t, dst, m in rt.sent]
    assert sent == [(0, "slice", {"epoch": 0, "shard": 1}, [10.0, 20.0]),
                    (2, "params", {"round": 0, "shard": 1}, [10.0, 20.0]),
                    (3, "params", {"round": 0, "shard": 1}, [10.0, 20.0]),
                    (3, "model", {"version": 1, "shard": 1}, [3.0, 18.0]),
                    (2, "params", {"round": 1, "shard": 1}, [3.0, 18.0]),
                    (3, "params", {"round": 1, "shard": 1}, [3.0, 18.0]),
                    (0, "slice", {"epoch": 1, "shard": 1}, [2.0, 19.0])]
    assert node.round == 2 and node.ends == [] and rt.logged("grad_timeouts") == [1]


def test_ps_sync_skips_a_round_nobody_answered_and_reports_epochs_by_steps_per_epoch():
    """One worker that never answers: each round times out, nothing is applied, the round still
    advances; 2 epochs of 2 steps report epochs 0, 1, 2; a server already past round 0 (resumed)
    does not report epoch 0 again."""
    learner = SliceQuad([0.0, 0.0], x0=[1.0, 2.0])
    roles = {0: "server", 1: "worker"}
    node = no_eval(PSSyncServer(ctx(0, PSSyncParams(timeout=0.5), learner, roles, epochs=2, steps_per_epoch=2)))
    assert node.round == 0
    rt = FakeRt(0, nodes=range(2))
    drive(node.run(rt))
    assert node.round == 4 and node.ends == [0, 1, 2] and learner.handed == [] and learner.flat.tolist() == [1.0, 2.0]
    assert rt.t == pytest.approx(2.0) and [m["round"] for _d, m in rt.sent_of("params")] == [0, 1, 2, 3]
    assert [dst for dst, _m in rt.sent_of("stop")] == [1]
    node.round = 2
    node.ends = []
    rt = FakeRt(0, nodes=range(2))
    drive(node.run(rt))
    assert node.ends == [2] and [m["round"] for _d, m in rt.sent_of("params")] == [2, 3]


# -- the worker --------------------------------------------------------------------------------------
def test_a_ps_worker_pulls_every_slice_computes_at_the_whole_model_and_pushes_each_part():
    """Servers 2 (shard 0: [0, 1)) and 1 (shard 1: [1, 3)); the gradient x - c at the assembled
    x goes out in parts, each tagged with the round of that server's pull and the batch size."""
    roles = {0: "worker", 1: "shard", 2: "server"}
    learner = Quad([1.0, 1.0, 1.0], batch=5)
    worker = PSWorker(ctx(0, PSSyncParams(shards=2), learner, roles))
    rt = FakeRt(0, nodes=range(3))
    rt.deliver(0.1, 1, "params", {"round": 4, "shard": 1}, {"x": [3.0, 5.0]})
    rt.deliver(0.2, 2, "params", {"round": 3, "shard": 0}, {"x": [2.0]})
    rt.deliver(0.3, 2, "stop")
    drive(worker.run(rt))
    got = [(dst, m.kind, m.meta, {k: v.tolist() for k, v in m.tensors.items()}) for _t, dst, m in rt.sent]
    assert got == [(2, "grad", {"round": 3, "n": 5}, {"g": [1.0]}), (1, "grad", {"round": 4, "n": 5}, {"g": [2.0, 4.0]})]
    assert learner.flat.tolist() == [2.0, 3.0, 5.0] and learner.idles == 1 and worker.pushes == 0


def test_a_compressing_worker_logs_its_ratio_once_per_epoch_of_pushes():
    learner = Quad([0.0] * 8, spe=2)
    p = PSSyncParams(compression="topk", k_fraction=0.25)
    worker = PSWorker(ctx(0, p, learner, {0: "worker", 1: "server"}))
    rt = FakeRt(0, nodes=range(2))
    learner.grad = torch.tensor([0.0, 5.0, 0.0, -7.0, 1.0, 0.0, 0.0, 0.0])
    first = worker.payload(rt)
    assert sorted(first["idx"].tolist()) == [1, 3] and worker.pushes == 1 and rt.logged("compression_ratio") == []
    worker.payload(rt)
    worker.payload(rt)
    assert worker.pushes == 3 and rt.logged("compression_ratio") == [worker.compressor.ratio]
    plain = PSWorker(ctx(0, PSSyncParams(), learner, {0: "worker", 1: "server"}))
    assert plain.payload(rt)["g"].tolist() == learner.grad.tolist() and plain.pushes == 0


def test_make_compressor_covers_the_learners_layers_with_a_seed_per_node():
    learner = Quad([0.0] * 6)
    c = make_compressor(ctx(2, CompressionParams(compression="random_k", k_fraction=0.5), learner))
    assert c.active and c.numel == 6 and c.params.compression == "random_k"
    assert c.gen.initial_seed() == 1000003 * 3 and c.layers[0].name == "w"
    plain = make_compressor(ctx(2, SimpleNamespace(), learner))
    assert not plain.active
    a = make_compressor(ctx(2, CompressionParams(compression="random_k", k_fraction=0.5), learner))
    b = make_compressor(ctx(3, CompressionParams(compression="random_k", k_fraction=0.5), learner))
    g = torch.arange(1.0, 7.0)
    assert a(g)["idx"].tolist() == c(g)["idx"].tolist()
    assert any(a(g)["idx"].tolist() != b(g)["idx"].tolist() for _ in range(5))


def test_ps_sync_decompresses_a_sparse_push_to_its_slice_length():
    """A top-k push (indices into the server's slice) becomes a dense gradient of the slice's
    length: shard 1 of [0, 2) [2, 5) gets idx 2 -> entry 4 of the model."""
    roles = {0: "server", 1: "shard", 2: "worker"}
    learner = SliceQuad([0.0] * 5)
    node = no_eval(PSSyncServer(ctx(1, PSSyncParams(shards=2), learner, roles, epochs=1, steps_per_epoch=1)))
    rt = FakeRt(1, nodes=range(3))
    rt.deliver(0.1, 2, "grad", {"round": 0, "n": 2}, {"idx": [2], "val": [3.0]})
    rt.queue[-1][2].tensors["idx"] = torch.tensor([2], dtype=torch.int32)
    drive(node.run(rt))
    assert learner.slices == [([0.0, 0.0, 3.0], 2, 5)] and learner.flat.tolist() == [0.0, 0.0, 0.0, 0.0, -3.0]


def test_a_compressing_worker_pushes_the_sparse_parts_and_logs_its_ratio_on_the_runtime():
    """Top-1 of x - c at [0, 3] (c = 0) is index 1 (3.0); with one server it goes out whole,
    and an epoch of 1 step logs the ratio once."""
    learner = Quad([0.0, 0.0], spe=1, batch=2)
    worker = PSWorker(ctx(0, PSSyncParams(compression="topk", k_fraction=0.5), learner, {0: "worker", 1: "server"}))
    rt = FakeRt(0, nodes=range(2))
    rt.deliver(0.1, 1, "params", {"round": 0, "shard": 0}, {"x": [0.0, 3.0]})
    rt.deliver(0.2, 1, "stop")
    drive(worker.run(rt))
    (dst, msg), = rt.sent_of("grad")
    assert dst == 1 and msg.meta == {"round": 0, "n": 2} and msg.tensors["idx"].tolist() == [1]
    assert msg.tensors["val"].tolist() == [3.0] and rt.logged("compression_ratio") == [worker.compressor.ratio]
