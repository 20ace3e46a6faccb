"""Client populations: per-node compute speed, link bandwidth and availability.

A config's ``population`` section gives nodes what real devices differ in: how fast they
compute, how fast their uplink and downlink are, and when they are online. Each of the two
parts (``devices``, ``availability``) comes from exactly one source:

* ``trace``: a file. simbench's own tables (``.csv`` or ``.parquet``, one header line)::

      node,flops_per_s,up_bps,down_bps        # devices: FLOP/s, bits per second
      node,start_s,end_s[,period_s]           # availability: one row per ONLINE session [start, end)

  or FedScale's files (``benchmark/dataset/data/device_info/client_device_capacity`` and
  ``client_behave_trace`` in SymbioticLab/FedScale), read directly, or the same dicts as
  ``.json``. ``format: auto`` picks by extension (csv, parquet: simbench; json or anything
  else: FedScale).
* distributions: ``flops_per_s``, ``uplink``, ``downlink`` (drawn once per node) and
  ``online``, ``offline`` (session and gap lengths, drawn in turn), as in ``network.latency``.
* ``profile``: a named preset of distributions (:data:`DEVICE_PROFILES`,
  :data:`AVAILABILITY_PROFILES`).

Which node takes which trace client (``mapping``): ``index`` gives the k-th member (the data
holders in id order: every peer, or the clients of a server) the k-th client of the file,
modulo its length; ``sample`` draws the clients with the run's seed (without replacement
while the file has enough, then again over a fresh permutation); ``column`` reads the trace's
``node`` column as node ids (nodes it does not name are left as they are).

FedScale's formats and how they are read
----------------------------------------
* Capacity: ``{client: {'computation': ms per sample (forward pass), 'communication':
  kbps}}``. FedScale charges a round ``3 * batch * local_steps * ms / 1000`` s of compute and
  ``2 * model_kbit / kbps`` s of communication, with ``model_kbit = bytes * 8 / 1024``
  (``fedscale/cloud/internal/client_metadata.py``, ``get_completion_time``;
  ``aggregation/aggregator.py``). simbench turns the bandwidth into ``kbps * 1024 / 8``
  bytes/s for both the uplink and the downlink, so a model moves in FedScale's time, and the
  latency into ``flops_per_s = F * 1000 / ms``, F being ``fedscale_flops_per_sample`` or, when
  null, the run's own model's forward FLOPs per sample (a step's FLOPs / (3 x batch)): a
  step then takes FedScale's ``3 * batch * ms / 1000`` s whatever the model, as in FedScale.
* Behaviour (availability): ``{client: {'active': [s], 'inactive': [s], 'finish_time': s,
  ...}}``. Read as the EPFL simulator reads it (sacs-epfl/decentralized-learning-simulator,
  ``dasklearn/simulation/simulation.py``, ``set_fedscale_trace_for_client``): each
  ``active`` time starts a session, each ``inactive`` time ends one, a client whose first
  ``inactive`` precedes its first ``active`` (or whose first ``active`` is 0) starts online,
  and the trace repeats every ``finish_time`` seconds (every ``availability.period`` when set;
  sessions are then cut at the shorter of the two). FedScale's own
  ``ClientMetadata.is_active`` keeps a cursor that advances one session per call, so it can
  answer "offline" after a jump over several sessions; simbench looks the instant up
  instead (no state), so the two can differ where FedScale's cursor lags.
* Mapping: FedScale gives client id k (from 1) the capacity entry keyed ``k % T`` and the
  behaviour entry at position ``k % T``; simbench's ``index`` takes position ``k % T`` (k from
  0) in both files.
* Safety: both files are Python pickles, and unpickling runs code. simbench never calls
  ``pickle.load`` on them: :func:`read_plain_pickle` refuses every reference to a class or
  function (so only dicts, lists, tuples, strings and numbers can come out) and files over
  :data:`MAX_TRACE_BYTES`. ``benchmarks/make_traces.py --fetch-fedscale`` downloads both
  files and checks their sha256 before anything reads them.

What the runtimes do with it
----------------------------
A member's speed is multiplied by its FLOP/s over the config's ``compute`` speed (so with
``compute.step_time`` the trace scales the step time); its uplink and downlink replace the
``network`` values for that node (a server left out of the population keeps them). An offline
spell stops the node like a crash, in every algorithm alike (:mod:`simbench.sim.world`):
messages to it are dropped (``drop_offline``), so are its own unsent ones
(``drop_sender_offline``), a computation in progress returns nothing, and it runs again when
back online, with its state (``rejoin: keep``) or rebuilt as at the start (``fresh``). Peers
notice only through their timeouts; federated servers ask ``rt.online`` (``selection:
online``). In real-network mode the same trace is replayed on the wall clock (a node process
sleeps through its spells) and speeds slow computations as weak workers' are slowed;
bandwidths are not emulated there (shape them with ``tc``).

Availability over time
----------------------
A session is half-open ``[start, end)``: online at ``start``, offline at ``end``. Traces
are replayed up to the run's horizon (``time_limit``, else 24 h): from then on every node is
online, so a run cannot wait forever for a node the trace keeps away. Looking a node up
never changes anything, so every process of a real run answers the same from the same file.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from .scenario import Dist, dist_parser
from .schema import ConfigError, one_line
from .units import parse_bandwidth, parse_duration

MAX_TRACE_BYTES = 256 * 2**20
"""Largest trace file read (FedScale's capacity file is 39 MB, its behaviour file 26 MB)."""
FORMATS = ("auto", "simbench", "fedscale")
MAPPINGS = ("index", "sample", "column")
SELECTIONS = ("online", "any")
REJOINS = ("keep", "fresh")
DEVICE_COLUMNS = ("node", "flops_per_s", "up_bps", "down_bps")
AVAILABILITY_COLUMNS = ("node", "start_s", "end_s", "period_s")
FEDSCALE_KBPS = 1024 / 8
"""Bytes per second of one FedScale kbps (FedScale sizes models in bytes * 8 / 1024 kbit)."""


def _bandwidth_dist(spec: object) -> Dist:
    return dist_parser(parse_bandwidth)(spec)


@dataclass(frozen=True)
class DevicesSpec:
    """Per-node compute speed and link bandwidth: a ``trace``, distributions or a ``profile``."""

    trace: Optional[str] = None
    """A device table (``node, flops_per_s, up_bps, down_bps``) or FedScale's capacity file."""
    format: str = field(default="auto", metadata={"choices": FORMATS})
    """``auto``: by extension (.csv/.parquet: simbench; otherwise FedScale's dict)."""
    profile: Optional[str] = None
    """A preset of distributions: see ``DEVICE_PROFILES`` (``mobile``)."""
    flops_per_s: Optional[Dist] = field(default=None, metadata={"parse": dist_parser(float)})
    """Compute speed, FLOP/s (a number or a distribution mapping)."""
    uplink: Optional[Dist] = field(default=None, metadata={"parse": _bandwidth_dist})
    """Upload capacity (``6Mbit/s`` or a distribution of bandwidths)."""
    downlink: Optional[Dist] = field(default=None, metadata={"parse": _bandwidth_dist})
    """Download capacity (as ``uplink``)."""
    fedscale_flops_per_sample: Optional[float] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """FedScale traces: forward FLOPs per sample their latencies stand for; null: the run's model."""


@dataclass(frozen=True)
class AvailabilitySpec:
    """When nodes are online: a ``trace``, session distributions or a ``profile``."""

    trace: Optional[str] = None
    """A session table (``node, start_s, end_s[, period_s]``) or FedScale's behaviour file."""
    format: str = field(default="auto", metadata={"choices": FORMATS})
    """``auto``: by extension (.csv/.parquet: simbench; otherwise FedScale's dict)."""
    profile: Optional[str] = None
    """A preset of session distributions: see ``AVAILABILITY_PROFILES``."""
    online: Optional[Dist] = field(default=None, metadata={"parse": dist_parser(parse_duration)})
    """Length of an online session (a duration or a distribution)."""
    offline: Optional[Dist] = field(default=None, metadata={"parse": dist_parser(parse_duration)})
    """Length of an offline gap (a duration or a distribution)."""
    start_online: Optional[float] = field(default=None, metadata={"check": (lambda x: 0 <= x <= 1, "must be in [0, 1]")})
    """With distributions: the chance a node starts online; null: mean online / (mean online + mean offline)."""
    period: Optional[float] = field(default=None, metadata={"parse": parse_duration,
                                                            "check": (lambda x: x > 0, "must be > 0")})
    """Replay every trace client's sessions with this period (a ``period_s`` column or FedScale's
    ``finish_time`` sets it per client); null: no repeat."""


@dataclass(frozen=True)
class PopulationSpec:
    """Devices and availability of the nodes (see :mod:`simbench.core.population`)."""

    devices: Optional[DevicesSpec] = None
    """Compute speed and uplink/downlink bandwidth per node."""
    availability: Optional[AvailabilitySpec] = None
    """Online sessions per node."""
    mapping: str = field(default="index", metadata={"choices": MAPPINGS})
    """Trace client of each node: ``index`` (k-th member, k-th client), ``sample`` (drawn with the seed), ``column`` (the ``node`` column)."""
    selection: str = field(default="online", metadata={"choices": SELECTIONS})
    """Federated servers sample among the clients online now (``online``) or among all (``any``)."""
    rejoin: str = field(default="keep", metadata={"choices": REJOINS})
    """A node back online resumes with the state it had (``keep``) or as built at the start (``fresh``)."""


DEVICE_PROFILES: dict[str, dict[str, Dist]] = {
    # Calibrated to the ranges reported for FedScale's capacity trace (AI-Benchmark latencies
    # spanning about 15-200 ms per sample: a log-standard deviation of ln(200/15)/sqrt(12) = 0.75
    # around the phone profile's 4 GFLOP/s; MobiPerf WiFi bandwidth with a median near
    # 6.1 Mbit/s, 26% under 3 Mbit/s: sigma 1.1). Synthetic, not FedScale's data.
    "mobile": {"flops_per_s": Dist("lognormal", mean=4e9, sigma=0.75),
               "uplink": Dist("lognormal", mean=6.1e6 / 8, sigma=1.1),
               "downlink": Dist("lognormal", mean=6.1e6 / 8, sigma=1.1)},
}
"""Named device distributions (``devices: {profile: NAME}``)."""

AVAILABILITY_PROFILES: dict[str, dict[str, Dist]] = {
    # Time-compressed churn for runs of minutes: sessions of 2 min on average, gaps of 1 min
    # (two thirds online). Real charging sessions (FedScale's behaviour trace) last hours.
    "churn": {"online": Dist("exponential", mean=120.0), "offline": Dist("exponential", mean=60.0)},
}
"""Named session distributions (``availability: {profile: NAME}``)."""


def check_spec(spec: PopulationSpec) -> None:
    """ConfigError naming the field when a part has no source or more than one."""
    if spec.devices is None and spec.availability is None:
        raise ConfigError("population: give devices, availability or both")
    if spec.devices is not None:
        d = spec.devices
        dists = [k for k in ("flops_per_s", "uplink", "downlink") if getattr(d, k) is not None]
        _one_source("population.devices", d.trace, d.profile, dists, DEVICE_PROFILES)
    if spec.availability is not None:
        a = spec.availability
        dists = [k for k in ("online", "offline") if getattr(a, k) is not None]
        _one_source("population.availability", a.trace, a.profile, dists, AVAILABILITY_PROFILES)
        if dists and len(dists) != 2:
            raise ConfigError("population.availability: distributions need both online and offline")
        if dists and (a.online.expected <= 0 or a.offline.expected <= 0):
            raise ConfigError("population.availability: online and offline must have a positive mean")
        if a.start_online is not None and not dists and a.profile is None:
            raise ConfigError("population.availability.start_online: only used with distributions or a profile")
    if spec.mapping == "column" and not _has_trace(spec):
        raise ConfigError("population.mapping: column needs a trace file with a node column")


def _has_trace(spec: PopulationSpec) -> bool:
    return any(p is not None and p.trace is not None for p in (spec.devices, spec.availability))


def _one_source(where: str, trace, profile, dists: list[str], profiles: dict) -> None:
    given = [name for name, present in (("trace", trace is not None), ("profile", profile is not None),
                                        (", ".join(dists), bool(dists))) if present]
    if not given:
        raise ConfigError(f"{where}: needs one source: trace, profile or distributions")
    if len(given) > 1:
        raise ConfigError(f"{where}: give one source, not {' and '.join(given)}")
    if profile is not None and profile not in profiles:
        raise ConfigError(f"{where}.profile: {profile!r} is not allowed; allowed: {', '.join(profiles)}")


# -- reading files --------------------------------------------------------------------------------
class _PlainUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None:
    every opcode that would import a class or call a function goes through ``find_class``
    (or ``persistent_load``), and both refuse."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        raise pickle.UnpicklingError(f"refers to {module}.{name}; only plain dicts, lists, strings and numbers "
                                     "are read (nothing is imported or run)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("uses persistent ids; only plain containers are read")


def read_plain_pickle(data: bytes) -> Any:
    """Unpickle ``data`` made of plain containers only (see :class:`_PlainUnpickler`)."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def _fail(where: str, path: Path, what: str) -> ConfigError:
    return ConfigError(one_line(f"{where}: {path}: {what}"))


def _check_file(where: str, path: Path) -> None:
    if not path.is_file():
        raise _fail(where, path, "trace file not found")
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise _fail(where, path, f"{size} bytes is larger than {MAX_TRACE_BYTES} bytes")


def _read_bytes(where: str, path: Path) -> bytes:
    _check_file(where, path)
    return path.read_bytes()


def _format(fmt: str, path: Path) -> str:
    if fmt != "auto":
        return fmt
    return "simbench" if path.suffix.lower() in (".csv", ".parquet") else "fedscale"


def _table(where: str, path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """``(row label, {column: text})`` for every data row of a CSV or Parquet table."""
    allowed = (*required, *optional)
    if path.suffix.lower() == ".parquet":
        import pandas as pd
        _check_file(where, path)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; all mean "not a table"
            raise _fail(where, path, f"cannot read Parquet ({type(exc).__name__}: {str(exc)[:200]})") from None
        header = [str(c) for c in frame.columns]
        rows = [(f"row {k + 1}", {c: v for c, v in zip(header, rec)})
                for k, rec in enumerate(frame.itertuples(index=False, name=None))]
    else:
        try:
            text = _read_bytes(where, path).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _fail(where, path, "not UTF-8 text") from None
        lines = list(csv.reader(io.StringIO(text)))
        numbered = [(k + 1, r) for k, r in enumerate(lines) if r and not (len(r) == 1 and not r[0].strip())
                    and not r[0].lstrip().startswith("#")]
        if not numbered:
            raise _fail(where, path, f"empty; expected a header {','.join(required)}")
        _, header = numbered[0]
        header = [h.strip() for h in header]
        rows = []
        for line, rec in numbered[1:]:
            if len(rec) != len(header):
                raise _fail(where, path, f"line {line}: {len(rec)} fields, the header has {len(header)}")
            rows.append((f"line {line}", {h: v.strip() for h, v in zip(header, rec)}))
    unknown = [c for c in header if c not in allowed]
    missing = [c for c in required if c not in header]
    if unknown or missing:
        raise _fail(where, path, f"columns {','.join(header)}; expected {','.join(required)}"
                    + (f" (optional: {','.join(optional)})" if optional else ""))
    if not rows:
        raise _fail(where, path, "no data rows")
    return rows


def _number(where: str, path: Path, label: str, row: dict, col: str, *, positive: bool = False,
            inf: bool = False) -> float:
    raw = row[col]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _fail(where, path, f"{label}: {col} {str(raw)!r} is not a number") from None
    if math.isnan(value) or (math.isinf(value) and not (inf and value > 0)):
        raise _fail(where, path, f"{label}: {col} {str(raw)!r} is not allowed; expected a finite number"
                    + (" or inf" if inf else ""))
    if value < 0 or (positive and value == 0):
        raise _fail(where, path, f"{label}: {col} {str(raw)!r} must be {'> 0' if positive else '>= 0'}")
    return value


def _key(value: Any) -> str:
    return str(value).strip()


@dataclass
class Device:
    """One trace client's device: FLOP/s (or FedScale's ms per sample) and bytes/s each way."""

    flops_per_s: float | None
    ms_per_sample: float | None
    uplink: float | None
    downlink: float | None
    """None: the config's ``network`` value."""


