"""Network model: latency + size/bandwidth, max-min sharing, FIFO links, counts, loss, partitions."""

import networkx as nx
import pytest
import torch

from simbench.core.message import Message
from simbench.core.scenario import Dist, Partition, Scenario

from simhelpers import Idle, make_world, net

MB = 1_000_000


def blob(n: int) -> Message:
    return Message("blob", tensors={"x": torch.zeros(n, dtype=torch.uint8)})


class Sink:
    def __init__(self, count):
        self.count, self.log = count, []

    async def run(self, rt):
        for _ in range(self.count):
            m = await rt.recv()
            self.log.append((m.src, rt.now(), m.get("k")))


class SendAt:
    def __init__(self, dst, size, at=0.0, k=None):
        self.dst, self.size, self.at, self.k = dst, size, at, k

    async def run(self, rt):
        if self.at:
            await rt.sleep(self.at)
        msg = blob(self.size)
        msg.meta["k"] = self.k
        await rt.send(self.dst, msg)


def test_one_megabyte_on_10MBps_link_with_5ms_latency():
    sink = Sink(1)
    make_world(nx.path_graph(2), {0: sink, 1: SendAt(0, MB)}, network=net(0.005, 10e6)).run()
    assert sink.log[0][1] == pytest.approx(0.105, abs=1e-3)


def test_four_senders_share_one_downlink_and_a_small_message_gets_its_share():
    sink = Sink(5)
    nodes = {0: sink, **{i: SendAt(0, MB) for i in range(1, 5)}, 5: SendAt(0, 1000, at=0.1)}
    make_world(nx.star_graph(5), nodes, network=net(0.005, 10e6)).run()
    big = [t for src, t, _ in sink.log if src != 5]
    small = [t for src, t, _ in sink.log if src == 5][0]
    assert all(t == pytest.approx(0.405, abs=1e-3) for t in big)
    assert max(big) - min(big) < 1e-6  # shared fairly, not served one after another
    # the newcomer gets 1/5 of 10 MB/s at once: ~0.5 ms of transfer + 5 ms latency
    assert small == pytest.approx(0.1055, abs=2e-4)


def test_uplink_is_shared_between_two_destinations():
    sinks = {0: Sink(1), 2: Sink(1)}

    class Two:
        async def run(self, rt):
            await rt.send(0, blob(MB))
            await rt.send(2, blob(MB))

    make_world(nx.path_graph(3), {**sinks, 1: Two()}, network=net(0.001, 10e6)).run()
    assert sinks[0].log[0][1] == pytest.approx(0.201, abs=1e-3)
    assert sinks[2].log[0][1] == pytest.approx(0.201, abs=1e-3)


def test_link_is_fifo_even_with_jitter():
    sink = Sink(100)

    class Burst:
        async def run(self, rt):
            for k in range(100):
                await rt.send(0, Message("m", {"k": k}))
                await rt.sleep(0.001)

    jitter = net(Dist("uniform", low=0.001, high=0.05))
    make_world(nx.path_graph(2), {0: sink, 1: Burst()}, network=jitter).run()
    assert [k for _, _, k in sink.log] == list(range(100))
    times = [t for _, t, _ in sink.log]
    assert times == sorted(times)


def test_bytes_sent_are_the_encoded_sizes():
    msgs = [blob(10), Message("x", {"a": [1, 2, 3]}), blob(12345)]

    class Sender:
        async def run(self, rt):
            for m in msgs:
                await rt.send(0, m)

    world = make_world(nx.path_graph(2), {0: Sink(3), 1: Sender()})
    world.run()
    assert world.network.bytes_sent[1] == sum(len(m.encode(1)) for m in msgs)
    assert world.network.bytes_received[0] == world.network.bytes_sent[1]


def test_loss_rate_is_close_to_configured():
    class Many:
        async def run(self, rt):
            for k in range(2000):
                await rt.send(0, Message("m"))

    class Drain:
        def __init__(self):
            self.n = 0

        async def run(self, rt):
            while await rt.recv(timeout=1.0) is not None:
                self.n += 1

    drain = Drain()
    world = make_world(nx.path_graph(2), {0: drain, 1: Many()}, network=net(0.001, loss=0.1))
    world.run()
    assert 0.075 < 1 - drain.n / 2000 < 0.125
    lost = [e for e in world.recorder.events if e[3] == "drop_lost"]
    assert len(lost) == 2000 - drain.n


def test_partition_drops_messages_during_the_interval():
    class Every:
        async def run(self, rt):
            for k in range(10):
                await rt.send(0, Message("m", {"k": k}))
                await rt.sleep(0.1)

    class Drain(Sink):
        async def run(self, rt):
            while (m := await rt.recv(timeout=1.0)) is not None:
                self.log.append((m.src, rt.now(), m["k"]))

    drain = Drain(0)
    scen = Scenario(partitions=(Partition(edges=((0, 1),), start=0.25, end=0.55),))
    world = make_world(nx.path_graph(2), {0: drain, 1: Every()}, network=net(0.0), scenario=scen)
    world.run()
    assert [k for _, _, k in drain.log] == [0, 1, 2, 6, 7, 8, 9]
    ev = [(e[0], e[3]) for e in world.recorder.events if e[3].startswith("partition")]
    assert ev == [(0.25, "partition_start"), (0.55, "partition_end")]
