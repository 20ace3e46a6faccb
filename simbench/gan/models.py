"""Generator/discriminator pairs of seed 001 (FeGAN): LSGAN and DCGAN, for 28×28 grey
(MNIST, Fashion-MNIST), 32×32 colour (CIFAR-10) and any other small square image.

``lsgan`` follows the seed's ``lsgan.py``/``dist-lsgan.py`` (itself PyTorch-GAN's LSGAN):
G = Linear(latent -> 128·(s/4)²), 2× [Upsample ×2, Conv3×3, BatchNorm, LeakyReLU(0.2)],
Conv3×3 -> C, Tanh; D = 4 blocks [Conv3×3 stride 2, LeakyReLU(0.2), Dropout2d(0.25),
BatchNorm (not in the first)] with 16/32/64/128 filters, then Linear -> 1 (no sigmoid: the
least-squares loss). The seed writes ``BatchNorm2d(n, 0.8)``, whose second argument is
``eps``; we keep eps=0.8 so the networks match the seed. Unlike the seed, D's last linear
layer is sized from the real feature map, so 28×28 inputs work without resizing to 32.

``dcgan`` follows the DCGAN layout of the seed's ``dcgan.py`` (Radford et al. 2016),
scaled to small images: G = ConvTranspose stacks with BatchNorm + ReLU doubling the
resolution from (s/4)² up to s², Tanh; D = strided convolutions with LeakyReLU(0.2) and
BatchNorm, a linear output and the binary cross-entropy (logits) loss.

Both use the seed's initialisation: conv weights ~ N(0, 0.02), BatchNorm weights
~ N(1, 0.02), biases 0.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def weights_init_normal(m: nn.Module) -> None:
    """The seed's ``weights_init_normal``."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.constant_(m.bias, 0.0)


def _check_shape(shape) -> tuple[int, int]:
    c, h, w = (int(s) for s in shape)
    if h != w or h % 4:
        raise ValueError(f"GAN models need square images with a side divisible by 4, got {h}x{w}")
    return c, h


class LSGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape, width: int = 128, bn_eps: float = 0.8) -> None:
        super().__init__()
        channels, size = _check_shape(shape)
        self.init_size = size // 4
        self.width = int(width)
        w, h = self.width, max(1, self.width // 2)
        self.l1 = nn.Linear(latent_dim, w * self.init_size ** 2)
        self.conv_blocks = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(w, w, 3, 1, 1), nn.BatchNorm2d(w, bn_eps), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(w, h, 3, 1, 1), nn.BatchNorm2d(h, bn_eps), nn.LeakyReLU(0.2),
            nn.Conv2d(h, channels, 3, 1, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        return self.conv_blocks(out)


class LSGANDiscriminator(nn.Module):
    def __init__(self, shape, width: int = 128, bn_eps: float = 0.8) -> None:
        super().__init__()
        channels, size = _check_shape(shape)
        filters = [max(1, int(width) * f // 128) for f in (16, 32, 64, 128)]
        layers: list[nn.Module] = []
        cin = channels
        for k, cout in enumerate(filters):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout2d(0.25)]
            if k:
                layers.append(nn.BatchNorm2d(cout, bn_eps))
            cin = cout
        self.model = nn.Sequential(*layers)
        side = size
        for _ in filters:
            side = (side - 1) // 2 + 1  # conv 3x3, stride 2, padding 1
        self.adv_layer = nn.Linear(cin * side * side, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.adv_layer(self.model(img).flatten(1))


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape, width: int = 64) -> None:
        super().__init__()
        channels, size = _check_shape(shape)
        self.init_size = size // 4
        self.width = int(width)
        w = self.width
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 2 * w * self.init_size ** 2))
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.l1(z).view(z.shape[0], 2 * self.width, self.init_size, self.init_size))


class DCGANDiscriminator(nn.Module):
    def __init__(self, shape, width: int = 64) -> None:
        super().__init__()
        channels, size = _check_shape(shape)
        w = int(width)
        self.model = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(2 * w * (size // 4) ** 2, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.out(self.model(img).flatten(1))


def lsgan(shape, latent_dim: int = 100, width: int = 128, bn_eps: float = 0.8):
    """Seed 001's LSGAN pair (least-squares loss). ``width`` scales every layer (seed: 128);
    ``bn_eps`` is BatchNorm's eps (seed: 0.8, see the module docstring)."""
    return LSGANGenerator(latent_dim, shape, width, bn_eps), LSGANDiscriminator(shape, width, bn_eps), "lsgan"


def dcgan(shape, latent_dim: int = 100, width: int = 64):
    """DCGAN pair (binary cross-entropy loss). ``width`` is the base filter count (seed: 64)."""
    return DCGANGenerator(latent_dim, shape, width), DCGANDiscriminator(shape, width), "bce"


GAN_MODELS: dict[str, Callable] = {"lsgan": lsgan, "dcgan": dcgan}


def build_gan(name: str, shape, *, latent_dim: int = 100, seed: int | None = None, factory: Callable | None = None,
              **options):
    """Build GAN ``name`` for images of ``shape`` (C, H, W) with seeded initial weights.

    ``factory(shape, latent_dim, **options) -> (generator, discriminator, loss)`` builds a pair
    that is not built in (see :mod:`simbench.registry`); ``name`` then only labels it.

    Returns
    -------
    (generator, discriminator, loss) : the two modules and the loss name (``lsgan`` or ``bce``).

    Raises
    ------
    ValueError
        Unknown name or option, or an image shape the architecture cannot take (one line).
    """
    if factory is None:
        if name not in GAN_MODELS:
            raise ValueError(f"unknown GAN model {name!r}; allowed: {', '.join(GAN_MODELS)}")
        factory = GAN_MODELS[name]
    from ..models import check_options
    check_options(name, factory, options, skip=("shape", "latent_dim"), what="GAN model")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        pair = factory(tuple(shape), int(latent_dim), **options)
        if not (isinstance(pair, tuple) and len(pair) == 3 and all(isinstance(m, nn.Module) for m in pair[:2])
                and pair[2] in ("lsgan", "bce")):
            raise ValueError(f"GAN model {name} must return (generator, discriminator, loss) with loss lsgan or bce")
        g, d, loss = pair
        g.apply(weights_init_normal)
        d.apply(weights_init_normal)
    return g, d, loss
