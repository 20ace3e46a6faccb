"""Kernel stories: event order, exact sleeps and timeouts, matching, deadlocks, determinism."""

import asyncio

import networkx as nx
import pytest

from simbench.core.message import Message
from simbench.core.runtime import Work
from simbench.core.scenario import Dist, Scenario, Stragglers
from simbench.sim.kernel import Deadlock, Kernel, Killed, SimFuture, gather

from simhelpers import Idle, make_world

MS = 1_000_000  # ticks


@pytest.fixture
def kernel():
    return Kernel()


# -- event order and time -------------------------------------------------------------

def test_ties_run_in_scheduling_order(kernel):
    log = []
    for name in "abc":
        kernel.schedule(5, lambda n=name: log.append((kernel.now, n)))
    kernel.schedule(3, lambda: log.append((kernel.now, "first")))
    kernel.schedule_at(5, lambda: log.append((kernel.now, "d")))
    kernel.run()
    assert log == [(3, "first"), (5, "a"), (5, "b"), (5, "c"), (5, "d")]


def test_processes_woken_at_the_same_tick_resume_in_wait_order(kernel):
    log = []

    async def proc(name, ticks):
        await kernel.timeout(ticks)
        log.append((kernel.now, name))

    for name in "xyz":
        kernel.spawn(proc(name, 7), name)
    kernel.spawn(proc("early", 2), "early")
    kernel.run()
    assert log == [(2, "early"), (7, "x"), (7, "y"), (7, "z")]


def test_process_sleeps_exact_ticks(kernel):
    log = []

    async def proc():
        log.append((kernel.now, "a"))
        await kernel.timeout(1_500_000_000)
        log.append((kernel.now, "b"))
        await kernel.timeout(1)
        log.append((kernel.now, "c"))

    kernel.spawn(proc(), "p")
    kernel.run()
    assert log == [(0, "a"), (1_500_000_000, "b"), (1_500_000_001, "c")]


def test_node_sleep_logs_exact_seconds():
    log = []

    class Sleeper:
        async def run(self, rt):
            log.append((rt.now(), "a"))
            await rt.sleep(1.5)
            log.append((rt.now(), "b"))
            await rt.sleep(0.1)
            await rt.sleep(0.2)
            log.append((rt.now(), "c"))

    world = make_world(nx.path_graph(1), {0: Sleeper()})
    world.run()
    assert log == [(0, "a"), (1.5, "b"), (1.8, "c")]
    assert world.kernel.now == 1_800_000_000


def test_scheduling_into_the_past_is_refused(kernel):
    kernel.schedule(10, lambda: None)
    kernel.run()
    with pytest.raises(ValueError):
        kernel.schedule(-1, lambda: None)
    with pytest.raises(ValueError):
        kernel.schedule_at(9, lambda: None)


def test_cancelled_callback_never_runs_and_does_not_move_the_clock(kernel):
    log = []
    handle = kernel.schedule(100, log.append, "cancelled")
    kernel.schedule(10, log.append, "kept")
    Kernel.cancel(handle)
    kernel.run()
    assert log == ["kept"] and kernel.now == 10


# -- recv: timeouts and matching ----------------------------------------------------------

def test_recv_timeout_fires_at_exact_tick():
    seen = []

    class Waiter:
        async def run(self, rt):
            msg = await rt.recv(timeout=0.25)
            seen.append((msg, rt.kernel.now))

    make_world(nx.path_graph(2), {0: Waiter(), 1: Idle()}).run()
    assert seen == [(None, 250_000_000)]


def test_recv_with_zero_timeout_returns_at_once():
    seen = []

    class Poller:
        async def run(self, rt):
            seen.append((await rt.recv(timeout=0), rt.kernel.now))

    make_world(nx.path_graph(1), {0: Poller()}).run()
    assert seen == [(None, 0)]


def test_message_before_timeout_cancels_it():
    seen = []

    class Waiter:
        async def run(self, rt):
            msg = await rt.recv(timeout=1.0)
            seen.append((rt.kernel.now, msg.kind))
            seen.append((rt.kernel.now, await rt.recv(timeout=0.5)))  # a fresh timeout, from 0.11 s
            seen.append((rt.kernel.now, "end"))

    class Sender:
        async def run(self, rt):
            await rt.sleep(0.1)
            await rt.send(0, Message("hi"))

    world = make_world(nx.path_graph(2), {0: Waiter(), 1: Sender()}, latency=0.01)
    world.run()
    assert seen == [(110 * MS, "hi"), (110 * MS, None), (610 * MS, "end")]
    # the first timeout (due at 1.0 s) was cancelled: nothing ran after 0.61 s
    assert world.kernel.now == 610 * MS


