"""GAN core: generator/discriminator architectures, the GAN learner, FID and sample grids.

Used by the GAN algorithms (``gan_single``, ``flgan``, ``fegan``, ``mdgan``) and, later, by
the coevolutionary and decentralized GAN seeds. Nothing here reads config files; the
shipped FID networks are package data (``simbench/gan/weights/``).
"""

from .learner import GANLearner
from .models import GAN_MODELS, build_gan

__all__ = ["GANLearner", "GAN_MODELS", "build_gan"]
