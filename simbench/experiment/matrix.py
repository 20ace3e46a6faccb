"""Benchmark matrices: a base config × axes -> validated cells, run in parallel, resumable.

A matrix file (YAML)::

    name: decentralized                     # results go to <out>/<name>/ (default: the file's stem)
    base: ../../examples/quickstart.yaml    # a config file (relative to this file) or an inline mapping
    set: {train.epochs: 5}                  # optional dotted overrides of the base, applied before the axes
    axes:                                   # cells = the product of the axes, in this order
      algorithm: [dsgd, fedavg, ps_sync]    # a list: each value is set at the dotted config path
      topology.kind: [ring, torus, star]
      nodes: [8, 16]
      scenario:                             # a mapping: named values, label -> value set at the path
        none: {}                            #   (a mapping value replaces the whole block)
        stragglers: {stragglers: {fraction: 0.25, slowdown: 3}}
        crash: {crashes: [{node: 1, at: 0.5}]}
      seed: [0, 1, 2]
      shards:                               # a bundle: a name that is no config field, and every
        "1": {set: {algorithm.shards: 1, topology.hubs: 1, nodes: 17}}   # value sets several
        "4": {set: {algorithm.shards: 4, topology.hubs: 4, nodes: 20}}   # dotted paths at once
    exclude:                                # optional: drop combinations. Keys are axes, values a
      - {algorithm: [fedavg, ps_sync], topology.kind: [ring, torus]}   # label or a list of labels
    target_accuracy: 0.8                    # average-model test accuracy for time-to-accuracy
    report:                                 # optional hints for `simbench report` (report/report.py)
      facet: scenario
      heatmap: {rows: topology.kind, cols: scenario, metric: final_acc, where: {algorithm: dsgd}}

Rules. Every cell is ``base + set + one value per axis`` with its ``name`` set to the
matrix name, and is validated (``parse_config`` and the algorithm's roles on the built
topology) before anything runs; an unknown field or value, an empty axis, two cells that
resolve to the same config, or an invalid base raise one :class:`ConfigError` line. A cell's
id is its config's ``run_id()``; it runs into ``<out>/<name>/runs/<cfg.name>/<id>/`` and is
done once ``cell.json`` (written atomically after the run directory is complete) exists
there. Rerunning a matrix skips done cells, redoes cells without ``cell.json`` (their
partial directory is cleared) and, unless told to keep them, cells that failed. The tidy
tables ``cells.csv``/``.parquet`` (one row per cell and metric), ``curves.csv`` and
``faults.csv`` are rebuilt from the ``cell.json`` files after every finished cell.
A cell is known by its config, not by the code that ran it: after changing simbench,
delete ``runs/`` (or use another ``--out``) to recompute cells that were already done.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import shutil
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from ..core.files import write_atomic
from ..core.schema import ConfigError, path_component, suggest
from ..core.yamlio import load_yaml_file, parse_override
from .build import check_roles
from .config import ExperimentConfig, parse_config, set_path

TOP_KEYS = ("name", "base", "set", "axes", "exclude", "target_accuracy", "report")
METRICS = ("final_acc", "best_acc", "time_to_target_s", "bytes_sent", "messages", "sim_time_s", "wall_time_s",
           "failures", "final_fid", "best_fid")
"""One row per cell and metric in cells.csv. ``failures``: crash events injected in the run;
``final_fid``/``best_fid``: the global generator's FID for GAN runs (NaN for classifiers)."""
CURVE = ("epoch", "time_s", "test_acc", "fid", "bytes_sent")
FAULT_KINDS = ("crash", "recover", "partition_start", "partition_end")
DONE, FAILED = "cell.json", "failed"


# -- the matrix and its cells ----------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    path: str
    """A dotted config path, or a bundle's free name."""
    labels: tuple[str, ...]
    values: tuple[Any, ...]
    bundle: bool = False
    """Each value is a mapping of dotted paths to values, all set together."""

    def apply(self, data: dict, i: int) -> None:
        """Set this axis's ``i``-th value in a raw config mapping."""
        sets = self.values[i] if self.bundle else {self.path: self.values[i]}
        for path, value in sets.items():
            set_path(data, path, copy.deepcopy(value))


@dataclass(frozen=True)
class Cell:
    id: str
    """The cell config's ``run_id()``."""
    labels: dict[str, str]
    """Axis path -> label of this cell's value, in axis order."""
    cfg: ExperimentConfig

    def describe(self) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.labels.items()) + "}"


