"""The GAN workload: a generator/discriminator pair per node, judged by the FID of the
global generator.

An algorithm with ``workload = "gan"`` gets a :class:`~simbench.gan.GANLearner` per model
role (built from ``model.name`` in :data:`~simbench.gan.models.GAN_MODELS`, or a GAN factory
given by import path or entry point, and the GAN knobs of the algorithm's parameters).
Images are scaled to [-1, 1] (:func:`gan_range`). A node's epoch report is its last G and D
losses and ``bytes_sent``; its reporting nodes' epochs are scored by the observer: FID,
classifier score and class coverage of ``fid_batch`` samples from a fixed noise batch
against the first ``fid_batch`` test images, logged for the node and as the ``avg`` row
(the global generator), and a grid PNG ``samples/epoch_XXXX.png``. A real node scores its
own generator the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..core.schema import ConfigError
from ..data.datasets import Dataset
from ..gan import GAN_MODELS, GANLearner, build_gan
from ..gan.fidnet import FidNetMissing, load_fid_net
from ..gan.grids import save_grid
from ..gan.metrics import GanEvaluator, inception_features
from .base import NodeData, Workload

_SCALED: dict[int, tuple] = {}


def gan_range(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test images mapped to [-1, 1] by the train set's per-channel min and max
    (the seed's Normalize([0.5], [0.5]) on [0, 1] pixels); cached per data set object."""
    key = id(data)
    if key not in _SCALED or _SCALED[key][0] is not data:
        dims = [0] + list(range(2, data.x_train.dim()))
        lo = data.x_train.amin(dim=dims, keepdim=True)
        hi = data.x_train.amax(dim=dims, keepdim=True)

        def scale(x):
            return ((x - lo) / (hi - lo).clamp_min(1e-12) * 2 - 1).clamp(-1, 1)

        _SCALED.clear()
        _SCALED[key] = (data, scale(data.x_train), scale(data.x_test))
    return _SCALED[key][1], _SCALED[key][2]


class GanObserver:
    """Scores the reporting nodes' generators at each epoch; the first report of an epoch is ``avg``."""

    def __init__(self, recorder, evaluator: GanEvaluator, *, latent_dim: int, fid_batch: int, grid: int,
                 grid_dir: Path | None, seed: int) -> None:
        self.recorder, self.evaluator = recorder, evaluator
        gen = torch.Generator().manual_seed(int(seed) % (2**63))
        self.z = torch.randn(fid_batch, latent_dim, generator=gen)
        self.grid, self.grid_dir = grid, grid_dir
        self.clock = lambda: 0.0
        self.bytes_total = lambda: float("nan")
        self.progress = None
        self.done: set[int] = set()

    def on_epoch(self, node: int, epoch: int, learner) -> None:
        if self.progress is not None:
            self.progress()
        if learner is None:
            return
        fake, scores = self.score(learner)
        t = self.clock()
        targets = [node] if epoch in self.done else [node, "avg"]
        self.done.add(epoch)
        for who in targets:
            for metric, value in scores + ([("bytes_total", self.bytes_total())] if who == "avg" else []):
                self.recorder.event(t, who, metric, value, epoch)
        if self.grid and self.grid_dir is not None and "avg" in targets:
            save_grid(fake[:self.grid], self.grid_dir / f"epoch_{epoch:04d}.png")

    def score(self, learner) -> tuple[torch.Tensor, list[tuple[str, float]]]:
        """Samples of ``learner`` (a generator or a mixture) on the fixed noise, and their scores."""
        fake = learner.sample(z=self.z).cpu()
        s = self.evaluator.score(fake)
        return fake, [("fid", s.fid), ("class_score", s.class_score), ("coverage", s.coverage)]

    def flush(self) -> None:
        pass


