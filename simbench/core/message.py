"""The one message type and its one binary wire encoding, shared by both runtimes.

Layout of an encoded message (all integers little-endian)::

    b"SBM1" | u32 header_len | header (UTF-8 JSON) | tensor bytes, back to back

The header is ``{"k": kind, "s": src, "m": meta, "t": [[name, dtype, shape], ...]}``.
Tensor bytes follow in the order of ``"t"``; each tensor's size is implied by its dtype
and shape. ``meta`` holds JSON scalars, lists and dicts (round numbers, versions, epochs).
Nothing is pickled: a malformed buffer raises :class:`WireError` and cannot run code.

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

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_ITEMSIZE = {v: torch.empty((), dtype=v).element_size() for v in _DTYPES.values()}


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
    _wire: bytes | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        """``msg["round"]`` reads ``meta``; tensors are in ``msg.tensors``."""
        return self.meta[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(key, default)

    def encode(self, src: int) -> bytes:
        """The wire bytes of this message sent by ``src`` (computed once per source)."""
        if self._wire is None or self.src != src:
            self.src = src
            self._wire = encode(self.kind, src, self.meta, self.tensors)
        return self._wire

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
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    raise TypeError(f"meta value {obj!r} of type {type(obj).__name__} is not JSON-encodable")


def encode(kind: str, src: int, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Encode a message into one ``bytes`` object (one copy of the tensor data)."""
    specs, blobs = [], []
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        dtype = _NAMES.get(t.dtype)
        if dtype is None:
            raise WireError(f"tensor {name!r} has unsupported dtype {t.dtype}; allowed: {', '.join(_DTYPES)}")
        specs.append([name, dtype, list(t.shape)])
        blobs.append(t.contiguous().reshape(-1).view(torch.uint8))
    header = json.dumps(
        {"k": kind, "s": int(src), "m": dict(meta), "t": specs},
        separators=(",", ":"), default=_json_default,
    ).encode()
    # one join: a single copy of every tensor, no zero-filled buffer first (about 1.4x
    # faster than filling a bytearray for a 5 MB model)
    return b"".join([_PREFIX.pack(MAGIC, len(header)), header, *(b.numpy().data for b in blobs)])


def parse_header(buf: bytes | bytearray | memoryview) -> tuple[str, int, dict, list, int]:
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


def decode(buf: bytes | bytearray | memoryview, header: tuple | None = None) -> Message:
    """Decode wire bytes into a :class:`Message` whose tensors own fresh memory.

    ``header`` may pass an earlier :func:`parse_header` of the same bytes (the simulator
    delivers one encoding to several neighbours and parses its header once).
    """
    view = memoryview(buf)
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
    wire = buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)
    return Message(kind=kind, meta=dict(meta), tensors=tensors, src=src, _wire=wire)
