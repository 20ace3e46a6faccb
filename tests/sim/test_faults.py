"""Faults: crash-stop at the asked time, crash-recover, stragglers, weak workers."""

import networkx as nx
import pytest
import torch

from simbench.core.message import Message
from simbench.core.runtime import Work
from simbench.core.scenario import Crash, Dist, NodeProfile, Scenario, Stragglers, WeakWorkers, crash_schedule
from simbench.core.seeding import WorldStreams
from simbench.core.units import to_ticks

from simhelpers import events, make_world


class Ticker:
    """Sends a time-stamped message to node 0 every 0.1 s, 40 times per life."""

    def __init__(self):
        self.starts = []

    async def run(self, rt):
        self.starts.append(rt.now())
        for _ in range(40):
            await rt.send(0, Message("tick", {"t": rt.now()}))
            await rt.sleep(0.1)


class Listener:
    def __init__(self):
        self.stamps, self.bytes = [], 0

    async def run(self, rt):
        while (m := await rt.recv(timeout=1.5)) is not None:
            self.stamps.append(m["t"])
            self.bytes += m.nbytes


def test_crashed_node_sends_nothing_after_the_crash():
    lst, tick = Listener(), Ticker()
    world = make_world(nx.path_graph(2), {0: lst, 1: tick}, latency=0.001,
                       scenario=Scenario(crashes=(Crash(node=1, at=2.0),)))
    sent = {}
    for t in (1.95, 2.0, 2.05, 3.0, 5.0):
        world.kernel.schedule_at(to_ticks(t), lambda t=t: sent.__setitem__(t, world.network.bytes_sent[1]))
    world.run()
    assert lst.stamps == [k / 10 for k in range(20)]  # 0.0 .. 1.9: the one due at 2.0 is never sent
    assert sent[1.95] == sent[2.0] == sent[2.05] == sent[3.0] == lst.bytes
    assert world.now == pytest.approx(1.901 + 1.5)  # the listener's last timeout ends the run
    assert 5.0 not in sent  # nothing after the end runs
    assert world.network.bytes_sent[1] == lst.bytes
    assert events(world, "crash") == [(2.0, 1, 1.0)]
    assert tick.starts == [0.0]


def test_crash_recover_restarts_the_node_at_the_recovery_time():
    lst, tick = Listener(), Ticker()
    world = make_world(nx.path_graph(2), {0: lst, 1: tick}, latency=0.001,
                       scenario=Scenario(crashes=(Crash(node=1, at=2.0, recover_at=3.0),)))
    world.run()
    assert tick.starts == [0.0, 3.0]
    assert lst.stamps == [k / 10 for k in range(20)] + [k / 10 for k in range(30, 70)]
    assert events(world, "crash") == [(2.0, 1, 1.0)] and events(world, "recover") == [(3.0, 1, 1.0)]


def test_messages_to_a_crashed_node_are_dropped_until_it_recovers():
    got = []

    class Pinger:
        async def run(self, rt):
            for k in range(6):
                await rt.send(1, Message("p", {"k": k}))
                await rt.sleep(0.5)

    class Keeper:
        async def run(self, rt):
            while (m := await rt.recv(timeout=2.0)) is not None:
                got.append((rt.now(), m["k"]))

    world = make_world(nx.path_graph(2), {0: Pinger(), 1: Keeper()},
                       scenario=Scenario(crashes=(Crash(node=1, at=0.75, recover_at=1.75),)))
    world.run()
    # sent at 0, 0.5 | 1.0, 1.5 arrive while crashed | 2.0, 2.5 reach the restarted node
    assert got == [(0.0, 0), (0.5, 1), (2.0, 4), (2.5, 5)]
    assert [(t, node) for t, node, _ in events(world, "drop_crashed_receiver")] == [(1.0, 1), (1.5, 1)]


