"""Run one node of a real run in this process: build it, meet the others, run, write rows.

Steps: find this node's place (hosts file or torchrun/SLURM environment), load the
config with ``nodes`` set to the number of processes, build this node alone with
:func:`simbench.experiment.build.build_nodes`, bind its socket, meet the others at the
rendezvous (addresses, ready barrier, common start instant), run the algorithm's
``run(rt)`` on a :class:`RealRuntime`, then write ``<run_dir>/nodes/<id>/`` (events.csv,
epochs.csv, status.json and per-epoch parameter snapshots for the average-model rows).

A node stops when its algorithm returns, when the config's ``time_limit`` passes
(status ``time_limit``), when it has neither sent, received nor computed anything for
``--no-progress-timeout`` seconds (``deadlock``: it waits for a peer that will never
answer), on SIGINT/SIGTERM (``interrupted``), on an error (``failed``, traceback on
stderr) or at a scheduled crash: then it writes its rows and leaves with
``os._exit(EXIT_CRASHED)`` at once, as a machine that dies would, leaving its peers to
notice through timeouts. A node with offline spells in the config's ``population`` sleeps
through them (its code stops, what arrives is dropped) and runs again when back online; a
federated client that is offline when its server stops misses the ``stop`` and ends through
``--no-progress-timeout``. Started by ``simbench launch``, a node dies with the launcher.

Its rows go to ``<out>/<name>/<run_id>-real-<nonce>/nodes/<id>/``: the nonce is drawn per
launch (by the launcher, or by node 0 at the rendezvous), so no launch overwrites another
and messages of another launch fail authentication.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from ...core.files import write_atomic
from ...core.runtime import node_device
from ...real.transport import DEFAULT_MAX_SIZE, INSECURE_KEY, Address, ClusterKeyError, is_loopback, load_cluster_key, run_key

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CRASHED = 75
"""A scheduled crash (scenario.crashes): expected, not a failure."""
PROGRESS_EVERY_S = float(os.environ.get("SIMBENCH_PROGRESS_EVERY", "5"))
"""How often (wall seconds) a node reports its progress (``progress.json``, a line on stdout)."""
EXIT_DEADLOCK = 76
"""The node made no progress for ``--no-progress-timeout`` seconds."""
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class NodeOptions:
    """What ``simbench node`` is told on its command line."""

    config: str
    overrides: list[str] = field(default_factory=list)
    node_id: int | None = None
    hosts: str | None = None
    key_file: str | None = None
    insecure: bool = False
    max_size: int = DEFAULT_MAX_SIZE
    out: str | None = None
    native_network: bool = False
    """Do not inject the config's network latency/jitter/loss (the real network has its own)."""
    threads: int | None = None
    bind: str | None = None
    """Host to bind instead of the published one (e.g. 0.0.0.0 behind NAT)."""
    snapshots: bool = True
    rendezvous_timeout: float = 120.0
    no_progress_timeout: float | None = 300.0
    """Wall seconds without a message or a computation after which the node ends as ``deadlock``."""


class UsageError(ValueError):
    """Bad flags, hosts file or environment: reported as one line, exit code 2."""


def node_dir(run_dir: Path, node_id: int) -> Path:
    return Path(run_dir) / "nodes" / str(node_id)


