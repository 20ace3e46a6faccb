"""Workloads: what a run trains and how it is judged (see :mod:`simbench.workloads.base`).

:data:`WORKLOADS` maps the names algorithms give (``Algorithm.workload``) to the classes;
an algorithm may also name a :class:`Workload` subclass of its own directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.schema import ConfigError
from .base import NodeData, Observer, Workload
from .classifier import ClassifierWorkload
from .gan import GanWorkload

WORKLOADS: dict[str, type[Workload]] = {"classifier": ClassifierWorkload, "gan": GanWorkload}


def workload_class(algorithm: Any) -> type[Workload]:
    """The workload class of an Algorithm class (its ``workload``: a name or a class)."""
    spec = getattr(algorithm, "workload", "classifier")
    if isinstance(spec, type) and issubclass(spec, Workload):
        return spec
    if spec in WORKLOADS:
        return WORKLOADS[spec]
    raise ConfigError(f"algorithm.name: {getattr(algorithm, 'name', algorithm)!r} names workload {spec!r}; "
                      f"allowed: {', '.join(WORKLOADS)} or a Workload subclass")


def results_workload(spec: dict, curves: Any = None) -> type[Workload]:
    """The workload of a matrix's results: the one ``matrix.json`` names, else (results written
    before it named one) the one whose quality column the curves fill."""
    name = spec.get("workload")
    if name in WORKLOADS:
        return WORKLOADS[name]
    if curves is not None:
        for cls in WORKLOADS.values():
            if cls.quality in curves and curves[cls.quality].notna().any():
                return cls
    return ClassifierWorkload


def make_workload(cfg: Any, data: Any = None, run_dir: str | Path | None = None, streams: Any = None) -> Workload:
    """The workload object of one run of ``cfg``."""
    return workload_class(cfg.algorithm_class())(cfg, data, None if run_dir is None else Path(run_dir), streams)


__all__ = ["WORKLOADS", "ClassifierWorkload", "GanWorkload", "NodeData", "Observer", "Workload", "make_workload",
           "results_workload", "workload_class"]
