"""The contract every algorithm must meet, as a public check (as trio ships its stream checks).

:func:`check_algorithm` runs an algorithm on a tiny config and asserts what any user of a
benchmark relies on:

1. **finishes** — the run ends with status ``finished`` and the workload's quality (test
   accuracy, FID) is a finite number at every epoch of the reporting rows;
2. **deterministic** — a second run of the same config writes byte-identical
   ``events.csv`` and ``epochs.csv``;
3. **survives a crashed peer** — with one data-holding node (the highest id that is not the
   reporting node) crashed a third of the way into the run, the run still finishes, the
   crash is logged, and the surviving reporters keep reporting to the last epoch (skipped
   when a single node holds all the data: it has no peer);
4. **sim and real agree** — the same config on the real runtime (every node in this process
   on ZeroMQ sockets over loopback, wall-clock time) reports the same nodes and epochs, the
   same nodes send messages, and its final quality is close to the simulator's or, for an
   algorithm whose mixing depends on timing, makes at least half its progress.

A failed check raises :class:`ContractError` naming it. simbench's own test suite runs the
check on every built-in algorithm with its ``example`` config; a package of yours calls it
in its tests::

    from simbench.testing import check_algorithm
    def test_my_algorithm_meets_the_contract(tmp_path):
        check_algorithm("mypkg.algos:FedProx", {"topology": {"kind": "star"}}, out=tmp_path)
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

CHECKS = ("finishes", "deterministic", "crash", "real")

BASES: dict[str, dict] = {
    "classifier": {
        "seed": 0, "nodes": 5, "topology": {"kind": "ring"},
        "dataset": {"name": "digits", "partition": "iid", "max_train": 500, "max_test": 200, "val_fraction": 0.0},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.1, "eval_samples": 200},
        "network": {"latency": "2ms", "bandwidth": "100Mbit/s"},
        "compute": {"step_time": "10ms"},
    },
    "gan": {
        "seed": 0, "nodes": 5, "topology": {"kind": "star"},
        "dataset": {"name": "digits", "partition": "iid", "max_train": 400, "max_test": 200},
        "model": {"name": "lsgan", "options": {"width": 8, "bn_eps": 1e-5}},
        "train": {"epochs": 2, "batch_size": 32},
        "network": {"latency": "2ms", "bandwidth": "100Mbit/s"},
        "compute": {"step_time": "10ms"},
    },
}
"""The tiny config an algorithm's ``example`` is laid over, per workload."""
GAN_KNOBS = {"latent_dim": 8, "lr": 0.002, "fid_batch": 64, "grid": 0}
"""GAN algorithm knobs of the tiny config."""
QUIET = {"wall_clock": False, "plot": False, "progress": False}


class ContractError(AssertionError):
    """An algorithm failed one of the checks; the message names the check and what was seen."""


