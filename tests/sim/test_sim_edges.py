"""Edge cases of the simulator that mutation testing found unpinned, each on inputs where a
plausible wrong rule gives another number: which flows are done when one completes (a tick
of bytes and 1e-6 bytes of slack), flows frozen at rate 0 by a zero-bandwidth uplink in the
max-min sharing, zero- and one-byte messages, a flow that starts while others run, flows
slower than a byte a second, aborts that reshare, losses and latency draws from the
network's stream, what ``epoch_end`` logs and when a rest restarts the epoch clock (seed
003's ``--sleep_factor``, nttcslab/ecl-isvr ``trainer/abstracts.py`` ``Trainer.train``; see
``core/runtime.py`` ``EpochRest``), compute calls that cost nothing or are batched, the
world's shared decodings, and receives and sleeps that end early.

The network tests drive :class:`simbench.sim.network.Network` on a bare kernel with byte
strings as payloads, so sizes are exact (a world's messages carry a header) and each arrival
is ``(tick, src, dst, size)``. Mutants that cannot change behaviour are listed with their
reasons, not tested."""

import math
import re

import networkx as nx
import numpy as np
import pytest
import torch

from simbench.core.scenario import NodeProfile, Scenario
from simbench.core.seeding import WorldStreams
from simbench.core.units import SECOND_TICKS
from simbench.sim.kernel import Kernel, SimFuture
from simbench.sim.network import LinkSpec, Network

from simhelpers import events, make_world, net


class Bench:
    """A Network of ``n`` nodes, every pair linked (constant ``latency`` seconds, link
    bandwidth unlimited unless given), on its own kernel; ``arrivals`` lists what came."""

    def __init__(self, uplink, downlink=None, *, latency=0.0, bandwidth=math.inf, loss=0.0):
        n = len(uplink)
        self.kernel = Kernel()
        self.arrivals, self.drops = [], []
        draw = latency if callable(latency) else (lambda _rng: latency)
        spec = LinkSpec(draw, bandwidth)
        links = {(s, d): spec for s in range(n) for d in range(n) if s != d}
        self.net = Network(self.kernel, links, uplink, downlink or [math.inf] * n, loss=loss,
                           rng=np.random.default_rng(0), deliver=self._deliver, on_drop=self._drop)

    def _deliver(self, src, dst, payload):
        self.arrivals.append((self.kernel.now, src, dst, len(payload)))

    def _drop(self, src, dst, payload, reason):
        self.drops.append((self.kernel.now, src, dst, len(payload), reason))

    def send(self, src, dst, size, at=0):
        self.kernel.schedule(at, self.net.send, src, dst, b"x" * size)

    def run(self, max_events=1000):
        """Every event, at most ``max_events`` (a flow never declared done would loop at one tick)."""
        for _ in range(max_events):
            if not self.kernel.step():
                return self.arrivals
        raise AssertionError(f"still running after {max_events} events at tick {self.kernel.now}")


# -- which flows are done when one completes ------------------------------------------------
def test_a_flow_two_ticks_from_its_end_is_not_done_with_another_that_completes():
    """Two flows on separate uplinks of 5e8 bytes/s (half a byte a tick): 5 bytes end at tick
    10; the 6-byte one has 1 byte (two ticks) left then, more than a tick's bytes plus the
    1e-6 slack, so it goes on and ends at tick 12 (two ticks of slack, or a slack of a byte,
    would deliver it at 10)."""
    b = Bench([5e8, math.inf, 5e8, math.inf])
    b.send(0, 1, 5)
    b.send(2, 3, 6)
    assert b.run() == [(10, 0, 1, 5), (12, 2, 3, 6)]


