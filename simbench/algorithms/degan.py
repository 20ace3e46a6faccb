"""DEGAN: decentralised GAN training with Ako's partial gradient exchange (seed 000;
Watcharapichat et al., "Ako: Decentralised Deep Learning with Partial Gradient Exchange",
SoCC 2016, on which the seed's DEGAN is built). Reference code: ``m-faezi/DEGAN``
(``pgelib/redis_ako.py``: the training loop; ``pgelib/redis_ako_config.py``: defaults;
``pgelib/redis_ako_model.py``: losses and optimizer), a fork of ``mesh-umn/TF.AKO``.

Every worker holds a generator G_i and a discriminator D_i, trains on its own shard and
has no parameter server. One iteration is :class:`~simbench.algorithms.ako.AkoWorker`'s
with the gradient being G's and D's gradients at the worker's current parameters, one
vector ``[g_G, g_D]`` (:meth:`simbench.gan.GANLearner.compute_grad`: G's loss through D
on fresh noise; D's loss on a real minibatch and that generated batch), as the reference
exchanges ``_grads + _grads_d``::

    [wait (stale-synchronous bound, if set)], u = own last gradient + peers' partitions received
    G_i <- Adam_G(G_i, u_G),  D_i <- Adam_D(D_i, u_D)       (aggregate: sum, the reference's)
    [g_G, g_D] at (G_i, D_i) on one minibatch; accumulate; send partition t mod P

The reference sums its own and the received gradients (``total_grads[w] = np.add(...)``)
and applies the sum with one Adam (lr 1e-4, beta1 0.5, the same for G and D, so one Adam
over both equals two); ``aggregate: mean`` divides by N instead. The partitions cut across
both networks (the vector is G's parameters then D's), every gradient reaches every peer
within P iterations, and with P = 1 and ``ssp_bound`` 0 (or ``synchronous: true``) all
workers follow synchronous summing (or averaging) of G and D gradients exactly. ``P: auto``
is Ako's rule (fewest partitions that keep the link busy no longer than one step).

Knobs of the seed's ``redis_ako_config.py``: synchronous or not (``synchronous``; the
reference's default, like ``ssp_bound: null``, is asynchronous), epochs and batch size
(``train.epochs``, ``train.batch_size``), number of batches per epoch (``batches``, the
seed's ``num_batches``), stop after N iterations (``max_iterations``) or a time budget (the
run's ``time_limit``), or a target quality (``target_fid``), P and the SSP bound.

``batches`` is the whole job's minibatches per epoch, dealt round robin to the workers as
the reference's ``for j in range(num_batches): if j % num_workers == nID``: the worker of
rank r (its place among the worker ids) runs ``len(range(r, batches, N))`` iterations per
epoch, e.g. 3, 3, 2, 2 for the seed's 10 batches and 4 workers. It must be at least N.
Null: one pass over the worker's own shard per epoch. Workers that run fewer iterations
finish earlier; nobody waits for a peer that has finished (Ako's ``ako_done``).

The target quality needs the workers to agree on when it is reached. Worker 0 is the
judge: at each epoch end (iteration t0) it scores its own generator with the run's FID
(``fid_batch`` samples on fixed noise, the observer's scale) and logs it as ``judge_fid``;
once that is at most ``target_fid`` it tells every peer to stop at iteration
t0 + ``ssp_bound`` + 1 (t0 + 1 without a bound; ``target_reached`` in ``events.csv``).
With a bound no peer can have begun that iteration: it needs worker 0's gradient of
iteration t0 first, which worker 0 sends after the stop message on the same link
(per-link order); without one a peer already past it stops where it is. Every worker then
finishes as usual (waiting for every peer's last gradient).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..core.message import Message
from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.schema import ConfigError
from .ako import Ako, AkoParams, AkoWorker
from .gan_common import GanParams
from .kit import drain


@dataclass(frozen=True)
class DeganParams(AkoParams, GanParams):
    synchronous: bool = False
    """Lockstep training: the SSP bound is 0 whatever ``ssp_bound`` says."""
    batches: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Minibatches per epoch of the whole job (the seed's num_batches), dealt round robin to the workers (at least one each); null: every worker one pass over its shard."""
    max_iterations: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Stop after this many iterations in all (before the epochs run out); null: no cap."""
    target_fid: Optional[float] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Stop once worker 0's generator scores this FID or lower at an epoch end (from epoch 1); null: never."""


