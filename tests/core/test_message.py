"""The wire format: exact round trips, sizes, and malformed input that only ever raises WireError."""

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simbench.core.message import MAGIC, Message, WireError, decode, encode, parse_header

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]
META = {"round": 3, "nested": {"a": [1, 2.5, "x", None, True], "b": {"c": []}}, "s": "é✓", "f": -0.125}


def header_of(buf) -> dict:
    """The JSON header of an encoding (which must parse as plain JSON: nothing is pickled)."""
    assert bytes(buf[:4]) == MAGIC
    (hlen,) = struct.unpack_from("<I", buf, 4)
    return json.loads(bytes(buf[8:8 + hlen]).decode("utf-8"))


def values(dtype: torch.dtype, shape) -> torch.Tensor:
    """Distinct-ish values, including negatives and fractions where the dtype has them."""
    n = int(np.prod(shape)) if shape else 1
    base = torch.arange(n, dtype=torch.float64) * 1.25 - 3
    if dtype == torch.bool:
        return (torch.arange(n) % 3 == 0).reshape(shape)
    if dtype == torch.uint8:
        return (torch.arange(n) * 37 % 256).to(dtype).reshape(shape)
    return base.to(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_every_dtype(dtype):
    t = values(dtype, (2, 3, 4))
    scalar = values(dtype, ())
    empty = values(dtype, (0, 5))
    buf = encode("k", 5, META, {"t": t, "s": scalar, "e": empty})
    msg = decode(buf)
    assert msg.kind == "k" and msg.src == 5 and msg.meta == META
    assert list(msg.tensors) == ["t", "s", "e"]
    for name, sent in {"t": t, "s": scalar, "e": empty}.items():
        got = msg.tensors[name]
        assert got.dtype == dtype and got.shape == sent.shape and torch.equal(got, sent)
    assert len(buf) == 8 + len(json.dumps(header_of(buf), separators=(",", ":")).encode()) + t.nbytes + scalar.nbytes


def test_non_contiguous_and_grad_tensors_round_trip():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    w = torch.ones(3, requires_grad=True) * 2
    msg = decode(encode("k", 0, {}, {"t": base.t(), "step": base[:, ::2], "w": w}))
    assert torch.equal(msg.tensors["t"], base.t()) and torch.equal(msg.tensors["step"], base[:, ::2])
    assert torch.equal(msg.tensors["w"], torch.full((3,), 2.0)) and not msg.tensors["w"].requires_grad


def test_numpy_scalars_and_tuples_in_meta_become_json():
    msg = decode(encode("k", 0, {"n": np.int64(7), "x": np.float32(0.5), "t": (1, 2), "a": np.arange(3),
                                 "z": np.array(2.5), "m": np.arange(4).reshape(2, 2)}, {}))
    assert msg.meta == {"n": 7, "x": 0.5, "t": [1, 2], "a": [0, 1, 2], "z": 2.5, "m": [[0, 1], [2, 3]]}


def test_unsupported_dtype_and_meta_are_refused_when_encoding():
    with pytest.raises(WireError, match="complex64"):
        encode("k", 0, {}, {"z": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(TypeError, match="object"):
        encode("k", 0, {"bad": object()}, {})


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=10)
metas = st.dictionaries(st.text(max_size=5), json_value, max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), shapes), max_size=4), metas, st.integers(0, 10**6), st.text(max_size=10))
def test_round_trip_property(specs, meta, src, kind):
    tensors = {f"t{i}": values(dt, tuple(shape)) for i, (dt, shape) in enumerate(specs)}
    buf = encode(kind, src, meta, tensors)
    header = header_of(buf)  # plain JSON: nothing is pickled
    hlen = struct.unpack_from("<I", buf, 4)[0]
    assert len(buf) == 8 + hlen + sum(t.numel() * t.element_size() for t in tensors.values())
    assert header == {"k": kind, "s": src, "m": meta, "t": [[n, str(t.dtype)[6:], list(t.shape)] for n, t in tensors.items()]}
    out = decode(buf)
    assert (out.kind, out.src, out.meta) == (kind, src, meta)
    assert list(out.tensors) == list(tensors)
    for name, t in tensors.items():
        assert out.tensors[name].dtype == t.dtype and out.tensors[name].shape == t.shape
        assert torch.equal(out.tensors[name], t)
    assert decode(bytes(buf)).meta == meta and decode(memoryview(buf)).meta == meta


