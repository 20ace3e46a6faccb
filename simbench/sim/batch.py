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
    """One put-off call; its result is set by the end of the instant it was queued in."""

    __slots__ = ("batcher", "learner", "op", "args", "key", "steps", "value", "error", "done")

    def __init__(self, batcher: "Batcher", learner: FlatLearner, op: str, args: tuple, key: tuple) -> None:
        self.batcher, self.learner, self.op, self.args, self.key = batcher, learner, op, args, key
        self.steps = int(args[0]) if op == "train_steps" else 1
        """Learner steps (minibatches) the call computes."""
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = False

    def run_alone(self) -> None:
        """Run now, on its own (something looks at the learner before the instant ends)."""
        self.learner.job = None
        self.batcher.alone += self.steps
        try:
            self.value = getattr(self.learner, self.op)(*self.args)
        except Exception as exc:  # noqa: BLE001 - the node gets it when it reads its result
            self.error = exc
        self.done = True

    def result(self) -> Any:
        if not self.done:
            raise RuntimeError("a batched computation was read before its instant ended")
        if self.error is not None:
            raise self.error
        return self.value


class Batcher:
    """Collects the batchable calls of an instant and runs them at its end.

    A put-off step must leave the run as a step run at once would have. Two things could
    tell them apart, and both run the step first: anything that reads or changes the learner
    before the instant ends (the learner settles its pending step, see
    :meth:`FlatLearner.settle <simbench.learn.flat.FlatLearner.settle>`), and a second step
    of the same learner in the same instant (the first runs before the second is queued).
    """

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._pending: list[Job] = []
        self.calls = 0
        """Put-off calls so far."""
        self.steps = 0
        """Learner steps (minibatches) in those calls."""
        self.vectorized = 0
        """Of those steps, the ones that ran in a group of two or more learners."""
        self.alone = 0
        """Of those steps, the ones run early on their own (their learner was looked at)."""

    def prepare(self, fn: Callable, args: tuple) -> Job | None:
        """A job for ``fn(*args)`` if it is a batchable learner step (else None: run it now)."""
        learner = getattr(fn, "__self__", None)
        if not isinstance(learner, FlatLearner):
            return None
        op = getattr(fn, "__name__", "")
        if getattr(fn, "__func__", None) is not getattr(FlatLearner, op, None):
            return None
        key = batch_key(learner, op, args)
        return None if key is None else Job(self, learner, op, args, key)

    def queue(self, job: Job) -> None:
        """Run ``job`` at the end of the current instant, with the others of its kind."""
        learner = job.learner
        learner.settle()  # its earlier step of this instant comes first
        learner.job = job
        self.calls += 1
        self.steps += job.steps
        if not self._pending:
            self.kernel.at_tick_end(self.flush)
        self._pending.append(job)

    def flush(self) -> None:
        """Run every call put off in this instant, grouped by what they share."""
        jobs, self._pending = self._pending, []
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            if not job.done:
                job.learner.job = None
                groups.setdefault(job.key, []).append(job)
        for group in groups.values():
            try:
                if len(group) == 1:
                    values = [getattr(group[0].learner, group[0].op)(*group[0].args)]
                else:
                    values = batched_run([j.learner for j in group], group[0].op, group[0].args)
                    self.vectorized += sum(j.steps for j in group)
            except Exception as exc:  # noqa: BLE001 - each waiting node gets the error when it reads its result
                for job in group:
                    job.error, job.done = exc, True
                continue
            for job, value in zip(group, values):
                job.value, job.done = value, True
