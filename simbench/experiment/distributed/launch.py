"""``simbench launch --local N``: N node processes on this machine, reaped, results merged.

The launcher serves the rendezvous store itself (as torchrun's agent does) and starts
``simbench node`` N times with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set,
so local runs take the same path as torchrun jobs. Without ``--key-file`` or
``$SIMBENCH_CLUSTER_KEY`` it makes a fresh random key for the run (children get it in
their environment), so messages are authenticated on loopback too.

It watches the children: a node that fails (exit code other than 0 or a scheduled crash)
is reported with its exit code and last stderr line, and the others are stopped; on
SIGINT/SIGTERM or after ``--timeout`` seconds every child gets SIGTERM (they write their
rows), then SIGKILL after a grace period. Finally :func:`merge` builds the run
directory's events.csv, epochs.csv and manifest.json from ``nodes/<id>/``.
"""

from __future__ import annotations

import datetime
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .merge import NodeOutcome, merge, overall_status, read_status
from .node_main import EXIT_CRASHED, EXIT_DEADLOCK, EXIT_OK, node_dir

GRACE_S = 10.0
SHOW_EVERY_S = 2 * float(os.environ.get("SIMBENCH_PROGRESS_EVERY", "5"))
"""How often (wall seconds) launch prints where the nodes are (unless --quiet)."""