def test_a_flow_left_with_one_ticks_bytes_plus_the_slack_is_done_with_another():
    """The boundary of the rule: at 249 999 750 bytes/s a 1-byte flow has exactly one tick's
    bytes plus 1e-6 left (0.25000075, equal in floats) when a 3-byte flow at 1e9 bytes/s ends
    at tick 3, so it is done with it at tick 3; alone it would end at tick 5 (ceil of
    4.000004), which is where a strict ``<`` would put it."""
    rate = 249_999_750.0
    left = 1.0 - rate * (3 / SECOND_TICKS)
    assert left == rate * (1.0 / SECOND_TICKS) + 1e-6  # on the boundary, not a hair either side
    b = Bench([1e9, math.inf, rate, math.inf])
    b.send(0, 1, 3)
    b.send(2, 3, 1)
    assert b.run() == [(3, 0, 1, 3), (3, 2, 3, 1)]
    alone = Bench([1e9, math.inf, rate, math.inf])
    alone.send(2, 3, 1)
    assert alone.run() == [(5, 2, 3, 1)]


def test_flows_slower_than_a_byte_a_second_finish():
    """One byte at 0.5 bytes/s ends at 2 s and one at 1 byte/s at 1 s: a slow flow is done
    when its bytes are through, whatever its rate (a rate threshold of 1 would never let them
    end and reschedule their completion at the same tick forever)."""
    b = Bench([0.5, math.inf, 1.0, math.inf])
    b.send(0, 1, 1)
    b.send(2, 3, 1)
    assert b.run() == [(SECOND_TICKS, 2, 3, 1), (2 * SECOND_TICKS, 0, 1, 1)]


# -- max-min sharing with flows frozen at rate 0 ---------------------------------------------
def test_a_flow_on_a_zero_bandwidth_uplink_is_frozen_at_0_and_the_other_gets_the_downlink():
    """Nodes 0 and 2 send to node 1, whose downlink carries 1000 bytes/s; node 0's uplink
    carries nothing. Progressive filling freezes node 0's flow at rate 0 first (its uplink:
    0/1); it keeps that rate when the downlink is shared next, so node 2's flow gets all
    1000 bytes/s and its 1000 bytes arrive at 1 s, while node 0's message never leaves."""
    b = Bench([0.0, math.inf, math.inf], [math.inf, 1000.0, math.inf])
    b.send(0, 1, 100)
    b.send(2, 1, 1000)
    assert b.run() == [(SECOND_TICKS, 2, 1, 1000)]
    (stuck,) = b.net._flows
    assert (stuck.src, stuck.rate, stuck.remaining) == (0, 0.0, 100.0)


