"""SimRuntime: the Runtime interface on the discrete-event kernel, one per simulated node.

Delivery, compute and timeouts are kernel events; the node's clock is the kernel's.
Messages travel as their real encoded bytes through :class:`~simbench.sim.network.Network`
and are decoded on arrival, exactly as the real runtime does.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np

from ..core.message import Message, Wire
from ..core.runtime import Cost, EpochRest, Match, Work, matcher, take_first
from ..core.scenario import NodeProfile
from ..core.units import SECOND_TICKS, to_ticks
from .kernel import Process, SimFuture, gather

if TYPE_CHECKING:  # pragma: no cover
    from .world import SimWorld


class SimTask:
    """Handle on a process spawned by a node."""

    __slots__ = ("process",)

    def __init__(self, process: Process) -> None:
        self.process = process

    def cancel(self) -> None:
        self.process.kill()

    def done(self) -> bool:
        return not self.process.alive


class SimRuntime:
    """One node's view of the simulated world (see :mod:`simbench.core.runtime`)."""

    def __init__(self, world: "SimWorld", node_id: int, role: str, neighbors: tuple[int, ...],
                 nodes: tuple[int, ...], rng: np.random.Generator, profile: NodeProfile,
                 straggler_rng: np.random.Generator, sleep_rng: np.random.Generator | None = None) -> None:
        self.world = world
        self.kernel = world.kernel
        self.node_id = node_id
        self.role = role
        self.neighbors = neighbors
        self.nodes = nodes
        self.rng = rng
        self.profile = profile
        self._straggler_rng = straggler_rng
        self._rest = EpochRest(profile.sleep_factor, sleep_rng)
        self._mailbox: deque[Message] = deque()
        self._waiters: list[list] = []  # [future, predicate, timeout handle]
        self._ticks: dict[float, int] = {}  # recv timeouts seen -> ticks (algorithms reuse a few)
        self._procs: dict[Process, None] = {}  # insertion-ordered: kills run in spawn order (determinism)
        self.crashed = False
        self.compute_s = 0.0
        self.device = None
        """Received tensors are moved here on delivery (the node's accelerator; None: CPU)."""

    # -- clock ------------------------------------------------------------------
    def now(self) -> float:
        return self.kernel.now / SECOND_TICKS

    async def sleep(self, seconds: float) -> None:
        await self._hold(to_ticks(seconds))

    async def _hold(self, ticks: int) -> None:
        fut = SimFuture(self.kernel, "sleep")
        handle = self.kernel.schedule(ticks, fut.set_result, None)
        try:
            await fut
        finally:
            if not fut.done:  # killed while waiting: its timer must not outlive it (and move the clock)
                self.kernel.cancel(handle)

    # -- messages -------------------------------------------------------------------
    async def send(self, dst: int, msg: Message) -> None:
        if self.crashed:
            return
        wire = msg.encode(self.node_id)
        self.world.network.send(self.node_id, dst, wire)  # arrival is always a later event
        self.world.sent(wire, msg.buffer)

    async def recv(self, timeout: float | None = None, match: Match = None) -> Message | None:
        pred = None if match is None else matcher(match)
        if self._mailbox:
            found = take_first(self._mailbox, pred)
            if found is not None:
                return found
        if timeout is not None and timeout <= 0:
            return None
        kernel = self.kernel
        waiter = [SimFuture(kernel, ("recv", self.node_id, match)), pred, None]
        self._waiters.append(waiter)
        if timeout is not None:
            ticks = self._ticks.get(timeout)
            if ticks is None:
                ticks = self._ticks[timeout] = to_ticks(timeout)
            waiter[2] = kernel.schedule(ticks, self._expire, waiter)
        try:
            return await waiter[0]
        finally:
            if not waiter[0]._done and waiter in self._waiters:
                # killed while waiting: withdraw, or this dead waiter would swallow the next message
                self._waiters.remove(waiter)
                if waiter[2] is not None:
                    self.kernel.cancel(waiter[2])

    def _expire(self, waiter: list) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            waiter[0].set_result(None)

    def deliver(self, payload: Wire) -> None:
        """Called by the network at arrival time."""
        msg = self.world.decode(payload)
        if self.device is not None:
            msg = msg.to(self.device)
        for waiter in self._waiters:
            if waiter[1] is None or waiter[1](msg):
                self._waiters.remove(waiter)
                if waiter[2] is not None:
                    self.kernel.cancel(waiter[2])
                waiter[0].set_result(msg)
                return
        self._mailbox.append(msg)

    # -- compute -------------------------------------------------------------------
    def epoch_end(self, epoch: int) -> None:
        rest = self._rest.epoch_end(self.now(), epoch)
        if rest > 0:
            self.log("sleep_proc", rest, epoch=epoch)

    async def compute(self, fn: Callable[..., Any], *args: Any, cost: Cost = None) -> Any:
        rest = self._rest.take()
        if rest > 0:  # sleep_factor: the rest earned by the last epoch, before this one's work
            await self._hold(to_ticks(rest))
            self._rest.resumed(self.now())
        batcher = self.world.batcher
        job = batcher.prepare(fn, args) if batcher is not None else None
        if job is None:
            result = fn(*args)
            seconds = self._cost_seconds(cost)
        else:  # a learner step: run at the end of this instant with the other nodes' (sim/batch.py)
            result = None
            seconds = self._cost_seconds(cost)
            if seconds > 0:
                batcher.queue(job)
            else:
                job.run_alone()
        if isinstance(cost, Work):
            self.world.steps += cost.steps
        if seconds > 0:
            self.compute_s += seconds
            await self._hold(to_ticks(seconds))
        return result if job is None else job.result()

    def _cost_seconds(self, cost: Cost) -> float:
        if cost is None:
            return 0.0
        spec = self.world.compute
        if isinstance(cost, Work):
            if spec.step_time is not None:
                base = cost.steps * spec.step_time
            else:
                base = cost.flops / spec.speed
        else:
            base = float(cost)
        if base <= 0:
            return 0.0
        seconds = base / self.profile.speed
        if self.profile.straggler:
            factor = max(1.0, self.world.scenario.stragglers.slowdown.sample(self._straggler_rng))
            self.log("straggler_slowdown", factor)
            seconds *= factor
        return seconds

    # -- concurrency ---------------------------------------------------------------------
    def spawn(self, coro: Awaitable[Any], name: str = "task") -> SimTask:
        if self.crashed:
            coro.close()
            raise RuntimeError(f"node {self.node_id} is crashed and cannot spawn")
        proc = self.kernel.spawn(coro, f"node{self.node_id}.{name}")
        self._procs[proc] = None
        proc.done.add_waiter(lambda _f, p=proc: self._procs.pop(p, None))
        return SimTask(proc)

    async def gather(self, *tasks: SimTask) -> list[Any]:
        return await gather(self.kernel, [t.process.done for t in tasks])

    def online(self, nodes) -> list[int]:
        """The nodes of ``nodes`` its population has online now (see :meth:`Runtime.online`)."""
        return self.world.online(nodes)

    # -- records ------------------------------------------------------------------
    def log(self, metric: str, value: float, *, epoch: int | None = None) -> None:
        self.world.recorder.event(self.now(), self.node_id, metric, value, epoch)

    @property
    def bytes_sent(self) -> int:
        return self.world.network.bytes_sent[self.node_id]

    @property
    def msgs_sent(self) -> int:
        return self.world.network.msgs_sent[self.node_id]

    # -- faults (driven by the world) ------------------------------------------------
    def start(self, main: Awaitable[Any]) -> Process:
        proc = self.kernel.spawn(self._main(main), f"node{self.node_id}")
        self._procs[proc] = None
        return proc

    async def _main(self, main: Awaitable[Any]) -> Any:
        try:
            return await main
        finally:
            # a node's run is over when its main coroutine returns: stop its helpers
            for proc in list(self._procs):
                if proc.name != f"node{self.node_id}":
                    proc.kill()

    def crash(self) -> None:
        self.crashed = True
        for proc in list(self._procs):
            proc.kill()
        self._procs.clear()
        for waiter in self._waiters:
            if waiter[2] is not None:
                self.kernel.cancel(waiter[2])
        self._waiters.clear()
        self._mailbox.clear()
