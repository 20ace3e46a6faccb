"""MD-GAN's rules (Hardy et al., IPDPS 2019; simbench/algorithms/mdgan.py) against hand-computed
cases, for what ``test_rules_by_hand.py`` does not pin down (docs/mutation.md)."""

from __future__ import annotations

import numpy as np

from algorithms.test_rules_by_hand import FakeDisc, FakeGenerator, FakeRt, ctx, drive
from simbench.algorithms.mdgan import MDGan, MDGanParams, MDGanServer, MDGanWorker


def _server(rounds, swap_epochs, seed=5):
    """A server with one round per epoch (a shard of 1 step, L = 1), ``rounds`` epochs and workers
    1, 2, 3 that answer every round at once; in the rounds that ask for them, each sends its
    D = [10 w]. The epochs it reports are recorded with the runtime they were given."""
    server = MDGanServer(ctx(0, MDGanParams(disc_steps=1, swap_epochs=swap_epochs), FakeGenerator(),
                             epochs=rounds, steps_per_epoch=1))
    server.ends = []
    server.end_epoch = lambda rt, epoch: server.ends.append((rt, epoch))
    rt = FakeRt(0, nodes=(0, 1, 2, 3), seed=seed)
    return server, rt


def _answer(rt, r, swap):
    for w in (1, 2, 3):
        rt.deliver(float(r), w, "feedback", {"round": r, "d_loss": 0.0, "g_loss": 0.0},
                   {"f": [0.0, 0.0], **({"d": [10.0 * w]} if swap else {})})


def test_mdgan_swaps_every_swap_epochs_and_hands_the_ds_over_with_the_next_batches():
    """swap_epochs 3, one round per epoch, 4 epochs: only round 2 (the third) asks for the Ds;
    round 3's batches carry them, worker order[j + 1] getting order[j]'s D for the server's
    random order of the senders; the other rounds carry no D. Every epoch 0..4 is reported,
    as an int, with the server's runtime."""
    server, rt = _server(4, 3)
    for r in range(4):
        _answer(rt, r, r == 2)
    drive(server.run(rt))
    batches = rt.sent_of("batches")
    assert [(dst, m["round"], m["swap"]) for dst, m in batches] == \
        [(w, r, r == 2) for r in range(4) for w in (1, 2, 3)]
    order = [[1, 2, 3][i] for i in np.random.default_rng(5).permutation(3)]
    expected = {order[(j + 1) % 3]: 10.0 * src for j, src in enumerate(order)}
    assert {dst: m.tensors["d"].tolist() for dst, m in batches[9:]} == {w: [d] for w, d in expected.items()}
    assert all("d" not in m.tensors for _dst, m in batches[:9]) and set(batches[9][1].tensors) == {"xd", "xg", "d"}
    assert server.handoff == {} and rt.logged("swaps") == [3]
    assert [e for _rt, e in server.ends] == [0, 1, 2, 3, 4] and all(type(e) is int for _rt, e in server.ends)
    assert all(r is rt for r, _e in server.ends)


def test_mdgan_swap_epochs_1_with_one_round_per_epoch_swaps_every_round():
    server, rt = _server(2, 1)
    for r in range(2):
        _answer(rt, r, True)
    drive(server.run(rt))
    assert [m["swap"] for _dst, m in rt.sent_of("batches")] == [True] * 6
    assert rt.logged("swaps") == [3, 3]


def test_mdgan_makes_the_server_on_node_0_and_workers_elsewhere():
    roles = {0: "server", 1: "worker"}
    server = MDGan.make_node(ctx(0, MDGanParams(), FakeGenerator(), roles))
    worker = MDGan.make_node(ctx(1, MDGanParams(), FakeDisc(), roles))
    assert type(server) is MDGanServer and server.ctx.node_id == 0 and server.ctx.role == "server"
    assert type(worker) is MDGanWorker and worker.ctx.node_id == 1 and worker.learner is not None


def test_mdgan_worker_leaves_other_messages_waiting():
    """The worker takes only the server's batches and stop; a message of another kind stays queued."""
    learner = FakeDisc()
    worker = MDGanWorker(ctx(1, MDGanParams(disc_steps=1), learner))
    rt = FakeRt(1)
    rt.deliver(0.0, 2, "other", {"round": 0, "swap": False})
    rt.deliver(0.5, 0, "batches", {"round": 0, "swap": False}, {"xd": [1.0], "xg": [2.0]})
    rt.deliver(1.0, 0, "stop")
    drive(worker.run(rt))
    assert learner.d_steps == [[1.0]] and [m.kind for _at, _s, m in rt.queue] == ["other"]
    assert [m.tensors["f"].tolist() for _d, m in rt.sent_of("feedback")] == [[-2.0]]
