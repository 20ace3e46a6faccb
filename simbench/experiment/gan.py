"""Experiment-layer glue for GAN algorithms: GAN learners, the evaluator and the observer
that scores the reporting node's generator and writes sample grids.

An algorithm with ``gan = True`` gets a :class:`~simbench.gan.GANLearner` per model role
(built from ``model.name`` in :data:`~simbench.gan.models.GAN_MODELS` and the GAN knobs of
the algorithm's parameters) instead of a classifier Learner. Its reporting nodes' epochs
are scored here: FID, classifier score and class coverage of ``fid_batch`` samples from a
fixed noise batch against the first ``fid_batch`` test images, logged for the node and as
the ``avg`` row (the global generator), and a grid PNG ``samples/epoch_XXXX.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.schema import ConfigError
from ..data.datasets import Dataset
from ..gan import GAN_MODELS, GANLearner, build_gan
from ..gan.fidnet import FidNetMissing, load_fid_net
from ..gan.grids import save_grid
from ..gan.metrics import GanEvaluator, inception_features

_SCALED: dict[int, tuple] = {}


def is_gan(algo) -> bool:
    return bool(getattr(algo, "gan", False))


def check_model(cfg, algo) -> None:
    """One-line errors when a GAN algorithm gets a classifier or the other way round."""
    gan_model = cfg.model.name in GAN_MODELS
    if is_gan(algo) and not gan_model:
        raise ConfigError(f"model.name: {cfg.algorithm} trains a GAN; use one of {', '.join(GAN_MODELS)}, "
                          f"not {cfg.model.name!r}")
    if not is_gan(algo) and gan_model:
        raise ConfigError(f"model.name: {cfg.model.name!r} is a GAN; {cfg.algorithm} trains classifiers")


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


def make_gan_learner(cfg, data: Dataset, idx, bs: int, seed: int, model_seed: int) -> GANLearner:
    """A GANLearner on the samples ``idx`` of the training set (None: one test image, a server)."""
    p = cfg.algorithm_params
    x_train, x_test = gan_range(data)
    x, y = (x_train[idx], data.y_train[idx]) if idx is not None else (x_test[:1], data.y_test[:1])
    try:
        g, d, loss = build_gan(cfg.model.name, data.input_shape, latent_dim=p.latent_dim, seed=model_seed,
                               **cfg.model.options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.options: {exc}") from None
    learner = GANLearner(g, d, x, y, batch_size=bs, latent_dim=p.latent_dim, lr=p.lr, b1=p.b1, b2=p.b2, loss=loss,
                         seed=seed, num_classes=data.num_classes, device=cfg.device)
    learner.arch = {"model": cfg.model.name, "options": dict(cfg.model.options), "input_shape": list(data.input_shape),
                    "latent_dim": p.latent_dim}
    return learner


def make_evaluator(cfg, data: Dataset) -> GanEvaluator:
    p = cfg.algorithm_params
    _, x_test = gan_range(data)
    if len(x_test) < p.fid_batch:
        raise ConfigError(f"algorithm.fid_batch: {p.fid_batch} exceeds the {len(x_test)} test images")
    try:
        net = load_fid_net(data.name)
    except FidNetMissing as exc:
        raise ConfigError(str(exc)) from None
    features = net.features
    if p.fid == "inception":
        try:
            features = inception_features()
        except FileNotFoundError as exc:
            raise ConfigError(f"algorithm.{exc}") from None
    return GanEvaluator(x_test[:p.fid_batch].cpu(), features, net)


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
