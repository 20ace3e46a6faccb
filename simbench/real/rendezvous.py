"""How the node processes of a real run find each other and agree on a start instant.

Two ways in, one meeting point:

* a hosts file (``simbench node CONFIG --node-id K --hosts hosts.yaml``) fixes every
  node's ``host:port``; node 0 hosts the meeting point at ``store:`` (default: node 0's
  host, its port + 1);
* torchrun / SLURM environment variables (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
  ``WORLD_SIZE``; ``SLURM_PROCID``/``SLURM_NTASKS`` stand in for the last two): every
  node binds a free port and publishes its address. Under torchrun the agent already
  serves the store (``TORCHELASTIC_USE_AGENT_STORE=True``) and ranks connect to it;
  otherwise rank 0 serves it, as ``torch.distributed``'s ``env://`` does.

The meeting point is a ``torch.distributed.TCPStore``. Keys live under
``simbench/<run_id>/<attempt>/``. The barrier: every node adds one to ``ready`` once its
inbound socket is bound; node 0 waits for all, then publishes ``start`` = its wall clock
+ a short margin; every node's ``time_s`` counts from that instant.

No call here blocks inside the store's C++ code for long: reaching the store and waiting
for a key are Python loops of short probes and sleeps, so SIGINT/SIGTERM stop a node that
is still waiting for its peers at once (the store's own blocking calls handle a signal
only when they return, up to the rendezvous timeout later).
"""

from __future__ import annotations

import datetime
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


from .transport import Address


POLL_S = 0.05  # between probes of the store while waiting


class RendezvousError(ValueError):
    """A hosts file or environment that cannot be used (one line naming the field)."""


@dataclass(frozen=True)
class Hosts:
    """A parsed hosts file: every node's address, and the meeting point's."""

    nodes: dict[int, Address]
    store: Address


def load_hosts(path: str | Path) -> Hosts:
    """Read a hosts file; errors name the file and the entry.

    Format (YAML)::

        store: 10.0.0.1:29400        # optional
        nodes:
          0: 10.0.0.1:29500
          1: 10.0.0.2:29500
    """
    from ..core.schema import ConfigError
    from ..core.yamlio import load_yaml_file

    path = Path(path)
    try:
        data = load_yaml_file(path, "--hosts")
    except ConfigError as exc:
        raise RendezvousError(str(exc)) from None
    if not isinstance(data, Mapping) or "nodes" not in data:
        raise RendezvousError(f"{path}: expected a mapping with 'nodes: {{0: HOST:PORT, ...}}' (and optional 'store')")
    unknown = set(data) - {"nodes", "store"}
    if unknown:
        raise RendezvousError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: nodes, store")
    raw = data["nodes"]
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    if not isinstance(raw, Mapping) or not raw:
        raise RendezvousError(f"{path}: nodes: expected a mapping of node id to HOST:PORT")
    nodes = {}
    for key, value in raw.items():
        if not isinstance(key, int) or key < 0:
            raise RendezvousError(f"{path}: nodes: node ids must be integers 0..N-1, got {key!r}")
        try:
            nodes[key] = Address.parse(value, f"{path}: nodes.{key}")
        except ValueError as exc:
            raise RendezvousError(str(exc)) from None
    missing = [i for i in range(len(nodes)) if i not in nodes]
    if missing:
        raise RendezvousError(f"{path}: nodes: node {missing[0]} is missing; ids must be 0..{len(nodes) - 1}")
    seen: dict[Address, int] = {}
    for i, addr in nodes.items():
        if addr in seen:
            raise RendezvousError(f"{path}: nodes.{i}: {addr} is already node {seen[addr]}'s address")
        seen[addr] = i
    if data.get("store") is not None:
        try:
            store = Address.parse(data["store"], f"{path}: store")
        except ValueError as exc:
            raise RendezvousError(str(exc)) from None
    else:
        store = Address(nodes[0].host, nodes[0].port + 1)
    if store in seen:  # two listeners on one port: caught here, before any process starts
        given = "store" if data.get("store") is not None else f"store (default: node 0's port + 1 = {store})"
        raise RendezvousError(f"{path}: {given} is node {seen[store]}'s address; give `store: HOST:PORT` on a free port")
    return Hosts(nodes=dict(sorted(nodes.items())), store=store)


@dataclass(frozen=True)
class EnvInfo:
    """What torchrun / SLURM tell a process about its place in the job."""

    master: Address
    rank: int
    world_size: int
    agent_store: bool
    attempt: int = 0


