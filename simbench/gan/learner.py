"""The GAN learner: a generator G, a discriminator D, their Adam optimizers and a data
shard — the only place that runs GAN training loops.

One :meth:`GANLearner.train_step` is the seed's iteration (``lsgan.py``): a generator step
on a fresh batch of noise, then a discriminator step on a real minibatch and the same
generated batch. G's and D's parameters live in two flat buffers, so algorithms exchange
them separately (``get_g``/``set_g``, ``get_d``/``set_d``) or together (``get_flat``,
G first). BatchNorm running statistics are not exchanged: the seed's networks always run
in training mode, so they are never used.

MD-GAN splits the step between machines: :meth:`d_step` trains D on given fake images,
:meth:`feedback` returns dLoss_G/dx for generated images x, and :meth:`g_step_feedback`
applies workers' feedbacks to G.

DEGAN exchanges gradients instead of steps: :meth:`compute_grad` fills the gradients of G
and D at the current parameters (G's loss through D; D's loss on a real batch and G's
batch, detached), :meth:`get_grad_flat`/:meth:`set_grad_flat` read and write them as one
vector (G first) and :meth:`apply_update` takes one Adam step on each. Lipizzaner trains
several copies on one learner: :meth:`make_adam` gives a copy its own optimizer, and
:meth:`g_step`/:meth:`d_step` step with it against whatever D/G is loaded.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..learn.flops import step_flops


class _Flat:
    """The parameters of one module re-homed into one flat buffer (and one for gradients)."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]
        n = sum(p.numel() for p in self.params)
        self.flat = torch.empty(n, device=device)
        self.grad = torch.zeros(n, device=device)
        self.grad_views = []
        off = 0
        for p in self.params:
            k = p.numel()
            self.flat[off:off + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[off:off + k].view_as(p)
            p.grad = self.grad[off:off + k].view_as(p)
            self.grad_views.append(p.grad)
            off += k

    def zero_grad(self) -> None:
        for p, g in zip(self.params, self.grad_views):
            if p.grad is not g:
                p.grad = g
        self.grad.zero_()


class GANLearner:
    """G and D trained with Adam(lr, (b1, b2)) on one node's images.

    Parameters
    ----------
    generator, discriminator : nn.Module
    x, y : torch.Tensor
        Images scaled to [-1, 1] (the generator's Tanh range) and their labels (used only
        for class statistics, e.g. FeGAN's KL weights).
    batch_size : int
    latent_dim : int
    lr, b1, b2 : float
        Adam's learning rate and betas (the seed's flags; defaults 0.0002, 0.5, 0.999).
    loss : str
        ``lsgan`` (mean squared error to 1/0) or ``bce`` (binary cross-entropy on logits).
    seed : int
        Seed of the batch order, the noise and dropout: same seed, same run.
    num_classes : int
        Classes of the data set (for :meth:`class_counts`).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 batch_size: int, latent_dim: int, lr: float = 2e-4, b1: float = 0.5, b2: float = 0.999,
                 loss: str = "lsgan", seed: int = 0, num_classes: int = 10,
                 device: str | torch.device = "cpu") -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if loss not in ("lsgan", "bce"):
            raise ValueError(f"unknown GAN loss {loss!r}; allowed: lsgan, bce")
        self.device = torch.device(device)
        self.G, self.D = generator.to(self.device).train(), discriminator.to(self.device).train()
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.batch_size = int(batch_size)
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.loss_name = loss
        self._g, self._d = _Flat(self.G, self.device), _Flat(self.D, self.device)
        self.opt_g = torch.optim.Adam(self._g.params, lr=lr, betas=(b1, b2))
        self.opt_d = torch.optim.Adam(self._d.params, lr=lr, betas=(b1, b2))
        self._gen = torch.Generator().manual_seed(int(seed) % (2**63))
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self.steps_done = 0
        self._flops: dict[tuple, float] = {}  # (part, input shape, batch) -> FLOPs of one step
        self.last_losses = (math.nan, math.nan)
        self.arch: dict | None = None
        """How to rebuild G (model, options, input_shape, latent_dim); set by the experiment layer."""

    # -- data and noise --------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return len(self.x)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_samples / self.batch_size))

    def class_counts(self) -> torch.Tensor:
        """Samples of each class in the shard (FeGAN's per-device class frequencies)."""
        return torch.bincount(self.y.cpu(), minlength=self.num_classes).to(torch.float64)

    def next_batch(self) -> torch.Tensor:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(self.num_samples, generator=self._gen)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.x[idx.to(self.device)]

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=self._gen).to(self.device)

    def _seed_global(self) -> None:
        # Dropout draws from torch's global generator: seed it from this learner's stream
        # (inside a fork) so a run does not depend on what ran before it in the process.
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self._gen)))

    # -- losses ------------------------------------------------------------------------------
    def _adv(self, out: torch.Tensor, target: float) -> torch.Tensor:
        t = torch.full_like(out, target)
        if self.loss_name == "lsgan":
            return nn.functional.mse_loss(out, t)
        return nn.functional.binary_cross_entropy_with_logits(out, t)

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self._adv(self.D(real), 1.0) + self._adv(self.D(fake.detach()), 0.0))

    # -- steps -------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float]:
        """The seed's iteration: G step on fresh noise, then D step on a real batch and that fake batch.

        Returns
        -------
        (d_loss, g_loss)
        """
        self._gd_grads(step=True)
        return self.last_losses

    def train_steps(self, steps: int) -> None:
        """``steps`` training steps."""
        for _ in range(steps):
            self.train_step()

    def idle(self) -> None:
        """The node sets new parameters before it reads these again (nothing is freed)."""

    def _gd_grads(self, step: bool) -> None:
        """G's loss through D on fresh noise, then D's on the next real batch and that fake
        batch (detached); with ``step``, G steps before D's gradient and D steps after it."""
        real = self.next_batch()
        z = self.noise(len(real))
        with torch.random.fork_rng(devices=[]):
            self._seed_global()
            self._g.zero_grad()
            fake = self.G(z)
            g_loss = self._adv(self.D(fake), 1.0)
            g_loss.backward()
            if step:
                self.opt_g.step()
            self._d.zero_grad()  # the G loss also reached D's parameters
            d_loss = self._d_loss(real, fake)
            d_loss.backward()
            if step:
                self.opt_d.step()
        self.steps_done += 1
        self.last_losses = (d_loss.item(), g_loss.item())

    def g_step(self, opt: torch.optim.Optimizer | None = None) -> float:
        """One generator step on fresh noise against the loaded D (with ``opt``, default G's Adam)."""
        z = self.noise(self.batch_size)
        with torch.random.fork_rng(devices=[]):
            self._seed_global()
            self._g.zero_grad()
            g_loss = self._adv(self.D(self.G(z)), 1.0)
            g_loss.backward()
            (opt or self.opt_g).step()
        self.steps_done += 1
        self.last_losses = (self.last_losses[0], g_loss.item())
        return self.last_losses[1]

    def d_step(self, fake: torch.Tensor, opt: torch.optim.Optimizer | None = None,
               real: torch.Tensor | None = None) -> float:
        """One discriminator step: a real minibatch (default: the next one) against the given generated images."""
        real = self.next_batch() if real is None else real
        with torch.random.fork_rng(devices=[]):
            self._seed_global()
            self._d.zero_grad()
            d_loss = self._d_loss(real, fake[:len(real)].to(self.device))
            d_loss.backward()
            (opt or self.opt_d).step()
        self.steps_done += 1
        self.last_losses = (d_loss.item(), self.last_losses[1])
        return self.last_losses[0]

    def feedback(self, fake: torch.Tensor) -> tuple[torch.Tensor, float]:
        """MD-GAN's error feedback: dL_G/dx at the generated images x (D is not changed)."""
        x = fake.detach().to(self.device).requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            self._seed_global()
            g_loss = self._adv(self.D(x), 1.0)
            (grad,) = torch.autograd.grad(g_loss, x)
        return grad.detach(), g_loss.item()

    def g_step_feedback(self, zs: list[torch.Tensor], feedbacks: list[torch.Tensor]) -> None:
        """Back-propagate the mean of the workers' feedbacks through G and take one Adam step."""
        self._g.zero_grad()
        k = len(zs)
        with torch.random.fork_rng(devices=[]):
            self._seed_global()
            for z, f in zip(zs, feedbacks):
                out = self.G(z.to(self.device))
                out.backward(f.to(self.device) / k)
        self.opt_g.step()
        self.steps_done += 1

    def compute_grad(self) -> float:
        """Fill G's and D's gradients at the current parameters (nothing is stepped); returns D's loss.

        G's gradient is that of its loss through D on fresh noise; D's that of its loss on
        the next real batch and the same generated batch (detached, so G's is unaffected).
        """
        self._gd_grads(step=False)
        return self.last_losses[0]

    @property
    def num_params(self) -> int:
        return self.num_g + self.num_d

    def get_grad_flat(self) -> torch.Tensor:
        """G's then D's gradients in one fresh vector."""
        return torch.cat([self._g.grad, self._d.grad])

    def set_grad_flat(self, flat: torch.Tensor) -> None:
        self._g.zero_grad()
        self._d.zero_grad()
        self._g.grad.copy_(flat[:self.num_g])
        self._d.grad.copy_(flat[self.num_g:])

    def apply_update(self) -> None:
        """One Adam step on G and one on D with the gradients set."""
        self.opt_g.step()
        self.opt_d.step()

    def make_adam(self, part: str, lr: float) -> torch.optim.Adam:
        """A fresh Adam over G's (``g``) or D's (``d``) parameters with this learner's betas."""
        flat, opt = (self._g, self.opt_g) if part == "g" else (self._d, self.opt_d)
        return torch.optim.Adam(flat.params, lr=lr, betas=opt.defaults["betas"])

    @torch.no_grad()
    def eval_losses(self, real: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
        """(D's loss, G's loss) of the loaded G and D on ``real`` images and noise ``z``; no step."""
        with torch.random.fork_rng(devices=[]):
            self._seed_global()
            fake = self.G(z.to(self.device))
            return self._d_loss(real.to(self.device), fake).item(), self._adv(self.D(fake), 1.0).item()

    @torch.no_grad()
    def sample(self, n: int | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """Generated images for noise ``z`` (or ``n`` fresh draws), in training mode as in the seed."""
        z = self.noise(int(n)) if z is None else z.to(self.device)
        with torch.random.fork_rng(devices=[]):
            return self.G(z)

    # -- flat vectors ------------------------------------------------------------------------
    @property
    def num_g(self) -> int:
        return self._g.flat.numel()

    @property
    def num_d(self) -> int:
        return self._d.flat.numel()

    def get_g(self) -> torch.Tensor:
        return self._g.flat.clone()

    def set_g(self, flat: torch.Tensor) -> None:
        self._g.flat.copy_(flat)

    def get_d(self) -> torch.Tensor:
        return self._d.flat.clone()

    def set_d(self, flat: torch.Tensor) -> None:
        self._d.flat.copy_(flat)

    def get_flat(self) -> torch.Tensor:
        """G's then D's parameters in one fresh vector."""
        return torch.cat([self._g.flat, self._d.flat])

    def set_flat(self, flat: torch.Tensor) -> None:
        self._g.flat.copy_(flat[:self.num_g])
        self._d.flat.copy_(flat[self.num_g:])

    # -- cost --------------------------------------------------------------------------------
    def flops_per_step(self, part: str = "both") -> float:
        """FLOPs of one step at batch B: ``both`` (G step + D step), ``g`` (G forward+backward
        through D), ``d`` (D step on given fakes) or ``gen`` (a G forward alone)."""
        key = (part, tuple(self.x.shape[1:]), self.batch_size)  # what can change over a learner's life
        if key not in self._flops:
            self._flops[key] = step_flops([self.G, self.D], ("gan_step", *key, self.latent_dim, self.loss_name),
                                          lambda: self._count(part))
        return self._flops[key]

    def _count(self, part: str) -> float:
        G, D = copy.deepcopy(self.G), copy.deepcopy(self.D)
        z = torch.zeros(self.batch_size, self.latent_dim, device=self.device)
        real = torch.zeros((self.batch_size, *self.x.shape[1:]), device=self.device)
        counter = FlopCounterMode(display=False)
        with torch.random.fork_rng(devices=[]), counter:
            if part == "gen":
                with torch.no_grad():
                    G(z)
            if part in ("both", "g"):
                fake = G(z)
                self._adv(D(fake), 1.0).backward()
            if part in ("both", "d"):
                fake = real.clone() if part == "d" else fake.detach()  # MD-GAN workers get fakes
                (self._adv(D(real), 1.0) + self._adv(D(fake), 0.0)).backward()
        return float(counter.get_total_flops())
