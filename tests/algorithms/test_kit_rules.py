"""More of ``simbench/algorithms/kit.py``'s shared rules against hand-computed cases, where
``test_rules_by_hand.py`` leaves them open (docs/mutation.md): what :func:`kit.wait_each` returns
and where its deadline falls, which messages edge swaps, their server task, goodbyes and round
barrier take and which they leave queued for another part of the node, goodbyes already waiting
when a step starts or arriving during a swap, round numbers over several rounds, swap slots on a
period the degree does not divide, the runtime the step clock hands to ``end_epoch``, the
federated round's start and timeout, the federated client's work, and error texts word for word.

Every test drives a coroutine on :class:`FakeRt` (messages arrive at scripted times), so the file
runs in well under a second."""

from __future__ import annotations

from types import SimpleNamespace

import networkx as nx
import pytest
import torch

from simbench.algorithms import kit
from simbench.algorithms.fedavg import FedAvgClient, FedAvgParams, FedAvgServer
from simbench.core.message import Message
from simbench.core.schema import ConfigError

from algorithms.test_rules_by_hand import FakeRt, Quad, ctx, drive, no_eval
from simhelpers import error


def queued(rt):
    """``(src, kind, round)`` of every message still waiting in ``rt``'s queue, oldest first."""
    return [(m.src, m.kind, m.get("round")) for _t, _s, m in rt.queue]


# -- wait_each ----------------------------------------------------------------------------------------
def _wait_for_three(rt, timeout, first=0.0, second=0.5):
    """wait_each on ``rt`` for peers 1, 2 and 3, whose "a" messages come at ``first`` and ``second``
    seconds and never: what it returns, the pending set it was handed, the senders taken."""
    rt.deliver(first, 1, "a")
    rt.deliver(second, 2, "a")
    pending, taken = {1, 2, 3}, []

    def take(msg):
        taken.append(msg.src)
        pending.discard(msg.src)

    return drive(kit.wait_each(rt, pending, timeout, "a", take)), pending, taken


def test_wait_each_returns_its_pending_set_holding_the_peers_not_heard_by_the_deadline():
    """Peers 1 (queued), 2 (0.5 s) and 3 (silent), 1 s: the same set comes back, holding 3, at 1 s."""
    rt = FakeRt()
    left, pending, taken = _wait_for_three(rt, 1.0)
    assert left is pending and left == {3}
    assert taken == [1, 2] and rt.t == pytest.approx(1.0)


def test_wait_each_with_a_zero_timeout_takes_what_has_arrived_without_waiting():
    """A timeout of 0 waits for nothing but, as ``rt.recv(timeout=0)`` in both runtimes, still
    hands over what has arrived: 1's message (queued), not 2's (0.5 s)."""
    rt = FakeRt()
    left, _, taken = _wait_for_three(rt, 0.0)
    assert left == {2, 3} and taken == [1] and rt.t == 0.0 and len(rt.queue) == 1


class _LateRt(FakeRt):
    """A runtime whose ``recv`` returns 0.2 s after the message came (a busy real node)."""

    async def recv(self, timeout=None, match=None):
        msg = await super().recv(timeout, match)
        self.t += 0.2
        return msg


def test_wait_each_past_its_deadline_returns_the_pending_peers_without_another_receive():
    """1's message comes at 0.9 s but is handed over at 1.1 s, past the 1 s deadline: wait_each
    stops there (2's message, queued at 0.95 s, is left) and returns the peers still pending."""
    rt = _LateRt()
    left, _, taken = _wait_for_three(rt, 1.0, 0.9, 0.95)
    assert left == {2, 3} and taken == [1] and rt.t == pytest.approx(1.1) and len(rt.queue) == 1


# -- seed 003's edge swaps ----------------------------------------------------------------------------
def _edges(node=0, neighbours=(1, 2, 3), n=4, period=3):
    snd = {j: torch.tensor([float(j)]) for j in neighbours}
    rcv: dict = {}
    return kit.EdgeSwaps("params", node, list(neighbours), n, period, snd, rcv), rcv