def run_node(opts: NodeOptions) -> int:
    """Run one node to the end; returns the process exit code."""
    from ...core.schema import ConfigError, one_line
    from ...real.rendezvous import RendezvousError

    die_with_launcher()
    try:
        plan = _plan(opts)
    except (UsageError, ConfigError, RendezvousError, ClusterKeyError, OSError) as exc:
        print(f"simbench node: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return _run(opts, plan)


@dataclass
class _Plan:
    """Who this node is and how it meets the others, resolved before any socket exists."""

    cfg: Any
    node_id: int
    n: int
    key: bytes
    """The cluster key, then (once the nonce is known) the run key."""
    insecure: bool
    me: Address
    """The address peers reach this node at (port 0: chosen at bind)."""
    bind: Address
    peer_address: Callable[[int], Address]
    rendezvous: Any
    nonce: str
    run_dir: Path


def _plan(opts: NodeOptions) -> _Plan:
    """Resolve who this node is, the config, the key and the meeting point (no sockets yet)."""
    from ...real.rendezvous import Rendezvous, from_env, load_hosts, reachable_ip

    if opts.hosts:
        hosts = load_hosts(opts.hosts)
        n = len(hosts.nodes)
        if opts.node_id is None or not 0 <= opts.node_id < n:
            raise UsageError(f"--node-id: required with --hosts, one of 0..{n - 1}, got {opts.node_id}")
        node_id, serve, store, attempt = opts.node_id, opts.node_id == 0, hosts.store, 0
        me = hosts.nodes[node_id]
        all_hosts = [a.host for a in hosts.nodes.values()] + [store.host]
    else:
        env = from_env(os.environ)
        n, node_id, store, attempt = env.world_size, env.rank, env.master, env.attempt
        if opts.node_id is not None and opts.node_id != node_id:
            raise UsageError(f"--node-id: {opts.node_id} differs from RANK={node_id}; leave --node-id out under torchrun")
        serve = env.rank == 0 and not env.agent_store
        me = Address(os.environ.get("SIMBENCH_HOST") or reachable_ip(env.master), 0)
        all_hosts = [store.host, me.host]
        hosts = None
    key = load_cluster_key(opts.key_file)
    if key is None:
        if not opts.insecure:
            raise UsageError("no cluster key: give --key-file FILE or set SIMBENCH_CLUSTER_KEY "
                             "(or --insecure, allowed only when every host is loopback)")
        _check_loopback(all_hosts)
        key = INSECURE_KEY
    from ..config import load_config  # torch and the data sets: only once the flags are good
    cfg = load_config(opts.config, [*opts.overrides, f"nodes={n}"])
    bind = Address(opts.bind or me.host, me.port)
    rdv = Rendezvous(store, node_id, n, serve=serve, run_id=cfg.run_id(), attempt=attempt,
                     timeout=opts.rendezvous_timeout)
    peer_address = hosts.nodes.__getitem__ if hosts is not None else rdv.address
    return _Plan(cfg, node_id, n, key, key == INSECURE_KEY, me, bind, peer_address, rdv, "", Path())


def _meet(opts: NodeOptions, plan: _Plan) -> None:
    """Learn this launch's nonce (from the launcher, else from node 0 at the rendezvous): it
    names the run directory and keys the messages."""
    plan.nonce = os.environ.get("SIMBENCH_RUN_NONCE") or plan.rendezvous.nonce()
    plan.run_dir = real_run_dir(opts.out or plan.cfg.output.dir, plan.cfg, plan.nonce)
    plan.key = run_key(plan.key, plan.cfg.run_id(), plan.nonce)


def real_run_dir(out_root: str | Path, cfg: Any, nonce: str) -> Path:
    """The run directory of one launch of ``cfg``: ``<name>/<run_id>-real-<nonce>``."""
    return Path(out_root) / cfg.name / f"{cfg.run_id()}-real-{nonce[:8]}"


def die_with_launcher() -> None:
    """When a launcher started this process (``$SIMBENCH_LAUNCHER_PID``), have the kernel send
    SIGTERM when it dies (Linux), so no node runs on unsupervised after a kill -9 of it."""
    pid = os.environ.get("SIMBENCH_LAUNCHER_PID")
    if not pid or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(pid):  # the launcher died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _check_loopback(hosts: list[str]) -> None:
    for host in hosts:
        if not is_loopback(host):
            raise UsageError(f"--insecure: allowed only when every host is loopback, but {host} is not; "
                             "give --key-file FILE or set SIMBENCH_CLUSTER_KEY")


class _Stop(BaseException):
    """SIGINT/SIGTERM before the event loop's own handlers are in place."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _stop(signum, frame) -> None:
    raise _Stop(EXIT_SIGNAL[signum])


def _run(opts: NodeOptions, plan: _Plan) -> int:
    # A signal while the node still loads data, builds its model or meets its peers must
    # end it as cleanly as one during the run: status ``interrupted``, exit 130/143.
    from ...core.schema import one_line
    from ...real.rendezvous import RendezvousError

    for sig in EXIT_SIGNAL:
        signal.signal(sig, _stop)
    proc = None
    try:
        _meet(opts, plan)
        proc = NodeProcess(opts, plan)
        proc.connect()
        return proc.run()
    except (_Stop, RendezvousError, OSError) as exc:  # before the runtime existed (run() handles it from then on)
        if getattr(proc, "transport", None) is not None:
            proc.transport.abort()  # no lingering: the process ends now, not when ZeroMQ gives up
        if not plan.nonce:  # it never learnt which launch it belongs to
            plan.run_dir = real_run_dir(opts.out or plan.cfg.output.dir, plan.cfg, "unstarted")
        if isinstance(exc, _Stop):
            _write_status(opts, plan, {"node": plan.node_id, "status": "interrupted",
                                       "error": "signal before the start", "pid": os.getpid()})
            print("simbench node: interrupted before the run started", file=sys.stderr)
            return exc.code
        message = one_line(exc if not isinstance(exc, OSError) or exc.strerror is None else
                           f"{exc.strerror}: {exc.filename or ''}".rstrip(": "))
        _write_status(opts, plan, {"node": plan.node_id, "status": "failed", "error": message, "pid": os.getpid()})
        print(f"simbench node: {message}", file=sys.stderr)
        return EXIT_USAGE


def _write_status(opts: NodeOptions, plan: _Plan, info: dict) -> None:
    out = node_dir(plan.run_dir, plan.node_id)
    write_atomic(out / "status.json", json.dumps(info, indent=2) + "\n")


class NodeProcess:
    """One node's life in this process: build, connect and meet, run, write its rows."""

    def __init__(self, opts: NodeOptions, plan: _Plan) -> None:
        import torch

        from ..build import EpochRelay, build_nodes
        from ..run import evaluation_record

        self.opts, self.plan, self.cfg, self.i = opts, plan, plan.cfg, plan.node_id
        if opts.threads:
            torch.set_num_threads(opts.threads)
        run_dir = plan.run_dir
        self.out = node_dir(run_dir, self.i)
        self.out.mkdir(parents=True, exist_ok=True)
        # The workload's real-mode hook: a classifier node snapshots its parameters each epoch
        # (merge builds the avg rows from them), a GAN node scores its own generator.
        hook = EpochRelay()
        built = build_nodes(self.cfg, hook, only=self.i, run_dir=run_dir)
        hook.target = built.workload.real_hook(self.out, lambda *a, **kw: self.rt.log(*a, **kw), opts.snapshots)
        self.graph, self.roles, self.profiles, self.streams = built.graph, built.roles, built.profiles, built.streams
        self.population, self.fresh_node = built.population, built.fresh_node
        self.node = built.nodes[self.i]
        self.neighbors = tuple(sorted(self.graph.neighbors(self.i)))
        self.evaluation = evaluation_record(self.cfg, built.workload.data)
        self.state = {"status": "finished", "error": None, "exit": EXIT_OK}
        self._runs = 0

    def connect(self) -> None:
        """Bind, publish, learn the neighbours' addresses, connect, wait for the common start."""
        from ...real.transport import Transport

        plan = self.plan
        self.transport = Transport(self.i, plan.key, max_size=self.opts.max_size, accept_from=set(self.neighbors))
        bound = self.transport.bind(plan.bind)
        self.published = Address(plan.me.host, bound.port)
        plan.rendezvous.publish(self.published)
        peers = {j: plan.peer_address(j) for j in self.neighbors}
        if plan.insecure:
            _check_loopback([a.host for a in peers.values()])
        self.transport.connect(peers)
        self.start = plan.rendezvous.start_instant()

    def run(self) -> int:
        """Run the node's algorithm to its end; write its rows; the exit code."""
        from ...core.seeding import WorldStreams
        from ...metrics.recorder import Recorder
        from ...real.faults import NO_FAULTS, link_faults
        from ...real.runtime import Clock, RealRuntime
        from ...real.world import node_crashes

        cfg, i, n = self.cfg, self.i, self.plan.n
        streams = WorldStreams(self.streams.world, n).node_streams(i)  # the streams SimWorld gives node i
        self.crashes = node_crashes(cfg.scenario, n, cfg.time_limit or 24 * 3600.0, streams, i)
        faults = NO_FAULTS if self.opts.native_network else link_faults(self.graph, i, cfg.network, cfg.scenario)
        self.clock = Clock(self.start)
        time.sleep(max(0.0, -self.clock()))  # the recorder's wall_s then counts from the start too
        self.recorder = Recorder(cfg.run_id(), wall_clock=cfg.output.wall_clock)
        self.rt = RealRuntime(i, self.roles[i], self.neighbors, tuple(range(n)), rng=streams.rng,
                              profile=self.profiles[i], straggler_rng=streams.straggler,
                              stragglers=cfg.scenario.stragglers, transport=self.transport, clock=self.clock,
                              recorder=self.recorder, faults=faults, net_rng=streams.network,
                              sleep_rng=streams.sleep,
                              population=self.population)
        self.rt.device = node_device(self.node)
        try:
            asyncio.run(self._main())
        except _Stop as stop:  # before _main installed the loop's handlers
            self.state.update(status="interrupted", error="signal", exit=stop.code)
        finally:
            self.write(self.state["status"])
        return self.state["exit"]

    async def _main(self) -> None:
        from ...real.world import schedule_availability, schedule_faults

        rt, state = self.rt, self.state
        await self.clock.wait_start()
        schedule_availability(rt, self.population, log_size=self.i == 0)
        if self.population is not None and self.i in self.population.timelines:
            task = rt.start_node(self._next_run)
        else:
            task = rt.start(self.node.run(rt))
        for sig, code in EXIT_SIGNAL.items():
            asyncio.get_running_loop().add_signal_handler(sig, _interrupt, task, state, code)
        schedule_faults(rt, self.cfg.scenario, self.crashes, self.crash)
        watchdog = asyncio.get_running_loop().create_task(self._watch(task))
        reporter = asyncio.get_running_loop().create_task(self._report(task))
        limit = None if self.cfg.time_limit is None else max(0.0, self.cfg.time_limit - rt.now())
        try:
            await asyncio.wait_for(asyncio.shield(task), limit)
        except asyncio.TimeoutError:
            state["status"] = "time_limit"
            task.cancel()
        except asyncio.CancelledError:
            pass  # a signal (_interrupt) or the no-progress watchdog has set the status
        except Exception as exc:  # noqa: BLE001 - the node's own error: report it, still write rows
            traceback.print_exc()
            state.update(status="failed", error=f"{type(exc).__name__}: {exc}", exit=EXIT_ERROR)
        watchdog.cancel()
        reporter.cancel()
        await asyncio.gather(task, watchdog, reporter, return_exceptions=True)
        await rt.finish()

    def progress(self) -> dict:
        """Where this node is: wall time, last epoch reported, messages and compute."""
        epochs = [e for (node, e) in self.recorder.epochs if node == self.i]
        return {"node": self.i, "pid": os.getpid(), "time_s": round(self.rt.now(), 3), "epoch": max(epochs, default=-1),
                "epochs": self.cfg.train.epochs, "msgs_sent": self.rt.msgs_sent,
                "compute_s": round(self.rt.compute_s, 3)}

    async def _report(self, task: asyncio.Task, every: float = PROGRESS_EVERY_S) -> None:
        """Every few seconds: ``progress.json`` (the launcher shows it) and a line on stdout."""
        while not task.done():
            await asyncio.sleep(every)
            info = self.progress()
            write_atomic(self.out / "progress.json", json.dumps(info) + "\n")
            print(f"node {self.i}: t={info['time_s']:.1f}s epoch {max(info['epoch'], 0)}/{info['epochs']}, "
                  f"{info['msgs_sent']} msgs sent", flush=True)

    def _next_run(self):
        """The node's ``run`` for its next online spell (rebuilt first with ``rejoin: fresh``)."""
        if self._runs and self.population.rejoin == "fresh":
            self.node = self.fresh_node(self.i)
        self._runs += 1
        return self.node.run(self.rt)

    async def _watch(self, task: asyncio.Task) -> None:
        """End the run as ``deadlock`` after ``no_progress_timeout`` s without a message or a
        computation (e.g. a peer crashed and the algorithm waits for it without a timeout)."""
        limit = self.opts.no_progress_timeout
        if not limit:
            return
        while not task.done():
            await asyncio.sleep(min(1.0, limit / 4))
            idle = time.monotonic() - self.rt.last_activity
            if idle >= limit and not task.done() and not self.rt.offline:  # offline: asleep, not stuck
                self.state.update(status="deadlock", exit=EXIT_DEADLOCK,
                                  error=f"no message and no computation for {idle:.0f} s")
                self.rt.log("deadlock", 1.0)
                task.cancel()
                return

    def crash(self) -> None:
        """The scheduled crash: stop, write this node's rows, leave at once."""
        self.rt.crash()
        self.write("crashed")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CRASHED)

    def write(self, status: str) -> None:
        rt = self.rt
        self.recorder.write(self.out)
        info = {"node": self.i, "role": self.roles[self.i], "status": status, "error": self.state["error"],
                "pid": os.getpid(), "start": self.start, "end_time_s": round(self.clock(), 6),
                "bytes_sent": rt.bytes_sent, "msgs_sent": rt.msgs_sent, "compute_s": round(rt.compute_s, 6),
                "wire_rejected": dict(self.transport.rejected), "address": str(self.published),
                "evaluation": self.evaluation}
        write_atomic(self.out / "status.json", json.dumps(info, indent=2) + "\n")


def _interrupt(task: asyncio.Task, state: dict, code: int) -> None:
    if state["status"] == "finished":
        state.update(status="interrupted", error="signal", exit=code)
    task.cancel()