@dataclass(frozen=True)
class Matrix:
    name: str
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]
    target_accuracy: float = 0.8
    report: dict = field(default_factory=dict)
    source: str | None = None

    def spec(self) -> dict:
        """What the report needs to know about the matrix (written as matrix.json)."""
        return {"name": self.name, "source": self.source, "workload": self.cells[0].cfg.workload_class().name,
                "target_accuracy": self.target_accuracy,
                "axes": [{"path": a.path, "labels": list(a.labels)} for a in self.axes],
                "report": self.report, "metrics": list(METRICS), "cells": len(self.cells)}


def label(value: Any) -> str:
    """The text a value is known by in tables, figures and ``exclude``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _check_path(path: str, where: str) -> None:
    """Reject a dotted path whose dataclass levels name no config field (dict levels are free)."""
    cls: Any = ExperimentConfig
    keys = path.split(".")
    for i, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        if key not in fields:
            dotted = ".".join(keys[: i + 1])
            raise ConfigError(f"{where}: {dotted!r} is not a config field{suggest(key, fields)}; "
                              f"allowed: {', '.join(fields)}")
        if cls is ExperimentConfig and key == "algorithm":
            return  # its knobs depend on the algorithm; parse_config checks them per cell
        tp = typing.get_type_hints(cls)[key]
        if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
            return
        cls = tp


def _is_bundle(path: str, spec: Any) -> bool:
    """A free axis name whose every value is ``{set: {dotted.path: value, ...}}``."""
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    return (path.split(".")[0] not in fields and isinstance(spec, Mapping) and bool(spec)
            and all(isinstance(v, Mapping) and list(v) == ["set"] for v in spec.values()))


def _parse_bundle(path: str, spec: Mapping, where: str) -> Axis:
    values = []
    for lab, v in spec.items():
        sets = v["set"]
        if not isinstance(sets, Mapping) or not sets:
            raise ConfigError(f"{where}.{path}.{lab}.set: expected a non-empty mapping of dotted paths to values, "
                              f"got {sets!r}")
        for p in sets:
            _check_path(str(p), f"{where}.{path}.{lab}.set.{p}")
        values.append({str(p): x for p, x in sets.items()})
    return Axis(path, tuple(str(k) for k in spec), tuple(values), bundle=True)


def _parse_axis(path: Any, spec: Any, where: str) -> Axis:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: axis names are dotted config paths like topology.kind, got {path!r}")
    if _is_bundle(path, spec):
        return _parse_bundle(path, spec, where)
    _check_path(path, f"{where}.{path}")
    if isinstance(spec, Mapping):
        labels, values = tuple(str(k) for k in spec), tuple(spec.values())
    elif isinstance(spec, (list, tuple)):
        labels, values = tuple(label(v) for v in spec), tuple(spec)
    else:
        raise ConfigError(f"{where}.{path}: expected a list of values or a mapping label -> value, got {spec!r}")
    if not values:
        raise ConfigError(f"{where}.{path}: empty axis; give at least one value")
    dup = [lab for lab in labels if labels.count(lab) > 1]
    if dup:
        raise ConfigError(f"{where}.{path}: value {dup[0]!r} appears twice; every cell would run twice")
    return Axis(path, labels, values)


def _parse_exclude(items: Any, axes: dict[str, Axis]) -> list[dict[str, set[str]]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(f"exclude: expected a list of mappings like {{algorithm: fedavg, topology.kind: ring}}, got {items!r}")
    out = []
    for k, item in enumerate(items):
        if not isinstance(item, Mapping) or not item:
            raise ConfigError(f"exclude[{k}]: expected a non-empty mapping axis -> label(s), got {item!r}")
        rule = {}
        for path, wanted in item.items():
            if path not in axes:
                raise ConfigError(f"exclude[{k}].{path}: not an axis{suggest(str(path), axes)}; axes: {', '.join(axes)}")
            labels = axes[path].labels
            options = wanted if isinstance(wanted, list) and label(wanted) not in labels else [wanted]
            for opt in options:
                if label(opt) not in labels:
                    raise ConfigError(f"exclude[{k}].{path}: {label(opt)!r} is not a value of the axis"
                                      f"{suggest(label(opt), labels)}; values: {', '.join(labels)}")
            rule[path] = {label(o) for o in options}
        out.append(rule)
    return out


def _load_base(base: Any, base_dir: Path) -> dict:
    if isinstance(base, Mapping):
        return copy.deepcopy(dict(base))
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a config file path or a mapping, got {base!r}")
    path = (base_dir / base) if not Path(base).is_absolute() else Path(base)
    if not path.exists():
        raise ConfigError(f"base: file {path} does not exist (paths are relative to the matrix file)")
    data = load_yaml_file(path, "base")
    if not isinstance(data, dict):
        raise ConfigError(f"base: {path} must hold a mapping at the top level")
    return data


def parse_matrix(data: Any, base_dir: str | Path = ".", *, source: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> Matrix:
    """Validate a matrix mapping and expand it into cells; raise one-line ConfigErrors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"matrix: expected a mapping at the top level, got {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{key}: unknown matrix field{suggest(str(key), TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    name = data.get("name") or (Path(source).stem if source else None)
    if not isinstance(name, str) or not path_component(name):
        raise ConfigError(f"name: the matrix needs a name that is one directory name (no '/', '\\', '.' or '..'), "
                          f"got {name!r}")
    if "base" not in data:
        raise ConfigError("base: required field is missing; give a config file or an inline mapping")
    base = _load_base(data["base"], Path(base_dir))
    base["name"] = name
    sets = data.get("set") or {}
    if not isinstance(sets, Mapping):
        raise ConfigError(f"set: expected a mapping of dotted paths to values, got {sets!r}")
    sets = {**sets, **(overrides or {})}
    for path, value in sets.items():
        _check_path(str(path), f"set.{path}")
        set_path(base, str(path), copy.deepcopy(value))
    try:
        parse_config(copy.deepcopy(base))
    except ConfigError as exc:
        raise ConfigError(f"base: {exc}") from None
    raw_axes = data.get("axes")
    if not isinstance(raw_axes, Mapping) or not raw_axes:
        raise ConfigError("axes: expected a non-empty mapping of config paths to values, e.g. {seed: [0, 1, 2]}")
    axes = {str(p): _parse_axis(p, spec, "axes") for p, spec in raw_axes.items()}
    rules = _parse_exclude(data.get("exclude"), axes)
    target = data.get("target_accuracy", 0.8)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise ConfigError(f"target_accuracy: expected a number in (0, 1], got {target!r}")
    report = data.get("report") or {}
    if not isinstance(report, Mapping):
        raise ConfigError(f"report: expected a mapping of report hints, got {report!r}")

    cells, seen = [], {}
    for combo in itertools.product(*(range(len(a.values)) for a in axes.values())):
        labels = {a.path: a.labels[i] for a, i in zip(axes.values(), combo)}
        if any(all(labels[p] in allowed for p, allowed in rule.items()) for rule in rules):
            continue
        cell_data = copy.deepcopy(base)
        for a, i in zip(axes.values(), combo):
            a.apply(cell_data, i)
        where = "cell {" + ", ".join(f"{k}: {v}" for k, v in labels.items()) + "}"
        try:
            cfg = parse_config(cell_data)
            check_roles(cfg)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}; fix the axis value or drop the cell with exclude") from None
        cell = Cell(cfg.run_id(), labels, cfg)
        if cell.id in seen:
            raise ConfigError(f"{where}: same config as {seen[cell.id].describe()} (run id {cell.id}); "
                              "remove the duplicate axis value")
        seen[cell.id] = cell
        cells.append(cell)
    if not cells:
        raise ConfigError("exclude: removes every cell of the matrix")
    kinds = {c.cfg.workload_class().name: c for c in cells}
    if len(kinds) > 1:
        first, second = list(kinds.values())[:2]
        raise ConfigError(f"axes: cell {first.describe()} trains a {first.cfg.workload_class().name} and cell "
                          f"{second.describe()} a {second.cfg.workload_class().name}; put each workload in a matrix of its own")
    return Matrix(name, tuple(axes.values()), tuple(cells), float(target), dict(report), source)


