"""Simulator overhead: a DSGD run against the same training steps in a plain PyTorch loop.

The simulated run is DSGD on a ring of 16 nodes with seed 002's CNN at batch 32 on
MNIST: every round each node takes one SGD step, encodes its parameters, sends them to
both neighbours through the simulated network, decodes theirs and averages. Nothing is
evaluated (``eval_samples: 0``): the loops it is compared with evaluate nothing either.

Two references, each in one process with no simulator:

* ``steps`` (the issue's target): 16 models, each taking the same number of SGD steps on
  batches of the same shape, with no communication at all. Everything the run adds to
  the steps counts as overhead: the kernel, encoding and decoding, the network model,
  logging, and DSGD's own neighbour averaging.
* ``dsgd``: the same steps plus the same neighbour averaging written as a plain loop
  (flatten, average with both ring neighbours, write back). The ratio to it is what the
  simulator itself costs.

    python benchmarks/sim_overhead.py --rounds 100 [--threads 1] [--data-root ../shared/data] [--repeats 3]
Target (issue 2): ratio to ``steps`` <= 1.10.

A third figure needs no reference run: the simulated run's own training steps are timed as
they happen (``Learner.train_step``, wrapped by this script only) and the run's wall time is
divided by their total. Steps and run share the same minutes, so the machine's drift cancels.

Each reference runs before and after the simulated run and their mean is used, because a
shared machine's speed drifts over minutes (on the 2-core development box one plain loop
took 74 s and 99 s ten minutes apart). Wall and CPU time of this process are both printed;
CPU time is the steadier measure there. ``--repeats N`` measures N times in a row (each
run bracketed by its own references) and prints the median of each ratio, and the pooled
ratio of all the run time to all the reference time.

The script re-executes itself once with the allocator settings the ``simbench`` CLI uses
(``simbench/_malloc.py``), so both sides run as a user's ``simbench run`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import torch

from simbench._malloc import reexec_with_malloc_env
from simbench.data.datasets import load_dataset
from simbench.experiment.config import parse_config
from simbench.experiment.run import run_experiment
from simbench.learn import Learner
from simbench.models import build_model

NODES, BATCH = 16, 32


def sim_config(rounds: int, root: str, dataset: str) -> dict:
    per_node = rounds * BATCH  # one epoch = `rounds` steps
    return {
        "name": "overhead", "seed": 0, "nodes": NODES, "topology": {"kind": "ring"},
        "algorithm": {"name": "dsgd", "swap_timeout": None},
        "dataset": {"name": dataset, "root": root, "partition": "iid", "val_fraction": 0.0,
                    "max_train": per_node * NODES, "max_test": 256},
        "model": {"name": "cnn"},
        "train": {"epochs": 1, "batch_size": BATCH, "lr": 0.05, "eval_samples": 0},
        "network": {"latency": "1ms", "bandwidth": "1Gbit/s"},
        "output": {"wall_clock": True, "plot": False, "progress": False},
    }


def plain_loop(rounds: int, x: torch.Tensor, y: torch.Tensor, *, mix: bool = False) -> tuple[float, float]:
    """16 models, `rounds` SGD steps each on batches of 32, round-robin; with ``mix``, seed
    003's ring average after every round, written plainly; no communication otherwise."""
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    models = [build_model("cnn", tuple(x.shape[1:]), 10, seed=i) for i in range(NODES)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    loss_fn = torch.nn.CrossEntropyLoss()
    t0, c0 = time.perf_counter(), time.process_time()
    for r in range(rounds):
        for k, (m, opt) in enumerate(zip(models, opts)):
            lo = ((r * NODES + k) * BATCH) % (len(x) - BATCH)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(x[lo:lo + BATCH]), y[lo:lo + BATCH])
            loss.backward()
            opt.step()
        if mix:
            with torch.no_grad():
                flat = [parameters_to_vector(m.parameters()) for m in models]
                for k, m in enumerate(models):
                    vector_to_parameters((flat[k] + flat[k - 1] + flat[(k + 1) % NODES]) / 3, m.parameters())
    return time.perf_counter() - t0, time.process_time() - c0


@contextlib.contextmanager
def timed_steps():
    """Time every ``Learner.train_step`` of the simulated run itself (benchmark only: the
    simulator never reads the wall clock). The run's wall time over this total is its
    overhead measured in the same minutes, immune to the machine's drift between runs."""
    acc = {"s": 0.0, "n": 0}
    original = Learner.train_step

    def train_step(self):
        t = time.perf_counter()
        try:
            return original(self)
        finally:
            acc["s"] += time.perf_counter() - t
            acc["n"] += 1

    Learner.train_step = train_step
    try:
        yield acc
    finally:
        Learner.train_step = original


