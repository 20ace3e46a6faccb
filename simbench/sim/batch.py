"""Batched compute: the training steps of many nodes due at one simulated instant, run together.

A node's ``rt.compute(fn, ...)`` result is needed only when its modelled cost has passed on
the simulated clock, and the node's code waits until then. So the simulator may put off
running ``fn`` to the end of the current instant (:meth:`Kernel.at_tick_end
<simbench.sim.kernel.Kernel.at_tick_end>`), gather every such call of that instant, and run
the ones that do the same thing on the same architecture as one vectorized call
(:func:`simbench.learn.flat.batched_run`). Simulated time, messages and bytes do not depend
on how the calls ran; the numbers a batched step computes equal a sequential step's up to
the order of floating-point sums.

What is batched: the steps of :class:`~simbench.learn.flat.FlatLearner` s
(``train_step``, ``compute_grad``, ``train_steps``) that share a model template, an op and
its arguments. Everything else (a GAN's steps, an algorithm's own function, a server's
bookkeeping) runs at once, as before. Algorithms know nothing of this.
"""

from __future__ import annotations

from typing import Any, Callable

from ..learn.flat import FlatLearner, batch_key, batched_run


class Job:
    """One deferred call; its result is set at the end of the instant it was submitted in."""

    __slots__ = ("learner", "op", "args", "key", "value", "error", "done")

    def __init__(self, learner: FlatLearner, op: str, args: tuple, key: tuple) -> None:
        self.learner, self.op, self.args, self.key = learner, op, args, key
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = False

    def result(self) -> Any:
        if not self.done:
            raise RuntimeError("a batched computation was read before its instant ended")
        if self.error is not None:
            raise self.error
        return self.value


class Batcher:
    """Collects the batchable calls of an instant and runs them at its end."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._pending: list[Job] = []
        self.calls = 0
        """Deferred calls so far."""
        self.vectorized = 0
        """Of those, the ones that ran in a group of two or more."""

    def submit(self, fn: Callable, args: tuple) -> Job | None:
        """Defer ``fn(*args)`` if it is a batchable learner step (else None: run it now)."""
        learner = getattr(fn, "__self__", None)
        op = getattr(fn, "__name__", "")
        if not isinstance(learner, FlatLearner) or getattr(fn, "__func__", None) is not getattr(FlatLearner, op, None):
            return None
        key = batch_key(learner, op, args)
        if key is None:
            return None
        job = Job(learner, op, args, key)
        if not self._pending:
            self.kernel.at_tick_end(self.flush)
        self._pending.append(job)
        return job

    def flush(self) -> None:
        """Run every call deferred in this instant, grouped by what they share."""
        jobs, self._pending = self._pending, []
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        for group in groups.values():
            self.calls += len(group)
            try:
                if len(group) == 1 or len({id(j.learner) for j in group}) < len(group):
                    # alone, or one learner twice (two tasks of a node): in submission order
                    values = [getattr(j.learner, j.op)(*j.args) for j in group]
                else:
                    self.vectorized += len(group)
                    values = batched_run([j.learner for j in group], group[0].op, group[0].args)
            except Exception as exc:  # noqa: BLE001 - each waiting node gets the error when it reads its result
                for job in group:
                    job.error, job.done = exc, True
                continue
            for job, value in zip(group, values):
                job.value, job.done = value, True