def test_message_arrival_ends_a_recv_without_timeout_later_than_it_would():
    seen = []

    class Waiter:
        async def run(self, rt):
            msg = await rt.recv(timeout=1.0)
            seen.append((rt.kernel.now, msg.kind))

    class Sender:
        async def run(self, rt):
            await rt.sleep(0.2)
            await rt.send(0, Message("hi"))

    world = make_world(nx.path_graph(2), {0: Waiter(), 1: Sender()})
    world.run()
    assert seen == [(200 * MS, "hi")] and world.kernel.now == 200 * MS


def test_match_leaves_other_messages_queued_in_order():
    got = []

    class Sender:
        async def run(self, rt):
            for k, kind in enumerate(["a", "b", "a", "c", "d"]):
                await rt.send(0, Message(kind, {"k": k}))

    class Picky:
        async def run(self, rt):
            await rt.sleep(1.0)
            for match in ["c", (lambda m: m.kind == "b"), ("d", "x"), None, None]:
                m = await rt.recv(match=match)
                got.append((m.kind, m["k"]))
            got.append(await rt.recv(timeout=0))

    make_world(nx.path_graph(2), {0: Picky(), 1: Sender()}).run()
    assert got == [("c", 3), ("b", 1), ("d", 4), ("a", 0), ("a", 2), None]


def test_waiting_recv_skips_non_matching_arrivals():
    got = []

    class Sender:
        async def run(self, rt):
            for k, kind in enumerate(["noise", "noise", "want"]):
                await rt.sleep(0.1)
                await rt.send(0, Message(kind, {"k": k}))

    class Picky:
        async def run(self, rt):
            m = await rt.recv(match="want")
            got.append((rt.now(), m["k"]))
            got.append([(await rt.recv(timeout=0))["k"] for _ in range(2)])

    make_world(nx.path_graph(2), {0: Picky(), 1: Sender()}).run()
    assert got == [(pytest.approx(0.3, abs=1e-9), 2), [0, 1]]


# -- deadlock -----------------------------------------------------------------------

def test_deadlock_names_both_waiting_nodes():
    class Stuck:
        async def run(self, rt):
            await rt.recv()

    world = make_world(nx.path_graph(2), {0: Stuck(), 1: Stuck()})
    with pytest.raises(Deadlock) as info:
        world.run()
    assert str(info.value) == (
        "deadlock at t=0.000000000s: every process waits and nothing is scheduled: "
        "node0 (waiting on recv of any message), node1 (waiting on recv of any message)"
    )


def test_deadlock_is_reported_at_the_time_it_happens():
    class Late:
        async def run(self, rt):
            await rt.sleep(1.25)
            await rt.recv(match="never")

    world = make_world(nx.path_graph(2), {0: Late(), 1: Idle()})
    with pytest.raises(Deadlock, match=r"t=1\.250000000s.*node0 \(waiting on recv of 'never'\)$"):
        world.run()


def test_finished_nodes_are_no_deadlock():
    class PingOnce:
        async def run(self, rt):
            await rt.send(1 - rt.node_id, Message("x"))
            return (await rt.recv()).kind

    world = make_world(nx.path_graph(2), {0: PingOnce(), 1: PingOnce()}, latency=0.001)
    world.run()  # no Deadlock
    assert world.now == 0.001


# -- run(until=) ------------------------------------------------------------------------------