def test_decoded_tensors_own_their_memory():
    buf = encode("k", 0, {"m": [1]}, {"x": torch.ones(4), "y": torch.zeros(2, 2)})
    a, b = decode(buf), decode(buf)
    a.tensors["x"].add_(1)
    a.tensors["y"][0, 0] = 9
    a.meta["m"].append(2)
    assert torch.equal(b.tensors["x"], torch.ones(4)) and torch.equal(b.tensors["y"], torch.zeros(2, 2))
    assert b.meta == {"m": [1]}
    assert torch.equal(decode(buf).tensors["x"], torch.ones(4))  # the buffer itself is untouched
    # and a decoded tensor does not alias the sender's tensor either
    sent = torch.ones(3)
    got = decode(encode("k", 0, {}, {"x": sent})).tensors["x"]
    got.zero_()
    assert torch.equal(sent, torch.ones(3))


def test_decoding_from_the_encoders_buffer_shares_it_copy_on_write():
    """With ``owner`` the tensors are views of the wire buffer until written: the
    simulator's receivers pay no copy, and a write stays private to the one who made it."""
    x = torch.arange(1000, dtype=torch.float32)
    odd = torch.arange(3, dtype=torch.int8)  # pushes the next tensor off its alignment
    m = Message("k", {}, {"x": x, "odd": odd, "y": torch.ones(2, 2)})
    wire = m.encode(0)
    assert isinstance(m.buffer, torch.Tensor) and m.buffer.numel() == len(wire)
    a, b = decode(wire, owner=m.buffer), decode(wire, owner=m.buffer)
    is_cow = torch._C._is_cow_tensor
    assert is_cow(a.tensors["x"]) and is_cow(b.tensors["x"])  # shared: no bytes moved yet
    assert not is_cow(a.tensors["y"])  # misaligned after the 3-byte tensor: copied out instead
    assert a.tensors["x"].sum().item() == x.sum().item() and is_cow(a.tensors["x"])  # reading keeps sharing
    a.tensors["x"].mul_(2)
    a.tensors["y"].zero_()
    assert not is_cow(a.tensors["x"]) and torch.equal(a.tensors["x"], 2 * x)
    assert torch.equal(b.tensors["x"], x) and torch.equal(b.tensors["y"], torch.ones(2, 2))
    header = json.dumps({"k": "k", "s": 0, "m": {}, "t": [["x", "float32", [1000]], ["odd", "int8", [3]],
                                                          ["y", "float32", [2, 2]]]}, separators=(",", ":")).encode()
    assert bytes(wire) == b"".join([MAGIC, struct.pack("<I", len(header)), header, x.numpy().tobytes(),
                                    odd.numpy().tobytes(), torch.ones(4).numpy().tobytes()])  # the layout, unpadded
    assert torch.equal(decode(bytes(wire)).tensors["x"], x)  # the wire bytes themselves are untouched
    assert b.buffer is m.buffer  # a forwarded decoding can be sent on without re-encoding
    with pytest.raises(ValueError, match="owner"):
        decode(wire, owner=m.buffer[1:])


def test_decode_with_a_pre_parsed_header_gives_the_same_message():
    buf = encode("k", 2, META, {"x": torch.arange(5)})
    a, b = decode(buf), decode(buf, parse_header(buf))
    assert (a.kind, a.src, a.meta) == (b.kind, b.src, b.meta) and torch.equal(a.tensors["x"], b.tensors["x"])


def test_message_encoding_is_cached_per_source():
    m = Message("k", {"a": 1}, {"x": torch.ones(3)})
    first = m.encode(2)
    assert m.encode(2) is first and m.nbytes == len(first)
    assert decode(m.encode(3)).src == 3 and m.nbytes == len(m.encode(3))
    with pytest.raises(RuntimeError):
        Message("fresh").nbytes


# -- malformed input ---------------------------------------------------------------------------

def _valid() -> bytearray:
    return bytearray(encode("k", 1, {"r": 1}, {"x": torch.arange(6, dtype=torch.float32)}))


def _with_header(header, tail: bytes = b"") -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(h)) + h + tail


def _spec(*spec, tail: bytes = b"") -> bytes:
    return _with_header({"k": "k", "s": 0, "m": {}, "t": [list(spec)]}, tail)


