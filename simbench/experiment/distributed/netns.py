"""Linux network namespaces as stand-in hosts, for the multi-host test and the benchmark.

:class:`Hosts` builds N namespaces, each with one interface ``eth0`` at a private
address ``10.213.<subnet>.<k+1>/24``, joined by a bridge that lives in its own namespace
(the host's own network is never touched). It can shape each namespace's egress with
``tc``: ``netem`` delay where the kernel has it, ``tbf`` rate limits. Everything is
deleted on :meth:`Hosts.close` (also used as a context manager), including after errors.
Needs root and iproute2; :func:`unavailable` says why not when it cannot work.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable() -> str | None:
    """Why namespaces cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"sbprobe{os.getpid()}"
    res = _ip("netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"cannot create network namespaces: {res.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def has_netem() -> bool:
    """Whether the kernel offers the netem qdisc (many minimal kernels do not)."""
    probe = f"sbnetem{os.getpid()}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return False
    try:
        _ip("-n", probe, "link", "set", "lo", "up", check=False)
        res = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                              "delay", "1ms"], capture_output=True, text=True, timeout=20)
        return res.returncode == 0
    finally:
        _ip("netns", "del", probe, check=False)


class Hosts:
    """``n`` namespaces on one bridge; ``address(k)`` is host k's IP, ``exec(k)`` its command prefix."""

    def __init__(self, n: int, subnet: int = 77, tag: str | None = None) -> None:
        self.n = n
        self.tag = tag or f"sb{os.getpid() % 100000}"
        self.subnet = subnet
        self.names = [f"{self.tag}h{k}" for k in range(n)]
        self.bridge = f"{self.tag}br"
        self.created: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def address(self, k: int) -> str:
        return f"10.213.{self.subnet}.{k + 1}"

    def exec(self, k: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[k]]

    def _build(self) -> None:
        _ip("netns", "add", self.bridge)
        self.created.append(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for k, ns in enumerate(self.names):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # both ends are created inside their namespaces: nothing appears in the host's own
            _ip("-n", self.bridge, "link", "add", f"p{k}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge, "link", "set", f"p{k}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(k)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def tc(self, k: int, *qdisc: str) -> None:
        """Replace host k's egress qdisc on eth0, e.g. ``tc(0, "netem", "delay", "20ms")``."""
        subprocess.run([*self.exec(k), "tc", "qdisc", "replace", "dev", "eth0", "root", *qdisc],
                       capture_output=True, text=True, check=True, timeout=20)

    def delay(self, seconds: float) -> None:
        for k in range(self.n):
            self.tc(k, "netem", "delay", f"{seconds * 1000:g}ms")

    def rate(self, bytes_per_s: float, burst: int = 32 * 1024) -> None:
        """Token-bucket limit of every host's egress (the link bandwidth)."""
        bits = int(bytes_per_s * 8)
        for k in range(self.n):
            self.tc(k, "tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", "2s")

    def hosts_file(self, path: Path, port: int = 29500) -> Path:
        lines = ["nodes:"] + [f"  {k}: {self.address(k)}:{port}" for k in range(self.n)]
        lines.append(f"store: {self.address(0)}:{port + 1}")
        Path(path).write_text("\n".join(lines) + "\n")
        return Path(path)

    def close(self) -> None:
        for ns in reversed(self.created):
            # processes left in our namespaces are ours (started by the test): stop them by pid
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", ns, check=False)
        self.created.clear()

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