def test_run_until_stops_at_the_given_time_inclusive(kernel):
    log = []

    async def ticker():
        while True:
            await kernel.timeout(300 * MS)
            log.append(kernel.now // MS)

    kernel.spawn(ticker(), "t")
    kernel.run(until=900 * MS)
    assert log == [300, 600, 900] and kernel.now == 900 * MS
    kernel.run(until=1000 * MS)
    assert log == [300, 600, 900] and kernel.now == 1000 * MS
    kernel.run(until=1200 * MS)
    assert log == [300, 600, 900, 1200]


def test_world_run_until_leaves_forever_nodes_running_without_deadlock():
    log = []

    class Forever:
        async def run(self, rt):
            while True:
                await rt.sleep(0.3)
                log.append(rt.now())

    world = make_world(nx.path_graph(1), {0: Forever()})
    world.run(until=1.0)
    assert world.now == 1.0 and log == pytest.approx([0.3, 0.6, 0.9], abs=1e-12) and len(log) == 3


# -- processes: gather, kill, failure -----------------------------------------------------------

def test_gather_returns_results_in_order_not_finish_order(kernel):
    out = []

    async def child(delay, value):
        await kernel.timeout(delay)
        return value

    async def parent():
        procs = [kernel.spawn(child(d, v), v) for d, v in [(30, "x"), (10, "y"), (20, "z")]]
        out.append(await gather(kernel, [p.done for p in procs]))
        out.append(kernel.now)
        out.append(await gather(kernel, []))

    kernel.spawn(parent(), "parent")
    kernel.run()
    assert out == [["x", "y", "z"], 30, []]


def test_node_spawn_and_gather():
    out = []

    class Fan:
        async def run(self, rt):
            async def work(seconds, value):
                await rt.sleep(seconds)
                return value * 10

            tasks = [rt.spawn(work(s, v), f"w{v}") for s, v in [(0.3, 1), (0.1, 2), (0.2, 3)]]
            out.append((await rt.gather(*tasks), rt.now(), [t.done() for t in tasks]))

    make_world(nx.path_graph(1), {0: Fan()}).run()
    assert out == [([10, 20, 30], pytest.approx(0.3, abs=1e-12), [True, True, True])]


def test_a_cancelled_tasks_recv_does_not_swallow_the_next_message():
    got = []

    class Main:
        async def run(self, rt):
            async def listener():
                got.append(("listener", (await rt.recv()).kind))

            task = rt.spawn(listener(), "listener")
            await rt.sleep(0.5)
            task.cancel()
            m = await rt.recv(timeout=2.0)
            got.append(("main", rt.now(), m.kind, task.done()))

    class Sender:
        async def run(self, rt):
            await rt.sleep(1.0)
            await rt.send(0, Message("hello"))

    make_world(nx.path_graph(2), {0: Main(), 1: Sender()}).run()
    assert got == [("main", 1.0, "hello", True)]


def test_kill_runs_finally_and_fails_done_with_killed(kernel):
    cleaned, outcome = [], []

    async def victim():
        try:
            await kernel.timeout(10**12)
        finally:
            cleaned.append(kernel.now)

    async def watcher(proc):
        try:
            await proc.done
        except Killed as exc:
            outcome.append((kernel.now, "killed", str(exc)))

    v = kernel.spawn(victim(), "victim")
    kernel.spawn(watcher(v), "watcher")
    kernel.schedule(5, v.kill)
    kernel.run()
    assert cleaned == [5] and outcome == [(5, "killed", "victim")]
    assert not v.alive


def test_failing_process_surfaces_from_run(kernel):
    async def bad():
        await kernel.timeout(7)
        raise KeyError("boom")

    kernel.spawn(bad(), "bad")
    with pytest.raises(KeyError, match="boom"):
        kernel.run()
    assert kernel.now == 7


def test_awaiting_a_foreign_awaitable_is_an_error(kernel):
    async def wrong():
        await asyncio.sleep(0)

    kernel.spawn(wrong(), "wrong")
    with pytest.raises(TypeError, match="wrong"):
        kernel.run()


# -- determinism ------------------------------------------------------------------------------

class Chatty:
    async def run(self, rt):
        for k in range(20):
            await rt.compute(lambda: None, cost=Work(steps=1))
            for j in rt.neighbors:
                await rt.send(j, Message("m", {"k": k, "r": float(rt.rng.random())}))
            m = await rt.recv(timeout=0.05)
            rt.log("got", -1 if m is None else m["k"])


def _chatty_events(seed):
    world = make_world(
        nx.cycle_graph(5), {i: Chatty() for i in range(5)},
        latency=Dist("uniform", low=0.001, high=0.02), loss=0.2, bandwidth=1e6, step_time=0.01,
        scenario=Scenario(stragglers=Stragglers(nodes=(2,), slowdown=Dist("uniform", low=1, high=4))),
        seed=seed,
    )
    world.run()
    return world.recorder.events


def test_same_seed_gives_identical_event_lists():
    a, b = _chatty_events(0), _chatty_events(0)
    assert a == b
    metrics = {e[3] for e in a}
    assert {"drop_lost", "straggler_slowdown", "straggler", "got"} <= metrics


def test_another_seed_gives_another_run():
    assert _chatty_events(0) != _chatty_events(1)


# -- processes: the edges of _resume ---------------------------------------------------

def test_a_process_killed_before_it_starts_never_runs_and_fails_nothing(kernel):
    ran = []

    async def body():
        ran.append(kernel.now)

    proc = kernel.spawn(body(), "early")
    proc.kill()                       # at the spawn's tick, before the start event runs
    kernel.run()
    assert ran == [] and not proc.alive and isinstance(proc.done._exc, Killed)


def test_a_process_awaiting_another_ones_end_is_reported_as_waiting_on_its_done(kernel):
    async def forever():
        await SimFuture(kernel, "never")

    async def join(p):
        await p.done

    stuck = kernel.spawn(forever(), "stuck")
    kernel.spawn(join(stuck), "joiner")
    with pytest.raises(Deadlock, match=r"joiner \(waiting on stuck\.done\)"):
        kernel.run()


def test_an_awaitable_that_yields_a_resolved_future_resumes_the_process_at_once(kernel):
    """SimFuture's own ``await`` never yields a resolved future, but other awaitables may:
    the process goes on in the same tick with the future's value."""
    class Yields:
        def __init__(self, fut):
            self.fut = fut

        def __await__(self):
            yield self.fut
            return self.fut.result()

    got = []

    async def body():
        fut = SimFuture(kernel, "ready")
        fut.set_result(7)
        got.append((await Yields(fut), kernel.now))

    kernel.schedule(5, lambda: kernel.spawn(body(), "p"))
    kernel.run()
    assert got == [(7, 5)]