def read_devices(where: str, path: Path, fmt: str) -> dict[str, Device]:
    """A device trace as ``{client: Device}`` in file order (one-line ConfigError on a bad row)."""
    if _format(fmt, path) == "simbench":
        out: dict[str, Device] = {}
        for label, row in _table(where, path, DEVICE_COLUMNS):
            node = _key(row["node"])
            if not node:
                raise _fail(where, path, f"{label}: node is empty")
            if node in out:
                raise _fail(where, path, f"{label}: node {node} appears twice")
            flops = _number(where, path, label, row, "flops_per_s", positive=True)
            up = _number(where, path, label, row, "up_bps", positive=True, inf=True) / 8
            down = _number(where, path, label, row, "down_bps", positive=True, inf=True) / 8
            out[node] = Device(flops, None, up, down)
        return out
    data = _fedscale_dict(where, path)
    out = {}
    for key, entry in data.items():
        label = f"client {key!r}"
        if not isinstance(entry, dict) or "computation" not in entry or "communication" not in entry:
            raise _fail(where, path, f"{label}: expected {{'computation': ms, 'communication': kbps}}")
        row = {"computation": entry["computation"], "communication": entry["communication"]}
        ms = _number(where, path, label, row, "computation", positive=True)
        kbps = _number(where, path, label, row, "communication", positive=True)
        out[_key(key)] = Device(None, ms, kbps * FEDSCALE_KBPS, kbps * FEDSCALE_KBPS)
    return out


