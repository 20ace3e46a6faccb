"""Edge cases of the kernel and the network that decide simulated times: an expired receive,
a sender that crashes mid-transfer, and how latencies and transfer times round to ticks.

Each test pins one rule on inputs where a plausible wrong rule gives another number (see
docs/mutation.md for the mutant each one kills)."""

import math
from types import SimpleNamespace

import networkx as nx
import pytest
import torch

from simbench.core.message import Message
from simbench.core.scenario import Crash, Scenario
from simbench.core.units import SECOND_TICKS
from simbench.sim.kernel import Deadlock, Kernel, Killed, SimFuture, _describe

from simhelpers import Idle, events, make_world, net


def blob(n: int, **meta) -> Message:
    return Message("blob", meta, tensors={"x": torch.zeros(n, dtype=torch.uint8)})


class SendAt:
    def __init__(self, dst, size, at=0.0, **meta):
        self.dst, self.size, self.at, self.meta = dst, size, at, meta

    async def run(self, rt):
        await rt.sleep(self.at)
        await rt.send(self.dst, blob(self.size, **self.meta))


async def _wait(fut):
    """A process body that waits on ``fut`` (for deadlock reports)."""
    await fut


class Ticks:
    """Receives ``count`` messages; ``log`` holds ``(src, tick of arrival)`` of each."""

    def __init__(self, count):
        self.count, self.log = count, []

    async def run(self, rt):
        while len(self.log) < self.count:
            m = await rt.recv()
            self.log.append((m.src, rt.kernel.now))


# -- receives ----------------------------------------------------------------------------------
def test_an_expired_recv_does_not_swallow_the_next_message():
    """A recv that timed out at 0.1 s is withdrawn: the message arriving at 0.2 s goes to the
    next recv (or the mailbox), not to the dead waiter."""
    got = []

    class Waiter:
        async def run(self, rt):
            first = await rt.recv(timeout=0.1, match="blob")
            got.append((rt.now(), first))
            second = await rt.recv(match="blob")
            got.append((rt.now(), second["k"]))

    make_world(nx.path_graph(2), {0: Waiter(), 1: SendAt(0, 4, at=0.2, k=7)}).run()
    assert got == [(0.1, None), (0.2, 7)]


def test_a_message_that_arrives_between_two_receives_waits_in_the_mailbox():
    """The first recv expires at 0.1 s; the message arrives at 0.2 s while the node sleeps; the
    next recv (at 0.5 s) returns it at once."""
    got = []

    class Late:
        async def run(self, rt):
            got.append(await rt.recv(timeout=0.1))
            await rt.sleep(0.4)
            m = await rt.recv(timeout=0.0)
            got.append((rt.now(), m["k"]))

    make_world(nx.path_graph(2), {0: Late(), 1: SendAt(0, 4, at=0.2, k=3)}).run()
    assert got == [None, (0.5, 3)]


def test_a_recv_timeout_is_exact_to_the_tick_for_a_repeated_timeout_value():
    """Timeouts of one value are converted once and reused: the second 0.3 s wait also ends
    exactly 0.3 s after it began."""
    times = []

    class Twice:
        async def run(self, rt):
            for _ in range(2):
                await rt.recv(timeout=0.3)
                times.append(rt.kernel.now)

    make_world(nx.path_graph(2), {0: Twice(), 1: Idle()}).run()
    assert times == [300_000_000, 600_000_000]


def test_a_killed_sleep_does_not_move_the_clock():
    """A helper sleeping 100 s is cancelled at 1 s: its timer is withdrawn, so the run ends at
    1 s, not 100 s."""

    class Main:
        async def run(self, rt):
            async def nap():
                await rt.sleep(100.0)
            task = rt.spawn(nap())
            await rt.sleep(1.0)
            task.cancel()

    world = make_world(nx.path_graph(2), {0: Main(), 1: Idle()})
    world.run()
    assert world.kernel.now == SECOND_TICKS


