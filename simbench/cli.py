"""The ``simbench`` command line: run configs, draw topologies, list what is available."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


def _catalogue() -> str:
    from .algorithms import ALGORITHMS
    from .core.scenario import DEVICE_PROFILES
    from .data.datasets import DATASETS
    from .models import MODELS
    from .topology import BUILDERS

    algos = "\n".join(f"  {name:<10} {cls.summary}" for name, cls in ALGORITHMS.items())
    return (
        "algorithms:\n" + algos + "\n"
        f"topologies:  {', '.join(BUILDERS)} (or topology: {{file: topologies/NAME.yaml}})\n"
        f"datasets:    {', '.join(DATASETS)} (digits is embedded; others via torchvision, root from dataset.root or $SIMBENCH_DATA)\n"
        f"models:      {', '.join(MODELS)}\n"
        f"devices:     {', '.join(DEVICE_PROFILES)} (compute.device; or compute.step_time / compute.flops_per_s)\n"
        "scenario:    stragglers {fraction, nodes, slowdown}, weak_workers {fraction, nodes, speed, batch_scale},\n"
        "             crashes [{node, at, recover_at}], crash_rate, recover_after, partitions [{edges, start, end}]\n"
        "network:     latency, jitter, bandwidth, uplink, downlink, loss\n"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simbench", description="Simulation-first benchmarks for distributed and decentralized training.",
        epilog=_catalogue(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run one config in the simulator")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set train.epochs=3 --set topology.kind=star")
    run.add_argument("--out", help="results root (default: output.dir of the config, 'results')")
    run.add_argument("--device", choices=("cpu", "cuda"), help="torch device for training")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    topo = sub.add_parser("topology", help="inspect topologies")
    tsub = topo.add_subparsers(dest="topology_command", metavar="ACTION")
    show = tsub.add_parser("show", help="draw a topology file or kind to PNG")
    show.add_argument("source", help="a topology file (topologies/*.yaml) or a kind (ring, torus, ...)")
    show.add_argument("-n", "--nodes", type=int, default=None, help="node count for a kind")
    show.add_argument("-o", "--output", default=None, help="PNG path (default: SOURCE.png)")
    show.add_argument("--seed", type=int, default=0)
    sub.add_parser("list", help="list algorithms, topologies, datasets and scenario knobs")
    return p


def _cmd_run(args) -> int:
    import dataclasses

    from .experiment.config import load_config
    from .experiment.run import run_experiment

    cfg = load_config(args.config, args.overrides)
    if args.device:
        cfg = dataclasses.replace(cfg, device=args.device)
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("simbench: device: cuda was asked for but no CUDA GPU is available; use --device cpu", file=sys.stderr)
            return EXIT_USAGE
    result = run_experiment(cfg, args.out, progress=not args.quiet and cfg.output.progress)
    avg = result.final("test_acc", "avg")
    print(f"{result.status}: {result.run_id}  simulated {result.sim_time:.2f}s in {result.wall_time:.1f}s wall; "
          f"average-model test accuracy {avg:.3f}")
    print(f"results: {result.run_dir}")
    return 0 if result.status == "finished" else 1


def _cmd_topology(args) -> int:
    from .topology import build, describe, draw, load

    src = args.source
    if Path(src).suffix in (".yaml", ".yml", ".edgelist", ".txt", ".graphml"):
        graph = load(src)
        out = args.output or str(Path(src).with_suffix(".png"))
    else:
        graph = build(src, args.nodes or 8, seed=args.seed)
        out = args.output or f"{src}{graph.number_of_nodes()}.png"
    draw(graph, out, title=f"{Path(src).stem}: {describe(graph)}")
    print(f"{describe(graph)}\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .core.schema import ConfigError

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "topology" and args.topology_command == "show":
            return _cmd_topology(args)
        if args.command == "list":
            print(_catalogue())
            return 0
        parser.print_help()
        return EXIT_USAGE if args.command is None else 0
    except (ConfigError, ValueError) as exc:  # one line, no traceback: bad input is the user's to fix
        if not _is_user_error(exc):
            raise
        print(f"simbench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("simbench: interrupted; results recorded so far were written", file=sys.stderr)
        return 130


def _is_user_error(exc: Exception) -> bool:
    from .core.schema import ConfigError
    from .data.datasets import DatasetError
    from .topology import TopologyError
    return isinstance(exc, (ConfigError, TopologyError, DatasetError))


if __name__ == "__main__":
    sys.exit(main())