def _replace_in_header(b: bytearray, old: bytes, new: bytes) -> bytes:
    """Edit the JSON header of a valid encoding, fixing up its length field."""
    hlen = struct.unpack_from("<I", b, 4)[0]
    header = bytes(b[8:8 + hlen])
    assert old in header
    header = header.replace(old, new)
    return MAGIC + struct.pack("<I", len(header)) + header + bytes(b[8 + hlen:])


MANGLERS = {
    "empty": lambda b: b"",
    "truncated prefix": lambda b: b[:5],
    "truncated header": lambda b: b[:12],
    "truncated tensor": lambda b: b[:-3],
    "bad magic": lambda b: b"XXXX" + b[4:],
    "header length past end": lambda b: b[:4] + struct.pack("<I", 10**6) + b[8:],
    "header length max": lambda b: b[:4] + b"\xff\xff\xff\xff" + b[8:],
    "trailing bytes": lambda b: b + b"\x00",
    "bad dtype name": lambda b: _replace_in_header(b, b'"float32"', b'"float33"'),
    "complex dtype": lambda b: _replace_in_header(b, b'"float32"', b'"complex128"'),
    "shape too big": lambda b: _replace_in_header(b, b"[6]", b"[7]"),
    "shape too small": lambda b: _replace_in_header(b, b"[6]", b"[5]"),
    "JSON garbage": lambda b: _replace_in_header(b, b'{"k"', b'{{"k"'),
    "not UTF-8": lambda b: _replace_in_header(b, b'"k"', b'"\xff\xfe"'),
    "header is a list": lambda b: _with_header([1, 2, 3]),
    "header misses fields": lambda b: _with_header({"k": "k"}),
    "kind not a string": lambda b: _with_header({"k": 1, "s": 0, "m": {}, "t": []}),
    "meta not a dict": lambda b: _with_header({"k": "k", "s": 0, "m": [], "t": []}),
    "specs not a list": lambda b: _with_header({"k": "k", "s": 0, "m": {}, "t": {}}),
    "spec not a triple": lambda b: _with_header({"k": "k", "s": 0, "m": {}, "t": [["x", "uint8"]]}),
    "spec a number": lambda b: _with_header({"k": "k", "s": 0, "m": {}, "t": [5]}),
    "negative dim": lambda b: _spec("x", "float32", [-1]),
    "name a list": lambda b: _spec([1], "uint8", [1], tail=b"\0"),
    "name a number": lambda b: _spec(3, "uint8", [1], tail=b"\0"),
    "shape a string": lambda b: _spec("x", "uint8", "12", tail=b"\0\0"),
    "fractional dim": lambda b: _spec("x", "uint8", [1.5], tail=b"\0"),
    "dtype a list": lambda b: _spec("x", ["uint8"], [1], tail=b"\0"),
    "dims overflow int64": lambda b: _spec("x", "uint8", [2**32, 2**32]),
    "dims wrap negative": lambda b: _spec("x", "uint8", [2**62, 4], tail=b"\0" * 8),
    "empty but huge dim": lambda b: _spec("x", "uint8", [0, 2**64]),
    "deeply nested JSON": lambda b: _with_header(b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("mangle", MANGLERS.values(), ids=MANGLERS.keys())
def test_malformed_messages_raise_wire_error(mangle):
    buf = bytes(mangle(_valid()))
    with pytest.raises(WireError):
        decode(buf)


def test_wire_error_is_a_value_error():
    assert issubclass(WireError, ValueError)


def _only_wire_error(data: bytes) -> None:
    try:
        decode(data)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_wire_error(data):
    _only_wire_error(data)
    _only_wire_error(MAGIC + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 255))
def test_single_byte_corruption_only_raises_wire_error(pos, value):
    buf = _valid()
    buf[pos % len(buf)] = value
    _only_wire_error(bytes(buf))


@settings(max_examples=100, deadline=None)
@given(json_value, st.binary(max_size=64))
def test_random_json_headers_only_raise_wire_error(header, tail):
    _only_wire_error(_with_header(json.dumps(header).encode(), tail))


spec_part = st.one_of(json_value, st.sampled_from(["float32", "uint8", "bool", "x"]),
                      st.lists(st.integers(-3, 2**65), max_size=3))


@settings(max_examples=120, deadline=None)
@given(st.lists(st.lists(spec_part, min_size=0, max_size=4), max_size=3), st.binary(max_size=64))
def test_random_tensor_specs_only_raise_wire_error(specs, tail):
    _only_wire_error(_with_header({"k": "k", "s": 0, "m": {}, "t": specs}, tail))