def test_a_crash_aborts_the_senders_queued_transfers_and_counts_them():
    got = []

    class Big:
        async def run(self, rt):
            for k in range(5):
                await rt.send(0, Message("m", {"k": k}, {"x": torch.zeros(10**6, dtype=torch.uint8)}))
            await rt.sleep(10)

    class Drain:
        async def run(self, rt):
            while (m := await rt.recv(timeout=1.0)) is not None:
                got.append((round(rt.now(), 3), m["k"]))

    world = make_world(nx.path_graph(2), {0: Drain(), 1: Big()}, bandwidth=10e6,
                       scenario=Scenario(crashes=(Crash(node=1, at=0.25),)))
    world.run()
    assert got == [(0.1, 0), (0.2, 1)]  # the third was half-way out at the crash
    assert world.network.msgs_sent[1] == 5 and world.network.msgs_dropped == 3
    assert events(world, "drop_sender_crashed") == [(0.25, 0, 1.0)] * 3
    assert world.network.active_flows == 0


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

    world = make_world(nx.path_graph(2), {0: Asker(), 1: Echo()}, latency=0.01,
                       scenario=Scenario(crashes=(Crash(node=1, at=0.1),)))
    world.run()
    assert seen[0][1] is not None and seen[0][1].kind == "pong"
    assert [(round(t, 9), m) for t, m in seen[1:]] == [(0.22, None), (0.92, None)]


def test_crash_kills_helper_tasks_in_spawn_order_running_their_finally():
    order = []

    class Helpers:
        async def run(self, rt):
            async def helper(i):
                try:
                    await rt.sleep(100)
                finally:
                    order.append((rt.now(), i))

            for i in range(8):
                rt.spawn(helper(i), f"h{i}")
            await rt.sleep(100)

    world = make_world(nx.path_graph(1), {0: Helpers()}, scenario=Scenario(crashes=(Crash(node=0, at=1.0),)))
    world.run()
    assert order == [(1.0, i) for i in range(8)]
    assert world.now == 1.0  # the dead processes' 100 s sleeps do not keep the clock running


def test_helpers_stop_when_the_main_coroutine_returns():
    log = []

    class Main:
        async def run(self, rt):
            async def forever():
                while True:
                    await rt.sleep(0.4)
                    log.append(rt.now())

            rt.spawn(forever(), "bg")
            await rt.sleep(1.0)

    world = make_world(nx.path_graph(1), {0: Main()})
    world.run()  # no Deadlock and no endless run
    assert log == pytest.approx([0.4, 0.8], abs=1e-12) and world.now == 1.0


# -- stragglers and weak workers -------------------------------------------------------------------

def steps_done_at(scenario: Scenario, n_steps: int = 10) -> tuple[float, list]:
    done = []

    class Worker:
        async def run(self, rt):
            for _ in range(n_steps):
                assert await rt.compute(lambda: 42, cost=Work(steps=1)) == 42
            done.append(rt.now())

    world = make_world(nx.path_graph(1), {0: Worker()}, step_time=0.1, scenario=scenario)
    world.run()
    return done[0], [v for _, _, v in events(world, "straggler_slowdown")]


def test_normal_node_computes_in_step_time():
    assert steps_done_at(Scenario()) == (pytest.approx(1.0, abs=1e-9), [])


def test_straggler_is_slower_by_the_constant_factor():
    t, factors = steps_done_at(Scenario(stragglers=Stragglers(nodes=(0,), slowdown=Dist("constant", value=3.0))))
    assert t == pytest.approx(3.0, abs=1e-9) and factors == [3.0] * 10


def test_straggler_total_is_the_sum_of_drawn_factors():
    t, factors = steps_done_at(Scenario(stragglers=Stragglers(nodes=(0,), slowdown=Dist("uniform", low=1.0, high=5.0))))
    assert len(factors) == 10 and len(set(factors)) == 10 and all(1.0 <= f <= 5.0 for f in factors)
    assert t == pytest.approx(0.1 * sum(factors), abs=1e-7)


def test_straggler_factor_below_one_never_speeds_up():
    t, factors = steps_done_at(Scenario(stragglers=Stragglers(nodes=(0,), slowdown=Dist("constant", value=0.5))))
    assert t == pytest.approx(1.0, abs=1e-9) and factors == [1.0] * 10