class GanWorkload(Workload):
    name = "gan"
    quality = "fid"
    higher_is_better = False
    quality_label = "FID, global generator (lower is better)"
    report_metrics = ("final_fid", "best_fid", "bytes_sent", "messages", "wall_time_s", "failures")
    report_curve = ("FID", "The global generator's FID", "report_fid")  # fid_vs_*.png are benchmarks/gan_summary.py's
    heat_metric = "final_fid"

    evaluator: GanEvaluator | None = None

    def attach(self, data: Any) -> None:
        super().attach(data)
        self.x_train, self.x_test = gan_range(data)
        self.evaluator = self._evaluator()

    @classmethod
    def check_model(cls, cfg: Any) -> None:
        from ..models import MODELS
        if cfg.model.name in MODELS:
            raise ConfigError(f"model.name: {cfg.algorithm} trains a GAN; use one of {', '.join(GAN_MODELS)} "
                              f"or a GAN model of your own, not {cfg.model.name!r}")

    def _evaluator(self) -> GanEvaluator:
        p = self.cfg.algorithm_params
        if len(self.x_test) < p.fid_batch:
            raise ConfigError(f"algorithm.fid_batch: {p.fid_batch} exceeds the {len(self.x_test)} test images")
        try:
            net = load_fid_net(self.data.name)
        except FidNetMissing as exc:
            raise ConfigError(str(exc)) from None
        features = net.features
        if p.fid == "inception":
            try:
                features = inception_features()
            except FileNotFoundError as exc:
                raise ConfigError(f"algorithm.{exc}") from None
        return GanEvaluator(self.x_test[:p.fid_batch].cpu(), features, net)

    def make_learner(self, node: int, part: NodeData, batch_size: int, seed: int, model_seed: int) -> GANLearner:
        """A GANLearner on the node's whole shard (GANs use no validation split); a node
        without data (a server) gets one test image."""
        from .. import registry
        cfg, data, p = self.cfg, self.data, self.cfg.algorithm_params
        if part.train is not None:
            idx = np.sort(np.concatenate([part.train, part.val if part.val is not None else part.train[:0]]))
            x, y = self.x_train[idx], data.y_train[idx]
        else:
            x, y = self.x_test[:1], data.y_test[:1]
        try:
            g, d, loss = build_gan(cfg.model.name, data.input_shape, latent_dim=p.latent_dim, seed=model_seed,
                                   factory=registry.model(cfg.model.name), **cfg.model.options)
        except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: torch on a negative size
            raise ConfigError(f"model.options: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        learner = GANLearner(g, d, x, y, batch_size=batch_size, latent_dim=p.latent_dim, lr=p.lr, b1=p.b1, b2=p.b2,
                             loss=loss, seed=seed, num_classes=data.num_classes, device=cfg.device)
        learner.arch = {"model": cfg.model.name, "options": dict(cfg.model.options),
                        "input_shape": list(data.input_shape), "latent_dim": p.latent_dim}
        return learner

    # -- per epoch ----------------------------------------------------------------------------
    def evaluate(self, rt: Any, ctx: Any, epoch: int, learner: Any) -> dict[str, float]:
        d_loss, g_loss = learner.last_losses
        row = {"d_loss": d_loss, "g_loss": g_loss, "bytes_sent": float(getattr(rt, "bytes_sent", 0))}
        for metric, value in row.items():
            rt.log(metric, value, epoch=epoch)
        return row

    def fid(self, samples: torch.Tensor) -> float:
        """FID of ``samples`` against the run's reference test images (what algorithms that
        score generators themselves use: Lipizzaner's mixture weights, DEGAN's target)."""
        return float(self.evaluator.fid(samples.cpu()))

    def _scorer(self, recorder: Any, grid: int, grid_dir: Path | None) -> "GanObserver":
        p = self.cfg.algorithm_params
        return GanObserver(recorder, self.evaluator, latent_dim=p.latent_dim, fid_batch=p.fid_batch, grid=grid,
                           grid_dir=grid_dir, seed=self.cfg.seed)

    def observer(self, recorder: Any, reporters: list[int]) -> "GanObserver":
        grid_dir = None if self.run_dir is None else self.run_dir / "samples"
        return self._scorer(recorder, self.cfg.algorithm_params.grid, grid_dir)

    def real_hook(self, out_dir: Path, log: Callable[..., None], snapshots: bool) -> Callable | None:
        """Score this node's own generator (or mixture) at each epoch end, as the simulator's
        observer does: same noise, same scores, in the node's epochs.csv."""
        scorer = self._scorer(None, 0, None)

        def on_epoch(node: int, epoch: int, learner: Any) -> None:
            if learner is not None:
                for metric, value in scorer.score(learner)[1]:
                    log(metric, value, epoch=epoch)
        return on_epoch

    def merge_rows(self, run_dir: Path, epochs: pd.DataFrame, reporters: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per epoch, the scores of the first node to report them (as the simulator's observer does)."""
        if "fid" not in epochs.columns:
            return pd.DataFrame(), pd.DataFrame()
        scored = epochs[epochs["fid"].notna()]
        if not len(scored):
            return pd.DataFrame(), pd.DataFrame()
        first = scored.sort_values("time_s", kind="stable").groupby("epoch", sort=True).head(1)
        return pd.DataFrame(), first.assign(node="avg")[["run_id", "node", "time_s", "epoch", "fid", "class_score",
                                                          "coverage"]].reset_index(drop=True)

    # -- outputs ------------------------------------------------------------------------------
    def plot(self, epochs: pd.DataFrame, events: pd.DataFrame, run_dir: Path, title: str,
             time_label: str = "simulated time [s]") -> Path | None:
        from ..gan.plots import plot_gan_run
        return plot_gan_run(epochs, events, Path(run_dir) / "fid.png", title=title, time_label=time_label)

    @classmethod
    def axis_range(cls, values: pd.Series) -> tuple[float, float] | None:
        """FID limits from 0 to a little above the largest mean value."""
        top = values.max()
        return 0.0, float(top) * 1.05 if top == top and top > 0 else 1.0

    @classmethod
    def close(cls, a: float, b: float) -> bool:
        """Within half the FID (at least 50): tiny GANs' FIDs move a lot with small changes."""
        return abs(a - b) <= max(0.5 * a, 50.0)

    @classmethod
    def report_text(cls, spec: dict) -> str:
        return ("Quality is the global generator's FID (lower is better; `benchmarks/gan_summary.py` adds "
                "time and bytes to a FID level).")

    @classmethod
    def cell_text(cls, metrics: dict) -> str:
        return f"final FID {metrics.get('final_fid', float('nan')):.1f}"

    @classmethod
    def headline(cls, final: Callable[[str, str], float]) -> str:
        return f"generator FID {final('fid', 'avg'):.1f}"
