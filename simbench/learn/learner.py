"""The Learner: a model, its optimizer and a data shard — the ONLY place that runs
torch training loops. Algorithms move parameters and gradients in and out of it as flat
vectors and call its steps through ``rt.compute``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class OptimConfig:
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


_FLOPS: dict[tuple, float] = {}


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; allowed: sgd, adam")


class Learner:
    """A model trained on one node's shard with minibatch SGD/Adam.

    Batches are drawn without replacement within an epoch from a per-learner seeded
    permutation, so two learners with the same seed see the same batches.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 optim: OptimConfig, seed: int, device: str = "cpu", x_val=None, y_val=None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.x_val, self.y_val = x_val, y_val
        self.batch_size = int(batch_size)
        self.optim_cfg = optim
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._sizes = [p.numel() for p in self.params]
        self.num_params = sum(self._sizes)
        # Parameters live as views into one flat buffer, so mixing and sending parameters
        # touch one contiguous vector instead of gathering and scattering every step.
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params]) if self.params else torch.zeros(0)
        for p, chunk in zip(self.params, torch.split(self.flat, self._sizes)):
            p.data = chunk.view_as(p)
        self.optimizer = make_optimizer(self.params, optim)
        self.scheduler = (torch.optim.lr_scheduler.StepLR(self.optimizer, optim.step_size, optim.gamma)
                          if optim.scheduler == "StepLR" else None)
        self.loss_fn = nn.CrossEntropyLoss()
        self._gen = torch.Generator().manual_seed(int(seed) % (2**63))
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self.steps_done = 0

    # -- data ---------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return len(self.y)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_samples / self.batch_size))

    @property
    def epoch(self) -> float:
        return self.steps_done / self.steps_per_epoch

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(self.num_samples, generator=self._gen).to(self.device)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.x[idx], self.y[idx]

    # -- steps -------------------------------------------------------------------------
    def _loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(self.model(xb), yb)
        if self.optim_cfg.l2_lambda:
            loss = loss + 0.5 * self.optim_cfg.l2_lambda * sum(p.pow(2).sum() for p in self.params)
        return loss

    def compute_grad(self) -> float:
        """One minibatch forward/backward; gradients are left in ``.grad``."""
        self.model.train()
        xb, yb = self.next_batch()
        self.optimizer.zero_grad(set_to_none=False)
        loss = self._loss(xb, yb)
        loss.backward()
        self.steps_done += 1
        return float(loss.detach())

    def apply_update(self) -> None:
        """Optimizer step (and scheduler step) with the current ``.grad``."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def train_step(self) -> float:
        loss = self.compute_grad()
        self.apply_update()
        return loss

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -- flat vectors ------------------------------------------------------------------
    def get_flat(self) -> torch.Tensor:
        """All parameters in one fresh 1-D tensor (a copy)."""
        return self.flat.clone()

    def flat_params(self) -> torch.Tensor:
        """The live flat parameter buffer: writing into it changes the model in place."""
        return self.flat

    def set_flat(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            self.flat.copy_(flat)

    def get_grad_flat(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])

    def set_grad_flat(self, flat: torch.Tensor) -> None:
        flat = flat.to(self.device)
        for p, chunk in zip(self.params, torch.split(flat, self._sizes)):
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    # -- cost and evaluation ---------------------------------------------------------
    def flops_per_step(self) -> float:
        """Forward + backward FLOPs of one training step (counted once per model shape)."""
        key = (type(self.model).__name__, tuple(tuple(p.shape) for p in self.params),
               tuple(self.x.shape[1:]), self.batch_size)
        if key not in _FLOPS:
            xb = torch.zeros((self.batch_size, *self.x.shape[1:]), device=self.device)
            yb = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
            state = [p.grad for p in self.params]
            counter = FlopCounterMode(display=False)
            with counter:
                self.loss_fn(self.model(xb), yb).backward()
            for p, g in zip(self.params, state):
                p.grad = g
            _FLOPS[key] = float(counter.get_total_flops())
        return _FLOPS[key]

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
        """(mean loss, accuracy) in eval mode."""
        was_training = self.model.training
        self.model.eval()
        total_loss, correct = 0.0, 0
        for lo in range(0, len(y), batch_size):
            xb, yb = x[lo:lo + batch_size].to(self.device), y[lo:lo + batch_size].to(self.device)
            out = self.model(xb)
            total_loss += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(dim=1) == yb).sum())
        self.model.train(was_training)
        n = max(1, len(y))
        return total_loss / n, correct / n
