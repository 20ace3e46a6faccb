"""Typed descriptions of the network, the compute cost model and injected faults.

These frozen dataclasses are what the ``network``, ``compute`` and ``scenario`` blocks
of a config become. Both runtimes read them: the simulator models them, the real
runtime applies them at the application layer (delays, drops, sleeps, exits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Optional

import numpy as np

from .schema import ConfigError
from .units import parse_bandwidth, parse_duration

DIST_KINDS = ("constant", "uniform", "normal", "lognormal", "exponential")


@dataclass(frozen=True)
class Dist:
    """A non-negative random quantity: ``constant`` value, ``uniform`` [low, high],
    ``normal`` (mean, std; clipped at 0), ``lognormal`` (median ``mean``, ``sigma``),
    ``exponential`` (``mean``)."""

    kind: str = "constant"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    sigma: float = 0.0

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "constant":
            return self.value
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "normal":
            return max(0.0, float(rng.normal(self.mean, self.std)))
        if self.kind == "lognormal":
            return float(self.mean * math.exp(rng.normal(0.0, self.sigma)))
        return float(rng.exponential(self.mean))

    @property
    def expected(self) -> float:
        return {
            "constant": self.value, "uniform": (self.low + self.high) / 2, "normal": self.mean,
            "lognormal": self.mean * math.exp(self.sigma**2 / 2), "exponential": self.mean,
        }[self.kind]


def dist_parser(unit: Callable[[object], float] = float) -> Callable[[object], Dist]:
    """A parser turning ``5ms`` / ``{dist: uniform, low: 1ms, high: 9ms}`` into a Dist."""

    def parse(spec: object) -> Dist:
        if isinstance(spec, Dist):
            return spec
        if not isinstance(spec, Mapping):
            value = unit(spec)
            if not 0 <= value < math.inf:
                raise ValueError(f"{spec!r} is not allowed; expected a finite number >= 0 or a distribution mapping")
            return Dist("constant", value=value)
        spec = dict(spec)
        kind = spec.pop("dist", spec.pop("kind", None))
        if kind not in DIST_KINDS:
            raise ValueError(f"dist must be one of {', '.join(DIST_KINDS)}, got {kind!r}")
        allowed = {"constant": ("value",), "uniform": ("low", "high"), "normal": ("mean", "std"),
                   "lognormal": ("mean", "sigma"), "exponential": ("mean",)}[kind]
        for key in spec:
            if key not in allowed:
                raise ValueError(f"unknown key {key!r} for a {kind} distribution; allowed: {', '.join(allowed)}")
        missing = [k for k in allowed if k not in spec]
        if missing:
            raise ValueError(f"a {kind} distribution needs {', '.join(missing)}")
        values = {k: (float(v) if k == "sigma" else unit(v)) for k, v in spec.items()}
        for k, v in values.items():
            if not 0 <= v < math.inf:
                raise ValueError(f"{k} of a {kind} distribution must be a finite number >= 0, got {v!r}")
        if kind == "uniform" and values["low"] > values["high"]:
            raise ValueError("uniform distribution has low > high")
        return Dist(kind, **values)

    return parse


def _positive(x: float) -> bool:
    return x > 0


def _prob(x: float) -> bool:
    return 0.0 <= x <= 1.0


@dataclass(frozen=True)
class NetworkSpec:
    """Default link and NIC model (topology files may override per edge)."""

    latency: Dist = field(default=Dist("constant", value=0.0005), metadata={"parse": dist_parser(parse_duration)})
    """Per-message one-way latency: a duration (``5ms``) or a distribution mapping."""
    jitter: float = field(default=0.0, metadata={"parse": parse_duration})
    """Extra uniform [0, jitter] delay per message."""
    bandwidth: float = field(default=1e9 / 8, metadata={"parse": parse_bandwidth, "check": (_positive, "must be > 0"),
                                                         "inf": True})
    """Capacity of each link, per direction (``1Gbit/s``, ``10MB/s``, ``inf``)."""
    uplink: Optional[float] = field(default=None, metadata={"parse": parse_bandwidth, "check": (_positive, "must be > 0"),
                                                            "inf": True})
    """Each node's total upload capacity; default: same as ``bandwidth``."""
    downlink: Optional[float] = field(default=None, metadata={"parse": parse_bandwidth,
                                                              "check": (_positive, "must be > 0"), "inf": True})
    """Each node's total download capacity; default: same as ``bandwidth``."""
    loss: float = field(default=0.0, metadata={"check": (_prob, "must be a probability in [0, 1]")})
    """Probability that any message is lost."""

    @property
    def narrowest(self) -> float:
        """The smallest nominal capacity a transfer crosses: link, uplink or downlink (bytes/s)."""
        return min(b for b in (self.bandwidth, self.uplink, self.downlink) if b is not None)


