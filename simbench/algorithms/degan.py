"""DEGAN: decentralised GAN training with Ako's partial gradient exchange (seed 000;
Watcharapichat et al., "Ako: Decentralised Deep Learning with Partial Gradient Exchange",
SoCC 2016, on which the seed's DEGAN is built).

Every worker holds a generator G_i and a discriminator D_i, trains on its own shard and
has no parameter server. One iteration is :class:`~simbench.algorithms.ako.AkoWorker`'s
with the gradient being G's and D's gradients at the worker's current parameters, one
vector ``[g_G, g_D]`` (:meth:`simbench.gan.GANLearner.compute_grad`: G's loss through D
on fresh noise; D's loss on a real minibatch and that generated batch)::

    wait (stale-synchronous bound), u = own last gradient + peers' partitions received
    G_i <- Adam_G(G_i, u_G / N),  D_i <- Adam_D(D_i, u_D / N)
    [g_G, g_D] at (G_i, D_i) on one minibatch; accumulate; send partition t mod P

so the partitions cut across both networks (the vector is G's parameters then D's), every
gradient reaches every peer within P iterations, and with P = 1 and ``ssp_bound`` 0 (or
``synchronous: true``) all workers follow synchronous averaging of G and D gradients
exactly. ``P: auto`` is Ako's rule (fewest partitions that keep the link busy no longer
than one step).

Knobs of the seed's ``redis_ako_config.py``: synchronous or not (``synchronous``), epochs
and batch size (``train.epochs``, ``train.batch_size``), number of batches per epoch
(``batches``), stop after N iterations (``max_iterations``) or a time budget (the run's
``time_limit``), P and the SSP bound. Every worker stops after the same number of
iterations, so nobody waits for a peer that has stopped. Not done: stopping at a target
FID (the workers would have to agree on when the quality is reached).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..core.node import Algorithm, Node, NodeContext
from ..core.schema import ConfigError
from .ako import AkoParams, AkoWorker
from .gan_common import GanNode, GanParams


@dataclass(frozen=True)
class DeganParams(AkoParams, GanParams):
    synchronous: bool = False
    """Lockstep training: the SSP bound is 0 whatever ``ssp_bound`` says."""
    batches: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Minibatches (iterations) per epoch; null: one pass over the worker's shard."""
    max_iterations: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Stop after this many iterations in all (before the epochs run out); null: no cap."""


class DeganWorker(GanNode, AkoWorker):
    """An Ako worker whose learner is a GAN: gradients and steps cover G and D."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        if ctx.params.synchronous:
            self.params = dataclasses.replace(ctx.params, ssp_bound=0)

    def iterations_per_epoch(self) -> int:
        b = self.params.batches
        return b if b else self.learner.steps_per_epoch

    def total_iterations(self, per_epoch: int) -> int:
        total = self.ctx.epochs * per_epoch
        cap = self.params.max_iterations
        return min(total, cap) if cap else total


class Degan(Algorithm):
    name = "degan"
    Params = DeganParams
    summary = "DEGAN: every worker trains G and D, Ako partial gradient exchange, no server (seed 000)"
    gan = True

    @classmethod
    def roles(cls, graph, params):
        n = graph.number_of_nodes()
        if any(graph.degree(i) != n - 1 for i in graph.nodes):
            raise ConfigError("topology: degan exchanges gradients with every peer; it needs a complete topology "
                              "(topology: {kind: complete})")
        return {i: "worker" for i in graph.nodes}

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return DeganWorker(ctx)
