"""What the GAN algorithms share: the seed's GAN flags.

The GAN knobs are the flags of seed 001's scripts and live in each algorithm's parameters
(``algorithm: {name: fegan, latent_dim: 100, lr: 0.0002, ...}``); ``train.lr`` and
``train.optimizer`` are not used by GAN algorithms (G and D always train with
Adam(lr, (b1, b2))). ``train.batch_size`` is B and ``train.epochs`` the number of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
