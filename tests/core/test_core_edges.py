"""Edges of ``simbench.core`` that the other core tests leave open: the wire format's exact
errors, where its bytes and views sit in memory and which encoding a decoded message keeps;
a node's step costs and epoch end; the runtime helpers and :class:`EpochRest`'s timing; the
seed tree of :mod:`simbench.core.seeding` (derived by hand from ``SeedSequence``); the
scenario's profiles and checks at their boundaries; schema, unit and YAML corner cases.

Everything is computed inside the tests (nothing at import or collection time), so that
mutation testing, which switches mutants per test at call time, sees every call.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Union

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

import simbench
from simbench.core import units
from simbench.core.message import MAGIC, Message, WireError, decode, encode, parse_header
from simbench.core.node import Node, NodeContext
from simbench.core.runtime import EpochRest, Work, matcher, node_device
from simbench.core.scenario import (ComputeSpec, NetworkSpec, NodeProfile, Scenario, Stragglers, WeakWorkers,
                                    crash_schedule, node_profiles, Crash)
from simbench.core.schema import ConfigError, convert, from_dict, path_component
from simbench.core.seeding import RunStreams, WorldStreams
from simbench.core.yamlio import load_yaml_text

from simhelpers import error


# ====================================================================== message: exact errors


def frame(header, tail: bytes = b"") -> bytes:
    """Prefix + ``header`` (JSON of a value, or raw bytes) + ``tail``."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(h)) + h + tail


def one_spec(*spec, tail: bytes = b"") -> bytes:
    return frame({"k": "k", "s": 0, "m": {}, "t": [list(spec)]}, tail)


def test_prefix_and_header_errors_word_for_word():
    assert error(decode, b"", exc=WireError) == "message too short (0 bytes)"
    assert error(decode, MAGIC + b"\0\0\0", exc=WireError) == "message too short (7 bytes)"
    # exactly the 8-byte prefix is long enough to be read: an empty header is what is wrong
    assert error(decode, MAGIC + struct.pack("<I", 0), exc=WireError) == \
        "unreadable header: Expecting value: line 1 column 1 (char 0)"
    assert error(decode, b"XXXX" + struct.pack("<I", 2) + b"{}", exc=WireError) == \
        "bad magic b'XXXX', expected b'SBM1'"
    assert error(decode, MAGIC + struct.pack("<I", 10) + b"{}", exc=WireError) == \
        "header length 10 runs past the end of a 10-byte message"
    assert error(decode, frame([1, 2, 3]), exc=WireError) == \
        "unreadable header: list indices must be integers or slices, not str"
    assert error(decode, frame({"k": 1, "s": 0, "m": {}, "t": []}), exc=WireError) == "header fields have the wrong types"
    assert error(parse_header, frame({"k": "k", "s": 0, "m": [], "t": []}), exc=WireError) == \
        "header fields have the wrong types"


def test_tensor_spec_errors_word_for_word():
    assert error(decode, one_spec("x", "uint8", [1.5], tail=b"\0"), exc=WireError) == "bad tensor spec ['x', 'uint8', [1.5]]"
    assert error(decode, one_spec("x", "uint8", "1", tail=b"\0"), exc=WireError) == "bad tensor spec ['x', 'uint8', '1']"
    assert error(decode, one_spec("x", "float33", [1]), exc=WireError) == "bad tensor spec ['x', 'float33', [1]]"
    assert error(decode, one_spec("x", "float32", [2, -1]), exc=WireError) == "negative dimension in tensor 'x'"
    assert error(decode, one_spec("x", "uint8", [3], tail=b"\0\0"), exc=WireError) == \
        "tensor 'x' runs past the end of the message"
    assert error(decode, one_spec("x", "uint8", [0, 2**64]), exc=WireError) == \
        "tensor 'x' has an impossible shape [0, 18446744073709551616]"
    wire = bytes(encode("k", 1, {}, {"x": torch.arange(3, dtype=torch.int16)}))
    assert error(decode, wire + b"\1\2", exc=WireError) == "2 trailing bytes after the last tensor"
    assert error(decode, wire + b"\1", exc=WireError) == "1 trailing bytes after the last tensor"


