"""The real-mode subcommands of ``simbench``: ``launch``, ``node`` and ``merge``.

Kept here so the main CLI only adds two lines; nothing heavy is imported until a command
runs. Bad flags, hosts files, keys or environments end with one line on stderr and exit
code 2.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("launch", "node", "merge")


def _size(text: str) -> int:
    from ...core.units import parse_size
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive size like 256MiB, got {text!r}")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (the same as for simbench run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.epochs=2")
    p.add_argument("--out", help="results root (default: output.dir of the config)")
    p.add_argument("--key-file", help="file holding the shared cluster key (else $SIMBENCH_CLUSTER_KEY)")
    p.add_argument("--insecure", action="store_true", help="run without a cluster key (loopback hosts only)")
    p.add_argument("--max-message-size", type=_size, default=None, metavar="SIZE",
                   help="drop received messages larger than this (default 256MiB)")
    p.add_argument("--native-network", action="store_true",
                   help="do not inject the config's network latency/jitter/loss; the real network's own apply")
    p.add_argument("--no-snapshots", action="store_true", help="do not save per-epoch parameters (no avg rows)")
    p.add_argument("--threads", type=_count, default=None, help="torch threads per node process")
    p.add_argument("--no-progress-timeout", type=_seconds, default=300.0, metavar="SECONDS",
                   help="end a node as deadlock after this long without a message or a computation (default 300)")


def add_parsers(sub) -> None:
    """Add ``launch``, ``node`` and ``merge`` to the main parser's subcommands."""
    la = sub.add_parser("launch", help="run a config as real processes on this machine (--local N)")
    _common(la)
    la.add_argument("--local", type=_count, required=True, metavar="N",
                    help="number of local node processes (sets nodes)")
    la.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                    help="stop every node after this many wall seconds (default: none)")
    la.add_argument("--quiet", action="store_true", help="print only the result, no progress")
    nd = sub.add_parser("node", help="run one node of a real run (hosts file, or torchrun/SLURM environment)")
    _common(nd)
    nd.add_argument("--node-id", type=int, default=None, help="this node's id in the hosts file (default: $RANK)")
    nd.add_argument("--hosts", help="YAML hosts file mapping node ids to HOST:PORT (see examples/hosts.yaml)")
    nd.add_argument("--bind", help="host to bind instead of this node's address, e.g. 0.0.0.0")
    nd.add_argument("--rendezvous-timeout", type=_seconds, default=120.0, metavar="SECONDS",
                    help="how long to wait for the other nodes at the meeting point (default 120)")
    mg = sub.add_parser("merge", help="merge the nodes/<id>/ rows of a real run directory")
    mg.add_argument("run_dir", help="results/<name>/<run_id>-real-<nonce> holding nodes/<id>/")
    mg.add_argument("config", help="the run's config file")
    mg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="the --set options the nodes ran with")


def run(args) -> int:
    """Run one of :data:`COMMANDS`; returns the exit code."""
    from ...core.schema import ConfigError, one_line
    from .node_main import EXIT_USAGE
    from ...real.rendezvous import RendezvousError
    from ...real.transport import ClusterKeyError

    try:
        if args.command == "node":
            return _node(args)
        if args.command == "launch":
            return _launch(args)
        return _merge(args)
    except (ConfigError, RendezvousError, ClusterKeyError) as exc:
        print(f"simbench {args.command}: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _node_options(args, **extra):
    from .node_main import NodeOptions
    from ...real.transport import DEFAULT_MAX_SIZE
    return NodeOptions(config=args.config, overrides=list(args.overrides), out=args.out, key_file=args.key_file,
                       insecure=args.insecure, max_size=args.max_message_size or DEFAULT_MAX_SIZE,
                       native_network=args.native_network, threads=args.threads, snapshots=not args.no_snapshots,
                       no_progress_timeout=args.no_progress_timeout, **extra)


def _node(args) -> int:
    from .node_main import run_node
    return run_node(_node_options(args, node_id=args.node_id, hosts=args.hosts, bind=args.bind,
                                  rendezvous_timeout=args.rendezvous_timeout))


def _node_flags(args) -> list[str]:
    flags = []
    if args.max_message_size:
        flags += ["--max-message-size", str(args.max_message_size)]
    if args.native_network:
        flags.append("--native-network")
    if args.no_snapshots:
        flags.append("--no-snapshots")
    flags += ["--no-progress-timeout", str(args.no_progress_timeout)]
    return flags


def _launch(args) -> int:
    from .launch import launch_local
    result = launch_local(args.config, args.local, overrides=args.overrides, out=args.out, key_file=args.key_file,
                          insecure=args.insecure, node_args=_node_flags(args), timeout=args.timeout,
                          threads=args.threads, quiet=args.quiet)
    for o in result.outcomes:
        if o.status not in ("finished", "time_limit"):
            print(f"  node {o.node}: {o.status} (exit code {o.exit_code}){': ' + o.reason if o.reason else ''}")
    print(f"{result.status}: {args.local} local processes in {result.wall_time:.1f}s wall")
    print(f"results: {result.run_dir}")
    return 0 if result.status == "finished" else 1


def _merge(args) -> int:
    from pathlib import Path

    from ..config import load_config
    from .merge import merge, node_dirs

    n = len(node_dirs(Path(args.run_dir)))
    if n == 0:
        print(f"simbench merge: {args.run_dir} has no nodes/<id>/ directories", file=sys.stderr)
        return 2
    cfg = load_config(args.config, [*args.overrides, f"nodes={n}"])
    if not Path(args.run_dir).name.startswith(f"{cfg.run_id()}-real"):
        print(f"simbench merge: the config with nodes={n} has run id {cfg.run_id()}, but {Path(args.run_dir).name} is "
              f"not one of its real runs ({cfg.run_id()}-real-...); pass the --set options the nodes ran with",
              file=sys.stderr)
        return 2
    manifest = merge(args.run_dir, cfg)
    print(f"{manifest['status']}: merged {n} nodes into {args.run_dir}")
    return 0 if manifest["status"] == "finished" else 1
