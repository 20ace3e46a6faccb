"""The wire format: exact round trips, sizes, and malformed input that only ever raises WireError."""

import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simbench.core.message import MAGIC, Message, WireError, decode, encode

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(dtype):
    t = (torch.arange(24) % 7).to(dtype).reshape(2, 3, 4)
    scalar = torch.tensor(3).to(dtype)
    msg = decode(encode("k", 5, {"round": 3, "nested": {"a": [1, 2.5, "x"]}}, {"t": t, "s": scalar}))
    assert msg.kind == "k" and msg.src == 5 and msg.meta == {"round": 3, "nested": {"a": [1, 2.5, "x"]}}
    assert torch.equal(msg.tensors["t"], t) and msg.tensors["t"].dtype == dtype
    assert msg.tensors["s"].shape == () and torch.equal(msg.tensors["s"], scalar)


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3)
metas = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-10**9, 10**9), st.booleans(), st.text(max_size=8),
                                                        st.lists(st.integers(0, 9), max_size=4)), max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), shapes), max_size=4), metas)
def test_round_trip_property(specs, meta):
    tensors = {f"t{i}": torch.zeros(shape, dtype=dt) + (i % 2) for i, (dt, shape) in enumerate(specs)}
    buf = encode("kind", 1, meta, tensors)
    hlen = struct.unpack_from("<I", buf, 4)[0]
    assert len(buf) == 8 + hlen + sum(t.numel() * t.element_size() for t in tensors.values())
    assert json.loads(bytes(buf[8:8 + hlen]))["k"] == "kind"  # the header is plain JSON, no pickle
    out = decode(buf)
    assert out.meta == meta
    for name, t in tensors.items():
        assert torch.equal(out.tensors[name], t) and out.tensors[name].dtype == t.dtype


def test_decoded_tensors_own_their_memory():
    buf = encode("k", 0, {}, {"x": torch.ones(4)})
    a, b = decode(buf), decode(buf)
    a.tensors["x"].add_(1)
    assert torch.equal(b.tensors["x"], torch.ones(4))
    assert torch.equal(decode(buf).tensors["x"], torch.ones(4))


def test_message_encoding_is_cached_per_source():
    m = Message("k", {"a": 1}, {"x": torch.ones(3)})
    first = m.encode(2)
    assert m.encode(2) is first and m.nbytes == len(first)
    assert decode(m.encode(3)).src == 3


def _valid() -> bytearray:
    return bytearray(encode("k", 1, {"r": 1}, {"x": torch.arange(6, dtype=torch.float32)}))


def _with_header(header: dict, tail: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(h)) + h + tail


@pytest.mark.parametrize("mangle", [
    lambda b: b[:5],                                        # truncated prefix
    lambda b: b[:-3],                                       # truncated tensor
    lambda b: b"XXXX" + b[4:],                              # bad magic
    lambda b: b[:4] + struct.pack("<I", 10**6) + b[8:],     # header length past the end
    lambda b: b + b"\x00",                                  # trailing bytes
    lambda b: MAGIC + struct.pack("<I", 3) + b"{{{",        # JSON garbage
    lambda b: _with_header({"k": "k", "s": 0, "m": {}, "t": [["x", "complex128", [1]]]}, b"\0" * 16),
    lambda b: _with_header({"k": "k", "s": 0, "m": {}, "t": [["x", "float32", [-1]]]}),
    lambda b: _with_header({"k": 1, "s": 0, "m": {}, "t": []}),
    lambda b: _with_header({"k": "k"}),
    lambda b: _with_header([1, 2, 3]),
])
def test_malformed_messages_raise_wire_error(mangle):
    with pytest.raises(WireError):
        decode(bytes(mangle(_valid())))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_wire_error(data):
    try:
        decode(data)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.integers(0, 255))
def test_single_byte_corruption_only_raises_wire_error(pos, value):
    buf = _valid()
    buf[pos % len(buf)] = value
    try:
        decode(bytes(buf))
    except WireError:
        pass