def test_kernel_timeout_future_resolves_with_its_value_at_its_tick():
    k = Kernel()
    fut = k.timeout(5, "v")
    k.run()
    assert (k.now, fut.result()) == (5, "v")


# -- a sender that crashes mid-transfer ------------------------------------------------------
def test_a_crashed_senders_share_of_a_downlink_goes_to_the_other_flow():
    """Nodes 1 and 2 each send W bytes to node 0, whose downlink carries W bytes/s: each flow
    gets W/2. Node 1 crashes at 0.25 s (an eighth of each message is through); node 2's
    remaining 7W/8 then go at the full W/s: arrival at 0.25 + 0.875 = 1.125 s (2.0 s if the
    crashed flow kept its share)."""
    size = 1000
    wire = len(blob(size).encode(2))
    sink = Ticks(1)
    world = make_world(nx.star_graph(2), {0: sink, 1: SendAt(0, size), 2: SendAt(0, size)},
                       network=net(0.0, math.inf, downlink=float(wire)),
                       scenario=Scenario(crashes=(Crash(node=1, at=0.25),)))
    world.run()
    assert sink.log == [(2, 1_125_000_000)]
    assert [(t, node) for t, node, _ in events(world, "drop_sender_crashed")] == [(0.25, 0)]
    assert world.crashed() == [1]


def test_a_node_going_offline_frees_the_uplink_it_shared():
    """Node 0 sends W bytes to each of 1 and 2 through its W bytes/s uplink (W/2 each); node 1
    goes offline at 0.5 s, which drops the message on its way to it (``abort_to``); the other
    then gets the whole uplink: arrival at 0.5 + 0.75 = 1.25 s."""
    size = 1000
    wire = len(blob(size).encode(0))

    class Both:
        async def run(self, rt):
            await rt.send(1, blob(size))
            await rt.send(2, blob(size))

    class GoesOffline:
        async def run(self, rt):
            await rt.sleep(0.5)
            dropped.append(rt.world.network.abort_to(rt.node_id))

    dropped = []
    sink = Ticks(1)
    world = make_world(nx.star_graph(2), {0: Both(), 1: GoesOffline(), 2: sink},
                       network=net(0.0, math.inf, uplink=float(wire)))
    world.run()
    assert dropped == [1] and [(t, n) for t, n, _ in events(world, "drop_offline")] == [(0.5, 1)]
    assert sink.log == [(0, int(1.25 * SECOND_TICKS))]


# -- rounding to ticks ------------------------------------------------------------------------
@pytest.mark.parametrize("latency,ticks", [(2.4e-9, 2), (2.6e-9, 3), (0.4e-9, 0), (0.7e-9, 1),
                                           (0.001, 1_000_000), (0.0029999999999, 3_000_000)])
def test_latency_rounds_to_the_nearest_tick(latency, ticks):
    sink = Ticks(1)
    make_world(nx.path_graph(2), {0: sink, 1: SendAt(0, 4)}, network=net(latency)).run()
    assert sink.log == [(1, ticks)]