def test_an_owner_that_is_not_the_messages_bytes_is_refused_word_for_word():
    m = Message("k", {}, {"x": torch.ones(3)})
    wire = m.encode(0)
    message = "owner must be the 1-D uint8 tensor holding exactly the message's bytes"
    assert error(decode, wire, owner=m.buffer.view(torch.int8)) == message  # right size, wrong dtype
    assert error(decode, wire, owner=m.buffer.view(1, -1)) == message  # right size, not 1-D
    assert error(decode, wire, owner=m.buffer[:-1]) == message  # too short
    assert torch.equal(decode(wire, owner=m.buffer).tensors["x"], torch.ones(3))


def test_encoding_errors_word_for_word():
    assert error(encode, "k", 0, {}, {"z": torch.zeros(2, dtype=torch.complex64)}, exc=WireError) == \
        "tensor 'z' has unsupported dtype torch.complex64; allowed: " \
        "float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool"

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert error(encode, "k", 0, {"bad": Opaque()}, {}, exc=TypeError) == \
        "meta value <opaque> of type Opaque is not JSON-encodable"
    assert error(encode, "k", 0, {"when": [np.datetime64("2020-01-02")]}, {}, exc=TypeError) == \
        "meta value datetime.date(2020, 1, 2) of type date is not JSON-encodable"


# ====================================================================== message: memory and identity


def test_a_given_header_is_trusted_and_not_parsed_again():
    wire = encode("k", 2, {"r": 1}, {"x": torch.arange(3)})
    kind, src, meta, specs, end = parse_header(wire)
    msg = decode(wire, ("other", 9, {"r": 5}, specs, end))
    assert (msg.kind, msg.src, msg.meta) == ("other", 9, {"r": 5})
    assert torch.equal(msg.tensors["x"], torch.arange(3))


def test_which_encoding_a_decoded_message_keeps_to_send_on():
    m = Message("k", {"r": 1}, {"x": torch.arange(4.0)})
    wire = m.encode(4)  # a memoryview of the encoder's buffer
    shared = decode(wire, owner=m.buffer)
    assert shared.nbytes == len(wire) and shared.encode(4) is wire  # forwarded without re-encoding
    copied = decode(wire)  # a view of someone else's buffer (a socket's) is copied out once
    assert copied.nbytes == len(wire)
    assert type(copied.encode(4)) is bytes and copied.encode(4) == bytes(wire)
    as_bytes, as_bytearray = bytes(wire), bytearray(wire)
    assert decode(as_bytes).encode(4) is as_bytes
    assert decode(as_bytearray).encode(4) is as_bytearray
    # sent by another source, the message is encoded again under that source
    assert decode(decode(as_bytes).encode(5)).src == 5


def kinds_for_every_residue() -> dict[int, str]:
    """A kind per residue mod 8 of the header end (where the first tensor starts)."""
    out = {}
    for n in range(1, 40):
        kind = "k" * n
        end = parse_header(encode(kind, 0, {}, {"x": torch.zeros(1)}))[4]
        out.setdefault(end % 8, kind)
    assert sorted(out) == list(range(8))
    return out


def test_the_first_tensor_is_8_byte_aligned_in_memory_and_shared_copy_on_write():
    is_cow = torch._C._is_cow_tensor
    x = torch.arange(5, dtype=torch.float64)
    for residue, kind in kinds_for_every_residue().items():
        m = Message(kind, {}, {"x": x})
        wire = m.encode(0)
        end = parse_header(wire)[4]
        assert end % 8 == residue
        assert m.buffer[end:].data_ptr() % 8 == 0, residue
        got = decode(wire, owner=m.buffer).tensors["x"]
        assert is_cow(got) and torch.equal(got, x), residue
        assert torch.equal(decode(bytes(wire)).tensors["x"], x)