def _fedscale_dict(where: str, path: Path) -> dict:
    data = _read_bytes(where, path)
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _fail(where, path, f"not JSON ({exc})") from None
    else:
        try:
            obj = read_plain_pickle(data)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, MemoryError, OverflowError, RecursionError) as exc:
            raise _fail(where, path, f"not a plain FedScale pickle: {exc}") from None
    if not isinstance(obj, dict) or not obj:
        raise _fail(where, path, "expected a non-empty dict of clients")
    return obj


@dataclass
class Sessions:
    """One client's online sessions ``[start, end)`` within one period (None: no repeat)."""

    spans: list[tuple[float, float]]
    period: float | None = None


def read_availability(where: str, path: Path, fmt: str, period: float | None) -> dict[str, Sessions]:
    """An availability trace as ``{client: Sessions}`` in file order (one-line ConfigError on a bad row)."""
    out: dict[str, Sessions] = {}
    if _format(fmt, path) == "simbench":
        periods: dict[str, tuple[str, float]] = {}
        for label, row in _table(where, path, AVAILABILITY_COLUMNS[:3], AVAILABILITY_COLUMNS[3:]):
            node = _key(row["node"])
            if not node:
                raise _fail(where, path, f"{label}: node is empty")
            start = _number(where, path, label, row, "start_s")
            end = _number(where, path, label, row, "end_s", inf=True)
            if end <= start:
                raise _fail(where, path, f"{label}: end_s {row['end_s']} must be later than start_s {row['start_s']}")
            if "period_s" in row and _key(row["period_s"]) not in ("", "nan", "None"):
                p = _number(where, path, label, row, "period_s", positive=True)
                if node in periods and periods[node][1] != p:
                    raise _fail(where, path, f"{label}: period_s {p:g} differs from {periods[node][1]:g} "
                                             f"on {periods[node][0]} for node {node}")
                periods[node] = (label, p)
            out.setdefault(node, Sessions([], None)).spans.append((start, end))
            p = periods.get(node, (None, period))[1]
            if p is not None and end > p:
                raise _fail(where, path, f"{label}: end_s {row['end_s']} is beyond node {node}'s period {p:g}")
        for node, s in out.items():
            s.period = periods.get(node, (None, period))[1]
            s.spans = _merge(s.spans)
        return out
    data = _fedscale_dict(where, path)
    for key, entry in data.items():
        label = f"client {key!r}"
        if not isinstance(entry, dict) or not {"active", "inactive", "finish_time"} <= set(entry):
            raise _fail(where, path, f"{label}: expected {{'active': [s], 'inactive': [s], 'finish_time': s}}")
        act, ina = entry["active"], entry["inactive"]
        if not isinstance(act, (list, tuple)) or not isinstance(ina, (list, tuple)):
            raise _fail(where, path, f"{label}: active and inactive must be lists of seconds")
        finish = _number(where, path, label, {"finish_time": entry["finish_time"]}, "finish_time", positive=True)
        cut = finish if period is None else min(finish, period)  # sessions stay within one period
        ons, offs = ([_number(where, path, label, {f"{name}[{k}]": v}, f"{name}[{k}]") for k, v in enumerate(values)]
                     for name, values in (("active", act), ("inactive", ina)))
        start_online = bool(ons) and (ons[0] == 0 or (bool(offs) and offs[0] < ons[0]))
        if not ons and offs:
            start_online = True
        events = sorted([(t, True) for t in ons if t > 0] + [(t, False) for t in offs])
        spans, state, since = [], start_online, 0.0
        for t, on in events:
            t = min(t, cut)
            if on and not state:
                state, since = True, t
            elif not on and state:
                if t > since:
                    spans.append((since, t))
                state = False
        if state and cut > since:
            spans.append((since, cut))
        out[_key(key)] = Sessions(_merge(spans), period if period is not None else finish)
    return out


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint spans (overlapping or touching ones joined)."""
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


# -- availability over time ---------------------------------------------------------------------
class Timeline:
    """When one node is online: its state at 0 and the sorted instants it flips, built lazily."""

    def __init__(self, start_online: bool) -> None:
        self.start_online = start_online
        self.flips: list[float] = []
        self._covered = 0.0  # flips up to here are known

    def _extend(self, until: float) -> None:
        """Append the flips up to ``until`` (subclasses)."""
        self._covered = math.inf

    def online(self, t: float) -> bool:
        if t >= self._covered:
            self._extend(t)
        return self.start_online ^ (bisect.bisect_right(self.flips, t) % 2 == 1)

    def next_flip(self, t: float) -> float | None:
        """The first instant after ``t`` at which the state changes (None: never)."""
        while True:
            k = bisect.bisect_right(self.flips, t)
            if k < len(self.flips):
                return self.flips[k]
            if self._covered == math.inf:
                return None
            self._extend(max(t, self._covered) * 2 + 1.0)


class TraceTimeline(Timeline):
    """A trace client's sessions, repeated every period."""

    def __init__(self, sessions: Sessions) -> None:
        spans = sessions.spans
        super().__init__(bool(spans) and spans[0][0] == 0)
        p = sessions.period
        cycle: list[float] = []
        for s, e in spans:
            if s > 0:
                cycle.append(s)
            if p is None or e < p:
                cycle.append(e)
        if p is not None and (bool(spans) and spans[-1][1] >= p) != self.start_online:
            cycle.append(p)  # the end of a period differs from its start: a flip at the wrap
        self.cycle = [t for t in cycle if t != math.inf]
        self.period = p
        self._cycles = 0
        if p is None:
            self.flips = list(self.cycle)
            self._covered = math.inf

    def _extend(self, until: float) -> None:
        p = self.period
        while self._covered <= until:
            base = self._cycles * p
            self.flips.extend(base + t for t in self.cycle)
            self._cycles += 1
            self._covered = self._cycles * p
            if not self.cycle:
                self._covered = math.inf


