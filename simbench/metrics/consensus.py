"""Consensus distance and the average model, observed at every node's epoch boundary.

For epoch e, once every training node has reported (or at the end of the run, with the
nodes that did), the observer forms the average model x̄ = mean_i x_i, evaluates it on
the test set (the ``avg`` rows of epochs.csv) and records the consensus distance
(1/n) sum_i ||x_i - x̄||² (``consensus_distance``). Only the simulator, which holds every
node in one process, can do this; a real run has no such global view.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def mean_vector(vectors: list[torch.Tensor]) -> torch.Tensor:
    """The mean of flat parameter vectors, summed in place (no n-by-d stack)."""
    from ..algorithms.kit import average  # the algorithms' one averaging loop
    return average(vectors)


def consensus_distance(vectors: list[torch.Tensor], mean: torch.Tensor | None = None) -> float:
    """(1/n) sum_i ||x_i - mean||^2 of flat parameter vectors, one vector at a time."""
    mean = mean_vector(vectors) if mean is None else mean
    diff = torch.empty_like(mean)
    total = 0.0
    for v in vectors:
        torch.sub(v, mean, out=diff)
        total += float(torch.dot(diff, diff))
    return total / len(vectors)


class AverageModelObserver:
    """Collects per-epoch parameter snapshots and logs the average model's metrics."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.snapshots: dict[int, dict[int, torch.Tensor]] = {}
        self.times: dict[int, float] = {}
        self.expected = 0
        self.clock: Callable[[], float] = lambda: 0.0
        self.progress: Callable[[], Any] | None = None
        self._learner = None
        self._test = None

    def configure(self, model: torch.nn.Module, test, expected: int, device: str = "cpu") -> None:
        from ..learn import Learner, OptimConfig
        x, y = test
        self._learner = Learner(model.to(device), x[:1], y[:1], batch_size=1, optim=OptimConfig(), seed=0, device=device)
        self._test = test
        self.expected = expected

    def on_epoch(self, node: int, epoch: int, learner: Any) -> None:
        if self.progress is not None:
            self.progress()
        if learner is None or self.expected < 1:
            return
        self.snapshots.setdefault(epoch, {})[node] = learner.get_flat()
        self.times[epoch] = self.clock()
        if len(self.snapshots[epoch]) >= self.expected:
            self._emit(epoch)

    def _emit(self, epoch: int) -> None:
        vectors = list(self.snapshots.pop(epoch).values())
        if self._learner is None or not vectors:
            return
        t = self.times.pop(epoch)
        mean = mean_vector(vectors)
        self._learner.set_flat(mean)
        loss, acc = self._learner.evaluate(*self._test)
        for metric, value in (("test_loss", loss), ("test_acc", acc),
                              ("consensus_distance", consensus_distance(vectors, mean) if len(vectors) > 1 else 0.0),
                              ("nodes_averaged", len(vectors))):
            self.recorder.event(t, "avg", metric, value, epoch)

    def flush(self) -> None:
        """Emit epochs that some nodes (crashed ones) never reached."""
        for epoch in sorted(self.snapshots):
            self._emit(epoch)
