"""One contract suite for the Runtime interface, run against SimRuntime and RealRuntime.

Each test is a small story: a few nodes run short coroutines and the test checks what they
saw. The ``world`` fixture builds either a :class:`SimWorld` (virtual time) or a
:class:`RealWorld` (every node in this process, real ZeroMQ sockets on loopback, wall
time), in the way trio runs one stream-contract suite against every stream. Times in real
runs are checked with a tolerance; everything else must match exactly.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import torch

from simbench.core.message import Message, encode
from simbench.core.population import Population, Sessions, TraceTimeline
from simbench.core.scenario import ComputeSpec, Crash, Dist, NetworkSpec, NodeProfile, Scenario, Stragglers
from simbench.core.seeding import WorldStreams
from simbench.metrics.recorder import Recorder
from simbench.real.world import RealWorld
from simbench.sim.world import SimWorld

LATENCY = 0.01


class Story:
    """A node whose behaviour is one coroutine function ``fn(rt, log)``."""

    def __init__(self, fn, log: list) -> None:
        self.fn, self.log = fn, log

    async def run(self, rt):
        return await self.fn(rt, self.log)


@pytest.fixture(params=["sim", "real"])
def world(request):
    """``world(graph, {node: fn}, network=..., scenario=...)`` runs the story; returns (world, logs)."""

    def run(graph: nx.Graph, fns: dict, *, network: NetworkSpec | None = None,
            scenario: Scenario = Scenario(), profiles: list | None = None, until: float | None = None,
            devices: dict | None = None, population=None):
        network = network or NetworkSpec(latency=Dist("constant", value=LATENCY), bandwidth=math.inf,
                                         uplink=math.inf, downlink=math.inf)
        logs = {i: [] for i in fns}
        nodes = {i: Story(fn, logs[i]) for i, fn in fns.items()}
        for i, device in (devices or {}).items():  # a node whose model lives on that device
            nodes[i].learner = SimpleNamespace(device=torch.device(device))
        n = graph.number_of_nodes()
        kw = dict(roles={i: "worker" for i in range(n)}, network=network, compute=ComputeSpec(),
                  scenario=scenario, profiles=profiles or [NodeProfile()] * n, recorder=Recorder("t", wall_clock=False), seed=0,
                  population=population)
        w = (SimWorld if request.param == "sim" else RealWorld)(graph, nodes, **kw)
        w.run(until=until)
        return w, logs

    run.kind = request.param
    return run


def pair() -> nx.Graph:
    return nx.path_graph(2)


def test_messages_on_one_link_arrive_in_send_order(world):
    async def sender(rt, log):
        for k in range(50):
            await rt.send(1, Message("seq", {"k": k}))

    async def receiver(rt, log):
        for _ in range(50):
            log.append((await rt.recv())["k"])

    _, logs = world(pair(), {0: sender, 1: receiver})
    assert logs[1] == list(range(50))


def test_order_holds_under_jittered_latency(world):
    net = NetworkSpec(latency=Dist("uniform", low=0.0, high=0.02), jitter=0.01, bandwidth=math.inf,
                      uplink=math.inf, downlink=math.inf)

    async def sender(rt, log):
        for k in range(30):
            await rt.send(1, Message("seq", {"k": k}))

    async def receiver(rt, log):
        for _ in range(30):
            log.append((await rt.recv())["k"])

    _, logs = world(pair(), {0: sender, 1: receiver}, network=net)
    assert logs[1] == list(range(30))


def test_recv_times_out_with_none_after_the_timeout(world):
    async def waiter(rt, log):
        t0 = rt.now()
        log.append(await rt.recv(timeout=0.1))
        log.append(rt.now() - t0)

    async def idle(rt, log):
        return None

    _, logs = world(pair(), {0: idle, 1: waiter})
    assert logs[1][0] is None
    assert logs[1][1] == pytest.approx(0.1, abs=1e-9 if world.kind == "sim" else 0.05)
    assert logs[1][1] >= 0.1 - 1e-3


def test_recv_zero_timeout_polls_without_waiting(world):
    async def waiter(rt, log):
        t0 = rt.now()
        log.append(await rt.recv(timeout=0))
        log.append(rt.now() - t0)

    _, logs = world(pair(), {1: waiter})
    assert logs[1][0] is None and logs[1][1] < 0.01


def test_match_picks_the_oldest_matching_and_leaves_the_rest_queued(world):
    async def sender(rt, log):
        for kind, k in (("a", 0), ("b", 1), ("a", 2), ("b", 3)):
            await rt.send(1, Message(kind, {"k": k}))

    async def receiver(rt, log):
        await rt.sleep(0.1)  # everything has arrived
        log.append((await rt.recv(match="b"))["k"])
        log.append((await rt.recv(match=lambda m: m.kind == "a" and m["k"] > 0))["k"])
        log.append([(await rt.recv())["k"] for _ in range(2)])
        log.append(await rt.recv(timeout=0.01, match="b"))

    _, logs = world(pair(), {0: sender, 1: receiver})
    assert logs[1] == [1, 2, [0, 3], None]


def test_a_waiting_recv_gets_only_what_its_match_accepts(world):
    async def sender(rt, log):
        await rt.send(1, Message("noise"))
        await rt.sleep(0.05)
        await rt.send(1, Message("wanted", {"k": 7}))

    async def receiver(rt, log):
        msg = await rt.recv(match=("wanted", "other"))
        log += [msg.kind, msg["k"], msg.src, (await rt.recv(timeout=0.01)).kind]

    _, logs = world(pair(), {0: sender, 1: receiver})
    assert logs[1] == ["wanted", 7, 0, "noise"]


def test_tensors_and_meta_survive_the_trip(world):
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)

    async def sender(rt, log):
        await rt.send(1, Message("params", {"round": 3, "tags": ["a", 1]}, {"x": x, "i": torch.tensor([1, 2])}))

    async def receiver(rt, log):
        log.append(await rt.recv())

    _, logs = world(pair(), {0: sender, 1: receiver})
    msg = logs[1][0]
    assert msg.meta == {"round": 3, "tags": ["a", 1]} and msg.src == 0
    assert torch.equal(msg.tensors["x"], x) and msg.tensors["i"].tolist() == [1, 2]


def test_byte_counts_are_the_encoded_sizes(world):
    msgs = [Message("params", {"round": r}, {"x": torch.randn(100 * r + 1)}) for r in range(5)]
    expected = sum(len(encode(m.kind, 0, m.meta, m.tensors)) for m in msgs) * 2

    async def sender(rt, log):
        for m in msgs:
            for j in rt.neighbors:
                await rt.send(j, m)
        log.append(rt.bytes_sent)

    async def sink(rt, log):
        for _ in range(5):
            await rt.recv()

    w, logs = world(nx.path_graph(3), {1: sender, 0: sink, 2: sink})
    assert logs[1] == [expected]
    assert w.runtimes[1].bytes_sent == expected and w.runtimes[1].msgs_sent == 10


def test_lost_messages_are_counted_as_sent_but_never_arrive(world):
    net = NetworkSpec(latency=Dist("constant", value=LATENCY), bandwidth=math.inf, uplink=math.inf,
                      downlink=math.inf, loss=1.0)

    async def sender(rt, log):
        await rt.send(1, Message("x"))
        log.append(rt.bytes_sent)

    async def receiver(rt, log):
        log.append(await rt.recv(timeout=0.1))

    w, logs = world(pair(), {0: sender, 1: receiver}, network=net)
    assert logs[1] == [None] and logs[0][0] > 0
    ev = w.recorder.events_frame()
    assert ((ev["metric"] == "drop_lost") & (ev["node"] == "1") & (ev["value"] == 0)).sum() == 1


def test_sending_off_the_topology_is_an_error(world):
    async def sender(rt, log):
        try:
            await rt.send(2, Message("x"))
        except ValueError as exc:
            log.append(str(exc))

    _, logs = world(nx.path_graph(3), {0: sender})
    assert logs[0] == ["node 0 has no link to node 2 in the topology"]


def test_a_crash_is_seen_by_peers_only_through_timeouts(world):
    async def beater(rt, log):
        for k in range(1000):
            await rt.send(1, Message("beat", {"k": k}))
            await rt.sleep(0.02)

    async def watcher(rt, log):
        while (msg := await rt.recv(timeout=0.2)) is not None:
            log.append(msg["k"])
        log.append(rt.now())

    scenario = Scenario(crashes=(Crash(node=0, at=0.3),))
    w, logs = world(pair(), {0: beater, 1: watcher}, scenario=scenario)
    beats, t_gave_up = logs[1][:-1], logs[1][-1]
    assert beats == list(range(len(beats))) and 8 <= len(beats) <= 16
    # the last beat left before 0.3 and arrived LATENCY later; the watcher gave up 0.2 s after it
    last_arrival = 0.02 * (len(beats) - 1) + LATENCY
    assert last_arrival + 0.2 - 1e-6 <= t_gave_up <= last_arrival + 0.2 + (1e-6 if world.kind == "sim" else 0.1)
    ev = w.recorder.events_frame()
    assert ((ev["metric"] == "crash") & (ev["node"] == "0")).sum() == 1


def test_compute_returns_the_result_and_messages_arrive_meanwhile(world):
    async def sender(rt, log):
        await rt.send(1, Message("hello"))

    async def worker(rt, log):
        async def listen():
            msg = await rt.recv()
            log.append(("got", msg.kind, rt.now() < 0.15))

        task = rt.spawn(listen(), "listen")
        result = await rt.compute(lambda a, b: (time.sleep(0.2) if world.kind == "real" else None) or a + b, 2, 3, cost=0.2)
        log.append(("result", result, rt.now() >= 0.2))
        await rt.gather(task)

    _, logs = world(pair(), {0: sender, 1: worker})
    assert logs[1] == [("got", "hello", True), ("result", 5, True)]


def test_spawned_helpers_stop_when_the_node_returns(world):
    async def node(rt, log):
        async def forever():
            while True:
                await rt.sleep(0.01)
                log.append("tick")

        rt.spawn(forever(), "forever")
        await rt.sleep(0.05)

    _, logs = world(pair(), {0: node})
    assert 2 <= len(logs[0]) <= 6  # ticks stop with the node, not when the run gives up


def test_gather_returns_results_in_task_order(world):
    async def node(rt, log):
        async def after(d, v):
            await rt.sleep(d)
            return v

        tasks = [rt.spawn(after(0.03, "slow")), rt.spawn(after(0.01, "fast"))]
        log.append(await rt.gather(*tasks))

    _, logs = world(pair(), {0: node})
    assert logs[0] == [["slow", "fast"]]


def test_each_node_gets_its_own_stream_split_from_the_world_seed(world):
    async def node(rt, log):
        log.append(rt.rng.integers(0, 1 << 30, size=3).tolist())

    _, logs = world(pair(), {0: node, 1: node})
    # SimWorld's split: SeedSequence(seed).spawn(4) = network, faults, nodes, stragglers
    per_node = np.random.SeedSequence(0).spawn(4)[2].spawn(2)
    assert logs == {i: [np.random.default_rng(per_node[i]).integers(0, 1 << 30, size=3).tolist()] for i in (0, 1)}


def test_stragglers_are_slowed_in_both_runtimes(world):
    scenario = Scenario(stragglers=Stragglers(nodes=(1,), slowdown=Dist("constant", value=3.0)))

    async def node(rt, log):
        t0 = rt.now()
        await rt.compute(lambda: time.sleep(0.05) if world.kind == "real" else None, cost=0.05)
        log.append(rt.now() - t0)

    profiles = [NodeProfile(), NodeProfile(straggler=True)]
    w, logs = world(pair(), {0: node, 1: node}, scenario=scenario, profiles=profiles)
    tol = 1e-9 if world.kind == "sim" else 0.04
    assert logs[0][0] == pytest.approx(0.05, abs=tol)
    assert logs[1][0] == pytest.approx(0.15, abs=tol)


def test_received_tensors_land_on_the_receivers_model_device(world):
    """Tensors travel as bytes; the runtime puts them where the receiver's model lives (a GPU in
    a real run; the ``meta`` device stands in for it here), so mixing never crosses devices."""
    async def sender(rt, log):
        await rt.send(1, Message("x", {}, {"x": torch.arange(4.0)}))
        await rt.send(2, Message("x", {}, {"x": torch.arange(4.0)}))

    async def receiver(rt, log):
        msg = await rt.recv(timeout=5)
        log.append((msg.tensors["x"].device.type, tuple(msg.tensors["x"].shape)))

    w, logs = world(nx.star_graph(2), {0: sender, 1: receiver, 2: receiver}, devices={1: "meta"})
    assert logs[1] == [("meta", (4,))] and logs[2] == [("cpu", (4,))]


def test_sleep_factor_rests_after_an_epoch_by_the_seeds_formula(world):
    """Seed 003's sleep_factor (nttcslab/ecl-isvr ``trainer/abstracts.py``, ``Trainer.train``):
    after an epoch whose training took T = 0.1 s, the node rests T (0.5 + 0.5 f u) with u the
    first draw of its own sleep stream, before its next compute; computing alone never rests."""
    async def node(rt, log):
        rt.epoch_end(0)
        await rt.compute(lambda: time.sleep(0.1) if world.kind == "real" else None, cost=0.1)
        t1 = rt.now()
        rt.epoch_end(1)
        await rt.compute(lambda: None, cost=None)
        log.append((t1, rt.now() - t1))

    profile = NodeProfile(sleep_factor=2.0)
    w, logs = world(pair(), {0: node}, profiles=[profile, NodeProfile()])
    u = WorldStreams(0, 2).sleep(0).random()
    (t1, rest), = logs[0]
    tol = 1e-9 if world.kind == "sim" else 0.08
    assert t1 == pytest.approx(0.1, abs=tol)  # no rest after a mere compute call (the old rule slept 0.2 s here)
    assert rest == pytest.approx(t1 * (0.5 + 0.5 * 2.0 * u), abs=tol)


def test_an_offline_node_drops_what_arrives_and_runs_again_when_back(world):
    """Node 1 is offline in [0.45, 1.05): node 0's beats arriving then are dropped (logged at
    node 1), node 1's code stops and starts again at 1.05 with its state, and ``rt.online``
    tells node 0 which it is."""
    async def beater(rt, log):
        for k in range(16):
            log.append((k, rt.online([0, 1])))
            await rt.send(1, Message("beat", {"k": k}))
            await rt.sleep(0.1)

    starts = []

    async def keeper(rt, log):
        starts.append(rt.now())
        while (msg := await rt.recv(timeout=0.6)) is not None:
            log.append(msg["k"])

    pop = Population((1,), {}, {1: TraceTimeline(Sessions([(0.0, 0.45), (1.05, math.inf)]))})
    w, logs = world(pair(), {0: beater, 1: keeper}, population=pop)
    got = logs[1]
    assert got[:4] == [0, 1, 2, 3] and not set(got) & set(range(5, 10)) and set(range(12, 16)) <= set(got)
    assert [s > 1.0 for s in starts] == [False, True] and starts[1] == pytest.approx(1.05, abs=1e-9 if world.kind == "sim" else 0.05)
    told_offline = [k for k, on in logs[0] if on == [0]]  # the others were told [0, 1]
    assert told_offline == [5, 6, 7, 8, 9, 10] if world.kind == "sim" else 5 <= len(told_offline) <= 7
    assert set(range(5, 10)) <= set(told_offline) <= set(range(4, 11))
    ev = w.recorder.events_frame()
    drops = ev[ev["metric"] == "drop_offline"]
    assert set(drops["node"]) == {"1"} and set(drops["value"]) == {0.0} and 4 <= len(drops) <= 7
    flips = ev[ev["metric"].isin(["offline", "online"])]
    assert list(flips["metric"]) == ["offline", "online"] and list(flips["node"]) == ["1", "1"]
