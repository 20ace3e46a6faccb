"""Network model: latency + size/bandwidth, max-min sharing, FIFO links, counts, loss, partitions."""

import networkx as nx
import pytest
import torch

from simbench.core.message import Message
from simbench.core.scenario import Crash, Dist, Partition, Scenario

from simhelpers import Idle, events, make_world

MB = 1_000_000
LINK_10MBPS = dict(bandwidth=10e6, uplink=10e6, downlink=10e6)


def blob(n: int, **meta) -> Message:
    return Message("blob", meta, tensors={"x": torch.zeros(n, dtype=torch.uint8)})


class Sink:
    """Receives ``count`` messages and logs ``(src, time, meta k)``."""

    def __init__(self, count):
        self.count, self.log = count, []

    async def run(self, rt):
        for _ in range(self.count):
            m = await rt.recv()
            self.log.append((m.src, rt.now(), m.get("k")))


class Drain(Sink):
    """Receives until nothing comes for a second."""

    def __init__(self):
        super().__init__(0)

    async def run(self, rt):
        while (m := await rt.recv(timeout=1.0)) is not None:
            self.log.append((m.src, rt.now(), m.get("k")))


class SendAt:
    def __init__(self, dst, size, at=0.0):
        self.dst, self.size, self.at = dst, size, at

    async def run(self, rt):
        if self.at:
            await rt.sleep(self.at)
        await rt.send(self.dst, blob(self.size))


# -- latency and bandwidth -------------------------------------------------------------------

def test_one_megabyte_on_10MBps_link_with_5ms_latency():
    sink = Sink(1)
    make_world(nx.path_graph(2), {0: sink, 1: SendAt(0, MB)}, latency=0.005, **LINK_10MBPS).run()
    assert sink.log[0][1] == pytest.approx(0.105, abs=1e-3)
    wire = len(blob(MB).encode(1))  # payload + prefix + JSON header
    assert sink.log[0][1] == pytest.approx(wire / 10e6 + 0.005, abs=2e-9)


def test_latency_only_without_bandwidth_limit():
    sink = Sink(1)
    make_world(nx.path_graph(2), {0: sink, 1: SendAt(0, MB, at=0.5)}, latency=0.02).run()
    assert sink.log == [(1, pytest.approx(0.52, abs=1e-12), None)]


def test_edge_attributes_override_latency_and_bandwidth():
    g = nx.path_graph(3)
    g.edges[0, 1].update(latency=0.1, bandwidth=1e6)
    sinks = {0: Sink(1), 2: Sink(1)}

    class Both:
        async def run(self, rt):
            await rt.send(0, blob(MB))
            await rt.send(2, blob(MB))

    make_world(g, {**sinks, 1: Both()}, latency=0.005, bandwidth=10e6, uplink=100e6, downlink=100e6).run()
    assert sinks[0].log[0][1] == pytest.approx(1.0 + 0.1, abs=1e-3)   # 1 MB over the 1 MB/s edge
    assert sinks[2].log[0][1] == pytest.approx(0.1 + 0.005, abs=1e-3)  # the other edge keeps the defaults


def test_four_senders_share_one_downlink_and_a_small_message_gets_its_share():
    sink = Sink(5)
    nodes = {0: sink, **{i: SendAt(0, MB) for i in range(1, 5)}, 5: SendAt(0, 1000, at=0.1)}
    make_world(nx.star_graph(5), nodes, latency=0.005, **LINK_10MBPS).run()
    big = [t for src, t, _ in sink.log if src != 5]
    small = [t for src, t, _ in sink.log if src == 5]
    assert len(big) == 4 and all(t == pytest.approx(0.405, abs=1e-3) for t in big)
    assert max(big) - min(big) < 1e-6  # shared fairly, not served one after another
    # the newcomer gets 1/5 of 10 MB/s at once: ~0.5 ms of transfer + 5 ms latency
    assert small == [pytest.approx(0.1055, abs=2e-4)]
    assert sink.log[0][0] == 5  # so it arrives first, long before the big ones


def test_a_finished_flow_frees_its_share_for_the_others():
    sink = Sink(2)
    make_world(nx.star_graph(2), {0: sink, 1: SendAt(0, MB), 2: SendAt(0, 3 * MB)}, **LINK_10MBPS).run()
    # both at 5 MB/s until the 1 MB one is done at 0.2 s; then 2 MB left at 10 MB/s: 0.4 s
    assert [(src, round(t, 4)) for src, t, _ in sink.log] == [(1, 0.2), (2, 0.4)]


def test_max_min_gives_a_slow_links_leftover_to_the_other_flow():
    g = nx.star_graph(2)
    g.edges[0, 2]["bandwidth"] = 2e6  # node 2's own link is the bottleneck of its flow
    sink = Sink(2)
    make_world(g, {0: sink, 1: SendAt(0, MB), 2: SendAt(0, MB)}, **LINK_10MBPS).run()
    # max-min: 2 -> 0 gets 2 MB/s (its link), 1 -> 0 the remaining 8 MB/s of node 0's downlink
    assert [(src, round(t, 3)) for src, t, _ in sink.log] == [(1, 0.125), (2, 0.5)]


