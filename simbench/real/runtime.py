"""RealRuntime: the Runtime interface on the asyncio event loop, wall clock and ZeroMQ.

The same node code as in the simulator runs against it. Differences are only those of
the real world: ``now()`` is wall-clock seconds since the run's common start instant;
``compute`` runs ``fn`` in a worker thread (so the reader keeps receiving during long
steps) and takes the time it takes, slowed by the node's profile (weak worker speed,
straggler draw) by sleeping ``(factor - 1) x elapsed`` afterwards; messages go through
the :class:`~simbench.real.faults.FaultLayer` to the :class:`~simbench.real.transport.Transport`.

Offline spells of the run's population (:meth:`RealRuntime.go_offline`, armed by
:func:`simbench.real.world.schedule_availability`) stop the node's code as a crash does but
keep the process and its sockets: what arrives meanwhile is dropped (``drop_offline``), the
messages it had not yet handed to its sockets are dropped (``drop_sender_offline``), and at
:meth:`RealRuntime.come_online` its ``run`` starts again with the state it had.

``bytes_sent`` counts encoded message bytes when ``send`` is called (HMAC tags and
ZeroMQ framing excluded), exactly as the simulator counts them, lost messages included.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Awaitable, Callable

import numpy as np

from ..core.message import Message
from ..core.runtime import Cost, EpochRest, Match, Work, matcher, take_first
from ..core.scenario import NodeProfile, Stragglers
from .faults import FaultLayer, LinkFaults, NO_FAULTS
from .transport import Transport


REJECT_ROWS = 100


class Clock:
    """Seconds since a shared start instant (a ``time.time()`` value), read monotonically."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._mono0 = time.monotonic() - (time.time() - start)

    def __call__(self) -> float:
        return time.monotonic() - self._mono0

    async def wait_start(self) -> None:
        """Sleep until the start instant (returns at once if it has passed)."""
        left = -self()
        if left > 0:
            await asyncio.sleep(left)