def test_misaligned_tensors_are_copied_as_bytes_at_every_offset():
    """Tensors after odd-sized ones sit at every offset mod 8: the bytes are the plain layout,
    aligned ones are shared copy-on-write and the others are copied out, for every header length."""
    is_cow = torch._C._is_cow_tensor
    tensors = {
        "a": torch.arange(3, dtype=torch.float64) - 1.5,
        "b": torch.arange(1, dtype=torch.int8) + 7,
        "c": torch.arange(2, dtype=torch.float32) + 0.25,
        "d": torch.arange(4, dtype=torch.int16) - 2,
        "e": torch.arange(3, dtype=torch.int8),
        "f": torch.arange(2, dtype=torch.float64) * 3.5,
        "g": torch.arange(1, dtype=torch.int8),
        "h": torch.arange(3, dtype=torch.int32) - 1,
        "i": torch.arange(2, dtype=torch.int8),
        "j": torch.tensor([True, False]),
        "k": torch.arange(2, dtype=torch.float64) - 9.0,
        "l": torch.arange(3, dtype=torch.int8),
        "m": torch.arange(2, dtype=torch.float16),
        "n": torch.arange(2, dtype=torch.int64) + 2**40,
    }
    body = b"".join(t.numpy().tobytes() for t in tensors.values())
    for kind in kinds_for_every_residue().values():
        m = Message(kind, {}, tensors)
        wire = m.encode(0)
        end = parse_header(wire)[4]
        assert bytes(wire)[end:] == body
        shared = decode(wire, owner=m.buffer)
        start = m.buffer.data_ptr()
        pos = end
        for name, t in tensors.items():
            got = shared.tensors[name]
            assert got.dtype == t.dtype and torch.equal(got, t), (kind, name)
            assert is_cow(got) is ((start + pos) % t.element_size() == 0), (kind, name)
            pos += t.numel() * t.element_size()


class _Calls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_an_aligned_strided_tensor_is_copied_once_straight_into_the_buffer():
    strided = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    assert not strided.is_contiguous()
    with _Calls() as calls:
        wire = encode("k", 0, {}, {"x": strided})
    assert "contiguous" not in calls.names  # no temporary contiguous copy first
    assert torch.equal(decode(wire).tensors["x"], strided)
    with _Calls() as calls:  # after a 1-byte tensor it is misaligned: made contiguous, copied as bytes
        wire = encode("k", 0, {}, {"b": torch.zeros(1, dtype=torch.int8), "x": strided})
    assert "contiguous" in calls.names
    assert torch.equal(decode(wire).tensors["x"], strided)


class _OffCpu:
    """Stands for a tensor on an accelerator: only ``cpu()`` gives the data."""

    device = torch.device("cuda", 0)

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def detach(self) -> "_OffCpu":
        return self

    def cpu(self) -> torch.Tensor:
        return self.data


def test_tensors_off_the_cpu_are_brought_to_it_before_encoding():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    wire = encode("k", 1, {}, {"x": _OffCpu(x)})
    assert bytes(wire) == bytes(encode("k", 1, {}, {"x": x}))