def batches_of(rank: int, workers: int, batches: int) -> int:
    """Minibatches per epoch of the worker of ``rank`` when ``batches`` are dealt round robin
    to ``workers`` (the reference's ``j % num_workers == nID``)."""
    return len(range(rank, batches, workers))


class DeganWorker(AkoWorker):
    """An Ako worker whose learner is a GAN: gradients and steps cover G and D."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        if ctx.params.synchronous:
            self.params = dataclasses.replace(ctx.params, ssp_bound=0)
        self.stop_at: int | None = None
        self._stop_msg: Message | None = None
        self._z: torch.Tensor | None = None

    def end_epoch(self, rt: Runtime, epoch: int) -> None:
        super().end_epoch(rt, epoch)
        target, evaluator = self.params.target_fid, self.ctx.workload
        if target is None or evaluator is None or epoch == 0 or self.node_id != min((self.node_id, *rt.neighbors)):
            return  # epoch 0 is the untrained start
        if self._z is None:  # the judge's fixed noise
            gen = torch.Generator().manual_seed(int(self.node_id))
            self._z = torch.randn(self.params.fid_batch, self.params.latent_dim, generator=gen)
        fid = evaluator.fid(self.learner.sample(z=self._z))
        rt.log("judge_fid", fid, epoch=epoch)
        if fid <= target and self.stop_at is None:
            bound = self.params.ssp_bound
            self.stop_at = self.t + (bound if bound is not None else 0) + 1
            rt.log("target_reached", fid, epoch=epoch)
            self._stop_msg = Message("degan_stop", {"at": self.stop_at})  # sent before gradient t0

    async def planned_total(self, rt: Runtime, total: int) -> int:
        if self._stop_msg is not None:  # the judge tells its peers before it sends another gradient
            msg, self._stop_msg = self._stop_msg, None
            for j in rt.neighbors:
                await rt.send(j, msg)
        for msg in await drain(rt, "degan_stop"):
            at = int(msg["at"])
            self.stop_at = at if self.stop_at is None else min(self.stop_at, at)
        return total if self.stop_at is None else min(total, max(self.stop_at, self.t))

    def iterations_per_epoch(self, rt: Runtime) -> int:
        b = self.params.batches
        if not b:
            return self.learner.steps_per_epoch
        workers = sorted((self.node_id, *rt.neighbors))
        return batches_of(workers.index(self.node_id), len(workers), b)

    def total_iterations(self, per_epoch: int) -> int:
        total = self.ctx.epochs * per_epoch
        cap = self.params.max_iterations
        return min(total, cap) if cap else total


class Degan(Ako):
    """Ako's roles (every worker linked to every other) with GAN workers."""

    name = "degan"
    Params = DeganParams
    summary = "DEGAN: every worker trains G and D, Ako partial gradient exchange, no server (seed 000)"
    example = {"nodes": 3, "topology": {"kind": "complete"},
               "algorithm": {"P": 2, "ssp_bound": 1, "batches": 8, "peer_timeout": "1s"}}
    workload = "gan"

    @classmethod
    def roles(cls, graph, params):
        roles = super().roles(graph, params)
        n = graph.number_of_nodes()
        if params.batches is not None and params.batches < n:
            raise ConfigError(f"algorithm.batches: {params.batches} minibatches per epoch are dealt round robin to "
                              f"{n} workers; it must be at least {n}")
        return roles

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return DeganWorker(ctx)
