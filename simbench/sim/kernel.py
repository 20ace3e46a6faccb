"""A small discrete-event kernel that drives ``async def`` node coroutines on a virtual clock.

The kernel owns one heap of ``(time_ticks, seq, callback, args)`` entries. Time is an
integer number of ticks (nanoseconds, see :data:`simbench.core.units.SECOND_TICKS`); the
sequence counter breaks ties, so events scheduled for the same tick run in the order they
were scheduled and every run is deterministic. The kernel never reads the wall clock.

Life-cycle rules
----------------
* A :class:`Process` wraps one coroutine. The coroutine may only ``await`` objects that
  eventually yield a :class:`SimFuture` (the runtime's ``sleep``, ``recv``, ``compute``
  ... all do). When it yields a future, the process is parked until the future resolves;
  the process is then resumed by a kernel event at the tick the future resolved.
* A future resolves at most once. Resolving schedules the waiters' resumption at the
  current tick (never recursively), which keeps stacks flat and orders ties by ``seq``.
* ``run(until=None)`` runs until no event is left. If processes that are not daemons are
  still waiting for futures nobody can resolve, that is a deadlock: :class:`Deadlock` is
  raised naming them. ``run(until=t)`` stops at tick ``t`` without the deadlock check.
  ``run(stop_when_done=True)`` also stops as soon as no process is alive: events still
  scheduled then (a fault planned for later) neither run nor move the clock.
* ``Process.kill()`` closes the coroutine (``finally`` blocks run) and resolves its
  ``done`` future with :class:`Killed`; the crash fault injector uses it.
* ``at_tick_end(callback)`` runs ``callback()`` once every event of the current tick has
  run, before the clock moves on (events it schedules for the current tick still run at
  that tick). The simulator gathers the training steps of the nodes due at one instant
  this way and runs them together.

The design follows SimPy's ``core.py``: one heap, ``step()``, ``run(until=)``.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Callable, Coroutine, Iterable


PROGRESS_EVERY = 1 << 12
PROGRESS_MASK = PROGRESS_EVERY - 1


class Deadlock(RuntimeError):
    """Every live process waits and no event is scheduled that could wake one."""


class Killed(Exception):
    """The value a killed process's ``done`` future fails with."""


class SimFuture:
    """A value that becomes available at some simulated tick.

    ``await fut`` inside a process parks the process until :meth:`set_result` or
    :meth:`set_exception` is called. Callbacks run as kernel events, not inline.
    """

    __slots__ = ("kernel", "_done", "_value", "_exc", "_waiters", "label")

    def __init__(self, kernel: "Kernel", label: str = "") -> None:
        self.kernel = kernel
        self._done = False
        self._value: Any = None
        self._exc: BaseException | None = None
        self._waiters: list[Callable[["SimFuture"], None]] = []
        self.label = label

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if not self._done:
            raise RuntimeError(f"future {self.label!r} is not resolved yet")
        if self._exc is not None:
            raise self._exc
        return self._value

    def set_result(self, value: Any = None) -> bool:
        """Resolve with ``value``; returns False (and does nothing) if already resolved."""
        if self._done:
            return False
        self._done, self._value = True, value
        self._wake()
        return True

    def set_exception(self, exc: BaseException) -> bool:
        if self._done:
            return False
        self._done, self._exc = True, exc
        self._wake()
        return True

    def add_waiter(self, callback: Callable[["SimFuture"], None]) -> None:
        """Call ``callback(self)`` as a kernel event once resolved (now, if already)."""
        if self._done:
            self.kernel.schedule(0, callback, self)
        else:
            self._waiters.append(callback)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        kernel = self.kernel
        for callback in waiters:  # inlined Kernel.schedule(0, ...): this is the hot path
            kernel._seq += 1
            heapq.heappush(kernel._heap, (kernel.now, kernel._seq, [callback, (self,)]))

    def __await__(self):
        if not self._done:
            yield self
        return self.result()


