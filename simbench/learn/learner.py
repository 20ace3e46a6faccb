"""The Learner: a model, its optimizer and a data shard — the ONLY place that runs
torch training loops. Algorithms move parameters and gradients in and out of it as flat
vectors and call its steps through ``rt.compute``."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .flops import step_flops


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, L2 term and learning-rate schedule of every learner in a run."""

    name: str = "sgd"
    """``sgd`` or ``adam``."""
    lr: float = 0.05
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    l2_lambda: float = 0.0
    """Seed 003's L2 term: ``l2_lambda / 2 * sum ||w||^2`` added to the loss."""
    scheduler: str = "none"
    """``none`` or ``StepLR`` (decays lr by ``gamma`` every ``step_size`` optimizer steps)."""
    step_size: int = 5
    gamma: float = 0.9


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The torch optimizer ``cfg`` names, over ``params``.

    Parameters
    ----------
    params : iterable of tensors
    cfg : OptimConfig

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    ValueError
        Unknown optimizer name.
    """
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; allowed: sgd, adam")


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig):
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "StepLR":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; allowed: none, StepLR")


class ShardEpochs:
    """Epoch arithmetic of a learner with ``num_samples``, ``batch_size`` and ``steps_done``."""

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(num_samples / batch_size)`` (at least 1)."""
        return max(1, math.ceil(self.num_samples / self.batch_size))

    @property
    def epoch(self) -> float:
        """Epochs done, as a fraction: ``steps_done / steps_per_epoch``."""
        return self.steps_done / self.steps_per_epoch