def from_env(environ: Mapping[str, str]) -> EnvInfo:
    """Read MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (or SLURM_PROCID, SLURM_NTASKS)."""
    rank = environ.get("RANK", environ.get("SLURM_PROCID"))
    world = environ.get("WORLD_SIZE", environ.get("SLURM_NTASKS"))
    need = {"MASTER_ADDR": environ.get("MASTER_ADDR"), "MASTER_PORT": environ.get("MASTER_PORT"),
            "RANK": rank, "WORLD_SIZE": world}
    missing = [k for k, v in need.items() if not v]
    if missing:
        raise RendezvousError(
            f"node: no --hosts file and {', '.join(missing)} not set; give --hosts FILE or run under "
            "torchrun/srun (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)")
    for name, value in (("MASTER_PORT", need["MASTER_PORT"]), ("RANK", rank), ("WORLD_SIZE", world)):
        if not str(value).isdigit():
            raise RendezvousError(f"{name}: expected a non-negative integer, got {value!r}")
    rank_i, world_i = int(rank), int(world)
    if world_i < 1 or rank_i >= world_i:
        raise RendezvousError(f"RANK: must be in 0..WORLD_SIZE-1 = 0..{world_i - 1}, got {rank_i}")
    return EnvInfo(master=Address(need["MASTER_ADDR"], int(need["MASTER_PORT"])), rank=rank_i, world_size=world_i,
                   agent_store=environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
                   attempt=int(environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0))


def reachable_ip(peer: Address) -> str:
    """This machine's address on the route to ``peer`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(peer.host), peer.port or 9))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


class Rendezvous:
    """A TCPStore meeting point for ``world_size`` nodes (node ``rank`` is this one)."""

    def __init__(self, store: Address, rank: int, world_size: int, *, serve: bool, run_id: str,
                 attempt: int = 0, timeout: float = 120.0) -> None:
        from torch.distributed import TCPStore

        self.rank, self.world_size, self.timeout = rank, world_size, timeout
        self.prefix = f"simbench/{run_id}/{attempt}/"
        td = datetime.timedelta(seconds=timeout)
        if not serve:
            _await_listener(store, timeout)
        try:
            self.store = TCPStore(store.host, store.port, world_size if serve else None, serve, timeout=td,
                                  wait_for_workers=False)
        except Exception as exc:  # noqa: BLE001 - torch raises several types; one line for the user
            role = "serve" if serve else "reach"
            raise RendezvousError(f"rendezvous: cannot {role} the store at {store}: {str(exc).splitlines()[0]}") from None

    @property
    def port(self) -> int:
        return self.store.port

    def nonce(self) -> str:
        """This launch's random nonce (node 0 draws it; the others read it): it keys the
        messages of this launch and names its run directory."""
        key = self.prefix + "nonce"
        self.store.add(self.prefix + "joined", 1)  # seen at the meeting point (a launcher or a test may watch)
        if self.rank == 0:
            import secrets
            self.store.compare_set(key, "", secrets.token_hex(8))  # the first to set it wins
        self._wait("nonce", "node 0 to draw the launch nonce")
        return self.store.get(key).decode()

    def publish(self, addr: Address) -> None:
        self.store.set(self.prefix + f"addr/{self.rank}", str(addr))

    def address(self, node: int) -> Address:
        """A node's published address (waits for it)."""
        self._wait(f"addr/{node}", f"node {node} to publish its address")
        return Address.parse(self.store.get(self.prefix + f"addr/{node}").decode(), f"node {node}'s address")

    def start_instant(self, margin: float = 0.2) -> float:
        """Barrier: every node is bound and connected; returns the common start (time.time())."""
        self.store.add(self.prefix + "ready", 1)
        if self.rank == 0:
            deadline = time.monotonic() + self.timeout
            while (ready := self.store.add(self.prefix + "ready", 0)) < self.world_size:
                if time.monotonic() > deadline:
                    raise RendezvousError(f"rendezvous: only {ready} of {self.world_size} nodes became ready "
                                          f"within {self.timeout:.0f} s")
                time.sleep(0.02)
            self.store.set(self.prefix + "start", repr(time.time() + margin))
        self._wait("start", "node 0 to announce the start")
        return float(self.store.get(self.prefix + "start").decode())

    def _wait(self, key: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.store.check([self.prefix + key]):  # a poll, so signals are handled between probes
            if time.monotonic() > deadline:
                raise RendezvousError(f"rendezvous: timed out after {self.timeout:.0f} s waiting for {what}")
            time.sleep(POLL_S)


def _await_listener(store: Address, timeout: float) -> None:
    """Wait until the store's port accepts connections (TCPStore's own connect would block)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((store.host, store.port), timeout=min(1.0, timeout)):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RendezvousError(f"rendezvous: cannot reach the store at {store} within {timeout:.0f} s: "
                                      f"{exc.strerror or exc}") from None
            time.sleep(POLL_S)
