"""The real transport: authenticated frames, size limits, rejection counting, key loading.

An "attacker" is a raw ZeroMQ PUSH socket that connects to a node's inbound socket and
sends whatever bytes a story needs. The node must drop every bad frame, count it under
its reason, and keep receiving good messages.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
import zmq
import zmq.asyncio

from simbench.core.message import Message, WireError, encode
from simbench.core.scenario import NodeProfile, Stragglers
from simbench.metrics.recorder import Recorder
from simbench.real.runtime import Clock, RealRuntime
from simbench.real.transport import (Address, ClusterKeyError, Transport, header, is_loopback, load_cluster_key,
                                     run_key, tag)

KEY = run_key(b"k" * 32, "test-run", "nonce-1")
SEQ = iter(range(10**6))


def good(src: int = 0, dst: int = 1, key: bytes = KEY, seq: int | None = None, **meta) -> list[bytes]:
    """A well-formed frame pair; each call takes the next sequence number of the link unless told."""
    payload = bytes(encode("m", src, meta, {"x": torch.ones(3)}))
    return [header(key, dst, next(SEQ) if seq is None else seq, payload), payload]


def run_node(frames_list: list[list[bytes]], *, max_size: int = 1 << 20, accept_from=(0,)) -> tuple[list, dict, Recorder]:
    """Start node 1, push ``frames_list`` at it from a raw socket, then one good message."""
    rec = Recorder("t", wall_clock=False)

    async def main():
        t = Transport(1, KEY, max_size=max_size, accept_from=set(accept_from))
        addr = t.bind(Address("127.0.0.1", 0))
        rt = RealRuntime(1, "worker", (0,), (0, 1), rng=np.random.default_rng(0), profile=NodeProfile(),
                         straggler_rng=np.random.default_rng(0), stragglers=Stragglers(), transport=t,
                         clock=Clock(__import__("time").time()), recorder=rec)
        rt.start(asyncio.sleep(0))
        ctx = zmq.asyncio.Context()
        raw = ctx.socket(zmq.PUSH)
        raw.connect(addr.endpoint)
        for frames in frames_list + [good(k="last", seq=2 * 10**6 + next(SEQ))]:
            await raw.send_multipart(frames)
        got = []
        while True:
            msg = await rt.recv(timeout=5)
            got.append(msg)
            if msg is None or msg.get("k") == "last":
                break
        raw.close(0)
        ctx.term()
        await rt.finish(linger=0)
        return got, dict(t.rejected)

    got, rejected = asyncio.run(main())
    return got, rejected, rec


def test_a_good_message_arrives_decoded():
    got, rejected, _ = run_node([good(k=1)])
    assert [m["k"] for m in got] == [1, "last"] and torch.equal(got[0].tensors["x"], torch.ones(3))
    assert sum(rejected.values()) == 0


@pytest.mark.parametrize("reason, frames", [
    ("frames", [b"only one frame"]),
    ("frames", good() + [b"extra"]),
    ("tag", [b"short", good()[1]]),
    ("tag", [b"\0" * 32, good()[1]]),  # the header of the format without sequence numbers
    ("auth", [b"\0" * 40, good()[1]]),
    ("auth", good(key=run_key(b"k" * 32, "another-run", "nonce-1"))),
    ("auth", good(key=run_key(b"k" * 32, "test-run", "nonce-2"))),  # the same config, another launch
    ("auth", good(dst=2)),  # made for another node: replaying it here fails
    ("auth", (lambda f: [header(KEY, 1, 7, f[1])[:8] + f[0][8:], f[1]])(good(seq=3))),  # seq altered
    ("malformed", (lambda p: [header(KEY, 1, 10**5, p), p])(b"SBM1garbage")),
    ("sender", good(src=5)),
])
def test_bad_frames_are_dropped_counted_and_the_node_keeps_going(reason, frames):
    got, rejected, rec = run_node([frames])
    assert [m["k"] for m in got] == ["last"]
    assert rejected[reason] == 1 and sum(rejected.values()) == 1
    ev = rec.events_frame()
    assert list(ev["metric"]) == [f"wire_rejected_{reason}", "bytes_sent_total", "msgs_sent_total", "compute_s_total"]


def test_oversized_messages_are_dropped_and_counted():
    big = bytes(encode("m", 0, {}, {"x": torch.zeros(20_000)}))
    got, rejected, rec = run_node([[header(KEY, 1, 0, big), big]], max_size=50_000)
    assert rejected["oversized"] == 1 and [m["k"] for m in got] == ["last"]
    assert (rec.events_frame()["metric"] == "wire_rejected_oversized").sum() == 1


def test_sending_over_the_limit_fails_loudly_naming_the_flag():
    t = Transport(0, KEY, max_size=1000)
    t.bind(Address("127.0.0.1", 0))
    t.connect({1: Address("127.0.0.1", 1)})
    with pytest.raises(WireError, match="exceeds the size limit of 1000 bytes; raise --max-message-size"):
        t.send(1, bytes(2000))
    with pytest.raises(ValueError, match="node 0 has no link to node 7"):
        t.send(7, b"x")
    t.abort()


def test_an_unreachable_peer_makes_sends_fail_instead_of_blocking():
    t = Transport(0, KEY)
    t.bind(Address("127.0.0.1", 0))
    t.connect({1: Address("127.0.0.1", 9)})  # nothing listens there
    results = [t.send(1, b"m" * 10) for _ in range(400)]
    assert all(results[:200]) and not results[-1]
    t.abort()


def test_the_cluster_key_comes_from_a_file_or_the_environment(tmp_path):
    f = tmp_path / "key"
    f.write_bytes(b"0123456789abcdef0123\n")
    assert load_cluster_key(str(f), {}) == b"0123456789abcdef0123"
    assert load_cluster_key(None, {"SIMBENCH_CLUSTER_KEY": "s" * 20}) == b"s" * 20
    assert load_cluster_key(None, {}) is None
    with pytest.raises(ClusterKeyError, match="SIMBENCH_CLUSTER_KEY: the cluster key must be at least 16 bytes, got 3"):
        load_cluster_key(None, {"SIMBENCH_CLUSTER_KEY": "abc"})
    with pytest.raises(ClusterKeyError, match="--key-file: cannot read"):
        load_cluster_key(str(tmp_path / "missing"), {})


def test_addresses_parse_with_one_line_errors():
    assert Address.parse("10.0.0.1:29500") == Address("10.0.0.1", 29500)
    assert str(Address.parse("[::1]:80")) == "::1:80"
    with pytest.raises(ValueError, match=r"hosts.nodes.3: expected HOST:PORT with a port in 0..65535, got 'x'"):
        Address.parse("x", "hosts.nodes.3")


def test_loopback_is_recognised():
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("192.168.1.2")


def test_tags_bind_destination_sequence_number_and_payload():
    p = b"payload"
    assert tag(KEY, 1, 0, p) == tag(KEY, 1, 0, bytearray(p)) and tag(KEY, 1, 0, p) != tag(KEY, 2, 0, p)
    assert len(tag(KEY, 1, 0, p)) == 32 and tag(KEY, 1, 0, p) != tag(KEY, 1, 0, p + b"!")
    assert tag(KEY, 1, 0, p) != tag(KEY, 1, 1, p)


def test_a_replayed_frame_is_rejected_and_counted():
    """A frame captured on the wire and sent again (or an older one of the link) is a replay."""
    first, second = good(k=1, seq=10**6), good(k=2, seq=10**6 + 1)
    got, rejected, _ = run_node([first, second, first, second])
    assert [m["k"] for m in got] == [1, 2, "last"]
    assert rejected["replay"] == 2 and sum(rejected.values()) == 2


def test_two_runtimes_exchange_messages_through_the_fault_layer_in_order():
    from simbench.real.faults import LinkFaults

    rec = Recorder("t", wall_clock=False)

    async def main():
        ts = [Transport(i, KEY, accept_from={1 - i}) for i in (0, 1)]
        addrs = [t.bind(Address("127.0.0.1", 0)) for t in ts]
        ts[0].connect({1: addrs[1]})
        ts[1].connect({0: addrs[0]})
        clock = Clock(__import__("time").time())
        draw = lambda rng: float(rng.uniform(0, 0.02))  # noqa: E731
        rts = [RealRuntime(i, "worker", (1 - i,), (0, 1), rng=np.random.default_rng(i), profile=NodeProfile(),
                           straggler_rng=np.random.default_rng(i), stragglers=Stragglers(), transport=ts[i],
                           clock=clock, recorder=rec, faults=LinkFaults(latency={1 - i: draw}),
                           net_rng=np.random.default_rng(i)) for i in (0, 1)]

        async def sender():
            for k in range(20):
                await rts[0].send(1, Message("k", {"k": k}))

        async def receiver():
            return [(await rts[1].recv(timeout=2))["k"] for _ in range(20)]

        rts[0].start(sender())
        out = await rts[1].start(receiver())
        await asyncio.gather(*(rt.finish(linger=1) for rt in rts))
        return out

    assert asyncio.run(main()) == list(range(20))


def test_corrupted_but_authenticated_bodies_never_crash_the_reader():
    """Flip, cut and extend a valid encoding (each correctly tagged): the check returns a
    Message or rejects it as malformed, and never raises."""
    t = Transport(1, KEY, accept_from={0})
    base = bytearray(encode("params", 0, {"round": 3, "deep": [[1]]}, {"x": torch.arange(6.0)}))
    rng = np.random.default_rng(0)
    bodies = [bytes(base[:k]) for k in range(0, len(base), 7)] + [bytes(base) + b"\0"]
    for _ in range(300):
        body = bytearray(base)
        for pos in rng.integers(0, len(body), size=rng.integers(1, 4)):
            body[pos] = int(rng.integers(0, 256))
        bodies.append(bytes(body))
    bodies.append(b"SBM1" + (2**31).to_bytes(4, "little") + b"{}")
    bodies.append(b"SBM1" + (20000).to_bytes(4, "little") + b"[" * 20000)  # deep JSON
    for seq, body in enumerate(bodies):
        out = t.check([header(KEY, 1, seq, body), body])
        assert out is None or isinstance(out, Message)
    assert t.rejected["malformed"] > 0 and t.rejected["auth"] == 0
    t.abort()


# -- edges that mutation testing found unpinned (benchmarks/mutation.sh transport) -------------

def test_loopback_falls_back_to_name_resolution(monkeypatch):
    """Literal addresses are judged without resolving; names by every address they resolve
    to (all loopback); a name that does not resolve is not loopback."""
    import socket

    import simbench.real.transport as tr

    def unresolvable(host, port):
        raise socket.gaierror("no such host")

    monkeypatch.setattr(tr.socket, "getaddrinfo", unresolvable)
    assert is_loopback("127.0.0.1") and not is_loopback("no-such-host")
    both = [(0, 0, 0, "", ("127.0.0.1", 0)), (0, 0, 0, "", ("10.1.2.3", 0))]
    monkeypatch.setattr(tr.socket, "getaddrinfo", lambda host, port: both)
    assert not is_loopback("half-local")
    monkeypatch.setattr(tr.socket, "getaddrinfo", lambda host, port: [])
    assert not is_loopback("resolves-to-nothing")


def test_the_cluster_key_is_16_bytes_at_least_and_read_from_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CLUSTER_KEY", "e" * 16)
    assert load_cluster_key(None) == b"e" * 16
    monkeypatch.delenv("SIMBENCH_CLUSTER_KEY")
    assert load_cluster_key(None) is None
    f = tmp_path / "key"
    f.write_bytes(b"x" * 15 + b"\n")
    with pytest.raises(ClusterKeyError) as err:
        load_cluster_key(str(f), {})
    assert str(err.value) == f"--key-file {f}: the cluster key must be at least 16 bytes, got 15"


def test_the_run_key_is_the_hmac_of_run_id_and_launch_nonce():
    """Every machine derives the same key from the cluster key, so its spelling is fixed."""
    import hashlib
    import hmac

    cluster = b"c" * 16
    assert run_key(cluster, "r1", "n7") == hmac.new(cluster, b"simbench-run/r1/n7", hashlib.sha256).digest()
    assert run_key(cluster, "r1") == hmac.new(cluster, b"simbench-run/r1/", hashlib.sha256).digest()


def test_address_bounds_and_defaults():
    assert Address.parse("h:0").port == 0 and Address.parse("h:65535").port == 65535
    assert Address.parse("NODEX:7").host == "NODEX"
    for text in ("h:65536", ":29500", "h:x1", "29500"):
        with pytest.raises(ValueError) as err:
            Address.parse(text)
        assert str(err.value) == f"address: expected HOST:PORT with a port in 0..65535, got {text!r}"


def test_a_message_of_exactly_the_size_limit_passes_both_ends():
    payload = bytes(encode("m", 0, {}, {}))
    t = Transport(1, KEY, max_size=len(payload), accept_from={0})
    t.bind(Address("127.0.0.1", 0))
    t.connect({0: Address("127.0.0.1", 9)})
    t.check_size(0, payload)
    assert t.check([header(KEY, 1, 0, payload), payload]) is not None
    with pytest.raises(WireError) as err:
        t.send(0, payload + b"!")
    assert str(err.value) == (f"message of {len(payload) + 1} bytes to node 0 exceeds the size limit of "
                              f"{len(payload)} bytes; raise --max-message-size")
    t.abort()


def test_sequence_numbers_count_each_links_messages_from_zero():
    """The sender numbers a link's messages 0, 1, 2, ... and the receiver expects the next
    one; frames a closed transport is asked to send are refused."""

    async def main():
        a, b = Transport(0, KEY, accept_from={1}), Transport(1, KEY, accept_from={0})
        addr_b = b.bind(Address("127.0.0.1", 0))
        a.bind(Address("127.0.0.1", 0))
        a.connect({1: addr_b})
        got = []
        b.start(got.append)
        for k in range(3):
            assert a.send(1, bytes(encode("m", 0, {"k": k}, {})))
        for _ in range(200):
            if len(got) == 3:
                break
            await asyncio.sleep(0.01)
        assert [m["k"] for m in got] == [0, 1, 2]
        assert a._seq_out == {1: 3} and b._seq_in == {0: 3}
        assert a.connected(1) is True and a.connected(1) is True  # the second answer from memory
        assert a.connected(5) is False
        a.abort()
        assert a.closed is True and a.send(1, b"late") is False
        await b.close(linger=0)

    asyncio.run(main())


def test_a_peer_never_reached_is_not_connected():
    t = Transport(0, KEY)
    t.bind(Address("127.0.0.1", 0))
    t.connect({1: Address("127.0.0.1", 9)})  # nothing listens there
    assert t.connected(1) is False
    t.abort()


def test_abort_drops_queued_messages_at_once():
    """An in-process crash: messages queued for an unreachable peer are dropped, not given
    the 5 s linger a clean close grants."""
    import time

    t = Transport(0, KEY)
    t.bind(Address("127.0.0.1", 0))
    t.connect({1: Address("127.0.0.1", 9)})
    assert all(t.send(1, b"m" * 10) for _ in range(20))
    start = time.monotonic()
    t.abort()
    assert time.monotonic() - start < 1.0


def test_a_clean_close_grants_connected_peers_the_linger_and_dead_ones_none():
    async def main():
        t = Transport(0, KEY)
        t.bind(Address("127.0.0.1", 0))
        t.connect({1: Address("127.0.0.1", 9), 2: Address("127.0.0.1", 9)})
        for dst, push in list(t._push.items()):  # stand-ins record the linger each socket gets
            push.close(0)
            t._monitors.pop(dst).close(0)
        closes = {}

        class Push:
            def __init__(self, dst):
                self.dst = dst

            def close(self, ms):
                closes[self.dst] = ms

        t._push, t._up = {1: Push(1), 2: Push(2)}, {1: True, 2: False}
        await t.close(linger=1.5)
        assert closes == {1: 1500, 2: 0} and t.closed is True
        assert t.send(1, b"late") is False
        await t.close(linger=1.5)  # a second close does nothing
        assert closes == {1: 1500, 2: 0}

    asyncio.run(main())


def test_links_retry_and_notice_dead_peers_at_the_documented_pace():
    t = Transport(0, KEY)
    t.bind(Address("127.0.0.1", 0))
    t.connect({1: Address("127.0.0.1", 9)})
    push = t._push[1]
    opts = [zmq.RECONNECT_IVL, zmq.RECONNECT_IVL_MAX, zmq.HEARTBEAT_IVL, zmq.HEARTBEAT_TIMEOUT, zmq.LINGER]
    assert [push.getsockopt(o) for o in opts] == [100, 2000, 1000, 5000, 5000]
    t.abort()


def test_the_reader_is_named_after_its_node_and_outlives_a_socket_error():
    """A ZeroMQ error while the transport is open (an interrupted call) is skipped: the next
    frames are still read."""

    async def main():
        t = Transport(1, KEY, accept_from={0})
        t.bind(Address("127.0.0.1", 0))
        real = t._pull
        frames = [good(k="after")]
        idle = asyncio.Event()

        class Pull:
            calls = 0

            async def recv_multipart(self, copy=True):
                Pull.calls += 1
                if Pull.calls == 1:
                    raise zmq.ZMQError(zmq.EAGAIN)
                if frames:
                    return frames.pop()
                await idle.wait()

            def close(self, linger):
                real.close(linger)

        t._pull = Pull()
        got = []
        t.start(got.append)
        assert t._reader.get_name() == "node1.reader"
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert [m["k"] for m in got] == ["after"]
        await t.close(linger=0)

    asyncio.run(main())


def test_the_inbound_socket_options_and_rejections_reported_to_the_callback():
    from simbench.real.transport import TAG_SIZE

    seen = []
    t = Transport(0, KEY, max_size=1000, on_reject=seen.append)
    assert t.closed is False and t._sync_ctx.underlying == t.ctx.underlying  # one context for both kinds of socket
    t.bind(Address("127.0.0.1", 0))
    assert [t._pull.getsockopt(o) for o in (zmq.LINGER, zmq.RCVHWM, zmq.MAXMSGSIZE)] == [0, 0, 2000 + TAG_SIZE]
    assert t.check([b"one frame"]) is None and seen == ["frames"]
    t.abort()


def test_binding_a_given_port_and_a_taken_one():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    a, b = Transport(0, KEY), Transport(1, KEY)
    assert a.bind(Address("127.0.0.1", port)) == Address("127.0.0.1", port)
    with pytest.raises(OSError) as err:
        b.bind(Address("127.0.0.1", port))
    # pyzmq's own text follows (newer versions add the endpoint)
    assert str(err.value).startswith(f"cannot bind node 1 to 127.0.0.1:{port}: Address already in use")
    a.abort()
    b.abort()


def test_port_1_is_bound_as_asked_not_as_any_free_port():
    """Only port 0 means "any free port": port 1 is bound (as root) or refused (otherwise)."""
    t = Transport(0, KEY)
    try:
        assert t.bind(Address("127.0.0.1", 1)).port == 1
    except OSError as exc:
        assert str(exc).startswith("cannot bind node 0 to 127.0.0.1:1: ")
    t.abort()