def test_decoding_read_only_bytes_shows_no_torch_warning():
    """Bytes from a socket are read-only: torch would warn (once per process) that it cannot
    protect them; decode only reads them and keeps that warning from the user."""
    wire = bytes(encode("k", 0, {}, {"x": torch.arange(3.0)}))
    assert torch.equal(decode(wire).tensors["x"], torch.arange(3.0))
    code = textwrap.dedent("""
        import warnings, torch
        from simbench.core.message import decode, encode
        wire = bytes(encode("k", 0, {}, {"x": torch.arange(3.0)}))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            x = decode(wire).tensors["x"]
            y = decode(memoryview(wire)).tensors["x"]
        assert torch.equal(x, torch.arange(3.0)) and torch.equal(y, x)
        print(len(seen))
    """)
    root = Path(simbench.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_message_get_and_to():
    m = Message("k", {"r": 1}, {"x": torch.ones(2)}, src=3)
    assert m.get("r") == 1 and m.get("missing") is None and m.get("missing", 5) == 5
    assert m.to(None) is m and m.to(torch.device("cpu")) is m
    moved = m.to(torch.device("meta"))
    assert moved is not m and (moved.kind, moved.meta, moved.src) == ("k", {"r": 1}, 3)
    assert moved.tensors["x"].device.type == "meta" and moved.tensors["x"].shape == (2,)
    assert Message("e").to(torch.device("meta")).kind == "e"


# ====================================================================== node


class _Learner:
    def __init__(self, flops: float = 1000.0) -> None:
        self.flops = flops
        self.calls: list[str] = []

    def flops_per_step(self) -> float:
        return self.flops

    def train_step(self) -> float:
        self.calls.append("train")
        return 0.5

    def compute_grad(self) -> str:
        self.calls.append("grad")
        return "g"

    def evaluate(self, x, y):
        return float(len(y)), 0.25 * len(y)


class _Rt:
    def __init__(self) -> None:
        self.costs: list = []
        self.logged: list = []
        self.ends: list = []
        self.bytes_sent = 42

    async def compute(self, fn, *args, cost=None):
        self.costs.append(cost)
        return fn(*args)

    def log(self, metric, value, *, epoch=None):
        self.logged.append((metric, value, epoch))

    def epoch_end(self, epoch):
        self.ends.append(epoch)


def test_step_costs_are_the_learners_flops_per_step_times_steps():
    node = Node(NodeContext(node_id=0, role="worker", params=None, learner=_Learner(1000.0)))
    assert node.step_cost() == Work(flops=1000.0, steps=1)
    assert node.step_cost(3) == Work(flops=3000.0, steps=3)
    rt = _Rt()
    assert asyncio.run(node.local_step(rt)) == 0.5
    assert asyncio.run(node.local_grad(rt)) == "g"
    assert rt.costs == [Work(flops=1000.0, steps=1)] * 2 and node.learner.calls == ["train", "grad"]


def test_end_epoch_evaluates_then_tells_the_runtime_and_the_observer():
    seen = []

    class Workload:
        def evaluate(self, rt, ctx, epoch, learner):
            seen.append(("eval", epoch, learner))
            return {"acc": 0.5, "epoch": epoch}

    learner = _Learner()
    ctx = NodeContext(node_id=4, role="worker", params=None, learner=learner, workload=Workload(),
                      on_epoch=lambda node, epoch, lrn: seen.append(("hook", node, epoch, lrn)))
    node, rt = Node(ctx), _Rt()
    node.end_epoch(rt, 2)
    assert node.last_metrics == {"acc": 0.5, "epoch": 2}
    assert rt.ends == [2]
    assert seen == [("eval", 2, learner), ("hook", 4, 2, learner)]
    other = _Learner()
    assert node.evaluate(rt, 3, other) == {"acc": 0.5, "epoch": 3} and seen[-1] == ("eval", 3, other)
    # a hand-made runtime without epoch_end is fine
    bare = SimpleNamespace()
    node.end_epoch(bare, 5)
    assert node.last_metrics == {"acc": 0.5, "epoch": 5}


def test_without_a_workload_the_classifiers_metrics_are_logged_for_the_epoch():
    learner, other = _Learner(), _Learner()
    ctx = NodeContext(node_id=1, role="worker", params=None, learner=learner,
                      val=(torch.zeros(3, 2), torch.zeros(3)), test=(torch.zeros(2, 2), torch.zeros(2)))
    rt = _Rt()
    row = Node(ctx).evaluate(rt, 7)
    assert row == {"val_loss": 3.0, "val_acc": 0.75, "test_loss": 2.0, "test_acc": 0.5, "bytes_sent": 42.0}
    assert rt.logged == [(k, v, 7) for k, v in row.items()]
    other.evaluate = lambda x, y: (9.0, 1.0)
    assert Node(ctx).evaluate(_Rt(), 1, other)["val_loss"] == 9.0


# ====================================================================== runtime helpers


def test_matcher_refuses_other_things_word_for_word():
    assert error(matcher, 5, exc=TypeError) == "match must be a kind, a collection of kinds or a predicate, not 5"
    assert matcher(None) is None
    assert matcher("a")(Message("a")) and not matcher(("b", "c"))(Message("a"))


def test_node_device_is_none_for_the_cpu():
    def node(device):
        return SimpleNamespace(learner=SimpleNamespace(device=device))

    assert node_device(SimpleNamespace()) is None
    assert node_device(node(None)) is None
    assert node_device(node(torch.device("cpu"))) is None
    meta = torch.device("meta")
    assert node_device(node(meta)) is meta
    assert node_device(node(object())) is None  # no device type: taken for the CPU


def test_epoch_rest_follows_the_seeds_formula():
    twin = np.random.default_rng(3)
    rest = EpochRest(2.0, np.random.default_rng(3))
    assert rest.epoch_end(2.0, 0) == 0.0 and rest.take() == 0.0  # epoch 0: the start
    u1, u2, u3 = twin.random(), twin.random(), twin.random()
    r1 = rest.epoch_end(10.0, 1)
    assert r1 == 8.0 * (0.5 + 0.5 * 2.0 * u1)  # T (0.5 + 0.5 f u), T since the start
    r2 = rest.epoch_end(15.0, 2)  # not rested in between: T runs from the last epoch end
    assert r2 == 5.0 * (0.5 + 0.5 * 2.0 * u2)
    assert rest.take() == r1 + r2 and rest.take() == 0.0
    rest.resumed(20.0)
    assert rest.epoch_end(26.0, 3) == 6.0 * (0.5 + 0.5 * 2.0 * u3)
    assert rest.epoch_end(30.0, 0) == 0.0 and rest.epoch_end(31.0, 1) > 0.0  # epoch 0 starts over


def test_epoch_rest_boundaries():
    off = EpochRest(0.0, np.random.default_rng(1))
    assert off.epoch_end(0.0, 0) == 0.0 and off.epoch_end(10.0, 1) == 0.0 and off.take() == 0.0
    assert off.rng.random() == np.random.default_rng(1).random()  # nothing drawn
    one = EpochRest(1.0, np.random.default_rng(1))
    assert one.epoch_end(1.0, 0) == 0.0
    assert one.epoch_end(5.0, 1) == 4.0 * (0.5 + 0.5 * np.random.default_rng(1).random())
    first = EpochRest(1.0, np.random.default_rng(1))
    assert first.epoch_end(5.0, 3) == 0.0 and first.take() == 0.0  # the first end seen is the start
    assert first.epoch_end(9.0, 4) == 4.0 * (0.5 + 0.5 * np.random.default_rng(1).random())
    own = EpochRest(1.0, None)  # a fresh stream of its own
    assert own.epoch_end(0.0, 0) == 0.0
    assert 5.0 <= own.epoch_end(10.0, 1) <= 10.0


# ====================================================================== seeding


def word(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])


