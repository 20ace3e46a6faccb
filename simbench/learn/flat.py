"""FlatLearner: a classifier learner that is a flat parameter vector run through one shared module.

The nodes of a run share one architecture. A :class:`FlatLearner` holds only what is its
own: its flat parameter vector (and SGD momentum buffer), the indices of its shard into the
run's one copy of the data set, its batch order and its step count. Forward and backward
passes go through one :class:`ModelTemplate` per architecture with
``torch.func.functional_call``, so a run of N nodes holds one ``nn.Module``, not N, and the
parameters of a node that waits between rounds need not exist at all:

* **lazy parameters** — a learner allocates its vector when it first needs one (a copy of
  the template's initial weights, or whatever :meth:`FlatLearner.set_flat` brings), and
  :meth:`FlatLearner.idle` frees it again (a federated client between rounds, a parameter
  server's worker between pulls: nodes whose algorithm keeps no state between rounds);
* **batched steps** — :func:`batched_run` runs the same training op of many learners in
  one vectorized call (``torch.func.vmap`` over their stacked parameters; per learner its
  own minibatch, learning rate schedule and momentum), which the simulator uses for the
  steps of many nodes due at the same simulated instant.

Step for step a FlatLearner computes what :class:`~simbench.learn.Learner` computes (the
same module code, loss, L2 term, batch order and SGD update, written out as
``torch.optim.SGD`` does it), so a run gives the same numbers on either; a batched step
differs from a sequential one only in the order floating-point sums are taken.

Only what it supports exactly is a FlatLearner (:func:`flat_eligible`): SGD (with momentum,
dampening, Nesterov, weight decay; StepLR), a model without buffers (BatchNorm's running
statistics would be per node state). Batching additionally needs a model without active
dropout (its random masks would be drawn in another order).
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .learner import OptimConfig, ShardEpochs
from .flops import step_flops


def flat_eligible(model: nn.Module, optim: OptimConfig) -> str | None:
    """Why ``model`` trained with ``optim`` cannot be a FlatLearner, or None when it can."""
    if optim.name != "sgd":
        return f"optimizer {optim.name} (FlatLearner does SGD)"
    if optim.scheduler not in ("none", "StepLR"):
        return f"scheduler {optim.scheduler}"
    if any(True for _ in model.buffers()):
        return "the model has buffers (per-node running statistics)"
    return None


def batch_blocker(model: nn.Module) -> str | None:
    """Why the steps of many FlatLearners of ``model`` cannot run as one call (None: they can)."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "the model has dropout (its random masks would be drawn in another order)"
    return None


