"""Where matrix cells run: local worker processes (default), this process, or a Dask cluster.

An executor has one job: ``imap_unordered(fn, items)`` yields ``(item, outcome)`` as cells
finish, where ``outcome`` is ``fn(item)`` or the exception that kept it from returning
(a worker that died, a lost cluster node). ``fn`` is :func:`simbench.experiment.matrix.run_cell`,
which already turns a crashing cell into a ``failed`` summary, so such exceptions are rare.
Closing the generator (Ctrl-C in the caller) stops the work that is still running: a local
worker in the middle of a cell gets SIGTERM, which stops its run as Ctrl-C stops ``simbench
run`` (the run's rows are written and its manifest says ``interrupted``), and the pool waits
a few seconds for that before it kills what is left.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from ..core.schema import ConfigError

EXECUTORS = ("local", "serial", "dask")


STOP_GRACE_S = 10.0
"""How long a stopped pool waits for its workers to record their runs as interrupted."""

_in_cell = False
"""In a local worker: whether a cell is running (SIGTERM then interrupts it)."""


class WorkerLost(RuntimeError):
    """The process running a cell died (killed, out of memory) before returning."""


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what stops, so
    # workers do not print a traceback each. Die with the parent (even on kill -9), so an
    # orphan can never write into a cell directory that a rerun is redoing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _on_sigterm(signum, frame) -> None:
    """A worker told to stop: a running cell stops as on Ctrl-C (its run writes what it
    recorded, status ``interrupted``); an idle worker has nothing to write and exits."""
    if _in_cell:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _call_in_worker(fn: Callable, item: Any) -> Any:
    global _in_cell
    _in_cell = True
    try:
        return fn(item)
    except KeyboardInterrupt:  # SIGTERM mid-cell: the run has written what it recorded
        os._exit(130)  # the pool is being stopped: no result is awaited, and exiting ends its wait
    finally:
        _in_cell = False


class SerialExecutor:
    """Runs cells one after another in this process (debugging, tiny matrices)."""

    def describe(self) -> str:
        return "this process"

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[Any, Any]]:
        for item in items:
            yield item, fn(item)


class LocalExecutor:
    """A pool of ``workers`` spawned processes (default: one per core), one cell each."""

    prefetch_data = True
    """Workers share this machine's disk: fetch data sets once before they start."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)

    def describe(self) -> str:
        return f"{self.workers} local worker process{'es' if self.workers > 1 else ''}"

    def _pool(self) -> ProcessPoolExecutor:
        import multiprocessing as mp
        # spawn, not fork: torch and its thread pools are not fork-safe
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[Any, Any]]:
        pending = deque(items)
        if not pending:
            return
        pool, running = self._pool(), {}
        try:
            while pending or running:
                # Submit no more than there are workers: the futures in flight are then
                # exactly the cells being run, which is what a dead worker takes down.
                while pending and len(running) < self.workers:
                    item = pending.popleft()
                    running[pool.submit(_call_in_worker, fn, item)] = item
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    item = running.pop(fut)
                    try:
                        yield item, fut.result()
                    except BrokenProcessPool:
                        broken = True
                        yield item, WorkerLost("a worker process died while running this cell or one beside it")
                    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                        yield item, exc
                if broken:
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._pool()
        finally:
            if pending or running:
                _kill(pool)
            else:
                pool.shutdown(wait=True)


def _kill(pool: ProcessPoolExecutor, grace: float = STOP_GRACE_S) -> None:
    """Stop a pool now: its workers may be minutes into a cell. SIGTERM first, so each run
    records itself as interrupted; after ``grace`` seconds, SIGKILL for what is left."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class DaskExecutor:
    """Cells as tasks on a Dask distributed cluster (``address``), or on a LocalCluster of
    ``workers`` processes when no address is given. Workers need simbench installed and,
    for the run directories to land next to the table, a filesystem shared with this
    machine; the summaries (and so cells.csv) come back to this process either way."""

    def __init__(self, address: str | None = None, workers: int | None = None, *, timeout: float = 10.0) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--executor dask: needs dask[distributed]; pip install 'simbench[cluster]'") from None
        self.cluster = None
        try:
            if address is None:
                self.cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                            processes=True, dashboard_address=None)
                address = self.cluster.scheduler_address
            self.client = Client(address, timeout=timeout)
        except OSError as exc:
            raise ConfigError(f"--address {address}: cannot reach a Dask scheduler ({exc})") from None
        self.address = address

    def describe(self) -> str:
        n = len(self.client.scheduler_info().get("workers", {}))
        return f"Dask cluster {self.address} ({n} worker{'s' if n != 1 else ''})"

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed

        futures = {}
        for item in items:
            fut = self.client.submit(fn, item, pure=False)
            futures[fut.key] = (fut, item)
        if not futures:
            return
        left = set(futures)
        try:
            for fut in as_completed([f for f, _ in futures.values()]):
                left.discard(fut.key)
                item = futures[fut.key][1]
                try:
                    yield item, fut.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection
                    yield item, exc
        finally:
            if left:
                self.client.cancel([futures[k][0] for k in left])

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(kind: str = "local", address: str | None = None, workers: int | None = None):
    """The executor named on the command line (``--executor``, ``--address``, ``--workers``)."""
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor: {kind!r} is not allowed; allowed: {', '.join(EXECUTORS)}")
    if address is not None and kind != "dask":
        raise ConfigError(f"--address: only used with --executor dask, not {kind}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: {workers} must be >= 1")
    if kind == "serial":
        return SerialExecutor()
    if kind == "dask":
        return DaskExecutor(address, workers)
    return LocalExecutor(workers)