def test_uplink_is_shared_between_two_destinations():
    sinks = {0: Sink(1), 2: Sink(1)}

    class Two:
        async def run(self, rt):
            await rt.send(0, blob(MB))
            await rt.send(2, blob(MB))

    make_world(nx.path_graph(3), {**sinks, 1: Two()}, latency=0.001, **LINK_10MBPS).run()
    assert sinks[0].log[0][1] == pytest.approx(0.201, abs=1e-3)
    assert sinks[2].log[0][1] == pytest.approx(0.201, abs=1e-3)
    assert abs(sinks[0].log[0][1] - sinks[2].log[0][1]) < 1e-6


def test_messages_on_one_link_go_one_after_another():
    sink = Sink(3)

    class Three:
        async def run(self, rt):
            for k in range(3):
                await rt.send(0, blob(MB, k=k))

    make_world(nx.path_graph(2), {0: sink, 1: Three()}, **LINK_10MBPS).run()
    assert [(k, round(t, 3)) for _, t, k in sink.log] == [(0, 0.1), (1, 0.2), (2, 0.3)]


# -- ordering --------------------------------------------------------------------------------------

class Burst:
    def __init__(self, n=100, gap=0.001):
        self.n, self.gap = n, gap

    async def run(self, rt):
        for k in range(self.n):
            await rt.send(0, Message("m", {"k": k}))
            await rt.sleep(self.gap)


@pytest.mark.parametrize("spec", [
    dict(latency=Dist("uniform", low=0.001, high=0.05)),
    dict(latency=0.001, jitter=0.05),
    dict(latency=Dist("uniform", low=0.001, high=0.05), bandwidth=1e6),
])
def test_link_is_fifo_even_with_jitter(spec):
    sink = Sink(100)
    make_world(nx.path_graph(2), {0: sink, 1: Burst()}, **spec).run()
    assert [k for _, _, k in sink.log] == list(range(100))
    times = [t for _, t, _ in sink.log]
    assert times == sorted(times) and len(set(times)) > 10  # the jitter is real, yet nothing overtakes


# -- accounting ----------------------------------------------------------------------------------

def test_bytes_sent_are_the_encoded_sizes():
    msgs = [blob(10), Message("x", {"a": [1, 2, 3]}), blob(12345), Message("empty")]

    class Sender:
        async def run(self, rt):
            for m in msgs:
                await rt.send(0, m)
            assert rt.bytes_sent == sum(len(m.encode(1)) for m in msgs)

    world = make_world(nx.path_graph(2), {0: Sink(4), 1: Sender()})
    world.run()
    assert world.network.bytes_sent == [0, sum(len(m.encode(1)) for m in msgs)]
    assert world.network.msgs_sent == [0, 4]
    assert world.network.bytes_received == [world.network.bytes_sent[1], 0]
    assert events(world, "bytes_sent_total") == [(0.0, 0, 0.0), (0.0, 1, float(world.network.bytes_sent[1]))]


def test_a_run_ends_with_each_nodes_message_count_and_the_world_keeps_its_graph():
    """The closing totals: messages sent per node (``msgs_sent_total``), beside the bytes; a
    world is sequential unless asked (no batcher) and keeps the graph it was given."""
    graph = nx.path_graph(2)

    class Sender:
        async def run(self, rt):
            for _ in range(3):
                await rt.send(0, blob(10))

    world = make_world(graph, {0: Sink(3), 1: Sender()})
    world.run()
    assert events(world, "msgs_sent_total") == [(0.0, 0, 0.0), (0.0, 1, 3.0)]
    assert world.graph is graph and world.batcher is None
    assert make_world(graph, {0: Idle(), 1: Idle()}, batched=True).batcher is not None


def test_one_message_to_many_neighbours_is_counted_once_per_copy():
    msg = blob(1000)

    class Broadcast:
        async def run(self, rt):
            for j in rt.neighbors:
                await rt.send(j, msg)

    world = make_world(nx.star_graph(3), {0: Broadcast(), 1: Sink(1), 2: Sink(1), 3: Sink(1)})
    world.run()
    assert world.network.bytes_sent[0] == 3 * len(msg.encode(0))


def test_receivers_of_one_broadcast_get_independent_messages():
    got = {}

    class Broadcast:
        async def run(self, rt):
            msg = Message("x", {"path": [0], "d": {"a": 1}}, {"t": torch.zeros(3)})
            for j in rt.neighbors:
                await rt.send(j, msg)

    class Mutate:
        async def run(self, rt):
            await rt.sleep(rt.node_id * 0.1)  # node 1 mutates its copy before node 2 looks
            m = await rt.recv()
            m.meta["path"].append(rt.node_id)
            m.meta["d"]["a"] += rt.node_id
            m.tensors["t"] += rt.node_id
            got[rt.node_id] = (m["path"], m["d"], m.tensors["t"].tolist())

    make_world(nx.star_graph(2), {0: Broadcast(), 1: Mutate(), 2: Mutate()}).run()
    assert got == {1: ([0, 1], {"a": 2}, [1.0] * 3), 2: ([0, 2], {"a": 3}, [2.0] * 3)}


