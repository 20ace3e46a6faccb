"""What the GAN algorithms share: the seed's GAN flags and per-epoch reporting.

The GAN knobs are the flags of seed 001's scripts and live in each algorithm's parameters
(``algorithm: {name: fegan, latent_dim: 100, lr: 0.0002, ...}``); ``train.lr`` and
``train.optimizer`` are not used by GAN algorithms (G and D always train with
Adam(lr, (b1, b2))). ``train.batch_size`` is B and ``train.epochs`` the number of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.node import Node
from ..core.runtime import Runtime

FID_KINDS = ("fidnet", "inception")


@dataclass(frozen=True)
class GanParams:
    latent_dim: int = field(default=100, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Dimension of the generator's noise input (seed ``--latent_dim``)."""
    lr: float = field(default=0.0002, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Adam learning rate of G and D (seed ``--lr``)."""
    b1: float = field(default=0.5, metadata={"check": (lambda x: 0 <= x < 1, "must be in [0, 1)")})
    """Adam beta1 (seed ``--b1``)."""
    b2: float = field(default=0.999, metadata={"check": (lambda x: 0 <= x < 1, "must be in [0, 1)")})
    """Adam beta2 (seed ``--b2``)."""
    fid_batch: int = field(default=100, metadata={"check": (lambda x: x >= 2, "must be >= 2")})
    """Generated and real test samples used for each FID evaluation (seed ``--fid_batch``)."""
    fid: str = field(default="fidnet", metadata={"choices": FID_KINDS})
    """Feature network of FID: the shipped classifier, or torchvision's Inception-v3 if cached."""
    grid: int = field(default=25, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Generated samples in the PNG grid saved at each evaluation (0: no grids)."""


class GanNode(Node):
    """Base of GAN nodes: an epoch report is G/D losses plus the observer's FID."""

    def evaluate(self, rt: Runtime, epoch: int, learner=None) -> dict[str, float]:
        learner = learner or self.learner
        d_loss, g_loss = learner.last_losses
        row = {"d_loss": d_loss, "g_loss": g_loss, "bytes_sent": float(getattr(rt, "bytes_sent", 0))}
        for metric, value in row.items():
            rt.log(metric, value, epoch=epoch)
        return row
