"""Faults: crash-stop at the asked time, crash-recover, stragglers, weak workers."""

import networkx as nx
import pytest

from simbench.core.message import Message
from simbench.core.runtime import Work
from simbench.core.scenario import ComputeSpec, Crash, Dist, Scenario, Stragglers, WeakWorkers

from simhelpers import make_world, net


class Ticker:
    """Sends a time-stamped message to node 0 every 0.1 s, ten times per life."""

    def __init__(self):
        self.starts = []

    async def run(self, rt):
        self.starts.append(rt.now())
        for _ in range(40):
            await rt.send(0, Message("tick", {"t": rt.now()}))
            await rt.sleep(0.1)


class Listener:
    def __init__(self):
        self.stamps = []

    async def run(self, rt):
        while (m := await rt.recv(timeout=1.5)) is not None:
            self.stamps.append(m["t"])


def test_crashed_node_sends_nothing_after_the_crash():
    lst, tick = Listener(), Ticker()
    world = make_world(nx.path_graph(2), {0: lst, 1: tick}, network=net(0.001),
                       scenario=Scenario(crashes=(Crash(node=1, at=2.0),)))
    world.run()
    assert max(lst.stamps) < 2.0 and len(lst.stamps) == 20
    crash = [e for e in world.recorder.events if e[3] == "crash"]
    assert crash == [(2.0, 0.0, 1, "crash", 1.0)]


def test_crash_recover_restarts_the_node():
    lst, tick = Listener(), Ticker()
    world = make_world(nx.path_graph(2), {0: lst, 1: tick}, network=net(0.001),
                       scenario=Scenario(crashes=(Crash(node=1, at=1.0, recover_at=1.45),)))
    world.run()
    assert tick.starts == [0.0, pytest.approx(1.45)]
    assert not any(1.0 <= t < 1.45 for t in lst.stamps)
    assert any(t >= 1.45 for t in lst.stamps)


def test_peer_sees_a_crash_only_as_a_timeout():
    seen = []

    class Asker:
        async def run(self, rt):
            for _ in range(3):
                await rt.send(1, Message("ping"))
                seen.append((rt.now(), await rt.recv(timeout=0.5)))
                await rt.sleep(0.2)

    class Echo:
        async def run(self, rt):
            while True:
                m = await rt.recv()
                await rt.send(m.src, Message("pong"))

    world = make_world(nx.path_graph(2), {0: Asker(), 1: Echo()}, network=net(0.01),
                       scenario=Scenario(crashes=(Crash(node=1, at=0.1),)))
    world.run()
    assert seen[0][1] is not None and seen[0][1].kind == "pong"
    assert [(round(t, 6), m) for t, m in seen[1:]] == [(0.22, None), (0.92, None)]


def steps_done_at(scenario: Scenario, n_steps: int = 10) -> tuple[float, list]:
    done = []

    class Worker:
        async def run(self, rt):
            for _ in range(n_steps):
                await rt.compute(lambda: None, cost=Work(steps=1))
            done.append(rt.now())

    world = make_world(nx.path_graph(1), {0: Worker()}, compute=ComputeSpec(step_time=0.1), scenario=scenario)
    world.run()
    return done[0], [e[4] for e in world.recorder.events if e[3] == "straggler_slowdown"]


def test_straggler_is_slower_by_the_drawn_factor():
    assert steps_done_at(Scenario())[0] == pytest.approx(1.0)
    assert steps_done_at(Scenario(stragglers=Stragglers(nodes=(0,), slowdown=Dist("constant", value=3.0))))[0] == pytest.approx(3.0)
    t, factors = steps_done_at(Scenario(stragglers=Stragglers(nodes=(0,), slowdown=Dist("uniform", low=1.0, high=5.0))))
    assert len(factors) == 10 and len(set(factors)) == 10
    assert t == pytest.approx(0.1 * sum(factors), abs=1e-6)


def test_weak_worker_computes_four_times_slower():
    assert steps_done_at(Scenario(weak_workers=WeakWorkers(nodes=(0,), speed=0.25)))[0] == pytest.approx(4.0)


def test_flop_cost_model():
    done = []

    class Worker:
        async def run(self, rt):
            await rt.compute(lambda: None, cost=Work(flops=5e9))
            done.append(rt.now())

    world = make_world(nx.path_graph(1), {0: Worker()}, compute=ComputeSpec(flops_per_s=1e10))
    world.run()
    assert done == [0.5]