class Learner(ShardEpochs):
    """A model trained on one node's shard with minibatch SGD or Adam.

    Parameters and gradients live as views into two flat buffers, so reading, writing and
    mixing them touches one contiguous vector each. Batches are drawn without replacement
    within an epoch from a per-learner seeded permutation: two learners with the same seed
    see the same batches.

    Parameters
    ----------
    model : nn.Module
    x, y : torch.Tensor
        The shard (may be gathered views of a shared data set).
    batch_size : int
    optim : OptimConfig
    seed : int
        Seed of the batch order.
    device : str or torch.device
    x_val, y_val : torch.Tensor, optional
        A validation split, kept for the algorithms.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 optim: OptimConfig, seed: int, device: str | torch.device = "cpu", x_val=None, y_val=None) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.x_val, self.y_val = x_val, y_val
        self.batch_size = int(batch_size)
        self.optim_cfg = optim
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"the model ({type(model).__name__}) has no trainable parameters")
        self._sizes = [p.numel() for p in self.params]
        self.num_params = int(sum(self._sizes))
        self.flat, self._grad_buffer, self._grad_views = self._flatten_params()
        self.optimizer = make_optimizer(self.params, optim)
        self.scheduler = _make_scheduler(self.optimizer, optim)
        self.loss_fn = nn.CrossEntropyLoss()
        self._gen = torch.Generator().manual_seed(int(seed) % (2**63))
        self._perm = torch.empty(0, dtype=torch.long, device=self.device)
        self._pos = 0
        self.steps_done = 0
        self._flops: dict[tuple, float] = {}  # (input shape, batch) -> FLOPs of one step
        self._slice_optims: dict[tuple[int, int], tuple] = {}

    def _flatten_params(self):
        """Re-home every parameter into one flat buffer; a second flat buffer holds gradients
        that are set from outside (``set_grad_flat``)."""
        dtype = self.params[0].dtype
        flat = torch.empty(self.num_params, dtype=dtype, device=self.device)
        grad = torch.zeros(self.num_params, dtype=dtype, device=self.device)
        views = []
        offset = 0
        for p, n in zip(self.params, self._sizes):
            flat[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = flat[offset:offset + n].view_as(p)
            p.grad = grad[offset:offset + n].view_as(p)
            views.append(p.grad)
            offset += n
        return flat, grad, views

    def _link_grads(self) -> None:
        """Point every ``.grad`` at its view of the flat gradient buffer."""
        for p, g in zip(self.params, self._grad_views):
            p.grad = g

    # -- data ----------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """Samples in the shard."""
        return len(self.y)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch; a new seeded permutation starts each epoch (last batch may be smaller)."""
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(self.num_samples, generator=self._gen).to(self.device)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.x[idx], self.y[idx]

    # -- steps -----------------------------------------------------------------------------
    def compute_grad(self) -> float:
        """One minibatch forward and backward; gradients are left in ``.grad``.

        Returns
        -------
        float
            The minibatch loss (cross-entropy plus the L2 term).
        """
        if not self.model.training:
            self.model.train()
        xb, yb = self.next_batch()
        # Fresh gradients: with no .grad to accumulate into, autograd hands its result over
        # instead of zeroing a buffer and adding into it (two passes over the model less per
        # step, ~2 % of a CNN step on a CPU).
        for p in self.params:
            p.grad = None
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        loss = loss.detach()
        lam = self.optim_cfg.l2_lambda
        for p in self.params:
            if p.grad is None:  # a parameter the loss does not reach
                p.grad = torch.zeros_like(p)
        if lam:
            # d/dw (lam/2 ||w||^2) = lam * w: one fused op instead of a graph over every parameter.
            torch._foreach_add_([p.grad for p in self.params], self.params, alpha=lam)
            loss = loss + 0.5 * lam * torch.dot(self.flat, self.flat)
        self.steps_done += 1
        return float(loss)

    def apply_update(self) -> None:
        """Optimizer step (and scheduler step) with the current ``.grad``."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def apply_update_slice(self, grad: torch.Tensor, start: int, stop: int) -> None:
        """Optimizer step on ``flat[start:stop]`` alone, with gradient ``grad`` (a sharded
        parameter server's update of the slice it owns).

        The slice gets its own optimizer and scheduler, built on first use with the run's
        settings, so momentum or Adam state covers exactly the parameters stepped.
        """
        state = self._slice_optims.get((start, stop))
        if state is None:
            param = nn.Parameter(self.flat[start:stop])  # a view: stepping it updates the model
            param.grad = torch.zeros_like(param)
            optimizer = make_optimizer([param], self.optim_cfg)
            state = self._slice_optims[(start, stop)] = (param, optimizer, _make_scheduler(optimizer, self.optim_cfg))
        param, optimizer, scheduler = state
        param.grad.copy_(grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    def train_step(self) -> float:
        """One minibatch: gradients, optimizer step, scheduler step.

        Returns
        -------
        float
            The minibatch loss before the update.
        """
        loss = self.compute_grad()
        self.apply_update()
        return loss

    def train_steps(self, steps: int) -> None:
        """``steps`` training steps."""
        for _ in range(steps):
            self.train_step()

    def idle(self) -> None:
        """The node sets new parameters before it reads these again (a Learner keeps its
        module regardless)."""

    @property
    def lr(self) -> float:
        """The current learning rate (of the first parameter group)."""
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every parameter group."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    # -- flat vectors ------------------------------------------------------------------------
    def get_flat(self) -> torch.Tensor:
        """All parameters in one fresh 1-D tensor (a copy)."""
        return self.flat.clone()

    def flat_params(self) -> torch.Tensor:
        """The live flat parameter buffer: writing into it changes the model in place."""
        return self.flat

    def set_flat(self, flat: torch.Tensor) -> None:
        """Copy ``flat`` (1-D, ``num_params`` long) into the parameters in place."""
        with torch.no_grad():
            self.flat.copy_(flat)

    def get_grad_flat(self) -> torch.Tensor:
        """All gradients in one fresh 1-D tensor (a copy)."""
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])

    def set_grad_flat(self, flat: torch.Tensor) -> None:
        """Copy ``flat`` into the gradients, e.g. before :meth:`apply_update`."""
        self._link_grads()
        self._grad_buffer.copy_(flat)

    def layer_slices(self) -> list[tuple[str, int, int, str]]:
        """``(name, start, stop, kind)`` of every parameter tensor in the flat vector, in order.

        ``kind`` is ``conv`` for parameters of convolution modules, else ``fc``: the two bin
        sizes of ``adacomp_chen`` (Chen et al.'s AdaComp). Hardy's ``adacomp`` and the others
        treat every tensor as its own layer whatever its kind.
        """
        kinds = {}
        for mname, module in self.model.named_modules():
            kind = "conv" if isinstance(module, nn.modules.conv._ConvNd) else "fc"
            for pname, p in module.named_parameters(recurse=False):
                kinds[id(p)] = (f"{mname}.{pname}" if mname else pname, kind)
        out, offset = [], 0
        for p, n in zip(self.params, self._sizes):
            name, kind = kinds.get(id(p), (f"param{len(out)}", "fc"))
            out.append((name, offset, offset + n, kind))
            offset += n
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Parameter name -> detached view (shares memory with the model)."""
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    # -- cost and evaluation -----------------------------------------------------------------
    def flops_per_step(self) -> float:
        """Forward + backward FLOPs of one training step at this batch size.

        Counted with ``FlopCounterMode`` on a copy of the model, so the learner's gradients
        and the global random state are untouched, once per model code, shapes and batch
        size, and cached on disk (``flops.py``).
        """
        key = (tuple(self.x.shape[1:]), self.batch_size)  # what can change over a learner's life
        if key not in self._flops:
            what = ("classifier_step", *key, self.x.dtype, type(self.loss_fn).__name__)
            self._flops[key] = step_flops([self.model], what, self._count_flops)
        return self._flops[key]

    def _count_flops(self) -> float:
        model = copy.deepcopy(self.model).train()
        xb = torch.zeros((self.batch_size, *self.x.shape[1:]), dtype=self.x.dtype, device=self.device)
        yb = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        counter = FlopCounterMode(display=False)
        with torch.random.fork_rng(devices=[]), counter:  # dropout draws from the global RNG
            self.loss_fn(model(xb), yb).backward()
        return float(counter.get_total_flops())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
        """Mean loss and accuracy on ``(x, y)`` in eval mode; the train/eval mode is restored.

        Parameters
        ----------
        x, y : torch.Tensor
        batch_size : int
            Samples per forward pass (bounds memory).

        Returns
        -------
        (loss, accuracy) : tuple of float
        """
        was_training = self.model.training
        self.model.eval()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for lo in range(0, len(y), batch_size):
            xb, yb = x[lo:lo + batch_size].to(self.device), y[lo:lo + batch_size].to(self.device)
            out = self.model(xb)
            total_loss += nn.functional.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(dim=1) == yb).sum()
        self.model.train(was_training)
        n = max(1, len(y))
        return float(total_loss) / n, int(correct) / n