def test_decoded_broadcasts_are_released_once_every_copy_arrived_or_dropped():
    """One decode per encoding is kept only while copies are in flight: after a run with
    losses and a crashed receiver nothing is left, and every survivor read the right values."""
    seen = []

    class Broadcast:
        async def run(self, rt):
            for k in range(50):
                msg = Message("x", {"k": k}, {"t": torch.full((1000,), float(k))})
                for j in rt.neighbors:
                    await rt.send(j, msg)
                await rt.sleep(0.01)

    class Check:
        async def run(self, rt):
            while (m := await rt.recv(timeout=0.5)) is not None:
                seen.append(bool((m.tensors["t"] == m["k"]).all()))
                m.tensors["t"].add_(1)  # a receiver writing in place must not reach the others

    world = make_world(nx.star_graph(4), {0: Broadcast(), **{i: Check() for i in range(1, 5)}}, latency=0.005,
                       loss=0.2, scenario=Scenario(crashes=(Crash(node=4, at=0.2),)))
    world.run()
    assert world._in_flight == {}
    assert 100 < len(seen) < 170 and all(seen)  # about 0.8 x (3 x 50 + 4 x 0.2 s worth) arrived, all intact


def test_a_message_object_sent_again_arrives_intact_after_a_receiver_wrote_into_its_copy():
    """The simulator keeps a resent message's decoding; a receiver's in-place write must not leak into it."""
    seen = []

    class Again:
        async def run(self, rt):
            msg = Message("x", {"tag": [1]}, {"t": torch.arange(4.0)})
            for _ in range(3):
                await rt.send(1, msg)
                await rt.sleep(0.1)

    class Scribble:
        async def run(self, rt):
            for _ in range(3):
                m = await rt.recv()
                seen.append((m.tensors["t"].tolist(), list(m["tag"])))
                m.tensors["t"].mul_(-1)
                m.meta["tag"].append(0)

    make_world(nx.path_graph(2), {0: Again(), 1: Scribble()}, latency=0.01).run()
    assert seen == [([0.0, 1.0, 2.0, 3.0], [1])] * 3


def test_sending_off_the_topology_is_an_error():
    class Stray:
        async def run(self, rt):
            await rt.send(0, Message("x"))

    with pytest.raises(ValueError, match="node 2 has no link to node 0"):
        make_world(nx.path_graph(3), {0: Idle(), 1: Idle(), 2: Stray()}).run()


# -- loss -------------------------------------------------------------------------------------------

def test_loss_rate_is_close_to_configured():
    drain = Drain()
    world = make_world(nx.path_graph(2), {0: drain, 1: Burst(n=2000, gap=0.0)}, latency=0.001, loss=0.1)
    world.run()
    received = len(drain.log)
    assert 0.075 < 1 - received / 2000 < 0.125
    lost = events(world, "drop_lost")
    assert len(lost) == 2000 - received == world.network.msgs_dropped
    assert {(node, src) for _, node, src in lost} == {(0, 1.0)}  # logged at the receiver, sender as value
    ks = [k for _, _, k in drain.log]
    assert ks == sorted(ks)  # losses leave holes, never reorder


# -- partitions -----------------------------------------------------------------------------------

def test_partition_drops_messages_during_start_to_end():
    drains = {0: Drain(), 2: Drain()}

    class Every:
        async def run(self, rt):
            for k in range(10):
                for j in (0, 2):
                    await rt.send(j, Message("m", {"k": k}))
                await rt.sleep(0.1)

    scen = Scenario(partitions=(Partition(edges=((1, 0),), start=0.3, end=0.6),))
    world = make_world(nx.path_graph(3), {**drains, 1: Every()}, scenario=scen)
    world.run()
    # sent (and, with no latency, arriving) at 0.3, 0.4, 0.5 are dropped; at 0.6 the link is back
    assert [k for _, _, k in drains[0].log] == [0, 1, 2, 6, 7, 8, 9]
    assert [k for _, _, k in drains[2].log] == list(range(10))  # another edge is not touched
    assert events(world, "partition_start") == [(0.3, 0, 1.0)]
    assert events(world, "partition_end") == [(0.6, 0, 1.0)]
    assert [(round(t, 9), node, src) for t, node, src in events(world, "drop_partition")] == [
        (0.3, 0, 1.0), (0.4, 0, 1.0), (0.5, 0, 1.0)]


def test_partition_cuts_both_directions_and_counts_at_arrival():
    class Both(Drain):
        async def run(self, rt):
            await rt.send(1 - rt.node_id, Message("m", {"k": rt.node_id}))
            await super().run(rt)

    nodes = {0: Both(), 1: Both()}
    # sent at 0 with 0.2 s latency: arrives at 0.2, inside [0.1, 0.3)
    scen = Scenario(partitions=(Partition(edges=((0, 1),), start=0.1, end=0.3),))
    world = make_world(nx.path_graph(2), nodes, latency=0.2, scenario=scen)
    world.run()
    assert nodes[0].log == [] and nodes[1].log == []
    assert sorted(node for _, node, _ in events(world, "drop_partition")) == [0, 1]
