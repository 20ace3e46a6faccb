"""The ``simbench`` command line: run configs, draw topologies, list what is available."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _names(kind: str) -> tuple[str, str]:
    """Built-in names of a registry, and the installed ones with their distributions."""
    from . import registry
    entries = registry.catalogue(kind)
    builtin = ", ".join(e.name for e in entries if e.source == "simbench")
    other = "".join(f"\n             {e.name} ({e.source})" for e in entries if e.source != "simbench")
    return builtin, other


def _catalogue() -> str:
    from . import registry
    from .core.scenario import DEVICE_PROFILES
    from .topology import BUILDERS
    from .topology.builders import allowed_params

    algos = "\n".join(f"  {e.name:<10} {e.summary}" + ("" if e.source == "simbench" else f"  [{e.source}]")
                      for e in registry.catalogue("algorithms"))
    kinds = ", ".join(f"{kind} ({', '.join(params)})" if (params := allowed_params(b)) else kind
                      for kind, b in BUILDERS.items())
    datasets, more_data = _names("datasets")
    models, more_models = _names("models")
    return (
        "algorithms:\n" + algos + "\n"
        "             (or an import path: algorithm: {name: mypkg.module:MyAlgorithm})\n"
        f"topologies:  {kinds} (or topology: {{file: topologies/NAME.yaml}})\n"
        f"datasets:    {datasets} (digits is embedded; others via torchvision, root from dataset.root or $SIMBENCH_DATA){more_data}\n"
        f"models:      {models} (lsgan, dcgan: GAN algorithms){more_models}\n"
        f"devices:     {', '.join(DEVICE_PROFILES)} (compute.device; or compute.step_time / compute.flops_per_s)\n"
        "scenario:    stragglers {fraction, nodes, slowdown}, weak_workers {fraction, nodes, mode (auto|slow|half_steps),\n"
        "             speed, batch_scale},\n"
        "             crashes [{node, at, recover_at}], crash_rate, recover_after, partitions [{edges, start, end}],\n"
        "             sleep_factor (seed 003: sleep T(0.5+0.5 f u) after each epoch of time T)\n"
        "network:     latency, jitter, bandwidth, uplink, downlink, loss\n"
        "population:  devices {trace | profile: mobile | flops_per_s, uplink, downlink}, availability {trace |\n"
        "             profile: churn | online, offline, start_online; period}, mapping (index, sample, column),\n"
        "             selection (online, any), rejoin (keep, fresh); traces: simbench CSV/Parquet or FedScale's\n"
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with a flag error as one line (and exit code 2) instead of the whole usage."""

    def error(self, message: str):
        from .core.schema import one_line
        self.exit(EXIT_USAGE, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="simbench", description="Simulation-first benchmarks for distributed and decentralized training.",
        epilog=_catalogue(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__
    p.add_argument("--version", action="version", version=f"simbench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run one config in the simulator")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set train.epochs=3 --set topology.kind=star")
    run.add_argument("--out", help="results root (default: output.dir of the config, 'results')")
    run.add_argument("--device", choices=("cpu", "cuda"), help="torch device for training")
    run.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                     help="torch threads of the run (default 1: a simulated run is many small steps; more threads "
                          "rarely help and fight with other processes)")
    run.add_argument("--force", action="store_true",
                     help="reuse the config's run directory (its old results are removed) instead of a fresh one")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    topo = sub.add_parser("topology", help="inspect topologies")
    tsub = topo.add_subparsers(dest="topology_command", metavar="ACTION")
    show = tsub.add_parser("show", help="draw a topology file or kind to PNG")
    show.add_argument("source", help="a topology file (topologies/*.yaml) or a kind (ring, torus, ...)")
    show.add_argument("-n", "--nodes", type=int, default=None, help="node count for a kind")
    show.add_argument("-o", "--output", default=None,
                      help="picture path, .png/.pdf/.svg (default: results/topologies/NAME.png)")
    show.add_argument("--seed", type=int, default=0, help="seed of a random topology kind")
    lst = sub.add_parser("list", help="list algorithms, topologies, datasets and scenario knobs")
    lst.add_argument("--defaults", action="store_true",
                     help="print every config field's default as a Markdown table (docs/defaults.md)")
    from .experiment.distributed.cli import add_parsers as add_real_parsers  # launch, node, merge (real processes)
    add_real_parsers(sub)
    mat = sub.add_parser("matrix", help="run a benchmark matrix (base config x axes) in parallel, resumably")
    mat.add_argument("matrix", help="matrix YAML file (see benchmarks/matrices/)")
    mat.add_argument("--out", default="results", help="results root; the matrix goes to OUT/<name>/ (default: results)")
    mat.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field of every cell, e.g. --set train.epochs=1")
    mat.add_argument("--workers", type=int, default=None, help="cells run at once (default: number of cores)")
    mat.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                     help="torch threads per cell (default 1; a cell's numbers never depend on --workers)")
    mat.add_argument("--executor", default="local", choices=("local", "serial", "dask"),
                     help="local worker processes (default), this process, or a Dask cluster")
    mat.add_argument("--address", default=None, help="Dask scheduler, e.g. tcp://10.0.0.1:8786 (default: a LocalCluster)")
    mat.add_argument("--keep-failed", action="store_true", help="do not redo cells that failed in an earlier run")
    mat.add_argument("--dry-run", action="store_true", help="validate and list the cells, run nothing")
    mat.add_argument("--report", action="store_true", help="write the report when the matrix is done")
    mat.add_argument("--quiet", action="store_true", help="no progress bar")
    fid = sub.add_parser("train-fid-net", help="train the small classifier whose features give FID (GAN algorithms)")
    fid.add_argument("dataset", help="data set, e.g. mnist, fashion_mnist, digits")
    fid.add_argument("--root", default=None, help="data root (default: $SIMBENCH_DATA)")
    fid.add_argument("--epochs", type=_positive_int, default=3, help="training epochs (default 3)")
    fid.add_argument("--seed", type=int, default=0, help="seed of the data order and initial weights")
    fid.add_argument("--out", default=None, help="weights file (default: the package's simbench/gan/weights/fidnet_DATASET.pt)")
    gen = sub.add_parser("generate", help="write samples from a trained Lipizzaner mixture")
    gen.add_argument("--mixture-source", required=True, help="a lipizzaner run's mixture/ directory")
    gen.add_argument("--sample-size", type=int, default=100, help="images to write (default: 100)")
    gen.add_argument("-o", "--output", required=True, help="directory for the PNG images")
    gen.add_argument("--seed", type=int, default=0, help="seed of the noise the samples are drawn from")
    gen.add_argument("--grid", action="store_true", help="write one image of every sample on a grid, not one file each")
    cmp = sub.add_parser("compare", help="two run directories side by side: config differences, results, curves")
    cmp.add_argument("run_a", help="a run directory (results/<name>/<run_id>)")
    cmp.add_argument("run_b", help="another run directory")
    cmp.add_argument("--plot", default=None, metavar="FILE", help="also draw both quality curves in FILE (.png/.pdf/.svg)")
    rep = sub.add_parser("report", help="write report.md and figures for a matrix results directory")
    rep.add_argument("results", help="a matrix results directory, e.g. results/decentralized")
    rep.add_argument("--format", choices=("md", "html"), default="md", help="the report document (default md)")
    rep.add_argument("--figures", choices=("png", "pdf", "svg"), default="png",
                     help="file format of the figures (default png; pdf and svg for papers)")
    return p