class DrawnTimeline(Timeline):
    """Alternating online sessions and offline gaps drawn from distributions (one stream per node)."""

    def __init__(self, online: Dist, offline: Dist, start_online: bool, rng: np.random.Generator) -> None:
        super().__init__(start_online)
        self._on, self._off, self._rng = online, offline, rng
        self._state = start_online
        self._t = 0.0

    def _extend(self, until: float) -> None:
        while self._t <= until:
            d = (self._on if self._state else self._off).sample(self._rng)
            self._t += max(d, 1e-6)
            self.flips.append(self._t)
            self._state = not self._state
        self._covered = self._t


# -- the resolved population ----------------------------------------------------------------------
@dataclass
class Population:
    """What the population section made of a run's nodes (the runtimes read it).

    ``devices`` holds the members' FLOP/s (or FedScale latencies) and bandwidths; ``timelines``
    says when members with an availability are online, up to ``horizon`` (every node is online
    from then on). Nodes that are not members keep the config's values and are always online.
    """

    members: tuple[int, ...]
    devices: dict[int, Device]
    timelines: dict[int, Timeline]
    selection: str = "online"
    rejoin: str = "keep"
    horizon: float = 24 * 3600.0
    fedscale_flops_per_sample: float | None = None

    def online(self, node: int, t: float) -> bool:
        tl = self.timelines.get(node)
        return tl is None or t >= self.horizon or tl.online(t)

    def next_change(self, node: int, t: float) -> float | None:
        """When ``node`` next goes online or offline after ``t`` (None: not before the horizon)."""
        tl = self.timelines.get(node)
        if tl is None or t >= self.horizon:
            return None
        flip = tl.next_flip(t)
        if flip is None or flip >= self.horizon:
            return None if tl.online(t) else self.horizon
        return flip

    def online_fraction(self, t: float) -> float:
        """Of the nodes with an availability, the fraction online at ``t``."""
        if not self.timelines:
            return 1.0
        return sum(self.online(i, t) for i in self.timelines) / len(self.timelines)

    def flops_per_s(self, node: int, forward_flops_per_sample: float | None) -> float | None:
        """Node's FLOP/s (None: not set by the population). FedScale latencies need the forward
        FLOPs per sample they stand for: the spec's, else ``forward_flops_per_sample``."""
        dev = self.devices.get(node)
        if dev is None or (dev.flops_per_s is None and dev.ms_per_sample is None):
            return None
        if dev.flops_per_s is not None:
            return dev.flops_per_s
        ref = self.fedscale_flops_per_sample or forward_flops_per_sample
        if ref is None:
            return None
        return ref * 1000.0 / dev.ms_per_sample