@dataclass
class LaunchResult:
    run_dir: Path
    status: str
    outcomes: list[NodeOutcome] = field(default_factory=list)
    wall_time: float = 0.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to port 0 and read it back)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def last_line(path: Path) -> str:
    """The last meaningful line of a log (torch's c10d warnings skipped)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip() and "[c10d]" not in line:
            return line.strip()[:300]
    return ""


def node_command(config: str, overrides: list[str], out: Path, args: list[str]) -> list[str]:
    sets = [x for o in overrides for x in ("--set", o)]
    return [sys.executable, "-m", "simbench.cli", "node", str(config), *sets, "--out", str(out), *args]


def launch_local(config: str, n: int, *, overrides: list[str] = (), out: str | None = None,
                 key_file: str | None = None, insecure: bool = False, node_args: list[str] = (),
                 timeout: float | None = None, threads: int | None = None, quiet: bool = False) -> LaunchResult:
    """Run ``config`` as ``n`` local processes; returns once every child is reaped and merged."""
    from torch.distributed import TCPStore

    from ..build import check_roles
    from ..config import load_config
    from ..run import prepare_run_dir
    from ...real.transport import load_cluster_key
    from .node_main import real_run_dir

    overrides = list(overrides)
    cfg = load_config(config, [*overrides, f"nodes={n}"])
    check_roles(cfg)  # an impossible launch (a ring of 1, a star without workers) stops here, before any process
    out_root = Path(out or cfg.output.dir)
    nonce = secrets.token_hex(8)
    run_dir = real_run_dir(out_root, cfg, nonce)
    prepare_run_dir(run_dir)
    env = dict(os.environ)
    env.update(SIMBENCH_RUN_NONCE=nonce, SIMBENCH_LAUNCHER_PID=str(os.getpid()))
    args = list(node_args)
    if insecure:
        args.append("--insecure")
    elif key_file:
        args += ["--key-file", key_file]
    elif load_cluster_key(None) is None:
        env["SIMBENCH_CLUSTER_KEY"] = secrets.token_hex(32)  # this run only; children inherit it
    store = TCPStore("127.0.0.1", 0, n, True, timeout=datetime.timedelta(seconds=300), wait_for_workers=False)
    threads = threads or max(1, (os.cpu_count() or 1) // n)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port), WORLD_SIZE=str(n),
               TORCHELASTIC_USE_AGENT_STORE="True", SIMBENCH_HOST="127.0.0.1", OMP_NUM_THREADS=str(threads))
    cmds = {k: node_command(config, overrides, out_root, [*args, "--threads", str(threads)]) for k in range(n)}
    envs = {k: {**env, "RANK": str(k)} for k in range(n)}
    t0 = time.time()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        outcomes = supervise(cmds, envs, run_dir, timeout=timeout, quiet=quiet)
        wall = time.time() - t0
        del store
        status = overall_status(outcomes)
        merge(run_dir, cfg, outcomes, status=status, wall_time=wall)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if status == "interrupted":
        raise KeyboardInterrupt  # the CLI reports it (exit code 130); the rows are merged
    return LaunchResult(run_dir, status, outcomes, wall)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def supervise(cmds: dict[int, list[str]], envs: dict[int, dict], run_dir: Path, *,
              timeout: float | None = None, quiet: bool = False) -> list[NodeOutcome]:
    """Start one process per node, wait for all, stop the rest when one fails."""
    procs, logs = {}, {}
    deadline = None if timeout is None else time.monotonic() + timeout
    codes: dict[int, int] = {}
    stopping, why = False, ""
    try:
        for k, cmd in cmds.items():
            d = node_dir(run_dir, k)
            d.mkdir(parents=True, exist_ok=True)
            logs[k] = d / "stderr.log"
            with open(d / "stdout.log", "wb") as so, open(logs[k], "wb") as se:
                procs[k] = subprocess.Popen(cmd, env=envs[k], stdout=so, stderr=se, start_new_session=True)
        shown = time.monotonic()
        while len(codes) < len(procs):
            if not quiet and time.monotonic() - shown >= SHOW_EVERY_S:
                shown = time.monotonic()
                _say(quiet, progress_line(run_dir, len(procs), len(codes)))
            for k, p in procs.items():
                if k not in codes and p.poll() is not None:
                    codes[k] = p.returncode
                    if p.returncode not in (EXIT_OK, EXIT_CRASHED) and not stopping:
                        stopping, why = True, f"node {k} failed"
                        _say(quiet, f"simbench launch: node {k} failed (exit code {p.returncode}): {last_line(logs[k])}")
                        _signal_all(procs, codes, signal.SIGTERM)
            if deadline is not None and not stopping and time.monotonic() > deadline:
                stopping, why = True, "timeout"
                _say(quiet, f"simbench launch: --timeout of {timeout:.0f} s passed; stopping every node")
                _signal_all(procs, codes, signal.SIGTERM)
            if stopping:
                _reap(procs, codes)
            time.sleep(0.05)
    except KeyboardInterrupt:  # SIGINT, or SIGTERM turned into one by launch_local
        why = "interrupted"
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the reaping and the merge
            signal.signal(sig, signal.SIG_IGN)
        _say(quiet, "simbench launch: interrupted; stopping every node (they write their rows)")
        _signal_all(procs, codes, signal.SIGTERM)
        _reap(procs, codes)
    finally:
        for k, p in procs.items():
            if k not in codes:
                p.kill()
                codes[k] = p.wait()
    return [_outcome(k, codes[k], run_dir, logs[k], why) for k in sorted(procs)]


def progress_line(run_dir: Path, n: int, ended: int) -> str:
    """One line on where the nodes are (from their progress.json files)."""
    import json
    infos = []
    for k in range(n):
        try:
            infos.append(json.loads((node_dir(run_dir, k) / "progress.json").read_text()))
        except (OSError, ValueError):
            pass
    if not infos:
        return f"simbench launch: {n - ended} of {n} nodes starting"
    epochs = [int(i.get("epoch", -1)) for i in infos]
    total = max(int(i.get("epochs", 0)) for i in infos)
    return (f"simbench launch: t={max(float(i.get('time_s', 0)) for i in infos):.0f}s, {n - ended} of {n} running, "
            f"epochs {max(min(epochs), 0)}..{max(max(epochs), 0)} of {total}, "
            f"{sum(int(i.get('msgs_sent', 0)) for i in infos)} messages")


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _signal_all(procs: dict, codes: dict, sig: int) -> None:
    for k, p in procs.items():
        if k not in codes:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass


def _reap(procs: dict, codes: dict) -> None:
    """Wait up to GRACE_S for stopped children, then kill what is left."""
    end = time.monotonic() + GRACE_S
    for k, p in procs.items():
        if k not in codes:
            try:
                codes[k] = p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[k] = p.wait()


def _outcome(k: int, code: int, run_dir: Path, log: Path, why: str) -> NodeOutcome:
    status = read_status(node_dir(run_dir, k) / "status.json", k)["status"]
    status = None if status == "unknown" else status
    if code == EXIT_CRASHED:
        return NodeOutcome(k, code, "crashed", "scheduled crash")
    if code == EXIT_DEADLOCK:
        return NodeOutcome(k, code, "deadlock", last_line(log) or "no progress")
    if code == EXIT_OK:
        return NodeOutcome(k, code, status or "finished")
    if code == -signal.SIGTERM and why == "interrupted":  # our SIGTERM reached it before its handlers
        return NodeOutcome(k, code, "interrupted", "signal (before the node had started)")
    if code < 0:
        return NodeOutcome(k, code, "killed", f"killed by signal {-code}" + (f" ({why})" if why else ""))
    if status == "interrupted" or (status is None and code in (130, 143)):  # stopped by a signal: say why
        if why == "timeout":
            return NodeOutcome(k, code, "timeout", "stopped when --timeout passed")
        if why.startswith("node "):
            return NodeOutcome(k, code, "stopped", f"stopped because {why}")
        return NodeOutcome(k, code, "interrupted", "signal")
    return NodeOutcome(k, code, "failed", last_line(log))