def test_only_the_straggler_is_slow():
    done = {}

    class Worker:
        async def run(self, rt):
            await rt.compute(lambda: None, cost=Work(steps=2))
            done[rt.node_id] = rt.now()

    scen = Scenario(stragglers=Stragglers(nodes=(1,), slowdown=Dist("constant", value=4.0)))
    world = make_world(nx.path_graph(3), {i: Worker() for i in range(3)}, step_time=0.1, scenario=scen)
    world.run()
    assert done == {0: pytest.approx(0.2, abs=1e-9), 1: pytest.approx(0.8, abs=1e-9), 2: pytest.approx(0.2, abs=1e-9)}
    assert events(world, "straggler") == [(0.0, 1, 1.0)]


def test_weak_worker_computes_four_times_slower():
    assert steps_done_at(Scenario(weak_workers=WeakWorkers(nodes=(0,), speed=0.25)))[0] == pytest.approx(4.0, abs=1e-9)


def test_fractions_draw_workers_only_and_a_named_server_still_counts():
    import numpy as np

    from simbench.core.scenario import node_profiles

    scen = Scenario(weak_workers=WeakWorkers(fraction=0.2), stragglers=Stragglers(fraction=0.25))
    workers = range(1, 65)  # node 0 is the server of a 65-node star
    seen = set()
    for seed in range(40):
        prof = node_profiles(scen, 65, np.random.default_rng(seed), workers=workers)
        weak = {i for i, p in enumerate(prof) if p.weak}
        slow = {i for i, p in enumerate(prof) if p.straggler}
        assert len(weak) == 13 and len(slow) == 16 and 0 not in weak | slow
        seen |= weak
    assert len(seen) > 50  # spread over the workers, not a fixed set
    # seed 7 draws the server among its 16 stragglers: it is replaced, the other 15 stay as drawn
    plain = {i for i, p in enumerate(node_profiles(scen, 65, np.random.default_rng(7))) if p.straggler}
    fixed = {i for i, p in enumerate(node_profiles(scen, 65, np.random.default_rng(7), workers=workers)) if p.straggler}
    assert 0 in plain and 0 not in fixed and len(plain & fixed) == 15
    named = node_profiles(Scenario(weak_workers=WeakWorkers(nodes=(0,))), 65, np.random.default_rng(0), workers=workers)
    assert named[0].weak and named[0].speed == 0.25


def test_flop_cost_model_and_free_bookkeeping():
    done = []

    class Worker:
        async def run(self, rt):
            await rt.compute(lambda: None, cost=Work(flops=5e9))
            await rt.compute(lambda: None)  # no cost: no time
            await rt.compute(lambda: None, cost=0.25)  # plain seconds
            done.append(rt.now())

    world = make_world(nx.path_graph(1), {0: Worker()}, flops_per_s=1e10)
    world.run()
    assert done == [0.75] and world.runtimes[0].compute_s == 0.75


def test_random_crashes_follow_the_worlds_fault_stream_and_weak_workers_are_logged_at_the_start():
    """crash_rate: each node's crash time is drawn from the world's fault stream (the draw of
    ``crash_schedule`` for these n nodes and the 24 h horizon); a crash later than the run
    never happens. A weak worker is logged at time 0 with its speed; a node the algorithm
    gives no role is a ``worker``, and every node knows every node of the run."""
    roles = []

    class Long:
        async def run(self, rt):
            roles.append((rt.role, rt.nodes))
            await rt.sleep(4 * 3600.0)

    scenario = Scenario(crash_rate=0.2)  # a crash every 5 node-hours on average: 0.4 h, 3.3 h, 4.7 h
    expected = crash_schedule(scenario, 3, 24 * 3600.0, WorldStreams(3, 3).faults)
    assert any(c.at < 4 * 3600.0 for c in expected) and any(c.at > 4 * 3600.0 for c in expected)
    world = make_world(nx.empty_graph(3), {i: Long() for i in range(3)}, scenario=scenario, seed=3, roles={1: "server"},
                       profiles=[NodeProfile(), NodeProfile(weak=True, speed=0.25), NodeProfile()])
    world.run()
    crashes = [(t, node) for t, node, _v in events(world, "crash")]
    assert crashes == [(pytest.approx(c.at), c.node) for c in expected if c.at < 4 * 3600.0]
    assert events(world, "weak_worker") == [(0.0, 1, 0.25)]
    assert roles == [("worker", (0, 1, 2)), ("server", (0, 1, 2)), ("worker", (0, 1, 2))]
