"""``gan_single``: one machine trains G and D on all the data — seed 001's centralized
``lsgan.py`` / ``dcgan.py`` baseline.

Each epoch is one pass over the data, ``ceil(n / B)`` steps; a step is the seed's G step
then D step (:meth:`simbench.gan.GANLearner.train_step`), charged to the node's clock with
the FLOPs of both. The node is evaluated (FID, classifier score, coverage, sample grid)
after every epoch and at the start.

Node 0 trains; in a config with more nodes (e.g. one matrix over device counts) the others
are ``idle``: they hold no data and return at once, so node 0 gets the whole training set.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime, Work
from .gan_common import GanParams


@dataclass(frozen=True)
class GanSingleParams(GanParams):
    pass


class GanSingleNode(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.epoch = 0

    async def run(self, rt: Runtime) -> None:
        learner = self.learner
        steps = learner.steps_per_epoch
        cost = Work(flops=learner.flops_per_step() * steps, steps=steps)
        if self.epoch == 0:
            self.end_epoch(rt, 0)
        while self.epoch < self.ctx.epochs:
            await rt.compute(learner.train_steps, steps, cost=cost)
            self.epoch += 1
            self.end_epoch(rt, self.epoch)


class IdleNode(Node):
    async def run(self, rt: Runtime) -> None:
        return None


class GanSingle(Algorithm):
    name = "gan_single"
    Params = GanSingleParams
    summary = "centralized GAN (seed 001's lsgan.py/dcgan.py) on one node: the baseline"
    example = {"nodes": 2, "topology": {"kind": "complete"}}
    workload = "gan"

    @classmethod
    def roles(cls, graph, params):
        first = min(graph.nodes)
        return {i: ("worker" if i == first else "idle") for i in graph.nodes}

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return GanSingleNode(ctx) if ctx.role == "worker" else IdleNode(ctx)