class Process:
    """A coroutine driven by the kernel; ``done`` resolves with its return value."""

    __slots__ = ("kernel", "name", "coro", "done", "daemon", "waiting_on", "_alive", "_wakeup")

    def __init__(self, kernel: "Kernel", coro: Coroutine, name: str, daemon: bool) -> None:
        self.kernel = kernel
        self.name = name
        self.coro = coro
        self.daemon = daemon
        self.done = SimFuture(kernel, f"{name}.done")
        self.waiting_on: SimFuture | None = None
        self._alive = True
        self._wakeup = self._resume  # one bound method, not a new one per wait

    @property
    def alive(self) -> bool:
        return self._alive

    def _resume(self, fut: SimFuture | None) -> None:
        if not self._alive or (fut is not None and fut is not self.waiting_on):
            return  # killed meanwhile, or a stale wake-up
        self.waiting_on = None
        try:
            if fut is None:
                yielded = self.coro.send(None)
            elif fut._exc is not None:
                yielded = self.coro.throw(fut._exc)
            else:
                yielded = self.coro.send(fut._value)
        except StopIteration as stop:
            self._finish()
            self.done.set_result(stop.value)
            return
        except BaseException as exc:  # the process failed: surface it in run()
            self._finish()
            self.done.set_exception(exc)
            self.kernel._failed(self, exc)
            return
        if not isinstance(yielded, SimFuture):
            self.kill()
            raise TypeError(
                f"process {self.name!r} awaited {yielded!r}; node code may only await runtime methods"
            )
        self.waiting_on = yielded
        if yielded._done:
            self.kernel.schedule(0, self._wakeup, yielded)
        else:
            yielded._waiters.append(self._wakeup)  # add_waiter, inlined: once per wait

    def _finish(self) -> None:
        self._alive = False
        self.kernel._live.discard(self)

    def kill(self) -> None:
        """Stop the process now: its coroutine is closed and ``done`` fails with Killed."""
        if not self._alive:
            return
        self._finish()
        self.waiting_on = None
        try:
            self.coro.close()
        except RuntimeError:
            pass  # a coroutine that awaits in ``finally`` cannot be closed cleanly
        self.done.set_exception(Killed(self.name))

    def __repr__(self) -> str:
        state = "alive" if self._alive else "done"
        return f"<Process {self.name} {state}>"