def test_run_streams_follow_the_seed_tree():
    s = RunStreams(7)
    topo, data, init, faults, world, learners, population = np.random.SeedSequence(7).spawn(7)
    assert s.seed == 7 and s.topology == word(topo) and s.init == word(init) and s.world == word(world)
    assert s.data.random() == np.random.default_rng(data).random()
    assert s.faults.random() == np.random.default_rng(faults).random()
    assert s.population.random() == np.random.default_rng(population).random()
    assert s.model_seed(2, True) == s.init and s.model_seed(0, True) == s.init
    assert s.model_seed(2, False) == s.init + 3 and s.model_seed(0, False) == s.init + 1


def test_learner_seeds_are_drawn_once_per_size():
    s = RunStreams(7)
    assert s.learner_seeds(0) == [] and type(s.learner_seeds(0)) is list
    children = np.random.SeedSequence(7).spawn(7)[5].spawn(5)
    first = s.learner_seeds(3)
    assert first == [word(c) for c in children[:3]]
    assert s.learner_seeds(3) is first  # cached: spawning again would give new seeds
    assert s.learner_seeds(2) == [word(c) for c in children[3:5]]  # another size: spawned anew


def test_node_seeds_hash_the_seed_node_and_purpose():
    s = RunStreams(7)
    assert s.node_seed(2, "rk") == word(np.random.SeedSequence([7, 2, ord("r"), ord("k")]))
    assert s.node_seed(2, "") == word(np.random.SeedSequence([7, 2]))
    assert len({s.node_seed(2, "rk"), s.node_seed(3, "rk"), s.node_seed(2, "rl"), RunStreams(8).node_seed(2, "rk")}) == 4
    assert RunStreams(7).node_seed(2, "rk") == s.node_seed(2, "rk")


def test_world_streams_per_node():
    w = WorldStreams(11, 3)
    net, faults, nodes, strag, sleep = np.random.SeedSequence(11).spawn(5)

    def first(seq):
        return np.random.default_rng(seq).random()

    links = net.spawn(3)  # (spawning is stateful: once, as WorldStreams does)
    assert w.network_of(2).random() == first(links[2])
    ns = w.node_streams(1)
    assert ns.rng.random() == first(nodes.spawn(3)[1])
    assert ns.straggler.random() == first(strag.spawn(3)[1])
    assert ns.network.random() == first(links[1])
    assert ns.faults.random() == first(faults)
    assert ns.sleep is not None and ns.sleep.random() == first(sleep.spawn(3)[1])


# ====================================================================== scenario


