"""The base of every algorithm's node, the context it is built from, and the registry type.

Rules: a node's ``__init__`` only builds state from its :class:`NodeContext`; behaviour
lives in ``async def run(self, rt)``, which awaits only the Runtime interface. A node
restarted after a crash-recover runs ``run`` again with the state it had (as a process
restarting from its last checkpoint would).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import networkx as nx
import torch

from .runtime import Runtime, Work

EpochHook = Callable[[int, int, Any], None]


@dataclass
class NodeContext:
    """Everything a node is built from; filled by the experiment layer."""

    node_id: int
    role: str
    params: Any
    """The algorithm's own frozen parameter dataclass."""
    learner: Any = None
    """This node's learner (a :class:`simbench.learn.LearnerProtocol`: a classifier's
    :class:`~simbench.learn.Learner`, a :class:`~simbench.gan.GANLearner`, ...) with its shard;
    None for roles without a model."""
    epochs: int = 1
    """How many epochs of its local data a training node goes through."""
    eval_train: tuple[torch.Tensor, torch.Tensor] | None = None
    val: tuple[torch.Tensor, torch.Tensor] | None = None
    test: tuple[torch.Tensor, torch.Tensor] | None = None
    graph: nx.Graph | None = None
    roles: dict[int, str] = field(default_factory=dict)
    steps_per_epoch: int = 0
    """For model roles without data (servers): steps of an average worker per epoch."""
    on_epoch: EpochHook | None = None
    """Observer told ``(node_id, epoch, learner)`` after each epoch (the average-model row)."""
    network: Any = None
    """The run's :class:`~simbench.core.scenario.NetworkSpec` (nominal link capacities), for
    algorithms that size their messages to the network (Ako's ``P: auto``); None if unknown."""
    compute: Any = None
    """The run's :class:`~simbench.core.scenario.ComputeSpec` (nominal step cost); None if unknown."""
    selection: str = "online"
    """Whom a federated server samples from: the clients online now (``online``, through
    ``rt.online``) or all of them (``any``); the config's ``population.selection``."""
    profile: Any = None
    """This node's :class:`~simbench.core.scenario.NodeProfile` (speed, batch scale, share of
    local steps of a weak worker); None when built by hand (a normal node)."""
    workload: Any = None
    """The run's :class:`~simbench.workloads.Workload`: it evaluates the node's learner at
    epoch ends, scores samples for algorithms that judge generators themselves and keeps
    the artefacts algorithms hand over. None (tests that build nodes by hand): the
    classifier's per-epoch metrics."""


class Node:
    """Base class: shared helpers for training steps and per-epoch evaluation."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.node_id = ctx.node_id
        self.learner = ctx.learner
        self.params = ctx.params

    async def run(self, rt: Runtime) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers used by algorithms ------------------------------------------------
    def step_cost(self, steps: int = 1) -> Work:
        return Work(flops=self.learner.flops_per_step() * steps, steps=steps)

    async def local_step(self, rt: Runtime) -> float:
        """One minibatch step of the local learner, charged to the node's clock."""
        return await rt.compute(self.learner.train_step, cost=self.step_cost())

    async def local_grad(self, rt: Runtime) -> float:
        """Compute (not apply) one minibatch gradient, charged to the node's clock."""
        return await rt.compute(self.learner.compute_grad, cost=self.step_cost())

    def evaluate(self, rt: Runtime, epoch: int, learner: Any = None) -> dict[str, float]:
        """Log the workload's per-epoch metrics of ``learner`` (default: this node's)."""
        learner = learner or self.learner
        if self.ctx.workload is None:
            from ..workloads.classifier import evaluate_splits
            return evaluate_splits(rt, self.ctx, epoch, learner)
        return self.ctx.workload.evaluate(rt, self.ctx, epoch, learner)

    def end_epoch(self, rt: Runtime, epoch: int) -> None:
        """Evaluate (the metrics stay in ``last_metrics``), tell the observer (which may build
        the average model) and the runtime (whose ``sleep_factor`` rest follows a finished epoch)."""
        self.last_metrics = self.evaluate(rt, epoch)
        epoch_end = getattr(rt, "epoch_end", None)  # hand-made runtimes of tests may lack it
        if epoch_end is not None:
            epoch_end(epoch)
        if self.ctx.on_epoch is not None:
            self.ctx.on_epoch(self.node_id, epoch, self.learner)


class Algorithm:
    """A registered algorithm: its parameters, the roles it gives nodes, and its nodes.

    ``workload`` names what it trains (``"classifier"`` or ``"gan"``, or a
    :class:`~simbench.workloads.Workload` subclass): see :mod:`simbench.workloads`.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type]
    summary: ClassVar[str] = ""
    workload: ClassVar[Any] = "classifier"
    weak_modes: ClassVar[tuple[str, ...]] = ("slow",)
    """What ``scenario.weak_workers.mode`` may be for this algorithm; the first is what ``auto``
    means (see :class:`~simbench.core.scenario.WeakWorkers`)."""
    example: ClassVar[dict] = {}
    """Changes to the workload's tiny config that make a quick run of this algorithm (what
    :func:`simbench.testing.check_algorithm` and the device check run): e.g. a star topology
    and a timeout, so the run survives a crashed client."""

    @classmethod
    def roles(cls, graph: nx.Graph, params: Any) -> dict[int, str]:
        """Role of every node; raise ConfigError when the topology does not suit."""
        return {i: "worker" for i in graph.nodes}

    @classmethod
    def data_roles(cls) -> tuple[str, ...]:
        """Roles that get a shard of the training data."""
        return ("worker",)

    @classmethod
    def whole_data(cls, params: Any) -> bool:
        """True: every data holder trains on the whole training set (``dataset.partition`` is
        not used; ``max_per_class`` still caps it), as Lipizzaner's cells do."""
        return False

    @classmethod
    def model_roles(cls) -> tuple[str, ...]:
        """Roles that hold a model (data roles and, e.g., a parameter server)."""
        return cls.data_roles()

    @classmethod
    def reporting_roles(cls) -> tuple[str, ...]:
        """Roles whose nodes report per-epoch metrics (their mean is the ``avg`` row)."""
        return cls.data_roles()

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:  # pragma: no cover - abstract
        raise NotImplementedError