def test_a_step_first_notes_every_goodbye_already_queued():
    """At t = 0.3 node 0 starts step 0 (its swap with 3); queued are 3's late answer to an
    earlier swap (0.1 s) and 2's goodbye (0.2 s). The goodbye is noted before swapping, though
    3's answer, older, settles the swap before the wait would reach it: nothing stays queued."""
    swaps, rcv = _edges()
    rt = FakeRt(0, (1, 2, 3))
    rt.t = 0.3
    rt.deliver(0.1, 3, "params_reply", {}, {"x": [30.0]})
    rt.deliver(0.2, 2, "params_done")
    drive(swaps.step(rt, 1.0, False))
    assert swaps.gone == {2} and rt.queue == []
    assert rcv[3].item() == 30.0 and rt.t == pytest.approx(0.3) and rt.logs == []


def test_a_step_stops_waiting_for_a_neighbour_that_says_goodbye_instead_of_answering():
    """Step 0 swaps with 3, which finishes (goodbye at 0.3 s) instead of answering: the step ends
    at 0.3 s, not at the 1 s timeout, with no timeout logged and 3's buffer untouched. 1's round
    message and swap request, queued meanwhile, are left for the barrier and the server task."""
    swaps, rcv = _edges()
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.1, 1, "params_round", {"round": 0})
    rt.deliver(0.2, 1, "params_swap", {}, {"x": [10.0]})
    rt.deliver(0.3, 3, "params_done")
    drive(swaps.step(rt, 1.0, False))
    assert rt.t == pytest.approx(0.3) and rt.logs == [] and swaps.gone == {3} and rcv == {}
    assert queued(rt) == [(1, "params_round", 0), (1, "params_swap", None)]


def test_a_step_with_a_zero_timeout_applies_the_answers_that_have_arrived():
    """``swap_timeout: 0`` (never wait): at t = 0.5 step 0 swaps with 3, whose answer to an earlier
    swap came at 0.2 s: it is applied at once, not left queued with a timeout logged (a queue that
    would grow by one answer per swap for the whole run); 1's answer, due at 0.9 s, is not awaited."""
    swaps, rcv = _edges()
    rt = FakeRt(0, (1, 2, 3))
    rt.t = 0.5
    rt.deliver(0.2, 3, "params_reply", {}, {"x": [30.0]})
    rt.deliver(0.9, 1, "params_reply", {}, {"x": [10.0]})
    drive(swaps.step(rt, 0.0, False))
    assert rcv == {3: torch.tensor([30.0])} and rt.logs == [] and rt.t == 0.5
    assert queued(rt) == [(1, "params_reply", None)]


def test_rounds_are_counted_and_each_barrier_announces_its_own_number():
    """Rounds of one step with one neighbour: each step swaps, ends a round and waits for the
    neighbour's round of the same number: rounds 1, 2, 3 are announced in turn."""
    swaps, rcv = _edges(node=0, neighbours=(1,), n=2, period=1)
    rt = FakeRt(0, (1,))
    for r in (1, 2, 3):
        rt.deliver(r - 0.5, 1, "params_reply", {}, {"x": [10.0 * r]})
        rt.deliver(r - 0.4, 1, "params_round", {"round": r})
        drive(swaps.step(rt, 1.0, True))
        assert swaps.rounds == r and swaps.count == 0 and rcv[1].item() == 10.0 * r
    assert [m["round"] for _dst, m in rt.sent_of("params_round")] == [1, 2, 3]
    assert rt.logs == [] and rt.t == pytest.approx(2.6)


