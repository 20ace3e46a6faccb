"""The Runtime interface: everything node code may do, for simulated and real runs alike.

Algorithm code is written once as ``async def run(self, rt)`` and awaits only the
methods below. :class:`simbench.sim.runtime.SimRuntime` implements them on the
discrete-event kernel (virtual clock, modelled network and compute);
:class:`simbench.real.runtime.RealRuntime` on asyncio and ZeroMQ (wall clock, real
sockets). Node code never asks which one it has.

Contract (checked by ``tests/test_runtime_conformance.py`` against both):

* ``send`` encodes the message at once (so the caller may overwrite the tensors it sent
  as soon as ``send`` returns), hands it to the network and does not wait for delivery.
  Messages on one link arrive in the order they were sent, or not at all (loss, crash).
* ``recv(timeout=, match=)`` returns the oldest queued message accepted by ``match``
  (a kind string, or a predicate), waiting for one if none is queued; it returns
  ``None`` when ``timeout`` seconds pass first. Messages that do not match stay queued.
* ``compute(fn, *args, cost=)`` runs ``fn(*args)`` for real and returns its result. In
  simulation the node's clock advances by the modelled cost of ``cost`` (seconds, or a
  :class:`Work` of FLOPs/steps), never by wall time; ``cost=None`` costs nothing
  (bookkeeping, evaluation). In real runs wall time passes, plus any straggler delay.
* ``epoch_end(epoch)`` tells the runtime a node finished a training epoch (``Node.end_epoch``
  calls it). With ``scenario.sleep_factor`` > 0 the node then rests before its next compute
  (:class:`EpochRest`); otherwise it does nothing.
* A crashed node's processes stop; peers learn of it only through timeouts. So do a node's
  when its population's availability takes it offline, but ``online`` tells who is online.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, MutableSequence, Protocol, Union, runtime_checkable

import numpy as np

from .message import Message

Match = Union[str, Callable[[Message], bool], None]


@dataclass(frozen=True)
class Work:
    """The amount of compute a call does, for the cost model.

    ``flops`` is converted to time by the node's device speed; ``steps`` (training steps)
    by a fixed step time when the config sets one. Either may be zero.
    """

    flops: float = 0.0
    steps: int = 0


Cost = Union[float, Work, None]


def matcher(match: Match) -> Callable[[Message], bool] | None:
    """Normalise a ``match`` argument: a kind string becomes a kind predicate."""
    if match is None or callable(match):
        return match
    if isinstance(match, str):
        return lambda m, kind=match: m.kind == kind
    if isinstance(match, (tuple, list, set, frozenset)):
        kinds = frozenset(match)
        return lambda m: m.kind in kinds
    raise TypeError(f"match must be a kind, a collection of kinds or a predicate, not {match!r}")


def node_device(node: Any) -> Any:
    """Where a node's received tensors belong: its learner's accelerator, or None for the CPU.

    Messages travel as bytes and decode onto the CPU; a runtime moves them to this device on
    delivery, so algorithm code mixes received tensors with its own wherever the model lives.
    """
    device = getattr(getattr(node, "learner", None), "device", None)
    return device if device is not None and getattr(device, "type", "cpu") != "cpu" else None


def take_first(box: MutableSequence[Message], pred: Callable[[Message], bool] | None) -> Message | None:
    """Remove and return the first message of ``box`` that ``pred`` accepts (any when None)."""
    for i, m in enumerate(box):
        if pred is None or pred(m):
            del box[i]
            return m
    return None


class EpochRest:
    """Seed 003's ``--sleep_factor``: after each epoch a node sleeps ``T (0.5 + 0.5 f u)``, where
    ``T`` is the time its epoch of training took (computing and waiting on the network, from
    the end of its previous rest), ``f`` the factor and ``u`` a uniform draw from the node's own
    stream; nothing when ``f`` = 0.

    Reference: ``trainer/abstracts.py`` ``Trainer.train`` of nttcslab/ecl-isvr (the same in
    ``util/dist_trainer.py`` of etri-clara/etrl-P2PLearning): ``sleep_proc = train_proc * (0.5 +
    0.5 * sleep_factor * random_state.rand())`` once per epoch, with ``random_state`` seeded by
    the node's own seed (``main.py`` draws a different one per node), so nodes rest differently.
    The rest is simulated time in the simulator and wall time in real runs; it is taken at the
    node's next compute call (the start of its next epoch), after the epoch's evaluation.
    """

    def __init__(self, factor: float, rng: np.random.Generator | None) -> None:
        self.factor = float(factor)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.start: float | None = None
        self.due = 0.0

    def epoch_end(self, now: float, epoch: int) -> float:
        """Record the end of ``epoch`` at ``now``; the rest it earns (0 for epoch 0, the start)."""
        if self.factor <= 0:
            return 0.0
        if epoch == 0 or self.start is None:
            self.start = now
            return 0.0
        rest = (now - self.start) * (0.5 + 0.5 * self.factor * float(self.rng.random()))
        self.due += rest
        self.start = now
        return rest

    def take(self) -> float:
        """The rest due now (and clear it); the caller sleeps it, then calls :meth:`resumed`."""
        due, self.due = self.due, 0.0
        return due

    def resumed(self, now: float) -> None:
        self.start = now


@runtime_checkable
class Task(Protocol):
    """A handle on a coroutine started with :meth:`Runtime.spawn`."""

    def cancel(self) -> None: ...

    def done(self) -> bool: ...


class Runtime(Protocol):
    """What a node sees of the world it runs in."""

    node_id: int
    """This node's id (an int, 0..N-1)."""
    neighbors: tuple[int, ...]
    """Ids of the nodes this node has a link to in the topology, sorted."""
    nodes: tuple[int, ...]
    """Ids of every node in the run (servers need to know their clients)."""
    role: str
    """This node's role from the topology/algorithm ("worker", "server", ...)."""
    rng: np.random.Generator
    """This node's own random stream for algorithm decisions (not shared with data/faults)."""
    bytes_sent: int
    """Encoded bytes this node has handed to the network so far (same count in both runtimes)."""

    def now(self) -> float:
        """Seconds since the run started: simulated in SimRuntime, wall-clock in RealRuntime."""
        ...

    async def send(self, dst: int, msg: Message) -> None:
        """Queue ``msg`` for ``dst``; returns once handed to the network."""
        ...

    async def recv(self, timeout: float | None = None, match: Match = None) -> Message | None:
        """The oldest matching message, or ``None`` after ``timeout`` seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass on this runtime's clock."""
        ...

    async def compute(self, fn: Callable[..., Any], *args: Any, cost: Cost = None) -> Any:
        """Run ``fn(*args)``; charge its modelled cost to this node's clock."""
        ...

    def spawn(self, coro: Awaitable[Any], name: str = "") -> Task:
        """Run ``coro`` concurrently on this node (it dies with the node on a crash)."""
        ...

    async def gather(self, *tasks: Task) -> list[Any]:
        """Wait for every task; their results in order."""
        ...

    def log(self, metric: str, value: float, *, epoch: int | None = None) -> None:
        """Record ``metric`` = ``value`` for this node at ``now()``."""
        ...

    def epoch_end(self, epoch: int) -> None:
        """This node finished training epoch ``epoch`` (0: it starts); see :class:`EpochRest`."""
        ...

    def online(self, nodes: Iterable[int]) -> list[int]:
        """The nodes of ``nodes`` (in their order) that the run's population has online now; all
        of them without a population. An idealisation: a real federated server learns who is
        available from its clients' check-ins or heartbeats, late and sometimes wrong; both
        runtimes answer from the availability trace itself (every process of a real run reads
        the same trace, so answers differ only by the processes' clock skew)."""
        ...