def _cmd_run(args) -> int:
    import dataclasses

    from .experiment.config import load_config
    from .experiment.run import run_experiment

    import torch

    cfg = load_config(args.config, args.overrides)
    if args.device:
        cfg = dataclasses.replace(cfg, device=args.device)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print("simbench: device: cuda was asked for but no CUDA GPU is available; use --device cpu", file=sys.stderr)
        return EXIT_USAGE
    torch.set_num_threads(args.threads)
    result = run_experiment(cfg, args.out, progress=not args.quiet and cfg.output.progress, force=args.force)
    if result.status == "failed":
        print(f"failed: {result.run_id}: {result.error}", file=sys.stderr)
        print(f"results so far and the traceback (error.txt): {result.run_dir}", file=sys.stderr)
        return 1
    quality = cfg.workload_class().headline(result.final)
    print(f"{result.status}: {result.run_id}  simulated {result.sim_time:.2f}s in {result.wall_time:.1f}s wall; {quality}")
    if result.status != "finished":
        print(f"  {result.error}")
    ex = result.execution
    if ex is not None and ex.requested == "batched" and ex.used != "batched":
        print(f"  computed step by step: {ex.reason}")
    print(f"results: {result.run_dir}")
    return 0 if result.status == "finished" else 1


def _cmd_matrix(args) -> int:
    from .experiment.executors import make_executor
    from .experiment.matrix import load_matrix, run_matrix

    matrix = load_matrix(args.matrix, args.overrides)  # every cell is validated before anything runs
    if args.dry_run:
        for cell in matrix.cells:
            print(f"{cell.id}  {cell.describe()}")
        print(f"{len(matrix.cells)} cells; results would go to {Path(args.out) / matrix.name}")
        return 0
    executor = make_executor(args.executor, args.address, args.workers)
    try:
        result = run_matrix(matrix, args.out, executor=executor, retry_failed=not args.keep_failed,
                            progress=not args.quiet, echo=print if args.quiet else None, threads=args.threads)
    finally:
        getattr(executor, "close", lambda: None)()
    print(f"matrix {matrix.name}: {result.ran} cells run, {result.skipped} already done, {result.failed} failed; "
          f"table: {result.root / 'cells.csv'}")
    if args.report:
        from .report.report import write_report
        print(f"report: {write_report(result.root)}")
    else:
        print(f"next: simbench report {result.root}")
    return 0 if result.failed == 0 else 1


