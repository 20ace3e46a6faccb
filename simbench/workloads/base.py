"""The Workload interface: what a run trains and how it is judged, chosen once from the algorithm.

An algorithm names its workload (``Algorithm.workload``: ``"classifier"`` or ``"gan"``, or a
:class:`Workload` subclass of the user's). Everything that depends on *what* is trained,
rather than on how nodes talk, lives in the workload, so the experiment, real-mode and
report code never ask "is this a GAN":

* **building**: which model names fit (:meth:`Workload.check_model`), a node's learner
  (:meth:`Workload.make_learner`);
* **per epoch**: each node's own metrics (:meth:`Workload.evaluate`), the cross-node view
  in the simulator (:meth:`Workload.observer`: the average model, or the global
  generator's FID) and its real-mode counterpart (:meth:`Workload.real_hook`,
  :meth:`Workload.merge_rows`);
* **outputs**: the run's figure (:meth:`Workload.plot`), its one-line result
  (:meth:`Workload.headline`), the metrics a matrix reports (:attr:`Workload.quality`,
  :attr:`Workload.report_metrics`) and artefacts algorithms hand over
  (:meth:`Workload.save_artifact`; algorithms never write files themselves).

A workload object is made per run by :func:`simbench.workloads.make_workload` with the
run's config, its loaded data set, its run directory and its random streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import numpy as np
import pandas as pd


class Observer(Protocol):
    """Told of every reporting node's epoch end in the simulator; logs the cross-node rows."""

    clock: Callable[[], float]
    progress: Callable[[], Any] | None

    def on_epoch(self, node: int, epoch: int, learner: Any) -> None: ...

    def flush(self) -> None: ...


@dataclass
class NodeData:
    """One node's part of the data set, as indices into the training set."""

    train: np.ndarray | None
    """Training indices (None: a model holder without data, e.g. a server)."""
    val: np.ndarray | None
    """Validation indices carved from its shard (None or empty: none)."""


class Workload:
    """Base of workloads; see the module docstring. Subclasses set the class attributes and
    implement the methods that raise NotImplementedError."""

    name: ClassVar[str] = ""
    quality: ClassVar[str] = ""
    """The ``avg`` column of epochs.csv that judges a run (``test_acc``, ``fid``)."""
    higher_is_better: ClassVar[bool] = True
    report_metrics: ClassVar[tuple[str, ...]] = ()
    """Matrix metrics (see :data:`simbench.experiment.matrix.METRICS`) its reports show."""
    quality_label: ClassVar[str] = ""
    """Axis label of :attr:`quality` in figures."""
    has_target: ClassVar[bool] = False
    """Whether a matrix's ``target_accuracy`` (time to target) applies."""
    report_curve: ClassVar[tuple[str, str, str]] = ("", "", "")
    """(short name, description, file stem) of the report's quality curves."""
    heat_metric: ClassVar[str] = ""
    """The matrix metric a report's heat map shows by default."""

    def __init__(self, cfg: Any, data: Any = None, run_dir: Path | None = None, streams: Any = None) -> None:
        from ..core.seeding import RunStreams
        self.cfg = cfg
        self.data = None
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.streams = streams if streams is not None else RunStreams(cfg.seed)
        if data is not None:
            self.attach(data)

    def attach(self, data: Any) -> None:
        """Take the run's loaded data set (subclasses derive what they need from it)."""
        self.data = data

    def need_data(self) -> None:
        """Load the run's data set now if it was not given (a real run's merge needs it late)."""
        if self.data is None:
            from ..experiment.build import load_data
            self.attach(load_data(self.cfg))

    # -- config --------------------------------------------------------------------------
    @classmethod
    def check_model(cls, cfg: Any) -> None:
        """ConfigError naming ``model.name`` when the model does not fit this workload."""

    # -- building ------------------------------------------------------------------------
    def execution(self, requested: str) -> tuple[str, str | None]:
        """How the simulator runs this workload's learner steps, for ``requested`` (the
        config's ``execution``): ``("batched", None)``, or ``("sequential", why)``."""
        if requested == "sequential":
            return "sequential", "execution: sequential"
        return "sequential", f"{self.name or type(self).__name__} learners are not batched"

    def make_learner(self, node: int, part: NodeData, batch_size: int, seed: int, model_seed: int) -> Any:
        """The learner of a model-holding node."""
        raise NotImplementedError

    def eval_sets(self, node: int, part: NodeData) -> dict[str, Any]:
        """``NodeContext`` fields with the node's evaluation data (``eval_train``, ``val``, ``test``)."""
        return {}

    # -- per epoch -----------------------------------------------------------------------
    def evaluate(self, rt: Any, ctx: Any, epoch: int, learner: Any) -> dict[str, float]:
        """Log a node's own metrics at the end of ``epoch``; returns them."""
        raise NotImplementedError

    def observer(self, recorder: Any, reporters: list[int]) -> Observer:
        """The simulator's cross-node view of ``reporters``' epochs."""
        raise NotImplementedError

    def real_hook(self, out_dir: Path, log: Callable[..., None], snapshots: bool) -> Callable | None:
        """A real node's ``on_epoch`` hook (its process sees only itself)."""
        return None

    def merge_rows(self, run_dir: Path, epochs: pd.DataFrame, reporters: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A real run's ``avg`` rows (events, epochs) from what its ``reporters`` wrote."""
        return pd.DataFrame(), pd.DataFrame()

    # -- outputs -------------------------------------------------------------------------
    def plot(self, epochs: pd.DataFrame, events: pd.DataFrame, run_dir: Path, title: str,
             time_label: str = "simulated time [s]") -> Path | None:
        """The run's figure in ``run_dir``."""
        return None

    @classmethod
    def headline(cls, final: Callable[[str, str], float]) -> str:
        """The run's result in a few words; ``final(metric, node)`` reads epochs.csv's last value."""
        return f"{cls.quality} {final(cls.quality, 'avg'):.3f}"

    @classmethod
    def axis_range(cls, values: pd.Series) -> tuple[float, float] | None:
        """Limits of the quality axis for ``values`` (None: from the data)."""
        return None

    @classmethod
    def close(cls, a: float, b: float) -> bool:
        """Whether two runs' final qualities are close."""
        return math.isclose(a, b, rel_tol=0.05)

    @classmethod
    def agrees(cls, start: float, sim: float, real: float) -> bool:
        """Whether the real runtime's final quality agrees with the simulator's, from the same
        ``start``: close to it, or (an asynchronous algorithm mixes other versions when wall
        time orders its messages) at least half of the simulator's progress."""
        sign = 1.0 if cls.higher_is_better else -1.0
        return cls.close(sim, real) or sign * (real - start) >= 0.5 * sign * (sim - start)

    @classmethod
    def report_text(cls, spec: dict) -> str:
        """What the report says about how runs are judged."""
        return f"Quality is {cls.quality_label}."

    @classmethod
    def cell_text(cls, metrics: dict) -> str:
        """A matrix cell's result in a few words (its summary metrics)."""
        return ""

    def save_artifact(self, name: str, write: Callable[[Path], Any]) -> Path | None:
        """Let ``write(directory)`` put an algorithm's artefact into ``<run_dir>/<name>/``."""
        if self.run_dir is None:
            return None
        directory = self.run_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        write(directory)
        return directory