def test_a_zero_rate_flow_leaves_the_shared_downlink_to_a_positive_one_as_they_change():
    """As above with a second sender joining node 2 at 0.5 s: node 2 has sent 500 bytes by
    then, the two positive flows split the downlink (500 bytes/s each) and the 0-rate flow
    takes none of it: node 2's last 500 bytes end at 1.5 s; node 3 has sent 500 by then and
    sends the rest alone, ending at 2 s."""
    b = Bench([0.0, math.inf, math.inf, math.inf], [math.inf, 1000.0, math.inf, math.inf])
    b.send(0, 1, 100)
    b.send(2, 1, 1000)
    b.send(3, 1, 1000, at=SECOND_TICKS // 2)
    assert b.run() == [(3 * SECOND_TICKS // 2, 2, 1, 1000), (2 * SECOND_TICKS, 3, 1, 1000)]


# -- zero- and one-byte messages, and a flow that starts while another runs -------------------
def test_a_zero_byte_message_takes_only_the_latency_even_on_a_zero_bandwidth_uplink():
    """A message with no bytes has nothing to transmit: it arrives one latency (3 ms) after it
    is sent, through an uplink that carries nothing; one byte at 1000 bytes/s takes 1 ms more."""
    b = Bench([0.0, 1000.0], latency=0.003)
    b.send(0, 1, 0)
    b.send(1, 0, 1)
    assert b.run() == [(3_000_000, 0, 1, 0), (4_000_000, 1, 0, 1)]


def test_a_zero_byte_message_queued_behind_another_leaves_with_its_last_byte():
    """Messages on a link go one after another: an empty message sent behind 1000 bytes at
    1000 bytes/s leaves at 1 s with the other's last byte and arrives with it."""
    b = Bench([1000.0, math.inf], latency=0.002)
    b.send(0, 1, 1000)
    b.send(0, 1, 0)
    b.send(0, 1, 1)
    end = SECOND_TICKS + 2_000_000
    assert b.run() == [(end, 0, 1, 1000), (end, 0, 1, 0), (end + 1_000_000, 0, 1, 1)]


def test_a_flow_that_starts_while_another_runs_is_charged_only_from_its_start():
    """Node 0 sends 2000 bytes at 1000 bytes/s from 0 s; node 2 starts 500 bytes at 1000
    bytes/s at 1 s, on its own uplink: it ends at 1.5 s exactly. A new flow has no rate until
    it is shared in, so the second before it started takes nothing off it."""
    b = Bench([1000.0, math.inf, 1000.0, math.inf])
    b.send(0, 1, 2000)
    b.send(2, 3, 500, at=SECOND_TICKS)
    assert b.run() == [(3 * SECOND_TICKS // 2, 2, 3, 500), (2 * SECOND_TICKS, 0, 1, 2000)]


# -- completions rescheduled by an abort ------------------------------------------------------
def test_a_flow_whose_last_byte_left_is_delivered_at_that_tick_when_an_abort_reshares_first():
    """Node 0's 10 bytes at 1e9 bytes/s are through at tick 10; node 2 crashes at tick 10,
    just before that completion fires, and dropping its flow reshares the rates: the
    rescheduled completion of node 0's flow is due now (0 ticks), so it arrives at tick 10,
    not a tick later."""
    b = Bench([1e9, math.inf, 1e9, math.inf])
    b.kernel.schedule(10, b.net.abort_from, 2)  # scheduled first: runs first at tick 10
    b.send(0, 1, 10)
    b.send(2, 3, 100)
    assert b.run() == [(10, 0, 1, 10)]


def test_a_network_whose_flows_were_all_aborted_carries_the_next_message():
    """Node 0's only flow is aborted at 0.5 s (its completion withdrawn, no flow left); a
    message node 2 sends at 1 s then takes its own 0.5 s: arrival at 1.5 s."""
    b = Bench([1000.0, math.inf, 1000.0, math.inf])
    b.send(0, 1, 1000)
    b.kernel.schedule(SECOND_TICKS // 2, b.net.abort_from, 0)
    b.send(2, 3, 500, at=SECOND_TICKS)
    assert b.run() == [(3 * SECOND_TICKS // 2, 2, 3, 500)]
    assert b.net.active_flows == 0


# -- what epoch_end logs ----------------------------------------------------------------------
def test_epoch_end_logs_the_rest_it_earns_with_its_epoch_and_nothing_without_one():
    """Node 0 rests with factor 2: epoch 0 ends at 0 s (no rest, it only starts the clock),
    epoch 1 at 0.25 s earns 0.25 (0.5 + 0.5 * 2 u) s with u its sleep stream's first draw
    (under a second), logged as ``sleep_proc`` for epoch 1. Epoch 0 reported again at 0.5 s
    (a node starting over) restarts the clock: no rest, no log. Node 1 (factor 0) never rests
    and logs nothing."""
    class Epochs:
        async def run(self, rt):
            rt.epoch_end(0)
            await rt.sleep(0.25)
            rt.epoch_end(1)
            await rt.sleep(0.25)
            rt.epoch_end(0)

    world = make_world(nx.path_graph(2), {0: Epochs(), 1: Epochs()},
                       profiles=[NodeProfile(sleep_factor=2.0), NodeProfile()])
    world.run()
    u = WorldStreams(0, 2).sleep(0).random()
    rest = 0.25 * (0.5 + 0.5 * 2.0 * u)
    assert 0 < rest < 1
    assert events(world, "sleep_proc") == [(0.25, 0, rest)]
    assert world.recorder.epochs == {(0, 1): {"time_s": 0.25, "sleep_proc": rest}}
    assert world.runtimes[0]._rest.take() == rest  # taken at the next compute


def test_a_rest_counts_the_epoch_from_the_end_of_the_last_rest_not_from_a_compute_call():
    """Factor 2, u1 and u2 the sleep stream's first draws. Epoch 0 ends at 0 s; a compute at
    0.1 s with no rest due does not restart the clock, so epoch 1 (ending at 0.3 s, after a
    0.2 s compute) earns 0.3 (0.5 + u1). The next compute rests that first and then takes
    0.2 s: epoch 2 ends at 0.5 + r1 and earns 0.2 (0.5 + u2), counted from the rest's end."""
    class Rests:
        async def run(self, rt):
            rt.epoch_end(0)
            await rt.sleep(0.1)
            await rt.compute(lambda: None, cost=0.2)
            rt.epoch_end(1)
            await rt.compute(lambda: None, cost=0.2)
            rt.epoch_end(2)

    world = make_world(nx.path_graph(2), {0: Rests(), 1: Rests()},
                       profiles=[NodeProfile(sleep_factor=2.0), NodeProfile()])
    world.run()
    stream = WorldStreams(0, 2).sleep(0)
    u1, u2 = stream.random(), stream.random()
    r1, r2 = 0.3 * (0.5 + u1), 0.2 * (0.5 + u2)
    (t1, n1, v1), (t2, n2, v2) = events(world, "sleep_proc")
    assert (n1, n2) == (0, 0)
    assert (t1, v1) == pytest.approx((0.3, r1), abs=1e-9)
    assert (t2, v2) == pytest.approx((0.5 + r1, r2), abs=1e-9)


# -- learner steps through compute in a batched world -----------------------------------------
def test_learner_steps_with_a_cost_are_put_off_to_the_end_of_the_instant_and_counted():
    """Two nodes each take a step of 0.1 s (Work of one step at step_time 0.1): both are put
    off and run together at the end of the instant (2 calls, 2 steps, 2 vectorized); each then
    takes a step with no cost, which runs alone at once (2 alone). The losses equal those of
    the same learners stepped in turn, and the world counts the 2 charged steps."""
    from simbench.core.runtime import Work
    from simbench.data import load_dataset
    from simbench.learn import OptimConfig
    from simbench.learn.flat import FlatLearner, ModelTemplate
    from simbench.models import build_model

    d = load_dataset("digits")

    def learners():
        template = ModelTemplate(build_model("mlp", d.input_shape, 10, seed=0, hidden=(16,)))
        return [FlatLearner(template, d.x_train, d.y_train, torch.arange(40 * k, 40 * k + 40), batch_size=8,
                            optim=OptimConfig(lr=0.1), seed=k) for k in range(2)]

    class Steps:
        def __init__(self, learner):
            self.learner, self.losses = learner, []

        async def run(self, rt):
            self.losses.append(await rt.compute(self.learner.train_step, cost=Work(steps=1)))
            self.losses.append(await rt.compute(self.learner.train_step, cost=None))

    nodes = {i: Steps(ln) for i, ln in enumerate(learners())}
    world = make_world(nx.path_graph(2), nodes, step_time=0.1, batched=True)
    world.run()
    b = world.batcher
    assert (b.calls, b.steps, b.vectorized, b.alone) == (2, 2, 2, 2)
    assert world.steps == 2 and world.kernel.now == SECOND_TICKS // 10
    expected = [[ln.train_step(), ln.train_step()] for ln in learners()]
    assert [nodes[i].losses for i in range(2)] == [pytest.approx(e, abs=1e-6) for e in expected]


# -- compute calls that cost nothing ----------------------------------------------------------
def test_a_compute_call_of_no_cost_takes_no_time_and_draws_no_straggler_slowdown():
    """A straggler (slowdown 3) computes a cost of 0 s, then 0.1 s: the first takes no time
    and draws no factor (nothing to slow down); the second takes 0.3 s, one factor logged."""
    from simbench.core.scenario import Stragglers
    times = {0: [], 1: []}

    class Computes:
        async def run(self, rt):
            await rt.compute(lambda: None, cost=0.0)
            times[rt.node_id].append(rt.now())
            await rt.compute(lambda: None, cost=0.1)
            times[rt.node_id].append(rt.now())

    world = make_world(nx.path_graph(2), {0: Computes(), 1: Computes()},
                       scenario=Scenario(stragglers=Stragglers(nodes=(0,))),
                       profiles=[NodeProfile(straggler=True), NodeProfile()])
    world.run()
    assert times == {0: [0.0, pytest.approx(0.3, abs=1e-9)], 1: [0.0, pytest.approx(0.1, abs=1e-9)]}
    assert events(world, "straggler_slowdown") == [(0.0, 0, 3.0)]


def _before_a_fresh_helper(call):
    """Node 0 spawns a helper, then awaits ``call(rt)``: what the call returned and the
    helper's mark, in the order they happened. A helper starts at this tick, after the
    caller yields, so a call that does not yield comes first."""
    order = []

    class Main:
        async def run(self, rt):
            async def helper():
                order.append("helper")

            task = rt.spawn(helper())
            order.append(await call(rt))
            await rt.gather(task)

    make_world(nx.path_graph(2), {0: Main()}).run()
    return order


def test_a_compute_call_of_no_cost_returns_without_yielding_to_other_processes():
    """A call that costs nothing returns in the same step, before the helper spawned just
    before it starts."""
    assert _before_a_fresh_helper(lambda rt: rt.compute(lambda: "computed", cost=None)) == ["computed", "helper"]


# -- decoding in the world ---------------------------------------------------------------------
def test_every_receiver_of_a_broadcast_views_the_senders_buffer_and_a_foreign_payload_decodes():
    """A message sent through a runtime to two nodes is decoded from the sender's buffer for
    both: each received tensor's bytes lie inside it (copy-on-write, nothing copied) and each
    message keeps that buffer (so it can be forwarded without encoding it again); the
    decoding is kept until the last copy arrived. A payload that no runtime sent (a test's own
    bytes) is decoded from its bytes."""
    from simbench.core.message import Message
    seen = {}

    class Sender:
        async def run(self, rt):
            msg = Message("blob", {"k": 1}, tensors={"x": torch.arange(1000, dtype=torch.float32)})
            await rt.send(1, msg)
            await rt.send(2, msg)
            seen["buffer"] = msg.buffer

    class Receiver:
        async def run(self, rt):
            m = await rt.recv()
            seen[rt.node_id] = (m["k"], m.tensors["x"], m.buffer)

    world = make_world(nx.star_graph(2), {0: Sender(), 1: Receiver(), 2: Receiver()})
    world.run()
    buffer = seen["buffer"]
    lo = buffer.const_data_ptr()
    for node in (1, 2):
        k, x, held = seen[node]
        assert k == 1 and held is buffer and lo <= x.const_data_ptr() < lo + buffer.numel(), node
        assert torch.equal(x, torch.arange(1000, dtype=torch.float32))
    foreign = world.decode(Message("note", {"a": [1, 2]}).encode(3))
    assert (foreign.kind, foreign.src, foreign.meta) == ("note", 3, {"a": [1, 2]})


def test_a_negative_latency_draw_delivers_at_once_never_in_the_past():
    """A latency distribution may draw below 0 (a normal one): the message then arrives when
    its last byte leaves, here at 5 ms, not 1 ms before it was sent."""
    b = Bench([math.inf, math.inf], latency=-0.001)
    b.send(0, 1, 10, at=5_000_000)
    assert b.run() == [(5_000_000, 0, 1, 10)]


def test_a_message_sent_again_after_its_copies_arrived_is_not_decoded_again(monkeypatch):
    """Node 0 sends one message object to node 1 at 0 s and again at 1 s: its encoding is
    decoded once (kept among the recent decodings), both arrivals view the sender's buffer, and
    the recent decodings hold its bytes once."""
    import simbench.sim.world as world_module
    from simbench.core.message import Message
    decodes = []
    real = world_module.decode
    monkeypatch.setattr(world_module, "decode", lambda *a, **kw: decodes.append(1) or real(*a, **kw))
    got, sent = [], []

    class Twice:
        async def run(self, rt):
            msg = Message("blob", {"k": 1}, tensors={"x": torch.arange(100, dtype=torch.float32)})
            await rt.send(1, msg)
            await rt.sleep(1.0)
            await rt.send(1, msg)
            sent.append(msg.buffer)

    class Receiver:
        async def run(self, rt):
            for _ in range(2):
                m = await rt.recv()
                got.append((rt.now(), m.buffer, m.tensors["x"].const_data_ptr()))

    world = make_world(nx.path_graph(2), {0: Twice(), 1: Receiver()})
    world.run()
    (t1, b1, p1), (t2, b2, p2) = got
    (buffer,) = sent
    assert (t1, t2) == (0.0, 1.0) and b1 is buffer and b2 is buffer
    lo = buffer.const_data_ptr()
    assert lo <= p1 < lo + buffer.numel() and lo <= p2 < lo + buffer.numel()
    assert len(decodes) == 1
    assert len(world._recent) == 1 and world._recent_bytes == buffer.numel()


# -- losses and the network's random stream ---------------------------------------------------
def test_without_losses_the_network_stream_feeds_only_the_latency_draws():
    """With loss 0 no loss is drawn: the three jittered latencies are the stream's first three
    draws (a loss draw per message would shift them)."""
    b = Bench([math.inf, math.inf], latency=lambda rng: float(rng.uniform(0.0, 0.001)))
    for _ in range(3):
        b.send(0, 1, 4)
    rng = np.random.default_rng(0)
    expected = []
    for _ in range(3):  # FIFO per link: an arrival never comes before the one ahead of it
        tick = int(float(rng.uniform(0.0, 0.001)) * SECOND_TICKS + 0.5)
        expected.append(max(tick, expected[-1] if expected else 0))
    assert [t for t, *_ in b.run()] == expected


def test_a_loss_draw_equal_to_the_loss_rate_keeps_the_message():
    """A message is lost when its draw is below the rate: with the rate set to exactly the
    stream's first draw, the first message arrives and the second (draw below it) is lost."""
    rng = np.random.default_rng(0)
    first, second = rng.random(), rng.random()
    assert second < first
    b = Bench([math.inf, math.inf], loss=first)
    b.send(0, 1, 4)
    b.send(0, 1, 5)
    assert b.run() == [(0, 0, 1, 4)] and b.drops == [(0, 0, 1, 5, "lost")]


# -- the recent decodings ---------------------------------------------------------------------
def test_recent_decodings_are_kept_up_to_the_byte_budget_oldest_out_first(monkeypatch):
    """Messages A, B, C (each W bytes, decoded as views of their buffers) arrive one after
    another with a budget of exactly 2W: after B both are kept (2W is within the budget); C
    pushes out the oldest, A, leaving B and C and 2W bytes."""
    import simbench.sim.world as world_module
    from simbench.core.message import Message
    kept = []

    class Three:
        async def run(self, rt):
            for k in range(3):
                await rt.send(1, Message("blob", {"k": k}, tensors={"x": torch.zeros(64)}))
                await rt.sleep(1.0)
                kept.append(([w.msg["k"] for w in rt.world._recent.values()], rt.world._recent_bytes))

    class Receiver:
        async def run(self, rt):
            for _ in range(3):
                await rt.recv()

    world = make_world(nx.path_graph(2), {0: Three(), 1: Receiver()})
    size = len(Message("blob", {"k": 0}, tensors={"x": torch.zeros(64)}).encode(0))
    monkeypatch.setattr(world_module, "RECENT_BYTES", 2 * size)
    world.run()
    assert kept == [([0], size), ([0, 1], 2 * size), ([1, 2], 2 * size)]


# -- latency draws in a world -----------------------------------------------------------------
def _latency_ticks(network, count=6):
    """The latencies, in ticks, of ``count`` messages sent 2 s apart."""
    from simbench.core.message import Message
    ticks = []

    class Many:
        async def run(self, rt):
            for k in range(count):
                await rt.send(0, Message("m", {"k": k}))
                await rt.sleep(2.0)  # past any latency drawn: no arrival waits for the one ahead

    class Keep:
        async def run(self, rt):
            for k in range(count):
                await rt.recv()
                ticks.append(rt.kernel.now - k * 2 * SECOND_TICKS)

    world = make_world(nx.path_graph(2), {0: Keep(), 1: Many()}, network=network)
    world.run()
    return ticks


def test_latencies_are_drawn_per_message_from_a_distribution_and_with_jitter():
    """A uniform [1, 2] ms latency without jitter, and a constant 0 with 1 s of jitter: each
    message draws its own latency in that range; a constant one is the same for all."""
    from simbench.core.scenario import Dist
    drawn = _latency_ticks(net(Dist("uniform", low=0.001, high=0.002)))
    stream = WorldStreams(0, 2).network  # the world's network stream: one draw per message, nothing else
    assert drawn == [int(float(stream.uniform(0.001, 0.002)) * SECOND_TICKS + 0.5) for _ in range(6)]
    assert all(1_000_000 <= t <= 2_000_000 for t in drawn) and len(set(drawn)) > 1
    jittered = _latency_ticks(net(0.0, jitter=1.0))
    assert all(0 <= t <= SECOND_TICKS for t in jittered) and len(set(jittered)) > 1
    assert _latency_ticks(net(0.003)) == [3_000_000] * 6


# -- receives ---------------------------------------------------------------------------------
def test_a_recv_with_a_zero_timeout_returns_at_once_without_yielding():
    """An empty mailbox and a timeout of 0: the call returns None in the same step, before the
    helper spawned just before it starts."""
    assert _before_a_fresh_helper(lambda rt: rt.recv(timeout=0.0)) == [None, "helper"]


def test_a_receive_withdrawn_by_a_crash_ends_cleanly_when_its_process_is_killed_later():
    """A process that is not one of the node's tasks waits in the node's recv; the node
    crashes (its waiters are withdrawn) and the process is killed afterwards: its receive
    ends without touching the node's (empty) waiter list."""
    world = make_world(nx.path_graph(2), {})
    rt = world.runtimes[0]
    proc = world.kernel.spawn(rt.recv(), "outside")
    world.kernel.step()  # it starts and waits
    assert len(rt._waiters) == 1
    rt.crash()
    proc.kill()
    assert not proc.alive and rt._waiters == []


def test_a_killed_sleep_withdraws_its_timer():
    """A helper sleeping 1 s is cancelled at 0.5 s: its wake-up at 1 s is withdrawn from the
    kernel at once (the node's own sleep to 2 s is the only timer left)."""
    left = []

    class Main:
        async def run(self, rt):
            async def nap():
                await rt.sleep(1.0)

            task = rt.spawn(nap())
            await rt.sleep(0.5)
            task.cancel()
            await rt.sleep(1.5)

    class Watch:
        async def run(self, rt):
            await rt.sleep(0.75)
            left.append(sorted(t for t, _, entry in rt.kernel._heap if entry[0] is not None))

    world = make_world(nx.path_graph(2), {0: Main(), 1: Watch()})
    world.run()
    assert left == [[2 * SECOND_TICKS]]


def test_reading_an_unresolved_future_names_it():
    k = Kernel()
    fut = k.timeout(5)
    labelled = SimFuture(k, ("recv", 2, None))
    for f, label in ((labelled, "('recv', 2, None)"), (SimFuture(k), "''")):
        with pytest.raises(RuntimeError, match=rf"^future {re.escape(label)} is not resolved yet$"):
            f.result()
    k.run()
    assert fut.result() is None