def test_transfer_time_rounds_up_to_the_next_tick():
    """W bytes at 7 bytes/s take W/7 s; when that is not a whole number of ticks the last
    byte leaves at the next tick (never early), and latency adds on top."""
    size = 100
    wire = len(blob(size).encode(1))
    assert (wire * SECOND_TICKS) % 7  # not a whole tick
    sink = Ticks(1)
    make_world(nx.path_graph(2), {0: sink, 1: SendAt(0, size)}, network=net(0.002, 7.0)).run()
    assert sink.log == [(1, -(-wire * SECOND_TICKS // 7) + 2_000_000)]


def test_a_whole_number_of_ticks_is_not_rounded_up():
    """W bytes at W bytes/s: exactly one second, not one tick more."""
    size = 100
    wire = len(blob(size).encode(1))
    sink = Ticks(1)
    make_world(nx.path_graph(2), {0: sink, 1: SendAt(0, size)}, network=net(0.0, float(wire))).run()
    assert sink.log == [(1, SECOND_TICKS)]


def test_jittered_latencies_never_reorder_a_link():
    """The second message draws a shorter latency than the first: it arrives with the first
    (FIFO per link), not before it."""
    from simbench.core.scenario import Dist
    lat = Dist("uniform", low=0.0, high=1.0)

    class Many:
        async def run(self, rt):
            for k in range(20):
                await rt.send(0, blob(4, k=k))

    got = []

    class Keep:
        async def run(self, rt):
            for _ in range(20):
                m = await rt.recv()
                got.append((m["k"], rt.kernel.now))

    make_world(nx.path_graph(2), {0: Keep(), 1: Many()}, network=net(lat)).run()
    assert [k for k, _ in got] == list(range(20))
    ticks = [t for _, t in got]
    assert ticks == sorted(ticks) and len(set(ticks)) < 20  # some arrivals were held back to keep the order


# -- the kernel: failures, kills and deadlock reports ------------------------------------------
def test_a_process_that_dies_of_a_kill_it_awaited_does_not_fail_the_run():
    """A watcher awaiting a killed process's ``done`` gets Killed and ends with it; Killed is
    how crashes stop nodes, so it never surfaces from run() (any other exception does)."""
    k = Kernel()

    async def victim():
        await k.timeout(100)

    async def watcher(p):
        await p.done

    v = k.spawn(victim(), "victim")
    w = k.spawn(watcher(v), "watcher")
    k.schedule(3, v.kill)
    k.run(stop_when_done=True)
    assert k.now == 3 and not w.alive and isinstance(w.done._exc, Killed)


def test_after_a_failure_surfaces_the_kernel_runs_on():
    """run() raises a process's exception once; a later run() goes on with the other events."""
    k = Kernel()
    seen = []

    async def bad():
        await k.timeout(2)
        raise KeyError("boom")

    async def good():
        await k.timeout(5)
        seen.append(k.now)

    k.spawn(bad(), "bad")
    k.spawn(good(), "good")
    with pytest.raises(KeyError):
        k.run()
    k.run()
    assert seen == [5]


def test_deadlock_reports_what_each_process_waits_on():
    k = Kernel()
    futures = [SimFuture(k, ("recv", 0, None)), SimFuture(k, ("recv", 1, ("a", "b"))),
               SimFuture(k, ("recv", 2, lambda m: True)), SimFuture(k, "lock"), SimFuture(k)]
    for i, f in enumerate(futures):
        k.spawn(_wait(f), f"p{i}")
    k.spawn(_wait(SimFuture(k, "daemon's")), "zz", daemon=True)
    with pytest.raises(Deadlock) as info:
        k.run()
    assert str(info.value) == (
        "deadlock at t=0.000000000s: every process waits and nothing is scheduled: "
        "p0 (waiting on recv of any message), p1 (waiting on recv of ('a', 'b')), "
        "p2 (waiting on recv of a predicate), p3 (waiting on lock), p4 (waiting on a future)")
    assert _describe(None) == "nothing"


@pytest.mark.parametrize("count, ending", [(23, "p19 (waiting on x) and 3 more"), (21, "p19 (waiting on x) and 1 more"),
                                          (20, "p18 (waiting on x), p19 (waiting on x)")])
def test_a_deadlock_report_names_twenty_processes_and_counts_the_rest(count, ending):
    k = Kernel()
    for i in range(count):
        k.spawn(_wait(SimFuture(k, "x")), f"p{i:02d}")
    with pytest.raises(Deadlock) as info:
        k.run()
    msg = str(info.value)
    assert msg.endswith(ending) and "p20" not in msg


def test_a_process_spawned_without_a_name_or_daemon_flag_is_a_plain_process_in_reports():
    k = Kernel()
    k.spawn(_wait(SimFuture(k, "x")))
    with pytest.raises(Deadlock, match=r"nothing is scheduled: process \(waiting on x\)$"):
        k.run()


def test_scheduling_into_the_past_is_refused_with_the_delay():
    with pytest.raises(ValueError, match=r"^cannot schedule into the past \(delay=-3 ticks\)$"):
        Kernel().schedule(-3, print)


# -- node tasks and put-off steps -------------------------------------------------------------
def test_a_crashed_node_cannot_spawn_and_the_task_is_closed():
    world = make_world(nx.path_graph(2), {0: Idle(), 1: Idle()})
    rt = world.runtimes[1]
    rt.crash()

    async def helper():
        return 1

    coro = helper()
    with pytest.raises(RuntimeError, match=r"^node 1 is crashed and cannot spawn$"):
        rt.spawn(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning, nothing left running


def test_a_helper_task_is_named_after_its_node_in_deadlocks_and_unfinished_runs():
    class WithHelper:
        async def run(self, rt):
            task = rt.spawn(rt.recv(match="never"), name="listener")
            await rt.gather(task)

    world = make_world(nx.path_graph(2), {0: WithHelper(), 1: Idle()})
    with pytest.raises(Deadlock, match=r"node0 \(waiting on gather\), node0\.listener \(waiting on recv of 'never'\)$"):
        world.run()
    world = make_world(nx.path_graph(2), {0: WithHelper(), 1: Idle()})
    world.run(until=1.0)
    assert world.unfinished() == [0]


def test_a_step_run_alone_keeps_its_error_for_the_node():
    from simbench.sim.batch import Batcher, Job

    class Failing:
        job = None

        def train_step(self):
            raise FloatingPointError("nan loss")

    job = Job(Batcher(Kernel()), Failing(), "train_step", (), ())
    with pytest.raises(RuntimeError, match="^a batched computation was read before its instant ended$"):
        job.result()
    job.run_alone()
    with pytest.raises(FloatingPointError, match="nan loss"):
        job.result()
    assert job.batcher.alone == 1


def test_finished_helper_tasks_are_forgotten():
    """A node that spawns a helper per message must not keep every finished one: only the
    running processes stay on the node's list (the ones a crash kills)."""
    left = []

    class ManyHelpers:
        async def run(self, rt):
            async def short(k):
                await rt.sleep(0.01 * k)

            tasks = [rt.spawn(short(k), name=f"h{k}") for k in range(5)]
            await rt.gather(*tasks)
            await rt.sleep(0.1)
            left.append(sorted(p.name for p in rt._procs))

    make_world(nx.path_graph(2), {0: ManyHelpers(), 1: Idle()}).run()
    assert left == [["node0"]]


def test_gather_fails_with_the_first_failed_task_once_all_are_done():
    """A gather over a task that finishes and one killed meanwhile fails with Killed, at the
    time the last of them is done; over finished tasks it returns their results in order."""
    seen = []

    class Main:
        async def run(self, rt):
            async def nap(s, v):
                await rt.sleep(s)
                return v

            slow, fast = rt.spawn(nap(2.0, "slow")), rt.spawn(nap(1.0, "fast"))
            seen.append(await rt.gather(slow, fast))
            a, b = rt.spawn(nap(1.0, "a")), rt.spawn(nap(10.0, "b"))
            await rt.sleep(0.5)
            b.cancel()
            try:
                await rt.gather(a, b)
            except Killed as exc:
                seen.append((rt.now(), type(exc).__name__, str(exc)))

    make_world(nx.path_graph(2), {0: Main(), 1: Idle()}).run()
    assert seen == [["slow", "fast"], (3.0, "Killed", "node0.task")]


def test_kernel_step_runs_one_event_at_a_time_and_skips_cancelled_ones():
    k = Kernel()
    log = []
    k.schedule(2, log.append, "a")
    dropped = k.schedule(3, log.append, "x")
    k.schedule(5, log.append, "b")
    k.cancel(dropped)
    assert k.step() and (k.now, log, k.events_processed) == (2, ["a"], 1)
    assert k.step() and (k.now, log, k.events_processed) == (5, ["a", "b"], 2)  # the cancelled one is skipped
    assert not k.step() and k.now == 5


def test_a_process_shows_its_name_and_state():
    k = Kernel()

    async def body():
        await k.timeout(1)

    p = k.spawn(body(), "worker3")
    assert repr(p) == "<Process worker3 alive>"
    k.run()
    assert repr(p) == "<Process worker3 done>"


def test_the_infinite_network_has_latency_only():
    from simbench.sim.world import infinite_network
    spec = infinite_network()
    assert (spec.bandwidth, spec.uplink, spec.downlink) == (math.inf, math.inf, math.inf)


# -- offline spells: the stand-in that keeps the run waiting ----------------------------------
class Worker:
    """Works ``steps`` times 0.1 s (its count survives offline spells) and notes when it ends."""

    def __init__(self, steps):
        self.steps, self.done, self.ended = steps, 0, None

    async def run(self, rt):
        while self.done < self.steps:
            await rt.sleep(0.1)
            self.done += 1
        self.ended = round(rt.now(), 9)


def _offline_world(nodes, spells, scenario=None, fresh_node=None, reporters=None):
    import numpy as np

    from simbench.core.population import Population, Sessions, TraceTimeline
    from simbench.core.scenario import ComputeSpec, node_profiles
    from simbench.metrics.recorder import Recorder
    from simbench.sim.world import SimWorld
    timelines = {}
    for node, windows in spells.items():  # offline windows [t1, t2)
        starts = [0.0] + [t2 for _, t2 in windows]
        ends = [t1 for t1, _ in windows] + [math.inf]
        timelines[node] = TraceTimeline(Sessions(list(zip(starts, ends))))
    scenario = scenario or Scenario()
    return SimWorld(nx.path_graph(len(nodes)), nodes, roles={}, network=net(), compute=ComputeSpec(),
                    scenario=scenario, profiles=node_profiles(scenario, len(nodes), np.random.default_rng(0)),
                    recorder=Recorder("t", wall_clock=False), seed=0, fresh_node=fresh_node, reporters=reporters,
                    population=Population(tuple(spells), {}, timelines, rejoin="fresh" if fresh_node else "keep",
                                          horizon=1e6))


def test_a_node_back_online_leaves_no_stand_in_behind():
    """Node 1 is offline in [1, 2) and [3, 4): a step due at the instant it goes offline is
    cut off, so 9 of its 60 steps are done at 1 s, 9 more at 3 s, the last 42 end at 8.2 s.
    Each spell's stand-in (which keeps the run waiting for the node) goes when the node is
    back, so the run ends at 8.2 s; a stand-in left behind would keep it going to a crash
    planned at 50 s."""
    w1 = Worker(60)
    world = _offline_world({0: Worker(1), 1: w1}, {1: [(1.0, 2.0), (3.0, 4.0)]},
                           scenario=Scenario(crashes=(Crash(node=0, at=50.0),)))
    world.run()
    assert w1.ended == 8.2 and world.now == 8.2 and not events(world, "crash")


def test_a_crash_ending_inside_an_offline_spell_keeps_the_run_waiting_for_the_node():
    """Node 1 goes offline at 1 s (back at 3 s), crashes at 1.5 s and recovers at 2 s, still
    offline: the run still waits for it; it restarts at 3 s and does its last 11 steps by 4.1 s."""
    w1 = Worker(20)
    world = _offline_world({0: Worker(1), 1: w1}, {1: [(1.0, 3.0)]},
                           scenario=Scenario(crashes=(Crash(node=1, at=1.5, recover_at=2.0),)))
    world.run()
    assert w1.ended == 4.1 and world.now == 4.1


def test_a_fresh_node_is_built_for_its_id_and_its_device_is_taken_again():
    """``rejoin: fresh``: the node back online is rebuilt by ``fresh_node(id)``, and received
    tensors go to the rebuilt node's device."""
    import torch as _torch
    built = []

    def fresh(i):
        node = Worker(3)
        node.learner = SimpleNamespace(device=_torch.device("meta"))
        built.append(i)
        return node

    world = _offline_world({0: Worker(1), 1: Worker(20)}, {1: [(1.0, 2.0)]}, fresh_node=fresh)
    world.run()
    assert built == [1] and world.nodes[1].ended == 2.3
    assert world.runtimes[1].device == _torch.device("meta") and world.runtimes[0].device is None


def test_a_recovering_node_is_told_before_it_runs_again():
    calls = []

    class Recovers(Worker):
        def on_recover(self):
            calls.append((self.done, "recover"))

    node = Recovers(10)
    world = make_world(nx.path_graph(2), {0: Worker(20), 1: node},
                       scenario=Scenario(crashes=(Crash(node=1, at=0.55, recover_at=1.0),)))
    world.run()
    assert calls == [(5, "recover")] and node.ended == 1.5


def test_offline_nodes_are_not_waited_for_once_every_reporter_finished_or_crashed():
    """Reporters 0 and 1: node 1 crashes for good at 0.5 s, node 0 finishes at 1 s. Node 2
    (offline from 0.5 s to 100 s) is then no longer waited for: the run ends at 1 s."""
    w2 = Worker(20)
    world = _offline_world({0: Worker(10), 1: Worker(20), 2: w2}, {2: [(0.5, 100.0)]},
                           scenario=Scenario(crashes=(Crash(node=1, at=0.5),)), reporters={0, 1})
    world.run()
    assert world.now == 1.0 and w2.ended is None


def test_once_the_reporters_are_done_no_one_leaves_any_more():
    """Reporter 0 finishes at 1 s; node 1 (not a reporter) works 100 steps to 10 s. Its trace
    has it offline in [2, 3), but the run is ending by then: it stays online and ends at 10 s."""
    w1 = Worker(100)
    world = _offline_world({0: Worker(10), 1: w1}, {1: [(2.0, 3.0)]}, reporters={0})
    world.run()
    assert w1.ended == 10.0 and not events(world, "offline")


def test_schedule_at_accepts_now_and_refuses_the_past():
    k = Kernel()
    log = []
    k.schedule(4, lambda: k.schedule_at(4, log.append, k.now))
    k.run()
    assert log == [4]
    with pytest.raises(ValueError, match=r"^cannot schedule into the past \(tick 3 < now 4\)$"):
        k.schedule_at(3, log.append, 0)


def test_a_waiter_added_to_a_resolved_future_runs_at_once_with_the_future():
    k = Kernel()
    fut = SimFuture(k, "f")
    seen = []
    k.schedule(2, fut.set_result, "v")
    k.schedule(6, lambda: fut.add_waiter(lambda f: seen.append((k.now, f))))
    k.run()
    assert seen == [(6, fut)]


def test_a_sender_dropped_without_a_reason_counts_as_crashed_and_every_link_is_counted():
    """Node 1 has two messages queued to each of nodes 0 and 2 when its transfers are dropped
    (no reason given: ``sender_crashed``): four are counted, on both links."""
    dropped = []

    class Drops:
        async def run(self, rt):
            for dst in (0, 2, 0, 2):
                await rt.send(dst, blob(1000))
            await rt.sleep(0.5)
            dropped.append(rt.world.network.abort_from(rt.node_id))

    world = make_world(nx.path_graph(3), {0: Idle(), 1: Drops(), 2: Idle()}, network=net(0.0, 100.0))
    world.run()
    assert dropped == [4] and world.network.msgs_dropped == 4
    assert not world._in_flight  # a dropped message is let go like a delivered one
    assert sorted(n for _, n, _ in events(world, "drop_sender_crashed")) == [0, 0, 2, 2]


def test_a_future_resolves_once():
    k = Kernel()
    fut = SimFuture(k, "f")
    assert fut.set_exception(KeyError("x")) is True and fut.done
    assert fut.set_exception(KeyError("y")) is False and fut.set_result(1) is False
    with pytest.raises(KeyError, match="x"):
        fut.result()
    ok = SimFuture(k, "g")
    assert ok.set_result(2) is True and ok.set_exception(KeyError("z")) is False and ok.result() == 2


def test_the_batcher_counts_calls_and_steps_and_runs_them_at_the_end_of_the_instant():
    from simbench.sim.batch import Batcher, Job

    class Fake:
        job = None
        settled = 0

        def settle(self):
            self.settled += 1

        def train_steps(self, k):
            return ("trained", k)

        def train_step(self):
            return "one"

    k = Kernel()
    b = Batcher(k)
    a, c = Fake(), Fake()
    jobs = [Job(b, a, "train_steps", (3,), ("A",)), Job(b, c, "train_step", (), ("C",))]
    k.schedule(1, lambda: [b.queue(j) for j in jobs])
    k.run()
    assert (b.calls, b.steps, b.vectorized, b.alone) == (2, 4, 0, 0)
    assert [j.result() for j in jobs] == [("trained", 3), "one"] and a.settled == c.settled == 1


def test_a_failing_group_gives_each_of_its_nodes_the_error_and_the_other_groups_still_run(monkeypatch):
    """Three groups in one instant: a pair run as one vectorized call (counted in
    ``vectorized``, over two flushes), a failing one, and one after it that still runs."""
    from simbench.sim import batch

    class Fake:
        job = None

        def settle(self):
            pass

        def train_step(self):
            return "one"

        def compute_grad(self):
            raise FloatingPointError("nan")

    monkeypatch.setattr(batch, "batched_run", lambda learners, op, args: [f"v{i}" for i in range(len(learners))])
    k = Kernel()
    b = batch.Batcher(k)
    first = [batch.Job(b, Fake(), "train_step", (), ("pair",)) for _ in range(2)]
    bad = batch.Job(b, Fake(), "compute_grad", (), ("bad",))
    last = batch.Job(b, Fake(), "train_step", (), ("last",))
    again = [batch.Job(b, Fake(), "train_step", (), ("pair",)) for _ in range(2)]
    k.schedule(1, lambda: [b.queue(j) for j in [*first, bad, last]])
    k.schedule(2, lambda: [b.queue(j) for j in again])
    k.run()
    assert [j.result() for j in first + again] == ["v0", "v1", "v0", "v1"] and last.result() == "one"
    with pytest.raises(FloatingPointError, match="nan"):
        bad.result()
    assert (b.calls, b.steps, b.vectorized) == (6, 6, 4)


def test_only_a_flat_learners_own_step_methods_are_put_off():
    """A subclass's own method, or an override of a step, runs at once (prepare: None)."""
    from simbench.learn.flat import FlatLearner
    from simbench.sim.batch import Batcher

    class Sub(FlatLearner):
        def extra(self):
            return 1

        def train_step(self):
            return 2

    sub = Sub.__new__(Sub)  # prepare looks only at the method, never at the learner's state
    b = Batcher(Kernel())
    assert b.prepare(sub.extra, ()) is None and b.prepare(sub.train_step, ()) is None
    assert b.prepare(print, ()) is None


def test_a_run_collects_generation_0_at_most_every_50000_allocations_and_restores_the_thresholds():
    """SimWorld.run raises gc's generation-0 threshold to 50 000 (a lower one only) for the
    run and leaves generations 1 and 2 alone; the caller's thresholds are back afterwards."""
    import gc

    seen = []

    class Reads:
        async def run(self, rt):
            seen.append(gc.get_threshold())

    before = gc.get_threshold()
    try:
        for start in [(700, 11, 12), (60_000, 13, 14)]:
            gc.set_threshold(*start)
            make_world(nx.path_graph(1), {0: Reads()}).run()
            assert gc.get_threshold() == start
        assert seen == [(50_000, 11, 12), (60_000, 13, 14)]
    finally:
        gc.set_threshold(*before)

