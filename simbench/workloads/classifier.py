"""The classifier workload: a classification model per node, judged by test accuracy.

Every model-holding node gets a learner on its shard (a server, which holds no data, gets
one on a single sample: it never trains): a :class:`~simbench.learn.flat.FlatLearner`
where the model and optimizer allow (:func:`~simbench.learn.flat.flat_eligible`), with the
run's one model and one copy of the data set shared by all nodes, each node holding its
parameter vector and the indices of its shard; else a :class:`~simbench.learn.Learner` with
its own module and a copy of its shard. Both compute the same numbers. Evaluation sets are
index views, taken when a node evaluates. A node's epoch
report is seed 003's ``train/val/test`` loss and accuracy of its own model on the first
``train.eval_samples`` samples of its shard and of the test set, plus ``bytes_sent``. In
the simulator the observer forms the average of the reporting nodes' models at every epoch
and logs it as the ``avg`` rows with the consensus distance; a real run saves each node's
parameters per epoch and :meth:`ClassifierWorkload.merge_rows` builds the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.schema import ConfigError
from ..learn import Learner, OptimConfig
from ..learn.flat import FlatLearner, ModelTemplate, batch_blocker, flat_eligible
from ..metrics.consensus import AverageModelObserver
from .base import NodeData, Workload


def optim_config(cfg: Any) -> OptimConfig:
    t = cfg.train
    return OptimConfig(name=t.optimizer, lr=t.lr, momentum=t.momentum, dampening=t.dampening,
                       nesterov=t.nesterov, weight_decay=t.weight_decay, l2_lambda=t.l2_lambda,
                       scheduler=t.scheduler, step_size=t.step_size, gamma=t.gamma)


class ClassifierWorkload(Workload):
    name = "classifier"
    quality = "test_acc"
    higher_is_better = True
    quality_label = "test accuracy (average model)"
    report_metrics = ("final_acc", "best_acc", "time_to_target_s", "bytes_sent", "messages", "wall_time_s", "failures")
    has_target = True
    report_curve = ("Accuracy", "Test accuracy of the average model", "acc")
    heat_metric = "final_acc"

    def __init__(self, cfg: Any, data: Any = None, run_dir: Path | None = None, streams: Any = None) -> None:
        self.optim = optim_config(cfg)
        super().__init__(cfg, data, run_dir, streams)

    def attach(self, data: Any) -> None:
        super().attach(data)
        ev, device = self.cfg.train.eval_samples, self.cfg.device
        self.test = (data.x_test[:ev].to(device), data.y_test[:ev].to(device))

    @classmethod
    def check_model(cls, cfg: Any) -> None:
        from ..gan.models import GAN_MODELS
        if cfg.model.name in GAN_MODELS:
            raise ConfigError(f"model.name: {cfg.model.name!r} is a GAN; {cfg.algorithm} trains classifiers")

    def build_model(self, seed: int) -> torch.nn.Module:
        from .. import registry
        from ..models import build_model
        cfg, data = self.cfg, self.data
        try:
            return build_model(cfg.model.name, data.input_shape, data.num_classes, seed=seed,
                               factory=registry.model(cfg.model.name), **cfg.model.options)
        except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: torch on a negative size
            raise ConfigError(f"model.options: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def _plan(self) -> tuple[str | None, str | None]:
        """Why this run's learners cannot be FlatLearners, and why their steps cannot be
        batched (None, None: they can)."""
        if not hasattr(self, "_why"):
            probe = self.build_model(self.streams.model_seed(0, True))
            flat = flat_eligible(probe, self.optim)
            self._why = (flat, flat or batch_blocker(probe))
            self._template: ModelTemplate | None = None
        return self._why

    def template(self, model_seed: int) -> ModelTemplate:
        """The run's one module (built with the first node's seed), its layout and FLOPs."""
        if self._template is None:
            self._template = ModelTemplate(self.build_model(model_seed), self.cfg.device)
            self._template_seed = model_seed
            device = self._template.device
            self._train = (self.data.x_train.to(device), self.data.y_train.to(device))
        return self._template

    def execution(self, requested: str) -> tuple[str, str | None]:
        if requested == "sequential":
            return "sequential", "execution: sequential"
        why = self._plan()[1]
        return ("batched", None) if why is None else ("sequential", why)

    def make_learner(self, node: int, part: NodeData, batch_size: int, seed: int, model_seed: int) -> Any:
        if self._plan()[0] is None:
            template = self.template(model_seed)
            x, y = self._train
            index = torch.zeros(1, dtype=torch.long) if part.train is None else \
                torch.as_tensor(np.asarray(part.train, dtype=np.int64))
            init = None if model_seed == self._template_seed else (lambda s=model_seed: self._initial(s))
            return FlatLearner(template, x, y, index, batch_size=batch_size, optim=self.optim, seed=seed, init=init)
        data, device = self.data, self.cfg.device
        if part.train is not None:
            x, y = data.x_train[part.train], data.y_train[part.train]
        else:  # a model holder without data (a server): it never trains
            x, y = data.x_test[:1], data.y_test[:1]
        return Learner(self.build_model(model_seed), x.to(device), y.to(device), batch_size=batch_size,
                       optim=self.optim, seed=seed, device=device)

    def _initial(self, model_seed: int) -> torch.Tensor:
        model = self.build_model(model_seed)
        return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])

    def eval_sets(self, node: int, part: NodeData) -> dict[str, Any]:
        data, device, ev = self.data, self.cfg.device, self.cfg.train.eval_samples
        out: dict[str, Any] = {"test": self.test}
        if part.train is not None:
            out["eval_train"] = Rows(data.x_train, data.y_train, part.train[:ev], device)
            if part.val is not None and len(part.val):
                out["val"] = Rows(data.x_train, data.y_train, part.val, device)
        return out

    # -- per epoch ----------------------------------------------------------------------------
    def evaluate(self, rt: Any, ctx: Any, epoch: int, learner: Any) -> dict[str, float]:
        return evaluate_splits(rt, ctx, epoch, learner)

    def observer(self, recorder: Any, reporters: list[int]) -> AverageModelObserver:
        obs = AverageModelObserver(recorder)
        model = self.build_model(self.streams.model_seed(0, self.cfg.train.same_init))  # its weights are overwritten
        obs.configure(model, self.test, expected=len(reporters), device=self.cfg.device)
        return obs

    def real_hook(self, out_dir: Path, log: Callable[..., None], snapshots: bool) -> Callable | None:
        """Save each epoch's flat parameters (raw float arrays, no pickle) for the avg rows."""
        if not snapshots:
            return None
        snap_dir = Path(out_dir) / "params"

        def on_epoch(node: int, epoch: int, learner: Any) -> None:
            if learner is None:
                return
            snap_dir.mkdir(parents=True, exist_ok=True)
            np.save(snap_dir / f"epoch{epoch}.npy", learner.get_flat().detach().cpu().numpy(), allow_pickle=False)
        return on_epoch

    def merge_rows(self, run_dir: Path, epochs: pd.DataFrame, reporters: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The ``avg`` rows from the nodes' parameter snapshots (empty frames when there are none)."""
        from ..metrics.recorder import Recorder

        snaps: dict[int, dict[int, Path]] = {}
        for d in sorted((Path(run_dir) / "nodes").glob("*")):
            if d.name.isdigit():
                for f in (d / "params").glob("epoch*.npy"):
                    snaps.setdefault(int(f.stem[5:]), {})[int(d.name)] = f
        if not snaps or not len(epochs):
            return pd.DataFrame(), pd.DataFrame()
        self.need_data()
        rec = Recorder(Path(run_dir).name, wall_clock=False)
        obs = self.observer(rec, reporters)
        times = {(str(r.node), int(r.epoch)): float(r.time_s) for r in epochs.itertuples()}
        for epoch in sorted(snaps):
            for k in sorted(snaps[epoch], key=lambda k: times.get((str(k), epoch), 0.0)):
                obs.clock = lambda t=times.get((str(k), epoch), 0.0): t
                obs.on_epoch(k, epoch, _Snapshot(snaps[epoch][k]))
        obs.flush()
        ev, ep = rec.events_frame(), rec.epochs_frame()
        ev["run_id"] = ep["run_id"] = epochs["run_id"].iloc[0]
        return ev, ep

    # -- outputs ------------------------------------------------------------------------------
    def plot(self, epochs: pd.DataFrame, events: pd.DataFrame, run_dir: Path, title: str,
             time_label: str = "simulated time [s]") -> Path | None:
        from ..report.plots import plot_run
        return plot_run(epochs, events, Path(run_dir) / "test_acc.png", title=title, time_label=time_label)

    @classmethod
    def axis_range(cls, values: pd.Series) -> tuple[float, float] | None:
        """Accuracy limits in steps of 0.05 within [0, 1], zoomed on where the curves spend their
        time after the first epoch (the near-chance start may leave the frame below)."""
        later = values.dropna()
        if later.empty:
            return 0.0, 1.0
        low = max(0.0, np.floor((later.quantile(0.02) - 0.03) / 0.05) * 0.05)
        return low, min(1.0, np.ceil((later.max() + 0.01) / 0.05) * 0.05)

    @classmethod
    def close(cls, a: float, b: float) -> bool:
        """Within 0.1 accuracy: the real runtime's timing may let asynchronous algorithms mix
        other versions than the simulator did."""
        return abs(a - b) <= 0.1

    @classmethod
    def report_text(cls, spec: dict) -> str:
        return f"Target accuracy {float(spec.get('target_accuracy', 0.8)):.0%} (average model, test set)."

    @classmethod
    def cell_text(cls, metrics: dict) -> str:
        ttt = metrics["time_to_target_s"]
        return f"final acc {metrics['final_acc']:.3f}, to target {'never' if ttt != ttt else f'{ttt:.2f}s'}"

    @classmethod
    def headline(cls, final: Callable[[str, str], float]) -> str:
        return f"average-model test accuracy {final('test_acc', 'avg'):.3f}"


class _Snapshot:
    """A saved parameter vector posing as a learner (the observer asks for get_flat() only)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_flat(self) -> torch.Tensor:
        try:
            array = np.load(self.path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # a pickle, a truncated file, not an .npy at all
            raise ConfigError(f"merge: {self.path} is not a parameter snapshot ({str(exc).splitlines()[0]})") from None
        if array.dtype.kind != "f" or array.ndim != 1:
            raise ConfigError(f"merge: {self.path} holds a {array.dtype} array of shape {array.shape}, "
                              "not a flat float parameter vector")
        return torch.from_numpy(array)


class Rows(Sequence):
    """``(x, y)`` of some rows of the data set, taken when used and not held: a node's
    evaluation samples cost nothing while it does not evaluate."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, index: np.ndarray, device: str) -> None:
        self._xy, self.index, self.device = (x, y), torch.as_tensor(np.asarray(index, dtype=np.int64)), device

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        return self._xy[i][self.index.to(self._xy[i].device)].to(self.device)


def evaluate_splits(rt: Any, ctx: Any, epoch: int, learner: Any) -> dict[str, float]:
    """Log seed 003's per-epoch loss and accuracy of ``learner`` on the node's train, val and
    test samples, and ``bytes_sent``."""
    row: dict[str, float] = {}
    for split, data in (("train", ctx.eval_train), ("val", ctx.val), ("test", ctx.test)):
        if data is not None and len(data[1]):
            loss, acc = learner.evaluate(*data)
            row[f"{split}_loss"], row[f"{split}_acc"] = loss, acc
    row["bytes_sent"] = float(getattr(rt, "bytes_sent", 0))
    for metric, value in row.items():
        rt.log(metric, value, epoch=epoch)
    return row
