"""Simulator overhead: a DSGD run against the same training steps in a plain PyTorch loop.

The simulated run is DSGD on a ring of 16 nodes with seed 002's CNN at batch 32 on
MNIST: every round each node takes one SGD step, encodes its parameters, sends them to
both neighbours through the simulated network, decodes theirs and averages. The
reference is a plain loop in one process: 16 models, each taking the same number of SGD
steps on batches of the same shape, with no communication at all. Everything the
simulator adds (kernel, encoding, network model, mixing, logging, evaluation) counts as
overhead.

    python benchmarks/sim_overhead.py --rounds 30 [--data-root ../shared/data]
Target (issue 2): ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from simbench.data.datasets import load_dataset
from simbench.experiment.config import parse_config
from simbench.experiment.run import run_experiment
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
        "train": {"epochs": 1, "batch_size": BATCH, "lr": 0.05, "eval_samples": 64},
        "network": {"latency": "1ms", "bandwidth": "1Gbit/s"},
        "output": {"wall_clock": True, "plot": False, "progress": False},
    }


def plain_loop(rounds: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """16 models, `rounds` SGD steps each on batches of 32, round-robin, no communication."""
    models = [build_model("cnn", tuple(x.shape[1:]), 10, seed=i) for i in range(NODES)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for r in range(rounds):
        for k, (m, opt) in enumerate(zip(models, opts)):
            lo = ((r * NODES + k) * BATCH) % (len(x) - BATCH)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(x[lo:lo + BATCH]), y[lo:lo + BATCH])
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def measure(rounds: int, root: str, dataset: str, out: Path) -> dict:
    cfg = parse_config(sim_config(rounds, root, dataset))
    data = load_dataset(dataset, root, max_train=rounds * BATCH * NODES)
    plain_loop(2, data.x_train, data.y_train)  # warm-up (allocator, kernels)
    plain = plain_loop(rounds, data.x_train, data.y_train)
    res = run_experiment(cfg, out, progress=False)
    return {"rounds": rounds, "steps": rounds * NODES, "sim_wall_s": res.wall_time, "plain_wall_s": plain,
            "ratio": res.wall_time / plain, "sim_time_s": res.sim_time, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--data-root", default=os.environ.get("SIMBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--out", default="/tmp/simbench-overhead")
    args = ap.parse_args()
    r = measure(args.rounds, args.data_root, args.dataset, Path(args.out))
    print(f"DSGD ring-{NODES}, CNN, batch {BATCH}, {r['steps']} training steps ({r['threads']} torch threads):")
    print(f"  simulator run     {r['sim_wall_s']:7.2f} s wall  (simulated {r['sim_time_s']:.2f} s)")
    print(f"  plain torch loop  {r['plain_wall_s']:7.2f} s wall")
    print(f"  ratio             {r['ratio']:7.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