def test_the_barrier_ends_on_each_neighbours_message_of_this_round_and_keeps_later_rounds():
    """Barrier of round 1 with neighbours 1 and 2: 1's round 0 (left from a barrier it missed) is
    taken and dropped, its round 1 counts, its round 2 (1 runs ahead) stays queued; 2's round 1
    at 0.6 s ends the barrier there. The next barrier finds 1's round 2 waiting."""
    swaps, _ = _edges(node=0, neighbours=(1, 2), n=3, period=2)
    swaps.rounds = 1
    rt = FakeRt(0, (1, 2))
    rt.deliver(0.1, 1, "params_round", {"round": 0})
    rt.deliver(0.2, 1, "params_round", {"round": 1})
    rt.deliver(0.3, 1, "params_round", {"round": 2})
    rt.deliver(0.6, 2, "params_round", {"round": 1})
    drive(swaps.barrier(rt, 5.0))
    assert rt.t == pytest.approx(0.6) and rt.logs == []
    assert queued(rt) == [(1, "params_round", 2)]
    swaps.rounds = 2
    rt.deliver(0.8, 2, "params_round", {"round": 2})
    drive(swaps.barrier(rt, 5.0))
    assert rt.t == pytest.approx(0.8) and rt.logs == [] and rt.queue == []
    assert sorted((m["round"], dst) for dst, m in rt.sent_of("params_round")) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_finish_waits_for_goodbyes_only_and_leaves_swap_requests_to_the_server_task():
    """1 asks for a swap (0.2 s) before it says goodbye (0.9 s): finish waits for the goodbye,
    and the request stays queued for the server task, which runs on and answers it."""
    swaps, _ = _edges()
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.2, 1, "params_swap", {}, {"x": [10.0]})
    rt.deliver(0.4, 3, "params_done")
    rt.deliver(0.5, 2, "params_done")
    rt.deliver(0.9, 1, "params_done")
    drive(swaps.finish(rt, 5.0))
    assert rt.t == pytest.approx(0.9) and swaps.gone == {1, 2, 3}
    assert queued(rt) == [(1, "params_swap", None)]


def test_the_server_task_answers_swap_requests_only():
    """A goodbye and a round message wait in the queue before 2's request: the server task
    answers 2 and leaves them for the step and the barrier."""
    swaps, rcv = _edges()
    rt = FakeRt(0, (1, 2, 3))
    rt.deliver(0.05, 1, "params_done")
    rt.deliver(0.06, 3, "params_round", {"round": 0})
    rt.deliver(0.1, 2, "params_swap", {}, {"x": [20.0]})
    with pytest.raises(AssertionError, match="wait forever"):
        drive(swaps.serve(rt))
    assert rcv[2].item() == 20.0 and [(dst, m.tensors["x"].item()) for dst, m in rt.sent_of("params_reply")] == [(2, 2.0)]
    assert queued(rt) == [(1, "params_done", None), (3, "params_round", 0)]


def test_swap_slots_on_a_period_the_degree_does_not_divide():
    """Node 0 of degree 3, rounds of 8 steps: gap 8 // 3 = 2 whole steps, slots 0, 2, 4 for 7, 2, 1
    (nearest below first); its neighbour 1, of degree 1, starts its one swap at step 1."""
    assert kit.swap_slots(0, [1, 2, 7], 8, 8) == {7: 0, 2: 2, 1: 4}
    assert all(type(s) is int for s in kit.swap_slots(0, [1, 2, 7], 8, 8).values())
    assert kit.swap_slots(1, [0], 8, 8) == {0: 1}


# -- the step clock, local work, roles, averaging --------------------------------------------------
def test_the_step_clock_hands_the_runtime_to_each_epoch_report():
    node = SimpleNamespace(ctx=SimpleNamespace(epochs=2), learner=SimpleNamespace(steps_per_epoch=2))
    seen = []
    node.end_epoch = lambda rt, epoch: seen.append((rt, epoch))
    clock = kit.StepClock(node)
    rt = FakeRt()
    clock.start(rt)
    clock.advance(rt, 4)
    assert seen == [(rt, 0), (rt, 1), (rt, 2)]


def test_check_local_work_accepts_parameters_without_the_local_work_fields():
    kit.check_local_work(SimpleNamespace())
    kit.check_local_work(SimpleNamespace(local_steps=3))
    kit.check_local_work(SimpleNamespace(local_epochs=2))