def _cmd_report(args) -> int:
    from .report.report import write_report

    print(f"wrote {write_report(args.results, args.format, args.figures)}")
    return 0


def _cmd_train_fid_net(args) -> int:
    import torch

    from .data.datasets import load_dataset
    from .workloads.gan import gan_range
    from .gan.fidnet import save_fid_net, train_fid_net, weights_path

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    data = load_dataset(args.dataset, args.root, seed=args.seed)
    x_train, x_test = gan_range(data)
    net, acc = train_fid_net(x_train, data.y_train, x_test, data.y_test, num_classes=data.num_classes,
                             epochs=args.epochs, seed=args.seed)
    path = save_fid_net(net, args.out or weights_path(args.dataset),
                        {"dataset": args.dataset, "test_acc": round(acc, 4), "epochs": args.epochs, "seed": args.seed})
    print(f"FID network for {args.dataset}: test accuracy {acc:.4f}; wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


def _cmd_topology(args) -> int:
    from .core.schema import ConfigError
    from .topology import build, describe, draw, load

    src = args.source
    if Path(src).suffix in (".yaml", ".yml", ".edgelist", ".txt", ".graphml"):
        graph = load(src)
        name = Path(src).stem
    else:
        graph = build(src, 8 if args.nodes is None else args.nodes, seed=args.seed)
        name = f"{src}{graph.number_of_nodes()}"
    out = Path(args.output or Path("results") / "topologies" / f"{name}.png")
    print(describe(graph))
    try:
        draw(graph, out, title=name)
    except ValueError as exc:
        raise ConfigError(f"topology show: {exc}") from None
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line (not a test calling main): tune malloc first
        from ._malloc import reexec_with_malloc_env
        reexec_with_malloc_env()
        import signal
        signal.signal(signal.SIGTERM, _terminate)  # even while torch is still being imported
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("simbench: interrupted; results recorded so far were written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `simbench matrix --dry-run | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def _terminate(signum, frame) -> None:
    """SIGTERM stops a command as Ctrl-C does: what was recorded is written, exit code 130."""
    raise KeyboardInterrupt


def _main(argv: list[str] | None) -> int:
    from .core.schema import ConfigError, one_line

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command in ("launch", "node", "merge"):
            from .experiment.distributed.cli import run as run_real
            return run_real(args)
        if args.command == "topology" and args.topology_command == "show":
            return _cmd_topology(args)
        if args.command == "matrix":
            return _cmd_matrix(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "compare":
            from .report.compare import compare
            print(compare(args.run_a, args.run_b, args.plot))
            return 0
        if args.command == "train-fid-net":
            return _cmd_train_fid_net(args)
        if args.command == "generate":
            from .algorithms.lipizzaner import generate_samples
            paths = generate_samples(args.mixture_source, args.sample_size, args.output, args.seed, grid=args.grid)
            print(f"wrote {paths[0]}" if args.grid else f"wrote {len(paths)} images to {args.output}")
            return 0
        if args.command == "list":
            if args.defaults:
                from .experiment.defaults import defaults_markdown
                print(defaults_markdown(), end="")
                return 0
            print(_catalogue())
            return 0
        parser.print_help()
        return EXIT_USAGE if args.command is None else 0
    except (ConfigError, ValueError) as exc:  # one line, no traceback: bad input is the user's to fix
        if not _is_user_error(exc):
            raise
        print(f"simbench: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _is_user_error(exc: Exception) -> bool:
    from .core.schema import ConfigError
    from .data.datasets import DatasetError
    from .topology import TopologyError
    return isinstance(exc, (ConfigError, TopologyError, DatasetError))


if __name__ == "__main__":
    sys.exit(main())
