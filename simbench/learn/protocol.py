"""What algorithms may ask of a node's learner, as Protocols (checked by type checkers and by
``isinstance`` at run time for the methods' presence).

:class:`LearnerProtocol` is what every learner offers (:class:`~simbench.learn.Learner` for
classifiers, :class:`~simbench.gan.GANLearner` for GANs, or a learner of a workload of the
user's): parameters and gradients as flat vectors, a training step, its cost. Algorithms
that need more (a GAN's generator, a classifier's layer layout) say so by using
:class:`GanLearnerProtocol` or :class:`ClassifierLearnerProtocol`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class LearnerProtocol(Protocol):
    """A model, its optimizer and a data shard, moved in and out as flat vectors."""

    num_params: int
    """Length of the flat parameter vector."""
    batch_size: int
    device: torch.device
    steps_done: int

    @property
    def num_samples(self) -> int:
        """Samples in the shard."""
        ...

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(num_samples / batch_size)`` (at least 1)."""
        ...

    def train_step(self) -> Any:
        """One minibatch: gradients, then an optimizer step; returns the loss(es)."""
        ...

    def train_steps(self, steps: int) -> None:
        """``steps`` calls of :meth:`train_step` (the simulator may run many learners' at once)."""
        ...

    def idle(self) -> None:
        """The node will set new parameters before it reads these again: a learner may free
        them (a federated client between rounds)."""
        ...

    def compute_grad(self) -> float:
        """One minibatch's gradients, left for :meth:`get_grad_flat` (no step)."""
        ...

    def apply_update(self) -> None:
        """An optimizer step with the current gradients."""
        ...

    def get_flat(self) -> torch.Tensor:
        """A copy of every parameter as one vector."""
        ...

    def set_flat(self, flat: torch.Tensor) -> None:
        """Copy ``flat`` into the parameters."""
        ...

    def get_grad_flat(self) -> torch.Tensor:
        """A copy of every gradient as one vector."""
        ...

    def set_grad_flat(self, flat: torch.Tensor) -> None:
        """Copy ``flat`` into the gradients (before :meth:`apply_update`)."""
        ...

    def flops_per_step(self) -> float:
        """FLOPs of one training step (the simulator's cost model)."""
        ...


@runtime_checkable
class ClassifierLearnerProtocol(LearnerProtocol, Protocol):
    """A classifier's learner: also its live flat buffer, its layers and an evaluation."""

    def flat_params(self) -> torch.Tensor:
        """The live flat parameter buffer (writing into it changes the model)."""
        ...

    def layer_slices(self) -> list[tuple[str, int, int, str]]:
        """``(name, start, stop, kind)`` of every parameter tensor in the flat vector."""
        ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy on ``(x, y)``."""
        ...


@runtime_checkable
class GanLearnerProtocol(LearnerProtocol, Protocol):
    """A GAN's learner: the generator and discriminator apart, samples and losses."""

    last_losses: tuple[float, float]
    """(D loss, G loss) of the last step."""

    def noise(self, n: int) -> torch.Tensor: ...

    def sample(self, n: int | None = None, z: torch.Tensor | None = None) -> torch.Tensor: ...

    def get_g(self) -> torch.Tensor: ...

    def set_g(self, flat: torch.Tensor) -> None: ...

    def get_d(self) -> torch.Tensor: ...

    def set_d(self, flat: torch.Tensor) -> None: ...