def load_matrix(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Matrix:
    """Read a matrix YAML file; ``overrides`` are ``key.path=value`` strings added to ``set``."""
    path = Path(path)
    data = load_yaml_file(path, "matrix")
    extra = dict(parse_override(item) for item in overrides)
    return parse_matrix(data, path.parent, source=str(path), overrides=extra)


# -- one cell, in a worker -------------------------------------------------------------------
@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable)."""

    cell: str
    labels: dict
    cfg: ExperimentConfig
    runs_root: str
    target: float
    threads: int = 1
    """torch threads of the cell (the same whatever the number of workers, so a cell's numbers
    do not depend on how the matrix was run)."""
    runner: Callable | None = None
    """Replaces run_experiment (tests): ``runner(cfg, run_dir, progress=False)``."""


def run_cell(task: CellTask) -> dict:
    """Run one cell and return its summary; exceptions become a ``failed`` summary."""
    from .run import run_experiment

    import torch
    torch.set_num_threads(task.threads)
    run_dir = Path(task.runs_root) / task.cfg.name / task.cell
    if run_dir.exists():  # an attempt that never got its cell.json: start clean
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    try:
        if task.runner is not None:
            result = task.runner(task.cfg, run_dir, progress=False)
        else:
            result = run_experiment(task.cfg, run_dir=run_dir, progress=False)
        summary = summarize(result.events, result.epochs, task.target, task.cfg.workload_class().quality)
        summary["metrics"].update(wall_time_s=round(result.wall_time, 3), sim_time_s=float(result.sim_time))
        summary.update(status=result.status, error=None if result.status == "finished" else _run_error(run_dir))
    except Exception as exc:  # noqa: BLE001 - a crashing cell is data, the matrix goes on
        summary = failed_summary(f"{type(exc).__name__}: {exc}", traceback.format_exc(), time.perf_counter() - t0)
    summary.update(cell=task.cell, labels=dict(task.labels), run_dir=str(run_dir), workload=task.cfg.workload_class().name)
    return summary


def _run_error(run_dir: Path) -> str | None:
    """The first line of the error a run recorded in its manifest (e.g. a deadlock)."""
    try:
        error = json.loads((run_dir / "manifest.json").read_text()).get("error")
    except (OSError, ValueError, AttributeError):
        return None
    return str(error).strip().splitlines()[0] if error else None


def failed_summary(error: str, trace: str = "", wall: float = float("nan")) -> dict:
    first = (error.strip().splitlines() or ["unknown error"])[0]
    metrics = {m: float("nan") for m in METRICS}
    metrics["wall_time_s"] = round(wall, 3)
    return {"status": FAILED, "error": first, "traceback": trace, "metrics": metrics,
            "curve": {"epoch": [], "time_s": [], "test_acc": [], "fid": [], "bytes_sent": []}, "faults": []}


def bytes_at(events: pd.DataFrame, times: Iterable[float]) -> list[float]:
    """Total bytes sent by all nodes at each time: per node, linear between its logged
    cumulative counts ((0, 0), per-epoch ``bytes_sent``, final ``bytes_sent_total``)."""
    times = list(times)
    rows = events[events["metric"].isin(("bytes_sent", "bytes_sent_total"))]
    total = [0.0] * len(times)
    for _, g in rows.groupby("node"):
        g = g.sort_values(["time_s", "value"])
        ts, vs = [0.0, *g["time_s"].astype(float)], [0.0, *g["value"].astype(float)]
        for k, t in enumerate(times):
            total[k] += _interp(t, ts, vs)
    return total


def _interp(t: float, ts: list[float], vs: list[float]) -> float:
    if t >= ts[-1]:
        return vs[-1]
    for j in range(1, len(ts)):
        if t < ts[j]:
            span = ts[j] - ts[j - 1]
            return vs[j - 1] + (vs[j] - vs[j - 1]) * ((t - ts[j - 1]) / span if span > 0 else 1.0)
    return vs[-1]


def summarize(events: pd.DataFrame, epochs: pd.DataFrame, target: float, quality: str = "test_acc") -> dict:
    """A finished run's metrics, its average-model curve and its fault events.

    The curve holds the ``avg`` rows of ``epochs.csv`` that have the workload's ``quality``
    column (test accuracy for classifiers, the global generator's FID for GANs)."""
    avg = epochs[epochs["node"] == "avg"].sort_values("epoch")
    avg = avg.dropna(subset=[quality]) if quality in avg.columns else avg.iloc[:0]

    def column(name: str) -> list[float]:
        return avg[name].astype(float).tolist() if name in avg.columns else [math.nan] * len(avg)

    acc, fid, t = column("test_acc"), column("fid"), column("time_s")
    reached = [ti for ti, a in zip(t, acc) if a >= target]
    faults = events[events["metric"].isin(FAULT_KINDS)]
    msgs = events.loc[events["metric"] == "msgs_sent_total", "value"]
    metrics = {
        "final_acc": acc[-1] if acc else math.nan,
        "best_acc": _best(acc, max),
        "time_to_target_s": reached[0] if reached else math.nan,
        # a deadlocked run logs no final totals: fall back on each node's last per-epoch count
        "bytes_sent": float(bytes_at(events, [math.inf])[0]),
        "messages": float(msgs.sum()) if len(msgs) else math.nan,
        "sim_time_s": math.nan, "wall_time_s": math.nan,
        "failures": float((events["metric"] == "crash").sum()),
        "final_fid": fid[-1] if fid else math.nan,
        "best_fid": _best(fid, min),
    }
    curve = {"epoch": avg["epoch"].astype(int).tolist(), "time_s": t, "test_acc": acc, "fid": fid,
             "bytes_sent": bytes_at(events, t)}
    return {"metrics": metrics, "curve": curve,
            "faults": [{"time_s": float(r.time_s), "node": str(r.node), "kind": r.metric} for r in faults.itertuples()]}


def _best(values: list[float], pick: Callable) -> float:
    finite = [v for v in values if v == v]
    return pick(finite) if finite else math.nan


# -- bookkeeping -----------------------------------------------------------------------------
def cell_dir(matrix: Matrix, cell: Cell, out_root: str | Path) -> Path:
    return Path(out_root) / matrix.name / "runs" / cell.cfg.name / cell.id


def read_done(path: Path, cell_id: str) -> dict | None:
    """A cell's summary if its cell.json is complete and belongs to it, else None."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("cell") == cell_id else None


def tables(matrix: Matrix, summaries: Mapping[str, dict]) -> dict[str, pd.DataFrame]:
    """The tidy tables of the cells done so far, in cell order."""
    cells, curves, faults = [], [], []
    for cell in matrix.cells:
        s = summaries.get(cell.id)
        if s is None:
            continue
        key = {"matrix": matrix.name, "cell": cell.id, **cell.labels}
        for metric in METRICS:
            value = s["metrics"].get(metric)
            cells.append({**key, "status": s["status"], "error": s.get("error"), "metric": metric,
                          "value": math.nan if value is None else float(value)})
        c = s.get("curve") or {}
        for i in range(len(c.get("epoch", []))):
            curves.append({**key, **{k: c[k][i] if k in c else math.nan for k in CURVE}})
        faults.extend({**key, **f} for f in s.get("faults", []))
    axes = [a.path for a in matrix.axes]
    frames = {
        "cells": pd.DataFrame(cells, columns=["matrix", "cell", *axes, "status", "error", "metric", "value"]),
        "curves": pd.DataFrame(curves, columns=["matrix", "cell", *axes, *CURVE]),
        "faults": pd.DataFrame(faults, columns=["matrix", "cell", *axes, "time_s", "node", "kind"]),
    }
    numeric = [a.path for a in matrix.axes if all(_is_int(lab) for lab in a.labels)]
    for frame in frames.values():  # a seed axis is a number in CSV and Parquet alike
        for col in numeric:
            frame[col] = frame[col].astype("Int64")
    long = frames["cells"]
    wide = long.pivot_table(index="cell", columns="metric", values="value", aggfunc="first", dropna=False)
    meta = long.drop_duplicates("cell").set_index("cell")[["matrix", *axes, "status", "error"]]
    frames["cells_wide"] = meta.join(wide.reindex(columns=list(METRICS))).reset_index()[
        ["matrix", "cell", *axes, "status", "error", *METRICS]] if len(long) else pd.DataFrame(
        columns=["matrix", "cell", *axes, "status", "error", *METRICS])
    return frames


def _is_int(label: str) -> bool:
    return label.lstrip("-").isdigit()


def write_tables(root: Path, matrix: Matrix, summaries: Mapping[str, dict]) -> pd.DataFrame:
    frames = tables(matrix, summaries)
    for name, frame in frames.items():
        write_atomic(root / f"{name}.csv", frame.to_csv(index=False, float_format="%.6g"))
    for name in ("cells", "cells_wide"):
        write_atomic(root / f"{name}.parquet", lambda tmp, name=name: frames[name].to_parquet(tmp, index=False))
    return frames["cells"]


def cell_line(summary: dict) -> str:
    m = summary["metrics"]
    if summary["status"] == FAILED:
        return f"failed: {summary['error']}"
    from ..workloads import WORKLOADS
    quality = WORKLOADS.get(summary.get("workload"), WORKLOADS["classifier"]).cell_text(m)
    return (f"{summary['status']}: {quality}, {m['bytes_sent'] / 1e6:.1f} MB, "
            f"sim {m['sim_time_s']:.2f}s, wall {m['wall_time_s']:.1f}s")


def prefetch_data(cells: Iterable[Cell]) -> None:
    """Load each torchvision data set once here, so that parallel workers never race to
    copy or unpack the same archives on first use."""
    from ..data.datasets import load_dataset

    seen = set()
    for cell in cells:
        d = cell.cfg.dataset
        key = (d.name, d.root, d.download)
        if d.name not in ("digits", "synthetic") and key not in seen:
            seen.add(key)
            load_dataset(d.name, d.root, download=d.download, max_train=1, max_test=1)


# -- the matrix run --------------------------------------------------------------------------
@dataclass
class MatrixResult:
    root: Path
    cells: pd.DataFrame
    ran: int
    skipped: int
    failed: int


def run_matrix(matrix: Matrix, out_root: str | Path = "results", *, executor=None, retry_failed: bool = True,
               progress: bool = True, runner: Callable | None = None, echo: Callable[[str], None] | None = None,
               threads: int = 1) -> MatrixResult:
    """Run the cells not done yet; return the rebuilt table. See the module docstring."""
    from .executors import LocalExecutor

    executor = executor or LocalExecutor()
    root = Path(out_root) / matrix.name
    with MatrixLock(root):
        return _run_matrix(matrix, out_root, root, executor, retry_failed, progress, runner, echo, threads)


class MatrixLock:
    """An exclusive lock on a matrix's output directory (``.lock``, held for the whole run):
    a second simbench on the same directory stops at once instead of redoing every cell."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd: int | None = None

    def __enter__(self) -> "MatrixLock":
        import fcntl
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"--out: {self.root} cannot be written ({exc.strerror or exc})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise ConfigError(f"matrix: another simbench (pid {holder}) is running the matrix in {self.root}; "
                              "wait for it, or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def remove_temp_files(root: Path) -> int:
    """Delete the temporary files (``.*.tmp``) an interrupted write left under a matrix's
    directory; returns how many there were."""
    stale = [p for pattern in (".*.tmp", "runs/*/*/.*.tmp", "runs/*/*/*.tmp") for p in root.glob(pattern)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _run_matrix(matrix: Matrix, out_root, root: Path, executor, retry_failed: bool, progress: bool,
                runner: Callable | None, echo: Callable[[str], None] | None, threads: int) -> MatrixResult:
    runs = root / "runs"
    remove_temp_files(root)
    write_atomic(root / "matrix.json", json.dumps(matrix.spec(), indent=2) + "\n")
    summaries, todo = {}, []
    for cell in matrix.cells:
        done = read_done(cell_dir(matrix, cell, out_root) / DONE, cell.id)
        if done is not None and not (retry_failed and done["status"] == FAILED):
            summaries[cell.id] = done
        else:
            todo.append(cell)
    write_tables(root, matrix, summaries)
    skipped = len(summaries)
    if getattr(executor, "prefetch_data", False):
        prefetch_data(todo)
    tasks = [CellTask(c.id, c.labels, c.cfg, str(runs), matrix.target_accuracy, threads, runner) for c in todo]
    by_id = {c.id: c for c in todo}
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(matrix.cells), initial=skipped, desc=f"matrix {matrix.name}", unit="cell",
                   dynamic_ncols=True)
    say = echo or (bar.write if bar is not None else (lambda s: None))
    say(f"matrix {matrix.name}: {len(matrix.cells)} cells, {skipped} done, {len(tasks)} to run on {executor.describe()}")
    failed = 0
    outcomes = executor.imap_unordered(run_cell, tasks)
    try:
        for task, outcome in outcomes:
            if isinstance(outcome, BaseException):  # the worker itself died, not the cell's code
                outcome = failed_summary(f"{type(outcome).__name__}: {outcome}")
                outcome.update(cell=task.cell, labels=dict(task.labels),
                               run_dir=str(Path(task.runs_root) / task.cfg.name / task.cell))
            summaries[task.cell] = outcome
            failed += outcome["status"] == FAILED
            write_atomic(cell_dir(matrix, by_id[task.cell], out_root) / DONE, json.dumps(outcome, indent=1) + "\n")
            write_tables(root, matrix, summaries)
            if bar is not None:
                bar.update(1)
            say(f"{by_id[task.cell].describe()} {task.cell}  {cell_line(outcome)}")
    finally:
        outcomes.close()  # on Ctrl-C: stop the cells still running (they are redone next time)
        if bar is not None:
            bar.close()
    return MatrixResult(root, write_tables(root, matrix, summaries), len(tasks), skipped, failed)
