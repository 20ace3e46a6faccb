"""FL-GAN's and FeGAN's rules (seed 001, LPD-EPFL/FeGAN: ``dist-lsgan.py``, ``dist-dcgan.py``)
on the cases mutation testing found unchecked by ``test_rules_by_hand.py``: the scores'
invariance to the counts' scale and their silence on 0 log 0, ``dirac``'s ties at 0.5 and
its fallback when no device reaches 0.5, devices holding a single image of a class, a
sampler resumed from integer counts, which node each role builds, the servers' roles, the
state a primary replicates, the epochs a server reports over several epochs, and a primary
that never waits for a takeover."""

from __future__ import annotations

import math
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from algorithms.test_rules_by_hand import FakeRt, Quad, ctx, drive
from simbench.algorithms.fegan import BalancedSampler, FeGan, FeGanParams, FeGanServer, kl_scores, kl_weights
from simbench.algorithms.flgan import FedGanDevice, FedGanServer, FLGan, FLGanParams
from simbench.core.schema import ConfigError


def _server(cls, params, clients=2, servers=1, epochs=1):
    roles = {**{i: "server" for i in range(servers)}, **{i: "worker" for i in range(servers, servers + clients)}}
    learner = Quad([0.0, 0.0], lr=1.0)
    learner.last_losses = (0.0, 0.0)
    node = cls(ctx(0, params, learner, roles, steps_per_epoch=7, epochs=epochs))
    node.ends = []
    node.end_epoch = lambda rt, epoch: node.ends.append((rt, epoch))
    return node


def test_fedgan_kl_scores_depend_on_class_proportions_not_on_the_counts_scale():
    """e_k = KL(c_k/n_k || q) n_k/N is unchanged when every count is scaled, even below one
    image per device: (0.3, 0.1), (0, 0.4), (0.1, 0) score as (3, 1), (0, 4), (1, 0)."""
    counts = np.array([[3.0, 1.0], [0.0, 4.0], [1.0, 0.0]])
    expected = [4 / 9 * (0.75 * math.log(27 / 16) + 0.25 * math.log(9 / 20)), 4 / 9 * math.log(9 / 5), 1 / 9 * math.log(9 / 4)]
    assert kl_scores(counts / 10) == pytest.approx(expected)
    assert kl_scores(counts * 0.05) == pytest.approx(expected)


def test_fedgan_kl_scores_take_0_log_0_as_0_without_a_warning():
    """A class a device lacks (p = 0) and a class no device holds (q = 0) add nothing, and
    numpy's divide and invalid warnings stay silent (they would fail a run under -W error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = kl_scores(np.array([[2, 0, 0], [0, 2, 0]]))
        assert e == pytest.approx([0.5 * math.log(2), 0.5 * math.log(2)])


def test_fedgan_dirac_keeps_every_device_at_exactly_half_and_falls_back_to_the_largest_score():
    """The seed zeroes the weights below 0.5: two devices at exactly 0.5 keep half each. When
    none reaches 0.5 (0.4, 0.35, 0.25), all weight goes to the largest score (simbench's rule)."""
    assert kl_weights([0.3, 0.3], "dirac") == pytest.approx([0.5, 0.5])
    assert kl_weights([0.4, 0.35, 0.25], "dirac") == pytest.approx([1.0, 0.0, 0.0])
    assert kl_weights([0.2, 0.5, 0.3, 0.0], "dirac").tolist() == [0.0, 1.0, 0.0, 0.0]
    assert kl_weights([0.3, 0.2, 0.4, 0.1], "dirac").tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"^unknown weight_scheme 'softmax'; allowed: exp, linear, dirac$"):
        kl_weights([0.1], "softmax")


def test_fedgan_balanced_sampler_queues_a_device_holding_one_image_of_a_class():
    """Device 0 holds one image of class 0: class 0 (nothing taken) picks it first."""
    s = BalancedSampler(np.array([[1.0, 0.0], [0.0, 3.0]]))
    assert s.queues == [[0], [1]]
    assert s.sample(2) == [0, 1] and s.taken.tolist() == [1.0, 3.0]


def test_fedgan_balanced_sampler_resumes_from_a_state_with_integer_counts():
    """A state whose ``taken`` came back as integers (as a JSON encoder that writes 10.0 as 10 leaves them)
    resumes as floats: adding the next device's counts works and gives the same groups."""
    counts = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 5.0]])
    s = BalancedSampler(counts, {"taken": [10, 5, 5], "queues": [[0], [1], [3, 2]]})
    assert s.sample(2) == [1, 3] and s.taken.tolist() == [10.0, 10.0, 10.0]