def test_the_kit_error_texts_word_for_word():
    assert error(kit.average, []) == "nothing to average"
    assert error(kit.average, [torch.ones(1)], [0.0]) == "weights must have a positive sum, got 0.0"
    assert error(kit.fed_roles, nx.path_graph(3), "fedavg", exc=ConfigError) == (
        "topology: fedavg needs server node 0 linked to every other node (topology: {kind: star}); it reaches 1 of 2")


def test_a_server_algorithm_reports_from_its_server_and_keeps_models_on_every_node():
    assert kit.ServerAlgorithm.reporting_roles() == ("server",)
    assert kit.ServerAlgorithm.model_roles() == ("worker", "server")


# -- the federated round -------------------------------------------------------------------------------
def test_a_federated_round_with_clients_online_starts_at_once_and_ends_at_the_timeout():
    """Every client online: the global model goes out at t = 0 without waiting. Client 2 never
    answers: the round ends at the 1.5 s timeout with 1's and 3's updates, weights n = 1 and 3."""
    server = no_eval(FedAvgServer(ctx(0, FedAvgParams(timeout=1.5), Quad([0.0, 0.0]),
                                      {0: "server", 1: "worker", 2: "worker", 3: "worker"}, selection="online")))
    rt = FakeRt(online=lambda t: {1, 2, 3})
    rt.deliver(0.4, 3, "update", {"round": 0, "n": 3}, {"x": [4.0, 0.0]})
    rt.deliver(0.9, 1, "update", {"round": 0, "n": 1}, {"x": [0.0, 8.0]})
    updates = drive(server.train_round(rt))
    assert [u.src for u in updates] == [1, 3]
    assert [(t, dst) for t, dst, m in rt.sent if m.kind == "global"] == [(0.0, 1), (0.0, 2), (0.0, 3)]
    assert rt.logged("waited_for_clients") == [] and rt.logged("update_timeouts") == [1]
    assert rt.logged("clients_heard") == [2] and rt.t == pytest.approx(1.5)
    assert server.learner.flat.tolist() == pytest.approx([3.0, 2.0])


class _RecordingRt(FakeRt):
    """A FakeRt that records the functions handed to ``compute``."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.works = []

    async def compute(self, fn, *args, cost=None):
        self.works.append(fn)
        return await super().compute(fn, *args, cost=cost)


class _Greeting(FedAvgClient):
    """A client that tells its server hello before the first round and trains by its own rule."""

    async def start(self, rt):
        await rt.send(0, Message("hello"))

    def local_train(self, steps):
        self.learner.train_steps(2 * steps)


def test_a_federated_client_hands_the_learners_own_steps_to_compute_unless_it_has_its_own_work():
    """The default work is the learner's ``train_steps`` itself (so the simulator may batch it);
    a client with its own ``local_train`` runs that (here twice the steps) after its ``start``
    has greeted the server. A message of another kind waiting first is left queued."""
    learner = Quad([8.0], lr=0.5, spe=3)
    plain = FedAvgClient(ctx(1, FedAvgParams(local_steps=2), learner, {0: "server", 1: "worker"}))
    rt = _RecordingRt(node_id=1)
    rt.deliver(0.0, 0, "other")
    rt.deliver(0.1, 0, "global", {"round": 0}, {"x": [0.0]})
    rt.deliver(0.2, 0, "stop")
    drive(plain.run(rt))
    assert rt.works == [learner.train_steps] and learner.steps_done == 2 and queued(rt) == [(0, "other", None)]

    own = Quad([8.0], lr=0.5, spe=3)
    greeting = _Greeting(ctx(1, FedAvgParams(local_steps=2), own, {0: "server", 1: "worker"}))
    rt = _RecordingRt(node_id=1)
    rt.deliver(0.1, 0, "global", {"round": 0}, {"x": [0.0]})
    rt.deliver(0.2, 0, "stop")
    drive(greeting.run(rt))
    assert rt.works == [greeting.local_train] and own.steps_done == 4
    assert [m.kind for _t, _dst, m in rt.sent] == ["hello", "update"]
