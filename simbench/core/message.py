"""The one message type and its one binary wire encoding, shared by both runtimes.

Layout of an encoded message (all integers little-endian)::

    b"SBM1" | u32 header_len | header (UTF-8 JSON) | tensor bytes, back to back

The header is ``{"k": kind, "s": src, "m": meta, "t": [[name, dtype, shape], ...]}``.
Tensor bytes follow in the order of ``"t"``; each tensor's size is implied by its dtype
and shape. ``meta`` holds JSON scalars, lists and dicts (round numbers, versions, epochs).
Nothing is pickled: a malformed buffer raises :class:`WireError` and cannot run code.

:func:`encode` writes the bytes once, into a torch-owned buffer, and returns a
``memoryview`` of it (what the network carries, counts and sends). :func:`decode` given
that buffer as ``owner`` makes the tensors copy-on-write views of it: no bytes move until
someone writes to one, and then only that one gets its own copy. The simulator decodes
this way, so a message costs one copy of its tensors end to end (the encode) instead of
two; bytes from a socket are copied out once, as before. (The buffer starts a few bytes
into its allocation, so that the first tensor's bytes are 8-byte aligned in memory and can
be viewed as any dtype; the bytes on the wire are the same either way.)

The destination is not part of the message: the transport knows it, and leaving it out
lets one encoding be sent to many neighbours (``Message.encode`` caches it).
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

MAGIC = b"SBM1"
_PREFIX = struct.Struct("<4sI")
_ALIGN = 8
"""The encoder puts the first tensor's bytes at a memory address that is a multiple of
this (the largest item size), so that they can be viewed as their dtype without a copy."""
cow_clone = getattr(torch, "_lazy_clone", None) or torch.Tensor.clone
"""A copy-on-write clone (no bytes move until one side writes), or a plain clone where
this torch lacks it: receivers of one encoding share its decoded tensors safely."""

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_ITEMSIZE = {v: torch.empty((), dtype=v).element_size() for v in _DTYPES.values()}


Wire = bytes | bytearray | memoryview
"""Encoded message bytes as the runtimes carry them (:func:`encode` makes a memoryview)."""


class WireError(ValueError):
    """A buffer that is not a well-formed simbench message."""


@dataclass
class Message:
    """A typed message: a ``kind``, JSON ``meta`` data and named tensors.

    ``src`` is filled in by the runtime on send. Treat a message as immutable once sent:
    its encoding is cached and may be delivered to several nodes.
    """

    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    src: int = -1
    _wire: Wire | None = field(default=None, repr=False, compare=False)
    _buffer: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        """``msg["round"]`` reads ``meta``; tensors are in ``msg.tensors``."""
        return self.meta[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(key, default)

    def encode(self, src: int) -> Wire:
        """The wire bytes of this message sent by ``src`` (computed once per source)."""
        if self._wire is None or self.src != src:
            self.src = src
            self._buffer = encode_buffer(self.kind, src, self.meta, self.tensors)
            self._wire = memoryview(self._buffer.numpy())
        return self._wire

    @property
    def buffer(self) -> torch.Tensor | None:
        """The torch uint8 tensor holding exactly the bytes of the encoding, when this
        process made them (None before encoding, or for bytes that came from a socket);
        :func:`decode` takes it as ``owner`` to view tensors instead of copying them."""
        return self._buffer

    def to(self, device: torch.device | None) -> "Message":
        """This message with its tensors on ``device`` (itself when None or already there)."""
        if device is None or all(t.device == device for t in self.tensors.values()):
            return self
        return Message(self.kind, self.meta, {k: t.to(device) for k, t in self.tensors.items()}, self.src)

    @property
    def nbytes(self) -> int:
        """Encoded size; only meaningful after the message was sent (encoded)."""
        if self._wire is None:
            raise RuntimeError("message has not been encoded yet")
        return len(self._wire)


def _json_default(obj: Any) -> Any:
    # (json writes tuples itself, as lists; it asks here only for what it cannot write)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()  # a Python scalar, or nested lists (a 0-d array is a scalar too)
    raise TypeError(f"meta value {obj!r} of type {type(obj).__name__} is not JSON-encodable")


def encode(kind: str, src: int, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> memoryview:
    """Encode a message: a ``memoryview`` of the bytes :func:`encode_buffer` wrote (treat
    it as read-only; ``bytes(...)`` of it gives the same encoding as a ``bytes``)."""
    return memoryview(encode_buffer(kind, src, meta, tensors).numpy())


def encode_buffer(kind: str, src: int, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Encode a message into a new torch uint8 tensor (one copy of the tensor data; the
    buffer is not zero-filled first)."""
    specs, parts = [], []
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        dtype = _NAMES.get(t.dtype)
        if dtype is None:
            raise WireError(f"tensor {name!r} has unsupported dtype {t.dtype}; allowed: {', '.join(_DTYPES)}")
        specs.append([name, dtype, list(t.shape)])
        parts.append(t)
    header = json.dumps(
        {"k": kind, "s": int(src), "m": dict(meta), "t": specs},
        separators=(",", ":"), default=_json_default,
    ).encode()
    start = _PREFIX.size + len(header)
    skew = -start % _ALIGN  # allocations are 64-byte aligned: skip `skew` so the first tensor is 8-byte aligned
    sizes = [t.numel() * _ITEMSIZE[t.dtype] for t in parts]
    buf = torch.empty(skew + start + sum(sizes), dtype=torch.uint8)[skew:]
    buf[:start].copy_(torch.frombuffer(bytearray(_PREFIX.pack(MAGIC, len(header)) + header), dtype=torch.uint8))
    pos = start
    for t, nbytes in zip(parts, sizes):
        if nbytes:
            dst = buf[pos:pos + nbytes]
            if (skew + pos) % _ITEMSIZE[t.dtype] == 0:
                dst.view(t.dtype).view(t.shape).copy_(t)  # strided or not: the one copy
            else:  # a tensor after an odd-sized one: bytes need not be aligned to copy them
                dst.copy_(t.contiguous().reshape(-1).view(torch.uint8))
        pos += nbytes
    return buf