def test_positive_and_probability_checks_at_their_boundaries():
    assert error(from_dict, NetworkSpec, {"bandwidth": 0}, exc=ConfigError) == "bandwidth: 0.0 must be > 0"
    assert from_dict(NetworkSpec, {"bandwidth": 0.5}).bandwidth == 0.5
    assert from_dict(ComputeSpec, {"flops_per_s": 1}).flops_per_s == 1.0
    assert error(from_dict, ComputeSpec, {"flops_per_s": 0}, exc=ConfigError) == "flops_per_s: 0.0 must be > 0"
    assert from_dict(NetworkSpec, {"loss": 0}).loss == 0.0 and from_dict(NetworkSpec, {"loss": 1}).loss == 1.0
    assert error(from_dict, NetworkSpec, {"loss": 1.5}, exc=ConfigError) == "loss: 1.5 must be a probability in [0, 1]"
    assert error(from_dict, NetworkSpec, {"loss": -0.25}, exc=ConfigError) == "loss: -0.25 must be a probability in [0, 1]"
    assert from_dict(Stragglers, {"fraction": 1}).fraction == 1.0 and from_dict(Stragglers, {"fraction": 0}).fraction == 0.0


def test_a_crash_rate_of_one_per_hour_or_less_still_crashes():
    for rate in (1.0, 0.5):
        twin = np.random.default_rng(4)
        times = [float(twin.exponential(3600.0 / rate)) for _ in range(3)]
        got = crash_schedule(Scenario(crash_rate=rate), 3, 1e9, np.random.default_rng(4))
        assert got == sorted((Crash(node=i, at=t) for i, t in enumerate(times)), key=lambda c: c.at)


def test_node_profiles_of_weak_workers_in_both_modes():
    sc = Scenario(stragglers=Stragglers(nodes=(3,)), weak_workers=WeakWorkers(nodes=(1, 2), speed=0.25, batch_scale=0.5),
                  sleep_factor=0.5)
    speeds = {1: 2.0, 3: 3.0}
    slow = node_profiles(sc, 4, np.random.default_rng(0), base_speed=speeds, weak_mode="slow")
    assert slow == [
        NodeProfile(speed=1.0, batch_scale=1.0, straggler=False, weak=False, sleep_factor=0.5, local_steps=1.0),
        NodeProfile(speed=0.5, batch_scale=0.5, straggler=False, weak=True, sleep_factor=0.5, local_steps=1.0),
        NodeProfile(speed=0.25, batch_scale=0.5, straggler=False, weak=True, sleep_factor=0.5, local_steps=1.0),
        NodeProfile(speed=3.0, batch_scale=1.0, straggler=True, weak=False, sleep_factor=0.5, local_steps=1.0),
    ]
    half = node_profiles(sc, 4, np.random.default_rng(0), base_speed=speeds, weak_mode="half_steps")
    assert half == [
        NodeProfile(speed=1.0, batch_scale=1.0, straggler=False, weak=False, sleep_factor=0.5, local_steps=1.0),
        NodeProfile(speed=2.0, batch_scale=1.0, straggler=False, weak=True, sleep_factor=0.5, local_steps=0.5),
        NodeProfile(speed=1.0, batch_scale=1.0, straggler=False, weak=True, sleep_factor=0.5, local_steps=0.5),
        NodeProfile(speed=3.0, batch_scale=1.0, straggler=True, weak=False, sleep_factor=0.5, local_steps=1.0),
    ]


def test_servers_drawn_for_a_fraction_are_replaced_by_workers():
    """round(f x workers) of all n nodes are drawn; the seeds are ones where servers are among
    them, and each is replaced by one more draw, all without replacement, from the workers not
    yet taken (the twin stream replays the rule)."""
    def drawn(fraction, n, workers, seed):
        got = node_profiles(Scenario(stragglers=Stragglers(fraction=fraction)), n, np.random.default_rng(seed),
                            workers=workers)
        return {i for i, p in enumerate(got) if p.straggler}

    for n, workers, fraction, seeds in ((5, {1, 2, 3, 4}, 0.5, (3, 11, 30)), (6, {2, 3, 4, 5}, 0.75, (3, 35, 36, 49))):
        for seed in seeds:
            twin = np.random.default_rng(seed)
            k = round(fraction * len(workers))
            first = set(twin.choice(n, size=k, replace=False).tolist())
            servers = first - workers
            assert servers, seed
            pool = sorted(workers - first)
            expected = (first & workers) | set(twin.choice(pool, size=len(servers), replace=False).tolist())
            assert len(expected) == k and expected <= workers
            assert drawn(fraction, n, workers, seed) == expected, (n, seed)
    assert drawn(0.75, 6, {2, 3, 4, 5}, 3) == {3, 4, 5} and drawn(0.75, 6, {2, 3, 4, 5}, 35) == {2, 3, 4}