class ModelTemplate:
    """One architecture shared by many learners: the module, the layout of its parameters in
    the flat vector, its initial weights and its FLOPs per step."""

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._pristine = copy.deepcopy(self.module)
        """Never run: the source of other threads' copies (``self.module`` may be mid-call,
        its parameters swapped for a learner's, when another thread first needs one)."""
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.numel = int(sum(self.sizes))
        self.initial = torch.cat([p.detach().reshape(-1) for _, p in named]).clone() if named else torch.zeros(0)
        self.batchable = batch_blocker(self.module) is None
        self.loss_fn = nn.CrossEntropyLoss()
        self._flops: dict[tuple, float] = {}
        kinds = {}
        for mname, mod in self.module.named_modules():
            kind = "conv" if isinstance(mod, nn.modules.conv._ConvNd) else "fc"
            for pname, _ in mod.named_parameters(recurse=False):
                kinds[f"{mname}.{pname}" if mname else pname] = kind
        self.layers: list[tuple[str, int, int, str]] = []
        offset = 0
        for name, n in zip(self.names, self.sizes):
            self.layers.append((name, offset, offset + n, kinds.get(name, "fc")))
            offset += n

    def _module(self) -> nn.Module:
        """The module to run in this thread. ``functional_call`` swaps the parameters in and
        out of the module it is given, so threads that compute at once (the nodes of an
        in-process real run) each run their own copy."""
        if threading.get_ident() == self._owner:
            return self.module
        module = getattr(self._local, "module", None)
        if module is None:
            module = self._local.module = copy.deepcopy(self._pristine)
        return module

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters as named views of ``flat`` (no copy)."""
        out, offset = {}, 0
        for name, shape, n in zip(self.names, self.shapes, self.sizes):
            out[name] = flat[offset:offset + n].view(shape)
            offset += n
        return out

    def _loss(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(torch.func.functional_call(self._module(), params, (x,)), y)

    def grad_and_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient (flat) and the loss of one minibatch at ``flat``, in training mode."""
        module = self._module()
        module.train()
        # Point the module's own parameters at ``flat`` (``.data`` swaps the storage, no copy):
        # a plain forward and backward then cost what they cost in a Learner, where
        # functional_call's reparametrisation adds a third to a small model's step.
        named = dict(module.named_parameters())
        params = [named[name] for name in self.names]
        with torch.no_grad():
            for param, view in zip(params, self.views(flat).values()):
                param.data = view
        loss = self.loss_fn(module(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return self._flatten(grads, flat), loss.detach()

    def _flatten(self, grads: Sequence[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
        parts = [torch.zeros(n, dtype=like.dtype, device=like.device) if g is None else g.reshape(-1)
                 for g, n in zip(grads, self.sizes)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=like.dtype, device=like.device)

    def batched_views(self, flats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters of every row of ``flats`` [K, D] as named [K, *shape] views (no copy)."""
        return {name: flats[:, start:stop].view(len(flats), *shape)
                for (name, start, stop, _), shape in zip(self.layers, self.shapes)}

    def batched_grad_and_loss(self, flats: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
                              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per row of ``flats`` [K, D], the gradient (named [K, *shape] tensors) and the loss
        [K] on its minibatch ``xs[k]``, ``ys[k]``: one vectorized call."""
        self._module().train()

        def one(flat, x, y):
            return torch.func.grad_and_value(lambda p: self._loss(p, x, y))(self.views(flat))

        return torch.func.vmap(one)(flats, xs, ys)

    @torch.no_grad()
    def evaluate(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
        module = self._module()
        was = module.training
        module.eval()
        params = self.views(flat)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for lo in range(0, len(y), batch_size):
            xb, yb = x[lo:lo + batch_size].to(self.device), y[lo:lo + batch_size].to(self.device)
            out = torch.func.functional_call(module, params, (xb,))
            total += nn.functional.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(dim=1) == yb).sum()
        module.train(was)
        n = max(1, len(y))
        return float(total) / n, int(correct) / n

    def flops_per_step(self, input_shape: tuple, batch_size: int, dtype: torch.dtype) -> float:
        """Forward + backward FLOPs of one step at ``batch_size`` (counted once, cached)."""
        key = (tuple(input_shape), int(batch_size))
        if key not in self._flops:
            what = ("classifier_step", *key, dtype, type(self.loss_fn).__name__)
            self._flops[key] = step_flops([self.module], what, lambda: self._count(input_shape, batch_size, dtype))
        return self._flops[key]

    def _count(self, input_shape, batch_size, dtype) -> float:
        from torch.utils.flop_counter import FlopCounterMode
        model = copy.deepcopy(self._pristine).train()
        xb = torch.zeros((batch_size, *input_shape), dtype=dtype, device=self.device)
        yb = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        counter = FlopCounterMode(display=False)
        with torch.random.fork_rng(devices=[]), counter:
            self.loss_fn(model(xb), yb).backward()
        return float(counter.get_total_flops())


class FlatLearner(ShardEpochs):
    """A classifier learner as a flat vector (see the module docstring). The interface is
    :class:`~simbench.learn.Learner`'s.

    Parameters
    ----------
    template : ModelTemplate
        The shared architecture.
    x, y : torch.Tensor
        The run's whole data set (shared, not copied).
    index : torch.Tensor
        This learner's shard: indices into ``x``/``y``.
    batch_size, optim, seed :
        As for :class:`~simbench.learn.Learner`.
    init : torch.Tensor or callable, optional
        Initial parameters, or a function that makes them when first needed (default: the
        template's). A node that is given parameters before it reads its own never builds them.
    """

    def __init__(self, template: ModelTemplate, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, *,
                 batch_size: int, optim: OptimConfig, seed: int,
                 init: torch.Tensor | Callable[[], torch.Tensor] | None = None) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.template = template
        self.device = template.device
        self.data_x, self.data_y = x, y
        self.index = index.to(x.device)
        self.batch_size = int(batch_size)
        self.optim_cfg = optim
        self.num_params = template.numel
        self._init = init
        self._flat: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None
        self._momentum: torch.Tensor | None = None
        self._slices: dict[tuple[int, int], list] = {}
        self._lr = float(optim.lr)
        self._updates = 0
        self._gen = torch.Generator().manual_seed(int(seed) % (2**63))
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self._steps = 0
        self.job: Any = None
        """A step of this learner the simulator has put off to the end of the instant
        (:mod:`simbench.sim.batch`); anything that reads or changes the learner runs it first."""

    def settle(self) -> None:
        """Run the put-off step now, if there is one: whoever looks at the learner sees it
        as a step run at once would have left it."""
        if self.job is not None:
            self.job.run_alone()

    # -- parameters ---------------------------------------------------------------------
    @property
    def flat(self) -> torch.Tensor:
        """The live parameter vector (allocated on first use)."""
        if self.job is not None:
            self.settle()
        if self._flat is None:
            start = self._init() if callable(self._init) else self._init
            self._flat = (start if start is not None else self.template.initial).to(self.device).clone()
        return self._flat

    def flat_params(self) -> torch.Tensor:
        return self.flat

    def get_flat(self) -> torch.Tensor:
        return self.flat.clone()

    def set_flat(self, flat: torch.Tensor) -> None:
        self.settle()
        if self._flat is None:
            self._flat = torch.empty(self.num_params, dtype=self.template.initial.dtype, device=self.device)
        with torch.no_grad():
            self._flat.copy_(flat)

    def idle(self) -> None:
        """The node will set new parameters before it reads these again: free them (and the
        gradient). Optimizer state (momentum) is kept: it is the node's own."""
        self.settle()
        self._flat = None
        self._grad = None

    def get_grad_flat(self) -> torch.Tensor:
        self.settle()
        return self._grad.clone() if self._grad is not None else torch.zeros_like(self.flat)

    def set_grad_flat(self, flat: torch.Tensor) -> None:
        self.settle()
        self._grad = flat.detach().clone()

    def layer_slices(self) -> list[tuple[str, int, int, str]]:
        return list(self.template.layers)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return {n: t.detach() for n, t in self.template.views(self.flat).items()}

    # -- data ------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return len(self.index)

    @property
    def steps_done(self) -> int:
        """Minibatch steps taken (each ``compute_grad`` counts one)."""
        self.settle()
        return self._steps

    def next_indices(self) -> torch.Tensor:
        """Indices (into the data set) of the next minibatch, in Learner's order."""
        if self.job is not None:
            self.settle()
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(self.num_samples, generator=self._gen)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.index[idx.to(self.index.device)]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.next_indices()
        return self.data_x[rows].to(self.device), self.data_y[rows].to(self.device)

    # -- steps -----------------------------------------------------------------------------
    def _l2(self, grad: torch.Tensor, loss: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        lam = self.optim_cfg.l2_lambda
        if lam:
            grad.add_(flat, alpha=lam)
            loss = loss + 0.5 * lam * torch.dot(flat, flat)
        return loss

    def compute_grad(self) -> float:
        self.settle()
        xb, yb = self.next_batch()
        flat = self.flat
        grad, loss = self.template.grad_and_loss(flat, xb, yb)
        loss = self._l2(grad, loss, flat)
        self._grad = grad
        self._steps += 1
        return float(loss)

    def apply_update(self) -> None:
        self.settle()
        with torch.no_grad():
            self._momentum = sgd_step(self.flat, self._grad, self._momentum, self._lr, self.optim_cfg)
        self._schedule()

    def _schedule(self) -> None:
        """StepLR, as torch computes it: one multiplication by gamma every step_size updates."""
        self._updates += 1
        cfg = self.optim_cfg
        if cfg.scheduler == "StepLR" and self._updates % cfg.step_size == 0:
            self._lr *= cfg.gamma

    def apply_update_slice(self, grad: torch.Tensor, start: int, stop: int) -> None:
        """SGD on ``flat[start:stop]`` alone, with its own momentum and schedule (a shard)."""
        self.settle()
        state = self._slices.setdefault((start, stop), [None, float(self.optim_cfg.lr), 0])
        with torch.no_grad():
            state[0] = sgd_step(self.flat[start:stop], grad.detach().clone(), state[0], state[1], self.optim_cfg)
        state[2] += 1
        cfg = self.optim_cfg
        if cfg.scheduler == "StepLR" and state[2] % cfg.step_size == 0:
            state[1] *= cfg.gamma

    def train_step(self) -> float:
        loss = self.compute_grad()
        self.apply_update()
        return loss

    def train_steps(self, steps: int) -> None:
        for _ in range(steps):
            self.train_step()

    @property
    def lr(self) -> float:
        self.settle()
        return self._lr

    def set_lr(self, lr: float) -> None:
        self.settle()
        self._lr = float(lr)

    # -- cost and evaluation -----------------------------------------------------------------
    def flops_per_step(self) -> float:
        batch = min(self.batch_size, max(1, self.num_samples))
        return self.template.flops_per_step(tuple(self.data_x.shape[1:]), batch, self.data_x.dtype)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
        return self.template.evaluate(self.flat, x, y, batch_size)


def sgd_step(param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor | None, lr: float,
             cfg: OptimConfig) -> torch.Tensor | None:
    """One ``torch.optim.SGD`` step of ``param`` in place (``grad`` may be modified); returns
    the momentum buffer."""
    if cfg.weight_decay:
        grad = grad.add(param, alpha=cfg.weight_decay)
    if cfg.momentum:
        if buf is None:
            buf = grad.clone()
        else:
            buf.mul_(cfg.momentum).add_(grad, alpha=1 - cfg.dampening)
        grad = grad.add(buf, alpha=cfg.momentum) if cfg.nesterov else buf
    param.add_(grad, alpha=-lr)
    return buf


# -- batched execution -------------------------------------------------------------------------
BATCHED_OPS = ("train_step", "compute_grad", "train_steps")


def batch_key(learner: Any, op: str, args: tuple) -> tuple | None:
    """What learners must share to run ``op`` together (None: not batchable)."""
    if not isinstance(learner, FlatLearner) or op not in BATCHED_OPS or not learner.template.batchable:
        return None
    return (id(learner.template), op, args, learner.data_x.data_ptr(), learner.device.type)


CHUNK_BYTES = 12 * 2**20
"""Parameters of at most this many bytes go through one vectorized call. Each learner's
weights are its own, so a call streams all of them through the cache on every step: a
chunk that fits the CPU's cache (the 2NN on MNIST: 15 learners) ran a step in 1.2-1.3 ms per
learner against 1.9 ms for chunks of 64 and 2.1 ms for a plain loop (one core of the
development machine). It also bounds what a call allocates (stacked parameters,
gradients, activations)."""


def batched_run(learners: Sequence[FlatLearner], op: str, args: tuple) -> list[Any]:
    """Run ``op(*args)`` of every learner (all with one key, see :func:`batch_key`) together;
    the results in order, as the learners' own calls would return them."""
    template = learners[0].template
    width = max(1, template.numel * template.initial.element_size())
    chunk = max(1, CHUNK_BYTES // width)
    out: list[Any] = []
    for lo in range(0, len(learners), chunk):
        out.extend(_run_chunk(learners[lo:lo + chunk], op, args))
    return out


def _run_chunk(learners: Sequence[FlatLearner], op: str, args: tuple) -> list[Any]:
    """:func:`batched_run` of a few learners: their parameters stacked [K, D], every step one
    vectorized gradient per minibatch size and the SGD update of all rows, parameter by
    parameter (views of the stack: nothing is concatenated)."""
    steps = int(args[0]) if op == "train_steps" else 1
    update = op != "compute_grad"
    template, cfg = learners[0].template, learners[0].optim_cfg
    k_all = len(learners)
    flats = torch.stack([ln.flat for ln in learners])
    params = template.batched_views(flats)
    mom = fresh = None
    if update and cfg.momentum:
        have = [ln._momentum is not None for ln in learners]
        mom = torch.stack([ln._momentum if h else torch.zeros_like(flats[0]) for ln, h in zip(learners, have)])
        fresh = [k for k, h in enumerate(have) if not h]  # rows whose buffer starts as their first gradient
    moms = template.batched_views(mom) if mom is not None else {}
    kept = torch.empty_like(flats) if not update else None
    losses = torch.zeros(k_all, dtype=torch.float64)
    data_x, data_y = learners[0].data_x, learners[0].data_y
    for _ in range(steps):
        grads, loss = _chunk_grads(template, flats, [ln.next_indices() for ln in learners], data_x, data_y)
        losses.copy_(loss)
        rates = {ln._lr for ln in learners}
        lr = rates.pop() if len(rates) == 1 else \
            torch.tensor([ln._lr for ln in learners], dtype=flats.dtype, device=flats.device)
        for name, p in params.items():
            g = grads[name]
            if cfg.l2_lambda:
                g.add_(p, alpha=cfg.l2_lambda)
                losses += (0.5 * cfg.l2_lambda * (p * p).flatten(1).sum(1)).double().cpu()
            if kept is not None:
                template.batched_views(kept)[name].copy_(g)
                continue
            with torch.no_grad():
                if cfg.weight_decay:
                    g = g.add(p, alpha=cfg.weight_decay)
                if mom is not None:
                    m = moms[name]
                    m.mul_(cfg.momentum).add_(g, alpha=1 - cfg.dampening)
                    if fresh:
                        m[fresh] = g[fresh]
                    g = g.add(m, alpha=cfg.momentum) if cfg.nesterov else m
                if isinstance(lr, float):
                    p.add_(g, alpha=-lr)
                else:
                    p.sub_(g * lr.view(-1, *([1] * (g.dim() - 1))))
        fresh = None
        for ln in learners:
            ln._steps += 1
            if update:
                ln._schedule()
    for k, ln in enumerate(learners):
        ln.flat.copy_(flats[k])
        if mom is not None:
            ln._momentum = mom[k]
        if kept is not None:
            ln._grad = kept[k]
    if op == "train_steps":
        return [None] * k_all
    return losses.tolist()


def _chunk_grads(template: ModelTemplate, flats: torch.Tensor, rows: list[torch.Tensor],
                 data_x: torch.Tensor, data_y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every row's gradient on its minibatch ``rows[k]``: one vectorized call per minibatch
    size (a shard's last batch may be short)."""
    sizes = sorted({len(r) for r in rows})
    if len(sizes) == 1:
        idx = torch.stack(rows)
        return template.batched_grad_and_loss(flats, data_x[idx].to(flats.device), data_y[idx].to(flats.device))
    grads = {name: torch.empty_like(p) for name, p in template.batched_views(flats).items()}
    loss = torch.empty(len(flats), dtype=flats.dtype, device=flats.device)
    for size in sizes:
        members = [k for k, r in enumerate(rows) if len(r) == size]
        sel = torch.tensor(members, device=flats.device)
        idx = torch.stack([rows[k] for k in members])
        g, lv = template.batched_grad_and_loss(flats[sel], data_x[idx].to(flats.device), data_y[idx].to(flats.device))
        for name, t in g.items():
            grads[name][sel] = t
        loss[sel] = lv
    return grads, loss