def parse_header(buf: Wire) -> tuple[str, int, dict, list, int]:
    """Validate the prefix and header: ``(kind, src, meta, tensor specs, header end)``."""
    view = memoryview(buf)
    if len(view) < _PREFIX.size:
        raise WireError(f"message too short ({len(view)} bytes)")
    magic, hlen = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    end = _PREFIX.size + hlen
    if end > len(view):
        raise WireError(f"header length {hlen} runs past the end of a {len(view)}-byte message")
    try:
        header = json.loads(bytes(view[_PREFIX.size:end]))
        kind, src, meta, specs = header["k"], header["s"], header["m"], header["t"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # deeply nested JSON recurses
        raise WireError(f"unreadable header: {exc}") from None
    if not isinstance(kind, str) or not isinstance(src, int) or not isinstance(meta, dict) or not isinstance(specs, list):
        raise WireError("header fields have the wrong types")
    return kind, src, meta, specs, end


def _bytes_at(view: memoryview, offset: int, count: int) -> torch.Tensor:
    """A uint8 tensor over ``count`` bytes of ``view`` (no copy; only ever read)."""
    if not view.readonly:
        return torch.frombuffer(view, dtype=torch.uint8, count=count, offset=offset)
    with warnings.catch_warnings():  # torch warns that a read-only buffer is not writable; we only read it
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(view, dtype=torch.uint8, count=count, offset=offset)


def decode(buf: Wire, header: tuple | None = None,
           owner: torch.Tensor | None = None) -> Message:
    """Decode wire bytes into a :class:`Message` whose tensors are its own: writing to
    one never changes ``buf`` or another decoding.

    ``header`` may pass an earlier :func:`parse_header` of the same bytes (the simulator
    delivers one encoding to several neighbours and parses its header once). ``owner``
    may pass the torch uint8 tensor that holds exactly these bytes (:attr:`Message.buffer`):
    each (aligned) tensor is then a copy-on-write view of it instead of a copy.
    """
    view = memoryview(buf)
    if owner is not None and (owner.dtype != torch.uint8 or owner.dim() != 1 or owner.numel() != len(view)):
        raise ValueError("owner must be the 1-D uint8 tensor holding exactly the message's bytes")
    kind, src, meta, specs, end = header if header is not None else parse_header(view)
    tensors: dict[str, torch.Tensor] = {}
    pos = end
    for spec in specs:
        try:
            name, dtype_name, shape = spec
            dtype = _DTYPES[dtype_name]
            if not isinstance(name, str) or not isinstance(shape, list) or any(type(s) is not int for s in shape):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise WireError(f"bad tensor spec {spec!r}") from None
        if any(s < 0 for s in shape):
            raise WireError(f"negative dimension in tensor {name!r}")
        numel = math.prod(shape)  # Python ints: np.prod would overflow silently
        nbytes = numel * _ITEMSIZE[dtype]
        if pos + nbytes > len(view):
            raise WireError(f"tensor {name!r} runs past the end of the message")
        if owner is not None and nbytes and (owner.storage_offset() + pos) % _ITEMSIZE[dtype] == 0:
            tensors[name] = cow_clone(owner[pos:pos + nbytes].view(dtype).view(shape))  # no copy
            pos += nbytes
            continue
        try:
            out = torch.empty(shape, dtype=dtype)
        except (RuntimeError, TypeError, ValueError, OverflowError):  # e.g. an empty tensor with a 2**64 dimension
            raise WireError(f"tensor {name!r} has an impossible shape {shape}") from None
        if nbytes:
            out.view(-1).view(torch.uint8).copy_(_bytes_at(view, pos, nbytes))  # the one copy
        tensors[name] = out
        pos += nbytes
    if pos != len(view):
        raise WireError(f"{len(view) - pos} trailing bytes after the last tensor")
    wire = buf if isinstance(buf, (bytes, bytearray)) or owner is not None else bytes(buf)
    return Message(kind=kind, meta=dict(meta), tensors=tensors, src=src, _wire=wire, _buffer=owner)
