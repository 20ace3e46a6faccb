"""Parse human-friendly quantities from configs: durations, bandwidths and sizes.

Every parser accepts a plain number (already in SI base units: seconds, bytes/s,
bytes) or a string with a unit, and raises ``ValueError`` with a one-line message
naming the allowed units when the string cannot be read.
"""

from __future__ import annotations

import math
import re

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
    "min": 60.0, "m": 60.0, "h": 3600.0,
}
# bandwidth units -> bytes per second
_BANDWIDTH_UNITS = {
    "bit/s": 1 / 8, "bps": 1 / 8, "kbit/s": 1e3 / 8, "kbps": 1e3 / 8,
    "mbit/s": 1e6 / 8, "mbps": 1e6 / 8, "gbit/s": 1e9 / 8, "gbps": 1e9 / 8,
    "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9,
    "kib/s": 1024.0, "mib/s": 1024.0**2, "gib/s": 1024.0**3,
}
_SIZE_UNITS = {
    "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9,
    "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3,
}


def _parse(value, units: dict[str, float], what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a {what}, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a {what}, got {value!r}")
    text = value.strip()
    if text.lower() in ("inf", "infinite", "unlimited"):
        return math.inf
    m = re.fullmatch(_NUM + r"\s*([A-Za-zµ/]*)", text)
    if not m:
        raise ValueError(f"cannot read {value!r} as a {what}; use a number with one of: {', '.join(units)}")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "":
        return number
    key = unit.lower()
    if key not in units:
        raise ValueError(f"unknown unit {unit!r} in {value!r} for a {what}; allowed: {', '.join(units)}")
    return number * units[key]


def parse_duration(value) -> float:
    """Seconds from ``0.005``, ``"5ms"``, ``"2 s"``, ``"1min"``: finite and not negative."""
    seconds = _parse(value, _DURATION_UNITS, "duration")
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{value!r} is not allowed; a duration is a finite number of seconds >= 0")
    return seconds


# ``<prefix><b|B>/s`` and ``<prefix><b|B>ps``, where the case of the b says bits or bytes
_CASED_RATE = re.compile(_NUM + r"\s*(?:([kKmMgG])(i?))?([bB])(?:/s|ps)")
_SI_PREFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}
_BINARY_PREFIXES = {"k": 1024.0, "m": 1024.0**2, "g": 1024.0**3}


def parse_bandwidth(value) -> float:
    """Bytes per second from ``1.25e8``, ``"1Gbit/s"``, ``"100Mbps"``, ``"10MB/s"``.

    Lower-case ``b`` and upper-case ``B`` are told apart the way network people write
    them: ``Mb/s`` and ``Mbps`` are read as megaBITS, ``MB/s`` and ``MBps`` as megaBYTES,
    ``Kib/s`` as kibiBITS and ``KiB/s`` as kibiBYTES; ``bit`` spelled out is always bits.
    """
    if isinstance(value, str):
        m = _CASED_RATE.fullmatch(value.strip())
        if m:
            number, prefix, binary, b = m.groups()
            scale = 1.0 if prefix is None else (_BINARY_PREFIXES if binary else _SI_PREFIXES)[prefix.lower()]
            return float(number) * scale / (8 if b == "b" else 1)
    return _parse(value, _BANDWIDTH_UNITS, "bandwidth")


def parse_size(value) -> float:
    """Bytes from ``1e6``, ``"1MB"``, ``"4 MiB"``."""
    return _parse(value, _SIZE_UNITS, "size")


SECOND_TICKS = 1_000_000_000  # the simulator's clock resolution: one tick is a nanosecond


def to_ticks(seconds: float) -> int:
    """Simulated seconds to integer kernel ticks (rounded up so waits are never short)."""
    if seconds == math.inf:
        raise ValueError("an infinite duration cannot be scheduled")
    return max(0, math.ceil(round(seconds * SECOND_TICKS, 3)))