DEVICE_PROFILES: dict[str, float] = {
    # Sustained FLOP/s on small conv nets and MLPs in PyTorch (not peak figures).
    "laptop-cpu": 25e9,
    "server-cpu": 150e9,
    "phone": 4e9,
    "edge-gpu": 1e12,
    "datacenter-gpu": 40e12,
}


@dataclass(frozen=True)
class ComputeSpec:
    """How simulated compute time is charged."""

    device: str = field(default="laptop-cpu", metadata={"choices": tuple(DEVICE_PROFILES)})
    """Named device profile giving sustained FLOP/s."""
    flops_per_s: Optional[float] = field(default=None, metadata={"check": (_positive, "must be > 0")})
    """Override the profile's FLOP/s (e.g. a value calibrated on your machine)."""
    step_time: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """A fixed time per training step instead of the FLOP model."""

    @property
    def speed(self) -> float:
        return self.flops_per_s if self.flops_per_s is not None else DEVICE_PROFILES[self.device]


@dataclass(frozen=True)
class Stragglers:
    """Nodes whose every compute call is slowed by a drawn factor."""

    fraction: float = field(default=0.0, metadata={"check": (_prob, "must be in [0, 1]")})
    """Of the workers (data holders; never a server), drawn per run: see ``node_profiles``."""
    nodes: tuple[int, ...] = ()
    """Explicit straggler ids, any role (added to the random fraction)."""
    slowdown: Dist = field(default=Dist("constant", value=3.0), metadata={"parse": dist_parser(float)})
    """Factor (>= 1) drawn per compute call."""


WEAK_MODES = ("auto", "slow", "half_steps")