class RealRuntime:
    """One node's view of a real run (see :mod:`simbench.core.runtime` for the contract)."""

    def __init__(self, node_id: int, role: str, neighbors: tuple[int, ...], nodes: tuple[int, ...], *,
                 rng: np.random.Generator, profile: NodeProfile, straggler_rng: np.random.Generator,
                 stragglers: Stragglers, transport: Transport, clock: Clock, recorder: Any,
                 faults: LinkFaults = NO_FAULTS, net_rng: np.random.Generator | None = None,
                 population: Any = None, sleep_rng: np.random.Generator | None = None) -> None:
        self.node_id = node_id
        self.role = role
        self.neighbors = tuple(neighbors)
        self.nodes = tuple(nodes)
        self.rng = rng
        self.profile = profile
        self.stragglers = stragglers
        self.transport = transport
        self.clock = clock
        self.recorder = recorder
        self._straggler_rng = straggler_rng
        self._rest = EpochRest(profile.sleep_factor, sleep_rng)
        self._mailbox: deque[Message] = deque()
        self._waiters: list[list] = []  # [future, predicate]
        self._tasks: set[asyncio.Task] = set()
        self._main: asyncio.Task | None = None
        self.bytes_sent = 0
        self.msgs_sent = 0
        self.compute_s = 0.0
        self.crashed = False
        self.population = population
        """The run's :class:`~simbench.core.population.Population` (``online``), or None."""
        self.offline = False
        self._back = asyncio.Event()  # set while online: the node's run may (re)start
        self._back.set()
        self._session: asyncio.Task | None = None
        self.last_activity = time.monotonic()
        """When this node last sent, received or finished a computation (the driver's
        no-progress detector reads it)."""
        self.device = None
        """Received tensors are moved here on delivery (the node's accelerator; None: CPU)."""
        self.links = FaultLayer(node_id, faults, net_rng if net_rng is not None else np.random.default_rng(),
                                deliver=transport.send, clock=self.now, log=self._log_at)
        transport.on_reject = self._rejected

    # -- clock ---------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    # -- messages -------------------------------------------------------------------
    async def send(self, dst: int, msg: Message) -> None:
        if self.crashed:
            return
        if dst not in self.neighbors:
            raise ValueError(f"node {self.node_id} has no link to node {dst} in the topology")
        self.last_activity = time.monotonic()
        payload = msg.encode(self.node_id)
        self.transport.check_size(dst, payload)  # loud, before it is counted or queued
        self.bytes_sent += len(payload)
        self.msgs_sent += 1
        self.links.send(dst, payload)

    async def recv(self, timeout: float | None = None, match: Match = None) -> Message | None:
        pred = matcher(match)
        found = take_first(self._mailbox, pred)
        if found is not None or (timeout is not None and timeout <= 0):
            return found
        loop = asyncio.get_running_loop()
        waiter = [loop.create_future(), pred]
        self._waiters.append(waiter)
        handle = loop.call_later(timeout, self._expire, waiter) if timeout is not None else None
        try:
            return await waiter[0]
        except asyncio.CancelledError:
            fut = waiter[0]
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                self._mailbox.appendleft(fut.result())  # delivered as we were cancelled: keep it
            raise
        finally:
            if handle is not None:
                handle.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    @property
    def waiting(self) -> bool:
        """Whether the node's code is blocked in ``recv`` right now."""
        return bool(self._waiters)

    def _expire(self, waiter: list) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            if not waiter[0].done():
                waiter[0].set_result(None)

    def deliver(self, msg: Message) -> None:
        """Called by the transport's reader for every authenticated, well-formed message."""
        self.last_activity = time.monotonic()
        if self.crashed:
            return
        if self.offline:
            self.log("drop_offline", msg.src)
            return
        msg = msg.to(self.device)
        for waiter in self._waiters:
            if not waiter[0].done() and (waiter[1] is None or waiter[1](msg)):
                self._waiters.remove(waiter)
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
            await asyncio.sleep(rest)
            self._rest.resumed(self.now())
        t0 = time.perf_counter()
        result = await asyncio.to_thread(fn, *args)
        elapsed = time.perf_counter() - t0
        self.last_activity = time.monotonic()
        extra = self._slowdown(cost, elapsed)
        if extra > 0:
            await asyncio.sleep(extra)
        self.compute_s += elapsed + max(0.0, extra)
        return result

    @staticmethod
    def _slowdown_applies(cost: Cost) -> bool:
        """Only calls the simulator charges time for (a non-zero ``cost``) are slowed."""
        if cost is None:
            return False
        if isinstance(cost, Work):
            return cost.flops > 0 or cost.steps > 0
        return float(cost) > 0

    def _slowdown(self, cost: Cost, elapsed: float) -> float:
        """Extra seconds a weak or straggling node waits after ``elapsed`` seconds of work.

        Charged only where the simulator charges compute time (a non-zero ``cost``),
        and the straggler factor is drawn from the same per-node stream as there.
        """
        if not self._slowdown_applies(cost):
            return 0.0
        factor = 1.0 / self.profile.speed
        if self.profile.straggler:
            draw = max(1.0, self.stragglers.slowdown.sample(self._straggler_rng))
            self.log("straggler_slowdown", draw)
            factor *= draw
        return (factor - 1.0) * elapsed

    # -- concurrency ---------------------------------------------------------------------
    def spawn(self, coro: Awaitable[Any], name: str = "task") -> asyncio.Task:
        if self.crashed:
            coro.close()
            raise RuntimeError(f"node {self.node_id} is crashed and cannot spawn")
        task = asyncio.get_running_loop().create_task(coro, name=f"node{self.node_id}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def gather(self, *tasks: asyncio.Task) -> list[Any]:
        return list(await asyncio.gather(*tasks))

    def online(self, nodes) -> list[int]:
        """The nodes of ``nodes`` the population's trace has online now (see :meth:`Runtime.online`)."""
        if self.population is None:
            return list(nodes)
        now = self.now()
        return [j for j in nodes if self.population.online(j, now)]

    # -- records ------------------------------------------------------------------
    def log(self, metric: str, value: float, *, epoch: int | None = None) -> None:
        self.recorder.event(self.now(), self.node_id, metric, value, epoch)

    def _rejected(self, reason: str) -> None:
        """Log a dropped frame as ``wire_rejected_<reason>`` = running count; a flood of bad
        frames is logged at 1..REJECT_ROWS, then at powers of two (totals go to status.json)."""
        count = self.transport.rejected[reason]
        if count <= REJECT_ROWS or count & (count - 1) == 0:
            self.log(f"wire_rejected_{reason}", count)

    def _log_at(self, node: int, metric: str, value: float) -> None:
        self.recorder.event(self.now(), node, metric, value)

    # -- life-cycle ------------------------------------------------------------------
    def start(self, main: Awaitable[Any]) -> asyncio.Task:
        """Start receiving and run ``main`` (the node's ``run``); its helpers die with it."""
        self.transport.start(self.deliver)
        self._main = asyncio.get_running_loop().create_task(self._run_main(main), name=f"node{self.node_id}")
        return self._main

    def start_node(self, run: Callable[[], Awaitable[Any]]) -> asyncio.Task:
        """Like :meth:`start`, for a node with offline spells: ``run()`` makes its main coroutine,
        again each time the node comes back online; the task ends when one run returns."""
        self.transport.start(self.deliver)
        self._main = asyncio.get_running_loop().create_task(self._life(run), name=f"node{self.node_id}")
        return self._main

    async def _life(self, run: Callable[[], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            await self._back.wait()
            self._session = loop.create_task(self._run_main(run()), name=f"node{self.node_id}.run")
            try:
                return await self._session
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not self.offline or (me is not None and me.cancelling()):
                    raise  # cancelled from outside (a signal, the time limit, a crash)

    def _stop_tasks(self) -> None:
        """Cancel this node's spawned tasks and pending receives; drop its queued arrivals."""
        for task in list(self._tasks):
            task.cancel()
        for waiter in self._waiters:
            waiter[0].cancel()
        self._waiters.clear()
        self._mailbox.clear()

    def go_offline(self) -> None:
        """The population takes this node offline: its code stops where it stands (a
        computation's result is lost), queued messages both ways are dropped."""
        if self.offline or self.crashed or self._main is None or self._main.done():
            return
        self.offline = True
        self._back.clear()
        self.log("offline", 1.0)
        if self._session is not None:
            self._session.cancel()
        self._stop_tasks()
        self.links.drop_queued("sender_offline")

    def come_online(self) -> None:
        """Back online: ``run`` starts again (with the node's state as it was)."""
        if not self.offline or self.crashed:
            return
        self.offline = False
        self.last_activity = time.monotonic()
        self.log("online", 1.0)
        self._back.set()

    async def _run_main(self, main: Awaitable[Any]) -> Any:
        try:
            return await main
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def finish(self, linger: float = 5.0) -> None:
        """Hand delayed messages to the sockets, log totals, close the sockets (with linger)."""
        if not self.crashed:
            await self.links.drain(linger)
            self.log_totals()
        self.links.cancel()
        await self.transport.close(linger)

    def log_totals(self) -> None:
        self.log("bytes_sent_total", self.bytes_sent)
        self.log("msgs_sent_total", self.msgs_sent)
        self.log("compute_s_total", self.compute_s)

    def crash(self) -> None:
        """Stop this node at once (in-process crash): tasks die, sockets close, queues drop."""
        if self.crashed:
            return
        self.log("crash", 1.0)
        self.log_totals()
        self.crashed = True
        if self._main is not None:
            self._main.cancel()
        self._stop_tasks()
        self.links.cancel()
        self.transport.abort()