@dataclass
class CheckReport:
    """What :func:`check_algorithm` saw, check by check."""

    algorithm: str
    config: dict
    passed: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it: nested mappings merge, unless the change names
    another ``name`` (another model's options do not carry over)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        other = isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("name", out[key].get("name")) \
            != out[key].get("name")
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not other:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def example_config(algorithm: Any, config: dict | None = None) -> dict:
    """The tiny config of ``algorithm`` (a name, an import path or an Algorithm class): its
    workload's base, then the algorithm's ``example`` class attribute, then ``config``."""
    from . import registry
    from .workloads import workload_class

    if isinstance(algorithm, str):
        name, cls = algorithm, registry.algorithm(algorithm)
    else:
        cls = algorithm
        name = f"{cls.__module__}:{cls.__qualname__}"
    kind = workload_class(cls).name
    base = copy.deepcopy(BASES.get(kind, BASES["classifier"]))
    base["algorithm"] = {"name": name, **(GAN_KNOBS if kind == "gan" else {})}
    cfg = _merge(base, getattr(cls, "example", None) or {})
    cfg = _merge(cfg, config or {})
    algo = cfg["algorithm"]
    cfg["algorithm"] = {"name": name, **(algo if isinstance(algo, dict) else {})}
    cfg["algorithm"]["name"] = name
    cfg["name"] = f"check_{registry.label(name)}"
    cfg["output"] = dict(QUIET)
    return cfg


def check_algorithm(algorithm: Any, config: dict | None = None, *, checks: Iterable[str] = CHECKS,
                    out: str | Path | None = None) -> CheckReport:
    """Run the contract checks on ``algorithm`` (see the module docstring).

    Parameters
    ----------
    algorithm : str or Algorithm class
        A registered name, an import path ``pkg.module:Class``, or the class.
    config : dict, optional
        Changes to the tiny example config (nested mappings are merged).
    checks : iterable of str
        A subset of :data:`CHECKS`.
    out : path, optional
        Where the runs go (default: a temporary directory, removed afterwards).

    Returns
    -------
    CheckReport

    Raises
    ------
    ContractError
        The first check that failed, named.
    """
    checks = list(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; allowed: {', '.join(CHECKS)}")
    raw = example_config(algorithm, config)
    report = CheckReport(raw["algorithm"]["name"], raw)
    if out is None:
        with tempfile.TemporaryDirectory() as tmp:
            return _run_checks(report, checks, Path(tmp))
    return _run_checks(report, checks, Path(out))


def _run_checks(report: CheckReport, checks: list[str], out: Path) -> CheckReport:
    from .experiment.config import parse_config
    from .experiment.run import run_experiment

    raw = report.config
    cfg = parse_config(copy.deepcopy(raw))
    quality = cfg.workload_class().quality
    first = run_experiment(cfg, out / "a", progress=False)
    _expect(first.status == "finished", "finishes", f"status {first.status!r}: {first.error}")
    reporting = first.epochs[first.epochs["node"] == "avg"]
    values = reporting[quality] if quality in reporting else []
    epochs = cfg.train.epochs
    _expect(len(values) > 0 and all(math.isfinite(v) for v in values), "finishes",
            f"the avg rows' {quality} is {list(values)}")
    _expect(int(reporting["epoch"].max()) >= epochs, "finishes",
            f"the avg rows end at epoch {int(reporting['epoch'].max())}, not {epochs}")
    report.details["sim_time_s"] = first.sim_time
    report.details[quality] = float(values.iloc[-1])
    report.passed.append("finishes")
    if "deterministic" in checks:
        second = run_experiment(cfg, out / "b", progress=False)
        for name in ("events.csv", "epochs.csv"):
            a, b = (first.run_dir / name).read_bytes(), (second.run_dir / name).read_bytes()
            _expect(a == b, "deterministic", f"two runs of one config wrote different {name}")
        report.passed.append("deterministic")
    if "crash" in checks:
        _check_crash(report, cfg, raw, first, out)
    if "real" in checks:
        _check_real(report, cfg, first)
    return report


def _expect(ok: bool, check: str, what: str) -> None:
    if not ok:
        raise ContractError(f"{check}: {what}")


def _victim(cfg: Any) -> int | None:
    """The node the crash check stops: the highest-id data holder that does not report (None
    when one node holds all the data)."""
    from .experiment.build import build_graph

    algo = cfg.algorithm_class()
    roles = algo.roles(build_graph(cfg), cfg.algorithm_params)
    holders = [i for i in sorted(roles) if roles[i] in algo.data_roles()]
    quiet = [i for i in holders if roles[i] not in algo.reporting_roles()]
    return (quiet or holders)[-1] if len(holders) > 1 else None


def _check_crash(report: CheckReport, cfg: Any, raw: dict, first: Any, out: Path) -> None:
    from .experiment.config import parse_config
    from .experiment.run import run_experiment

    node, at = _victim(cfg), round(first.sim_time / 3, 9)
    if node is None:
        report.details["crash"] = "skipped: a single node holds all the data"
        return
    crashed_raw = copy.deepcopy(raw)
    crashed_raw.setdefault("scenario", {})["crashes"] = [{"node": node, "at": at}]
    res = run_experiment(parse_config(crashed_raw), out / "crash", progress=False)
    _expect(res.status == "finished", "crash", f"with node {node} crashed at {at}s the run ended {res.status!r}: "
            f"{str(res.error or '').splitlines()[:1]}")
    crashes = res.events[(res.events["metric"] == "crash") & (res.events["node"] == str(node))]
    _expect(len(crashes) == 1, "crash", f"node {node}'s crash at {at}s is not in events.csv")
    rows = res.epochs[res.epochs["node"] != str(node)]
    last = int(rows["epoch"].max()) if len(rows) else -1
    _expect(last >= cfg.train.epochs, "crash", f"the surviving nodes' rows end at epoch {last}, "
            f"not {cfg.train.epochs}")
    report.details["crash"] = {"node": node, "at": at}
    report.passed.append("crash")


def _check_real(report: CheckReport, cfg: Any, first: Any) -> None:
    """The same config on the real runtime, in this process over loopback sockets."""
    from .experiment.build import EpochRelay, build_nodes
    from .metrics.recorder import Recorder
    from .real.world import RealWorld

    recorder = Recorder("real", wall_clock=False)
    relay = EpochRelay()
    built = build_nodes(cfg, relay)
    observer = built.workload.observer(recorder, built.reporters())
    relay.target = observer.on_epoch
    world = RealWorld(built.graph, built.nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
                      scenario=cfg.scenario, profiles=built.profiles, recorder=recorder, seed=built.streams.world,
                      emulate_network=False)
    observer.clock = lambda: world.now
    try:
        world.run(until=120.0)
    except Exception as exc:  # noqa: BLE001 - any error of the algorithm on sockets fails the check
        raise ContractError(f"real: the run raised {type(exc).__name__}: {exc}") from None
    observer.flush()
    sim, real = first.epochs, recorder.epochs_frame()
    keys = lambda df: sorted(set(zip(df["node"].astype(str), df["epoch"].astype(int))))  # noqa: E731
    _expect(keys(sim) == keys(real), "real", "the real runtime reported other (node, epoch) rows than the simulator: "
            f"{sorted(set(keys(sim)) ^ set(keys(real)))[:6]}")
    ev = first.events
    senders_sim = set(ev.loc[(ev["metric"] == "msgs_sent_total") & (ev["value"] > 0), "node"])
    senders_real = {str(rt.node_id) for rt in world.runtimes if rt.msgs_sent}
    _expect(senders_sim == senders_real, "real", f"nodes {sorted(senders_sim)} sent messages in the simulator, "
            f"nodes {sorted(senders_real)} on the real runtime")
    workload = cfg.workload_class()
    a0, a = (float(v) for v in sim.loc[sim["node"] == "avg", workload.quality].iloc[[0, -1]])
    b = float(real.loc[real["node"] == "avg", workload.quality].iloc[-1])
    _expect(workload.agrees(a0, a, b), "real", f"final {workload.quality} {b:.4g} on the real runtime against {a:.4g} "
            f"simulated, from {a0:.4g}")
    quality = workload.quality
    report.details["real"] = {quality: b}
    report.passed.append("real")