@dataclass(frozen=True)
class WeakWorkers:
    """Weak devices, drawn from the workers; what "weak" means is the ``mode``:

    * ``slow``: permanently slow devices with little memory: compute at ``speed``, batch
      size x ``batch_scale``. Every algorithm.
    * ``half_steps``: FeGAN's seed (``dist-dcgan.py --weak_percent``): a weak device runs
      int(E/2) of the E local steps of a round, at full speed and batch size, and its update
      keeps its weight. Only algorithms with local rounds that declare it (flgan, fegan).
    * ``auto``: the algorithm's own model (``Algorithm.weak_modes[0]``): ``half_steps`` for
      flgan and fegan, ``slow`` for every other algorithm.
    """

    fraction: float = field(default=0.0, metadata={"check": (_prob, "must be in [0, 1]")})
    """Of the workers (data holders; never a server), drawn per run: see ``node_profiles``."""
    nodes: tuple[int, ...] = ()
    """Explicit weak ids, any role (added to the random fraction)."""
    mode: str = field(default="auto", metadata={"choices": WEAK_MODES})
    """What a weak worker does: slow (speed, batch_scale), half_steps (FeGAN's seed: int(E/2) local
    steps), auto (the algorithm's own: half_steps for flgan/fegan, slow otherwise)."""
    speed: float = field(default=0.25, metadata={"check": (_positive, "must be > 0")})
    """Compute speed relative to a normal node (mode slow)."""
    batch_scale: float = field(default=0.5, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """Their batch size is this fraction of the configured one (mode slow)."""


@dataclass(frozen=True)
class Crash:
    """Node ``node`` stops at simulated time ``at``; restarts at ``recover_at`` if given."""

    node: int
    at: float = field(metadata={"parse": parse_duration})
    recover_at: Optional[float] = field(default=None, metadata={"parse": parse_duration})


@dataclass(frozen=True)
class Partition:
    """Links among ``edges`` carry nothing from ``start`` to ``end``."""

    edges: tuple[tuple[int, int], ...]
    start: float = field(metadata={"parse": parse_duration})
    end: float = field(metadata={"parse": parse_duration})


@dataclass(frozen=True)
class Scenario:
    """Faults and heterogeneity injected into a run."""

    stragglers: Stragglers = Stragglers()
    weak_workers: WeakWorkers = WeakWorkers()
    crashes: tuple[Crash, ...] = ()
    crash_rate: float = field(default=0.0, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Random crash-stops per node per simulated hour."""
    recover_after: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """With ``crash_rate``: a crashed node restarts after this long."""
    partitions: tuple[Partition, ...] = ()
    sleep_factor: float = field(default=0.0, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Seed 003's ``--sleep_factor`` f: after each epoch a node sleeps T (0.5 + 0.5 f u), T the
    time its epoch of training took, u a uniform draw of its own (it still receives meanwhile;
    see :class:`~simbench.core.runtime.EpochRest`); 0 = no sleep."""


def check_nodes(scenario: Scenario, n: int) -> None:
    """Raise ConfigError when the scenario names a node outside 0..n-1."""
    named = [("scenario.stragglers.nodes", i) for i in scenario.stragglers.nodes]
    named += [("scenario.weak_workers.nodes", i) for i in scenario.weak_workers.nodes]
    named += [(f"scenario.crashes[{k}].node", c.node) for k, c in enumerate(scenario.crashes)]
    named += [(f"scenario.partitions[{k}].edges", v) for k, p in enumerate(scenario.partitions) for e in p.edges for v in e]
    for where, node in named:
        if not 0 <= node < n:
            raise ConfigError(f"{where}: node {node} does not exist; nodes are 0..{n - 1}")
    if scenario.recover_after is not None and scenario.crash_rate == 0:
        raise ConfigError("scenario.recover_after: only used with crash_rate > 0 (explicit crashes take recover_at)")
    for k, c in enumerate(scenario.crashes):
        if c.recover_at is not None and c.recover_at <= c.at:
            raise ConfigError(f"scenario.crashes[{k}].recover_at: must be later than at={c.at}")
    for k, p in enumerate(scenario.partitions):
        if p.end <= p.start:
            raise ConfigError(f"scenario.partitions[{k}].end: must be later than start={p.start}")


@dataclass(frozen=True)
class NodeProfile:
    """What the scenario made of one node: its speed, batch scale, share of local steps and
    straggler status."""

    speed: float = 1.0
    batch_scale: float = 1.0
    straggler: bool = False
    weak: bool = False
    sleep_factor: float = 0.0
    local_steps: float = 1.0
    """Share of a round's local steps the node runs (a weak worker in mode half_steps: 0.5)."""


def node_profiles(scenario: Scenario, n: int, rng: np.random.Generator,
                  base_speed: Mapping[int, float] | None = None,
                  workers: Collection[int] | None = None, weak_mode: str = "slow") -> list[NodeProfile]:
    """Choose stragglers and weak workers with the faults' own random stream.

    ``weak_mode`` is the resolved ``scenario.weak_workers.mode`` (``slow`` or ``half_steps``,
    see :func:`resolve_weak_mode`).

    A ``fraction`` is a fraction of the *workers* (the nodes that hold data: every node of a
    peer-to-peer run, the devices of a server-based one): round(fraction x workers) of them,
    drawn uniformly. A server is never drawn, since a slow server is a different experiment;
    name it in ``nodes`` for that. (The draw takes k of all n nodes and replaces any non-worker
    it took by a further uniform draw among the remaining workers: a uniform k-subset of the
    workers, and the same set as a plain draw whenever no server was taken.)
    """
    eligible = set(range(n)) if workers is None else set(workers)

    def pick(fraction: float, explicit: tuple[int, ...]) -> set[int]:
        k = int(round(fraction * len(eligible)))
        chosen = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
        others = chosen - eligible
        if others:
            pool = sorted(eligible - chosen)
            chosen = (chosen - others) | set(rng.choice(pool, size=len(others), replace=False).tolist())
        return chosen | set(explicit)

    stragglers = pick(scenario.stragglers.fraction, scenario.stragglers.nodes)
    weak = pick(scenario.weak_workers.fraction, scenario.weak_workers.nodes)
    slow = weak_mode == "slow"
    out = []
    for i in range(n):
        speed = (base_speed or {}).get(i, 1.0)
        if i in weak and slow:
            speed *= scenario.weak_workers.speed
        out.append(NodeProfile(
            speed=speed,
            batch_scale=scenario.weak_workers.batch_scale if i in weak and slow else 1.0,
            straggler=i in stragglers, weak=i in weak, sleep_factor=scenario.sleep_factor,
            local_steps=0.5 if i in weak and not slow else 1.0,
        ))
    return out


def resolve_weak_mode(scenario: Scenario, algorithm: str, modes: tuple[str, ...]) -> str:
    """``scenario.weak_workers.mode`` for an algorithm that supports ``modes`` (its first is
    its own, what ``auto`` means); ConfigError naming the field when it does not support it."""
    mode = scenario.weak_workers.mode
    if mode == "auto":
        return modes[0]
    if mode not in modes:
        raise ConfigError(f"scenario.weak_workers.mode: {algorithm} has no weak workers of mode {mode!r}; "
                          f"allowed: auto, {', '.join(modes)}")
    return mode


def crash_schedule(scenario: Scenario, n: int, horizon: float, rng: np.random.Generator) -> list[Crash]:
    """Explicit crashes plus random ones drawn at ``crash_rate`` per node-hour up to ``horizon`` s."""
    crashes = list(scenario.crashes)
    if scenario.crash_rate > 0:
        rate = scenario.crash_rate / 3600.0
        for node in range(n):
            t = float(rng.exponential(1.0 / rate))
            if t < horizon:
                rec = t + scenario.recover_after if scenario.recover_after is not None else None
                crashes.append(Crash(node=node, at=t, recover_at=rec))
    return sorted(crashes, key=lambda c: (c.at, c.node))
