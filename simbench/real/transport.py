"""ZeroMQ transport for real runs: one inbound socket per node, authenticated frames.

Wire layout of one message on a link ``src -> dst`` (a two-part ZeroMQ message, so the
encoded tensors are never copied to prepend the header)::

    [ seq: u64 little-endian | tag: 32 bytes ][ encoded message: simbench.core.message.encode(...) ]
    tag = HMAC-SHA256(run_key, dst as u32 LE || seq as u64 LE || encoded message)

``seq`` counts the messages of the link from 0. ``run_key = HMAC-SHA256(cluster_key,
"simbench-run/" + run_id + "/" + nonce)`` with a random nonce per launch: a message made
for another run, another launch of the same config, or another destination fails
authentication, and a message of this run played again (its seq is not above the last one
received from its sender) is rejected as a replay. Nothing is pickled.

Receiving never raises: a message with the wrong number of frames, a header of the wrong
size, a body over ``max_size``, a bad tag, a malformed encoding, a sender that is not a
neighbour or a replayed sequence number is dropped and reported to ``on_reject(reason)``
(reasons in :data:`REJECT_REASONS`). Frames over twice ``max_size`` make ZeroMQ close that
connection before the frame is held in memory (the peer reconnects).

Sockets: a PULL bound on this node's ``host:port`` reads everything sent to it; one PUSH
per neighbour connects to the neighbour's PULL and reconnects on its own. A PUSH queues
messages while its peer is not (yet) connected, up to ``SEND_HWM`` messages; past that
the peer counts as unreachable and :meth:`Transport.send` returns False (the runtime
logs the drop) instead of blocking the node. One TCP connection per link keeps each
link's messages in send order.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Callable

import zmq
import zmq.asyncio

from ..core.message import Message, Wire, WireError, decode

TAG_SIZE = 32
HEADER_SIZE = 8 + TAG_SIZE
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
SEND_HWM = 256
"""Messages a PUSH socket holds for a peer it cannot reach before sends count as dropped."""
LINGER_MS = 5000
"""How long closing waits to hand queued messages to connected peers (dead ones: not at all)."""
REJECT_REASONS = ("frames", "tag", "oversized", "auth", "malformed", "sender", "replay")
INSECURE_KEY = b"simbench-insecure-loopback-only"
_DST = struct.Struct("<I")
_SEQ = struct.Struct("<Q")


class ClusterKeyError(ValueError):
    """The cluster key is missing or unusable (message names the flag or variable)."""


@dataclass(frozen=True)
class Address:
    """A TCP endpoint ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, where: str = "address") -> "Address":
        """``"10.0.0.1:29500"`` -> Address; one-line ValueError naming ``where``."""
        host, sep, port = str(text).strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{where}: expected HOST:PORT with a port in 0..65535, got {text!r}")
        return cls(host.strip("[]"), int(port))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to them (e.g. localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def load_cluster_key(key_file: str | None, environ: dict | None = None) -> bytes | None:
    """The shared secret from ``--key-file`` or ``$SIMBENCH_CLUSTER_KEY``; None when neither."""
    environ = os.environ if environ is None else environ
    if key_file:
        try:
            key = open(key_file, "rb").read().strip()
        except OSError as exc:
            raise ClusterKeyError(f"--key-file: cannot read {key_file}: {exc.strerror}") from None
        where = f"--key-file {key_file}"
    elif environ.get("SIMBENCH_CLUSTER_KEY"):
        key, where = environ["SIMBENCH_CLUSTER_KEY"].strip().encode(), "SIMBENCH_CLUSTER_KEY"
    else:
        return None
    if len(key) < 16:
        raise ClusterKeyError(f"{where}: the cluster key must be at least 16 bytes, got {len(key)}")
    return key


def run_key(cluster_key: bytes, run_id: str, nonce: str = "") -> bytes:
    """The key every message of run ``run_id``, launch ``nonce``, is tagged with."""
    return hmac.new(cluster_key, b"simbench-run/" + run_id.encode() + b"/" + nonce.encode(), hashlib.sha256).digest()


def tag(key: bytes, dst: int, seq: int, payload: Wire) -> bytes:
    """HMAC-SHA256 over the destination id, the link's sequence number and the encoded message."""
    mac = hmac.new(key, _DST.pack(dst) + _SEQ.pack(seq), hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def header(key: bytes, dst: int, seq: int, payload: Wire) -> bytes:
    """The first frame of a message: its sequence number and tag."""
    return _SEQ.pack(seq) + tag(key, dst, seq, payload)


class Transport:
    """One node's sockets: bind, connect to neighbours, send tagged frames, read frames.

    Life-cycle: ``bind()`` (returns the bound address; port 0 picks a free port), then
    ``connect(peers)`` once neighbours' addresses are known, then ``start(on_message)``
    inside the running event loop; ``close()`` at the end. Sends and receives happen on
    the event loop's thread only.
    """

    def __init__(self, node_id: int, key: bytes, *, max_size: int = DEFAULT_MAX_SIZE,
                 accept_from: set[int] | frozenset[int] = frozenset(),
                 on_reject: Callable[[str], None] = lambda reason: None) -> None:
        self.node_id = node_id
        self.key = key
        self.max_size = int(max_size)
        self.accept_from = frozenset(accept_from)
        self.on_reject = on_reject
        self.ctx = zmq.asyncio.Context()
        self._sync_ctx = zmq.Context.shadow(self.ctx.underlying)
        self._pull: zmq.asyncio.Socket | None = None
        self._push: dict[int, zmq.Socket] = {}
        self._monitors: dict[int, zmq.Socket] = {}
        self._up: dict[int, bool] = {}
        self._seq_out: dict[int, int] = {}
        self._seq_in: dict[int, int] = {}
        self._reader: asyncio.Task | None = None
        self.rejected: dict[str, int] = {r: 0 for r in REJECT_REASONS}
        self.closed = False

    # -- setup ---------------------------------------------------------------------
    def bind(self, address: Address) -> Address:
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, 0)  # the reader drains it into the mailbox at once
        # memory guard: frames far over the limit close the connection before they are buffered
        pull.setsockopt(zmq.MAXMSGSIZE, 2 * self.max_size + TAG_SIZE)
        port = "*" if address.port == 0 else str(address.port)
        try:
            pull.bind(f"tcp://{address.host}:{port}")
        except zmq.ZMQError as exc:
            pull.close(0)
            raise OSError(f"cannot bind node {self.node_id} to {address}: {exc}") from None
        self._pull = pull
        endpoint = pull.getsockopt(zmq.LAST_ENDPOINT).decode()
        return Address(address.host, int(endpoint.rsplit(":", 1)[1]))

    def connect(self, peers: dict[int, Address]) -> None:
        for dst, addr in peers.items():
            push = self._sync_ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, SEND_HWM)
            push.setsockopt(zmq.LINGER, LINGER_MS)
            push.setsockopt(zmq.RECONNECT_IVL, 100)
            push.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            # notice dead peers on silent networks too (a machine that lost power)
            push.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            push.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            # connection events queue up here; read once, at close, to skip lingering on dead peers
            self._monitors[dst] = push.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            push.connect(addr.endpoint)
            self._push[dst] = push

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Start reading frames in the running loop; each good message goes to ``on_message``."""
        self._reader = asyncio.get_running_loop().create_task(self._read(on_message), name=f"node{self.node_id}.reader")

    # -- sending -------------------------------------------------------------------
    def send(self, dst: int, payload: Wire) -> bool:
        """Hand one encoded message to ``dst``'s socket; False if ``dst`` is unreachable."""
        if self.closed:
            return False
        self.check_size(dst, payload)
        push = self._push.get(dst)
        if push is None:
            raise ValueError(f"node {self.node_id} has no link to node {dst} in the topology")
        seq = self._seq_out.get(dst, 0)
        try:
            push.send_multipart([header(self.key, dst, seq, payload), payload], flags=zmq.NOBLOCK,
                                copy=len(payload) < 65536)
        except zmq.Again:
            return False
        self._seq_out[dst] = seq + 1
        return True

    def check_size(self, dst: int, payload: Wire) -> None:
        """Raise WireError for a message over the size limit (a sender's bug: fail loudly)."""
        if len(payload) > self.max_size:
            raise WireError(f"message of {len(payload)} bytes to node {dst} exceeds the size limit of "
                            f"{self.max_size} bytes; raise --max-message-size")

    # -- receiving -----------------------------------------------------------------
    async def _read(self, on_message: Callable[[Message], None]) -> None:
        pull = self._pull
        while True:
            try:
                frames = await pull.recv_multipart(copy=True)
            except (asyncio.CancelledError, zmq.ContextTerminated):
                raise
            except zmq.ZMQError:
                if self.closed:
                    return
                continue
            msg = self.check(frames)
            if msg is not None:
                on_message(msg)

    def check(self, frames: list[bytes]) -> Message | None:
        """Validate one received ZeroMQ message; the decoded Message, or None (rejected)."""
        if len(frames) != 2:
            return self._reject("frames")
        head, payload = frames
        if len(head) != HEADER_SIZE:
            return self._reject("tag")
        if len(payload) > self.max_size:
            return self._reject("oversized")
        seq = _SEQ.unpack_from(head)[0]
        if not hmac.compare_digest(head[8:], tag(self.key, self.node_id, seq, payload)):
            return self._reject("auth")
        try:
            msg = decode(payload)
        except Exception:  # noqa: BLE001 - WireError, or anything odd input provokes: never crash the reader
            return self._reject("malformed")
        if msg.src not in self.accept_from:
            return self._reject("sender")
        if seq < self._seq_in.get(msg.src, 0):
            return self._reject("replay")
        self._seq_in[msg.src] = seq + 1
        return msg

    def _reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        try:
            self.on_reject(reason)
        except Exception:  # noqa: BLE001 - a logging failure must not stop the reader
            pass
        return None

    # -- shutdown ------------------------------------------------------------------
    async def close(self, linger: float = LINGER_MS / 1000) -> None:
        """Stop reading; give queued outbound messages up to ``linger`` s to leave; close."""
        if self.closed:
            return
        self.closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._pull is not None:
            self._pull.close(0)
        ms = int(linger * 1000)
        for dst, push in self._push.items():
            push.close(ms if self.connected(dst) else 0)  # nobody to hand a dead peer's queue to
        # term() blocks until lingering messages are sent (or linger passes): off the loop
        await asyncio.to_thread(self.ctx.term)

    def connected(self, dst: int) -> bool:
        """Whether the link to ``dst`` was up at its last connection event (reads the monitor)."""
        from zmq.utils.monitor import recv_monitor_message

        mon = self._monitors.pop(dst, None)
        if mon is None:
            return self._up.get(dst, False)
        up = False
        while True:
            try:
                event = recv_monitor_message(mon, flags=zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            up = event == zmq.EVENT_CONNECTED
        self._push[dst].disable_monitor()
        mon.close(0)
        self._up[dst] = up
        return up

    def abort(self) -> None:
        """Close everything at once, dropping queued messages (an in-process crash)."""
        self.closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._pull is not None:
            self._pull.close(0)
        for mon in self._monitors.values():
            mon.close(0)
        for push in self._push.values():
            push.close(0)
        self.ctx.term()  # every socket is closed with linger 0: returns at once