def measure(rounds: int, root: str, dataset: str, out: Path, data) -> dict:
    cfg = parse_config(sim_config(rounds, root, dataset))
    # the references bracket the simulated run (before and after it): on a shared machine
    # whose speed drifts over minutes, their mean is what the run is compared with; CPU
    # time (this process, all threads) is reported too, as it is less sensitive to other tenants
    before = plain_loop(rounds, data.x_train, data.y_train)
    dsgd_before = plain_loop(rounds, data.x_train, data.y_train, mix=True)
    c0 = time.process_time()
    with timed_steps() as inside:
        res = run_experiment(cfg, out, progress=False)
    sim_cpu = time.process_time() - c0
    dsgd_after = plain_loop(rounds, data.x_train, data.y_train, mix=True)
    after = plain_loop(rounds, data.x_train, data.y_train)

    def mean(a, b, k):
        return (a[k] + b[k]) / 2

    return {"rounds": rounds, "steps": rounds * NODES, "sim_wall_s": res.wall_time, "sim_cpu_s": sim_cpu,
            "steps_wall_s": mean(before, after, 0), "steps_cpu_s": mean(before, after, 1),
            "dsgd_wall_s": mean(dsgd_before, dsgd_after, 0), "dsgd_cpu_s": mean(dsgd_before, dsgd_after, 1),
            "steps_spread": (before[0], after[0]), "dsgd_spread": (dsgd_before[0], dsgd_after[0]),
            "sim_time_s": res.sim_time, "threads": torch.get_num_threads(),
            "inside_s": inside["s"], "inside_steps": inside["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--data-root", default=os.environ.get("SIMBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--out", default="/tmp/simbench-overhead")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure this many times in a row and print the median ratios (a drifting machine)")
    args = ap.parse_args()
    reexec_with_malloc_env()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_root, max_train=args.rounds * BATCH * NODES)
    plain_loop(2, data.x_train, data.y_train)  # warm-up (allocator, kernels)
    runs = []
    for k in range(args.repeats):
        r = measure(args.rounds, args.data_root, args.dataset, Path(args.out), data)
        runs.append(r)
        if args.repeats > 1:
            print(f"repeat {k + 1} of {args.repeats}:", end=" ")
        report(r)
    if args.repeats > 1:
        print(f"over {args.repeats} repeats: median (pooled: total run wall / total reference wall) [min-max]")
        for name, key in (("its own steps", "inside_s"), ("plain loop, steps", "steps_wall_s"),
                          ("plain loop, DSGD", "dsgd_wall_s")):
            ratios = sorted(r["sim_wall_s"] / r[key] for r in runs)
            pooled = sum(r["sim_wall_s"] for r in runs) / sum(r[key] for r in runs)
            print(f"  {name:18s} {statistics.median(ratios):.3f} ({pooled:.3f}) [{ratios[0]:.3f}-{ratios[-1]:.3f}]"
                  + ("  (target <= 1.10)" if key == "steps_wall_s" else ""))


def report(r: dict) -> None:
    """One measurement's lines: the run, and its three ratios."""
    print(f"DSGD ring-{NODES}, CNN, batch {BATCH}, {r['steps']} training steps ({r['threads']} torch threads):")
    print(f"  simulator run        {r['sim_wall_s']:7.2f} s wall {r['sim_cpu_s']:7.2f} s CPU  (simulated {r['sim_time_s']:.2f} s)")
    print(f"  its own {r['inside_steps']} training steps {r['inside_s']:7.2f} s wall"
          f"                   ratio {r['sim_wall_s'] / r['inside_s']:.3f} wall (the same minutes: no drift)")
    for name, key, note in (("steps", "steps", "  (target <= 1.10)"), ("DSGD ", "dsgd", "")):
        b, a = r[f"{key}_spread"]
        print(f"  plain loop, {name}    {r[f'{key}_wall_s']:7.2f} s wall {r[f'{key}_cpu_s']:7.2f} s CPU   "
              f"ratio {r['sim_wall_s'] / r[f'{key}_wall_s']:.3f} wall, {r['sim_cpu_s'] / r[f'{key}_cpu_s']:.3f} CPU{note}"
              f"   [wall before {b:.2f} s, after {a:.2f} s]")


if __name__ == "__main__":
    main()