# ====================================================================== schema and units


def test_union_members_are_tried_in_order_skipping_none_wherever_it_stands():
    assert convert(5, Union[None, int, str], "p") == 5
    assert convert("z", Union[None, int, str], "p") == "z"
    assert convert(None, Union[None, int, str], "p") is None
    assert error(convert, 2.5, Union[None, int, str], "p", exc=ConfigError) == "p: expected int or str, got 2.5"


def test_a_one_element_tuple_and_bare_list_and_tuple_types():
    assert convert([5], tuple[int], "p") == (5,)
    assert error(convert, [1, 2], tuple[int], "p", exc=ConfigError) == "p: expected 1 values, got 2"
    assert convert([1, "a"], typing.List, "p") == [1, "a"]
    assert convert([1, "a"], typing.Tuple, "p") == (1, "a")


def test_path_components_may_hold_any_letter():
    assert path_component("X") is True and path_component("Xray-XX") is True


def test_unit_names_are_read_whatever_their_case():
    assert units._parse("1MB", units._SIZE_UNITS, "size") == 1e6 == units._parse("1mB", units._SIZE_UNITS, "size")


# ====================================================================== yamlio


def test_text_yaml_cannot_even_read_is_one_line():
    assert error(load_yaml_text, "a: \x07\n", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML: unacceptable character #x0007: special characters are not allowed"


def aliased_mapping(total: int, as_keys: bool = False) -> str:
    """A mapping standing for exactly ``total`` nodes once aliases are expanded: the root, an
    entry whose value is a list of 999 scalars (1 + 1000 nodes), 198 entries whose value (or
    key) is an alias of that list (1001 each), then scalar entries (2 each), one of them with
    a one-element list (3) when ``total`` is odd."""
    body = "[" + ", ".join(["1"] * 999) + "]"
    rest = total - 1 - 1001 * 199
    assert rest >= 0
    alias = "? *a\n: 0\n" if as_keys else None
    lines = ["k0: &a " + body + "\n"]
    lines += [alias or f"k{i}: *a\n" for i in range(1, 199)]
    if rest % 2:
        lines.append("odd: [0]\n")
        rest -= 3
    lines += [f"e{i}: 0\n" for i in range(rest // 2)]
    return "".join(lines)


def test_alias_expansion_boundary_in_a_mapping():
    doc = load_yaml_text(aliased_mapping(200_000), "cfg")
    assert len(doc) == 199 + 400 and doc["k198"] is doc["k0"] and len(doc["k0"]) == 999
    too_big = "cfg: it expands to more than 200000 values (aliases of aliases?)"
    assert error(load_yaml_text, aliased_mapping(200_001), "cfg", exc=ConfigError) == too_big
    # keys count as much as values (here aliases of a list as keys: too many before unhashable)
    assert error(load_yaml_text, aliased_mapping(200_001, as_keys=True), "cfg", exc=ConfigError) == too_big
    assert error(load_yaml_text, aliased_mapping(200_000, as_keys=True), "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 1: found unhashable key"  # (an alias is the node it names: line 1)


def test_nesting_inside_a_key_counts_too():
    # the root mapping is depth 0, its key list depth 1: 64 nested lists put the scalar at depth 65
    assert error(load_yaml_text, "? " + "[" * 64 + "1" + "]" * 64 + "\n: 1\n", "cfg", exc=ConfigError) == \
        "cfg: nesting is deeper than 64 levels"
    assert error(load_yaml_text, "? " + "[" * 63 + "1" + "]" * 63 + "\n: 1\n", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 1: found unhashable key"


def test_duplicates_inside_a_mapping_key_are_found_before_the_key_is_refused():
    assert error(load_yaml_text, "? {a: 1, a: 2}\n: v\n", "cfg", exc=ConfigError) == \
        "cfg: key 'a' appears twice (lines 1 and 1); keep one"


def test_mappings_are_built_breadth_first_so_the_shallower_duplicate_is_reported():
    # PyYAML builds nested values after their parents (not depth-first): y's duplicate is found
    # before the one inside x's list
    assert error(load_yaml_text, "x: [{a: 1, a: 2}]\ny: {b: 1, b: 2}\n", "cfg", exc=ConfigError) == \
        "cfg: key 'b' appears twice (lines 2 and 2); keep one"