def test_fedgan_make_node_builds_the_servers_and_devices_of_each_algorithm():
    roles = {0: "server", 1: "worker"}
    for algo, server_cls in ((FLGan, FedGanServer), (FeGan, FeGanServer)):
        params = algo.Params()
        s_ctx, d_ctx = ctx(0, params, Quad([0.0]), roles), ctx(1, params, Quad([0.0]), roles)
        server, device = algo.make_node(s_ctx), algo.make_node(d_ctx)
        assert type(server) is server_cls and server.ctx is s_ctx
        assert type(device) is FedGanDevice and device.ctx is d_ctx


def test_fedgan_roles_make_the_first_num_servers_nodes_servers_and_name_the_algorithm():
    assert FLGan.roles(nx.star_graph(2), FLGanParams()) == {0: "server", 1: "worker", 2: "worker"}
    assert FeGan.roles(nx.complete_graph(4), FeGanParams(num_servers=2)) == \
        {0: "server", 1: "server", 2: "worker", 3: "worker"}
    with pytest.raises(ConfigError, match=r"^topology: flgan needs server node 0"):
        FLGan.roles(nx.path_graph(3), FLGanParams())
    with pytest.raises(ConfigError, match=r"^topology: fegan needs server node 1 .*hubs: 2"):
        FeGan.roles(nx.star_graph(3), FeGanParams(num_servers=2))


def test_fedgan_primary_replicates_the_sampler_and_reports_each_of_several_epochs():
    """Two epochs of one round each (devices 2, 3 and a backup 1): the primary sends the
    sampler's state with each round's model, and reports epochs 0, 1, 2 (integers) on its
    runtime."""
    server = _server(FeGanServer, FeGanParams(frac_workers=0.5, rounds_per_epoch=1), clients=2, servers=2, epochs=2)
    server.counts = {2: np.array([3.0, 0.0]), 3: np.array([0.0, 1.0])}
    rt = FakeRt(0, nodes=(0, 1, 2, 3))
    for r, dev in ((0, 2), (1, 3)):
        rt.deliver(r + 0.5, dev, "update", {"round": r, "n": 1, "d_loss": 0.0, "g_loss": 0.0}, {"x": [float(dev), 1.0]})
    drive(server.lead(rt))
    states = rt.sent_of("state")
    assert [(dst, m["round"], m["sampler"]) for dst, m in states] == [
        (1, 1, {"taken": [3.0, 0.0], "queues": [[0], [1]]}), (1, 2, {"taken": [3.0, 1.0], "queues": [[0], [1]]})]
    assert [m.tensors["x"].tolist() for _dst, m in states] == [[2.0, 1.0], [3.0, 1.0]]
    assert [(r is rt, e, type(e)) for r, e in server.ends] == [(True, 0, int), (True, 1, int), (True, 2, int)]


def test_fedgan_primary_leads_at_once_without_waiting_for_a_takeover():
    """The primary (rank 0) gathers the counts and leads: no takeover is logged, no time lost."""
    server = _server(FedGanServer, FLGanParams(frac_workers=1.0, rounds_per_epoch=1, timeout=1.0), clients=1, servers=2)
    rt = FakeRt(0, nodes=(0, 1, 2))
    rt.deliver(0.0, 2, "counts", {"round": 0}, {"c": [1.0]})
    rt.deliver(0.5, 2, "update", {"round": 0, "n": 1, "d_loss": 0.0, "g_loss": 0.0}, {"x": [4.0, 0.0]})
    drive(server.run(rt))
    assert rt.logged("takeover") == [] and rt.t == pytest.approx(0.5)
    assert server.learner.flat.tolist() == [4.0, 0.0] and [e for _r, e in server.ends] == [0, 1]
    assert torch.equal(rt.sent_of("state")[0][1].tensors["x"], torch.tensor([4.0, 0.0]))


def test_fedgan_scores_and_weights_are_computed_in_double_whatever_the_input_dtype():
    """Single-precision counts, global counts or scores give the double-precision results of
    the same values (q = 1/3 and a softmax computed in float32 would be off by ~1e-8)."""
    counts = np.array([[2, 1, 0], [1, 1, 4]], dtype=np.float32)
    glob = np.array([1, 1, 1], dtype=np.float32)
    assert kl_scores(counts) == pytest.approx(kl_scores(counts.astype(np.float64)), rel=1e-14, abs=0)
    assert kl_scores(counts.astype(np.float64), glob) == pytest.approx(
        kl_scores(counts.astype(np.float64), glob.astype(np.float64)), rel=1e-14, abs=0)
    scores = np.array([0.1, 0.2, 0.7], dtype=np.float32)
    for scheme in ("exp", "linear"):
        assert kl_weights(scores, scheme) == pytest.approx(kl_weights(scores.astype(np.float64), scheme), rel=1e-14, abs=0)