class Kernel:
    """The event loop of the simulator: a heap of timed callbacks and the processes."""

    def __init__(self) -> None:
        self.now: int = 0
        self._heap: list[tuple[int, int, Callable, tuple]] = []
        self._seq = 0
        self._live: set[Process] = set()
        self._failure: tuple[Process, BaseException] | None = None
        self.events_processed = 0
        self.on_progress: Callable[[], None] | None = None
        """Called every :data:`PROGRESS_EVERY` events while running (a progress display)."""
        self._tick_end: list[Callable[[], None]] = []

    # -- scheduling ---------------------------------------------------------------
    def schedule(self, delay: int, callback: Callable, *args: Any) -> list:
        """Run ``callback(*args)`` ``delay`` ticks from now; returns a cancellable handle."""
        if delay < 0:
            raise ValueError(f"cannot schedule into the past (delay={delay} ticks)")
        entry = [callback, args]
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, entry))
        return entry

    def schedule_at(self, tick: int, callback: Callable, *args: Any) -> list:
        if tick < self.now:
            raise ValueError(f"cannot schedule into the past (tick {tick} < now {self.now})")
        entry = [callback, args]
        self._seq += 1
        heapq.heappush(self._heap, (tick, self._seq, entry))
        return entry

    @staticmethod
    def cancel(handle: list) -> None:
        """Cancel a scheduled callback (lazy deletion: the heap entry becomes a no-op).

        The arguments are dropped at once: a cancelled receive timeout would otherwise keep
        its waiter, and through it the delivered message, alive until the timeout's tick
        (at 1.5 GB for a 9-node MLP run, most of a run's memory).
        """
        handle[0] = None
        handle[1] = ()

    def at_tick_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` when every event of the current tick has run (see the rules)."""
        self._tick_end.append(callback)

    def _end_tick(self) -> None:
        callbacks, self._tick_end = self._tick_end, []
        for callback in callbacks:
            callback()

    def timeout(self, delay: int, value: Any = None) -> SimFuture:
        """A future that resolves with ``value`` after ``delay`` ticks."""
        fut = SimFuture(self, "timeout")
        self.schedule(delay, fut.set_result, value)
        return fut

    def spawn(self, coro: Coroutine, name: str = "process", daemon: bool = False) -> Process:
        """Start ``coro`` as a process at the current tick."""
        proc = Process(self, coro, name, daemon)
        self._live.add(proc)
        self.schedule(0, proc._resume, None)
        return proc

    # -- running --------------------------------------------------------------------
    def step(self) -> bool:
        """Process the next event; False when none is left."""
        while self._heap:
            tick, _, entry = heapq.heappop(self._heap)
            callback = entry[0]
            if callback is None:
                continue
            self.now = tick
            self.events_processed += 1
            callback(*entry[1])
            return True
        return False

    def run(self, until: int | None = None, *, stop_when_done: bool = False) -> None:
        """Run events until none is left, or up to tick ``until`` (inclusive), or (with
        ``stop_when_done``) until every process has ended."""
        heap = self._heap
        pop = heapq.heappop
        limit = math.inf if until is None else until
        live = self._live
        while True:
            if self._tick_end and (not heap or heap[0][0] > self.now):
                self._end_tick()  # before the clock moves on (may schedule more at this tick)
                if self._failure is not None:
                    self._raise_failure()
                continue
            if not heap or not (live or not stop_when_done):
                break
            if heap[0][0] > limit:
                self.now = until
                return
            tick, _, entry = pop(heap)
            callback = entry[0]
            if callback is None:
                continue
            self.now = tick
            self.events_processed += 1
            callback(*entry[1])
            if self._failure is not None:
                self._raise_failure()
            if not self.events_processed & PROGRESS_MASK and self.on_progress is not None:
                self.on_progress()
        if until is not None:
            self.now = max(self.now, until)
            return
        stuck = sorted((p for p in self._live if not p.daemon), key=lambda p: p.name)
        if stuck:
            what = ", ".join(f"{p.name} (waiting on {_describe(p.waiting_on)})" for p in stuck[:20])
            more = f" and {len(stuck) - 20} more" if len(stuck) > 20 else ""
            raise Deadlock(
                f"deadlock at t={self.now / 1e9:.9f}s: every process waits and nothing is scheduled: {what}{more}"
            )

    def _raise_failure(self) -> None:
        _, exc = self._failure
        self._failure = None
        raise exc

    def _failed(self, proc: Process, exc: BaseException) -> None:
        if self._failure is None and not isinstance(exc, Killed):
            self._failure = (proc, exc)

    @property
    def live(self) -> Iterable[Process]:
        return tuple(self._live)


def _describe(fut: SimFuture | None) -> str:
    """Human text for a future's label; recv labels are ("recv", node, match) tuples."""
    if fut is None:
        return "nothing"
    label = fut.label
    if isinstance(label, tuple) and label and label[0] == "recv":
        match = label[2]
        what = f"{match!r}" if isinstance(match, (str, tuple, list)) else ("a predicate" if match else "any message")
        return f"recv of {what}"
    return str(label) or "a future"


def gather(kernel: Kernel, futures: list[SimFuture]) -> SimFuture:
    """A future resolving with the list of results once every one of ``futures`` is done."""
    out = SimFuture(kernel, "gather")
    remaining = [len(futures)]
    if not futures:
        out.set_result([])
        return out

    def one_done(_: SimFuture) -> None:
        remaining[0] -= 1
        if remaining[0] == 0 and not out.done:
            failed = next((f._exc for f in futures if f._exc is not None), None)
            if failed is not None:
                out.set_exception(failed)
            else:
                out.set_result([f._value for f in futures])

    for fut in futures:
        fut.add_waiter(one_done)
    return out