def resolve(spec: PopulationSpec, n: int, holders: Iterable[int], rng: np.random.Generator,
            horizon: float, *, cwd: Path | None = None) -> Population:
    """Read or draw the population of a run of ``n`` nodes (``holders``: the members for the
    ``index`` and ``sample`` mappings). ``rng`` is the population's own stream: it is split into
    the device draws, the availability draws and the two samplings, so each stays the same
    when the other part changes."""
    check_spec(spec)
    seq_dev, seq_avail, seq_map_dev, seq_map_avail = np.random.SeedSequence(int(rng.integers(2**63))).spawn(4)
    members = sorted(holders)
    devices: dict[int, Device] = {}
    timelines: dict[int, Timeline] = {}
    base = cwd or Path.cwd()
    if spec.devices is not None:
        d = spec.devices
        if d.trace is not None:
            table = read_devices("population.devices.trace", base / d.trace, d.format)
            devices = _assign("population.devices.trace", base / d.trace, table, spec.mapping, members, n,
                              np.random.default_rng(seq_map_dev))
        else:
            dists = DEVICE_PROFILES[d.profile] if d.profile is not None else \
                {k: getattr(d, k) for k in ("flops_per_s", "uplink", "downlink")}
            g = np.random.default_rng(seq_dev)
            flops, up, down = (dists.get(k) for k in ("flops_per_s", "uplink", "downlink"))
            for i in members:  # a part left out keeps the config's value (None / inf here)
                devices[i] = Device(max(flops.sample(g), 1.0) if flops is not None else None, None,
                                    max(up.sample(g), 1.0) if up is not None else None,
                                    max(down.sample(g), 1.0) if down is not None else None)
    if spec.availability is not None:
        a = spec.availability
        if a.trace is not None:
            table = read_availability("population.availability.trace", base / a.trace, a.format, a.period)
            sessions = _assign("population.availability.trace", base / a.trace, table, spec.mapping, members, n,
                               np.random.default_rng(seq_map_avail))
            timelines = {i: TraceTimeline(s) for i, s in sessions.items()}
        else:
            dists = AVAILABILITY_PROFILES[a.profile] if a.profile is not None else {"online": a.online,
                                                                                   "offline": a.offline}
            on, off = dists["online"], dists["offline"]
            p_on = a.start_online if a.start_online is not None else on.expected / (on.expected + off.expected)
            seqs = seq_avail.spawn(n)
            for i in members:
                g = np.random.default_rng(seqs[i])
                timelines[i] = DrawnTimeline(on, off, bool(g.random() < p_on), g)
    covered = sorted(set(devices) | set(timelines))
    return Population(tuple(covered), devices, timelines, spec.selection, spec.rejoin, horizon,
                      spec.devices.fedscale_flops_per_sample if spec.devices is not None else None)


def _assign(where: str, path: Path, table: dict[str, Any], mapping: str, members: list[int], n: int,
            rng: np.random.Generator) -> dict[int, Any]:
    """Each member's trace entry by ``mapping`` (see the module docstring)."""
    keys = list(table)
    if mapping == "column":
        out = {}
        for key in keys:
            try:
                node = int(key)
            except ValueError:
                raise _fail(where, path, f"node {key!r} is not a node id (mapping: column)") from None
            if not 0 <= node < n:
                raise _fail(where, path, f"node {node} does not exist; nodes are 0..{n - 1} (mapping: column)")
            out[node] = table[key]
        return out
    if mapping == "index":
        order = list(range(len(keys)))
    else:
        order = []
        while len(order) < len(members):
            order.extend(int(k) for k in rng.permutation(len(keys)))
    return {node: table[keys[order[k % len(order)]]] for k, node in enumerate(members)}

