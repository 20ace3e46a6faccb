"""Kernel stories: event order, exact timeouts, deadlock detection, determinism."""

import networkx as nx
import pytest

from simbench.core.message import Message
from simbench.core.scenario import Dist, Scenario, Stragglers
from simbench.core.runtime import Work
from simbench.core.scenario import ComputeSpec
from simbench.sim.kernel import Deadlock, Kernel

from simhelpers import Idle, make_world, net


@pytest.fixture
def kernel():
    return Kernel()


def test_ties_run_in_scheduling_order(kernel):
    log = []
    for name in "abc":
        kernel.schedule(5, log.append, name)
    kernel.schedule(3, log.append, "first")
    kernel.run()
    assert log == ["first", "a", "b", "c"] and kernel.now == 5


def test_process_sleeps_exact_ticks(kernel):
    log = []

    async def proc():
        log.append(kernel.now)
        await kernel.timeout(1_500_000_000)
        log.append(kernel.now)
        await kernel.timeout(1)
        log.append(kernel.now)

    kernel.spawn(proc(), "p")
    kernel.run()
    assert log == [0, 1_500_000_000, 1_500_000_001]


def test_recv_timeout_fires_at_exact_tick():
    seen = []

    class Waiter:
        async def run(self, rt):
            msg = await rt.recv(timeout=0.25)
            seen.append((msg, rt.kernel.now))

    world = make_world(nx.path_graph(2), {0: Waiter(), 1: Idle()})
    world.run()
    assert seen == [(None, 250_000_000)]


def test_message_before_timeout_cancels_it():
    seen = []

    class Waiter:
        async def run(self, rt):
            msg = await rt.recv(timeout=1.0)
            seen.append((msg.kind, rt.now()))
            seen.append((await rt.recv(timeout=0.5), rt.now()))

    class Sender:
        async def run(self, rt):
            await rt.sleep(0.1)
            await rt.send(0, Message("hi"))

    world = make_world(nx.path_graph(2), {0: Waiter(), 1: Sender()}, network=net(latency=0.01))
    world.run()
    assert seen == [("hi", pytest.approx(0.11)), (None, pytest.approx(0.61))]


def test_match_leaves_other_messages_queued_in_order():
    got = []

    class Sender:
        async def run(self, rt):
            for kind in ["a", "b", "a", "c"]:
                await rt.send(0, Message(kind, {"k": kind}))

    class Picky:
        async def run(self, rt):
            await rt.sleep(1.0)
            got.append((await rt.recv(match="c")).kind)
            got.append((await rt.recv(match=lambda m: m.kind == "b")).kind)
            got.append((await rt.recv()).kind)
            got.append((await rt.recv()).kind)

    make_world(nx.path_graph(2), {0: Picky(), 1: Sender()}).run()
    assert got == ["c", "b", "a", "a"]


def test_deadlock_names_the_waiting_nodes():
    class Stuck:
        async def run(self, rt):
            await rt.recv(match="never")

    world = make_world(nx.path_graph(2), {0: Stuck(), 1: Stuck()})
    with pytest.raises(Deadlock) as info:
        world.run()
    text = str(info.value)
    assert "node0" in text and "node1" in text and "recv of 'never'" in text


def test_run_until_stops_at_the_given_time():
    class Forever:
        async def run(self, rt):
            while True:
                await rt.sleep(0.3)

    world = make_world(nx.path_graph(1), {0: Forever()})
    world.run(until=1.0)
    assert world.now == 1.0


def test_gather_returns_results_in_order_and_kill_runs_finally(kernel):
    out, cleaned = [], []

    async def child(delay, value):
        await kernel.timeout(delay)
        return value

    async def victim():
        try:
            await kernel.timeout(10**12)
        finally:
            cleaned.append(kernel.now)

    async def parent():
        from simbench.sim.kernel import gather
        procs = [kernel.spawn(child(d, v), v) for d, v in [(30, "x"), (10, "y"), (20, "z")]]
        out.append(await gather(kernel, [p.done for p in procs]))
        out.append(kernel.now)

    v = kernel.spawn(victim(), "victim")
    kernel.spawn(parent(), "parent")
    kernel.schedule(5, v.kill)
    kernel.run()
    assert out == [["x", "y", "z"], 30]
    assert cleaned == [5]


def test_two_runs_are_identical():
    class Chatty:
        async def run(self, rt):
            for k in range(20):
                await rt.compute(lambda: None, cost=Work(steps=1))
                for j in rt.neighbors:
                    await rt.send(j, Message("m", {"k": k}))
                await rt.recv(timeout=0.05)

    def once():
        world = make_world(
            nx.cycle_graph(5), {i: Chatty() for i in range(5)},
            network=net(latency=Dist("uniform", low=0.001, high=0.02), loss=0.2, bandwidth=1e6),
            compute=ComputeSpec(step_time=0.01),
            scenario=Scenario(stragglers=Stragglers(nodes=(2,), slowdown=Dist("uniform", low=1, high=4))),
        )
        world.run()
        return world.recorder.events

    a, b = once(), once()
    assert a == b
    assert any(e[3] == "drop_lost" for e in a) and any(e[3] == "straggler_slowdown" for e in a)
