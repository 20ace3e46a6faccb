"""Experiment trackers: the recorder's rows, live, in TensorBoard or MLflow.

Selected in the config (``output.trackers: [tensorboard]``, ``[mlflow]`` or both), a
tracker receives every row that goes to ``events.csv`` (per-epoch metrics, faults, totals)
as ``(time_s, node, metric, value)``. Simulated time is the step axis: the step is the
simulated time in milliseconds (an integer, as both tools want), and TensorBoard's
"relative" axis shows simulated seconds. A metric of node ``k`` is the series
``<metric>/node<k>`` (``<metric>/avg`` for the average model), so TensorBoard groups one
metric's nodes in one chart.

* ``tensorboard`` writes event files under ``<run_dir>/tensorboard/`` with
  ``torch.utils.tensorboard`` (needs the ``tensorboard`` package):
  ``tensorboard --logdir results/<name>``.
* ``mlflow`` logs to ``output.mlflow_uri`` (default: ``<out>/mlruns``, a local store;
  ``mlflow ui --backend-store-uri results/mlruns``), one MLflow run per simbench run, in an
  experiment named after the config's ``name``, with the resolved config as parameters
  (needs ``pip install mlflow-skinny``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from ..core.schema import ConfigError

TRACKERS = ("tensorboard", "mlflow")


class Tracker(Protocol):
    """Told of every recorded row; closed at the end of the run."""

    def log(self, time_s: float, node: Any, metric: str, value: float) -> None: ...

    def close(self) -> None: ...


def _series(node: Any, metric: str) -> str:
    name = "avg" if node == "avg" else f"node{node}"
    return f"{metric}/{name}"


def step_of(time_s: float) -> int:
    """The tracker step of a simulated time: milliseconds."""
    return int(round(float(time_s) * 1000))


class TensorBoardTracker:
    """Scalars to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: Path, flush_secs: int = 10) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("output.trackers: tensorboard needs the tensorboard package; "
                              "pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)
        self._t0 = 1_000_000_000.0  # a fixed base: TensorBoard's "relative" axis is then simulated seconds

    def log(self, time_s: float, node: Any, metric: str, value: float) -> None:
        if value == value:  # NaN has no point on a chart
            self.writer.add_scalar(_series(node, metric), value, global_step=step_of(time_s),
                                   walltime=self._t0 + float(time_s))

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """Metrics to an MLflow run (a local ``mlruns`` store unless a tracking URI is given)."""

    def __init__(self, uri: str, experiment: str, run_name: str, params: dict) -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("output.trackers: mlflow needs the mlflow package; pip install mlflow-skinny") from None
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:500] for k, v in _flatten(params).items()})

    def log(self, time_s: float, node: Any, metric: str, value: float) -> None:
        if value == value:
            key = re.sub(r"[^A-Za-z0-9_\-./ ]", "_", _series(node, metric))
            self.mlflow.log_metric(key, value, step=step_of(time_s))

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def make_trackers(names, run_dir: Path, cfg: Any, run_id: str) -> list[Tracker]:
    """The trackers ``output.trackers`` names, for one run."""
    out: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            out.append(TensorBoardTracker(Path(run_dir) / "tensorboard"))
        elif name == "mlflow":
            uri = cfg.output.mlflow_uri or (Path(run_dir).parent.parent / "mlruns").resolve().as_uri()
            out.append(MLflowTracker(uri, cfg.name, run_id, cfg.to_dict()))
    return out
