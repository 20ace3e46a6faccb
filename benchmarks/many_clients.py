"""Many clients on one machine: simbench against a plain PyTorch loop doing the same work.

The workload is FedAvg as McMahan et al. run it: MNIST split iid over K clients, the 2NN
(MLP 784-200-200-10), each round a fraction C of the clients takes 5 SGD steps of batch 32
from the global model, the server averages by shard size and evaluates the global model on
the whole test set; 10 rounds. The plain loop does exactly that in one process with one
model object; simbench runs it as a simulation (a server and K client nodes on a star).
Each side runs in its own process (``python benchmarks/many_clients.py --child ...``) so
its wall time includes start-up and its peak RSS is its own (``wait4``). One torch thread.
The simbench side runs with the allocator settings ``simbench run`` gives itself
(``simbench/_malloc.py``); ``TUNED_PLAIN=1`` gives them to the plain loop as well.

    python benchmarks/many_clients.py --clients 256 --frac 1.0                 # the 256-client target
    python benchmarks/many_clients.py --clients 1024 --frac 0.1
    python benchmarks/many_clients.py --clients 10000 --frac 0.01 --only simbench
    python benchmarks/many_clients.py --case dsgd --clients 1024 --epochs 5    # D-SGD, random regular graph
    python benchmarks/many_clients.py --clients 256 --execution sequential     # simbench without batching

Data: ``$SIMBENCH_DATA`` or ``--data-root`` must hold MNIST (``MNIST/raw``).
Prints one row per side and repeat: wall time from launch to exit, split into start-up
(interpreter, imports, data, building the clients: until the first training step, for
simbench the first simulated event) and training; peak RSS; the final accuracy of the
global model; and the ratios simbench / plain loop. ``--json FILE`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# -- the two sides, each run in a child process -------------------------------------------------------
def plain_loop(args) -> dict:
    """FedAvg as a plain PyTorch loop: one model, the data set once, clients one after another."""
    import numpy as np
    import torch
    from torch import nn

    from simbench.data.datasets import load_dataset
    from simbench.models import build_model

    data = load_dataset("mnist", args.data_root)
    rng = np.random.default_rng(args.seed)
    shards = [torch.from_numpy(np.sort(p)) for p in np.array_split(rng.permutation(len(data.y_train)), args.clients)]
    model = build_model("mlp", data.input_shape, 10, seed=0, hidden=[200, 200])
    params = [p for p in model.parameters()]
    global_flat = torch.nn.utils.parameters_to_vector(params).detach().clone()
    loss_fn = nn.CrossEntropyLoss()
    m = max(1, round(args.frac * args.clients))
    gens = [torch.Generator().manual_seed(args.seed * 100003 + k) for k in range(args.clients)]
    started = time.time()  # the training loop starts
    acc = 0.0
    for _ in range(args.rounds):
        chosen = sorted(rng.choice(args.clients, size=m, replace=False).tolist())
        total, n_total = torch.zeros_like(global_flat), 0
        for c in chosen:
            with torch.no_grad():  # load the global model (copied: the clients must not write into it)
                torch.nn.utils.vector_to_parameters(global_flat.clone(), params)
            opt = torch.optim.SGD(params, lr=args.lr)
            shard = shards[c]
            for _ in range(args.local_steps):
                idx = shard[torch.randint(len(shard), (args.batch,), generator=gens[c])]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
            total.add_(torch.nn.utils.parameters_to_vector(params).detach(), alpha=len(shard))
            n_total += len(shard)
        global_flat = total / n_total
        torch.nn.utils.vector_to_parameters(global_flat, params)
        with torch.no_grad():
            acc = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    return {"train_start": started, "final_acc": acc}


def simbench_run(args) -> dict:
    import dataclasses

    from simbench.experiment.config import parse_config
    from simbench.experiment.run import run_experiment

    common = {"seed": args.seed, "dataset": {"name": "mnist", "root": args.data_root, "partition": "iid"},
              "model": {"name": "mlp", "options": {"hidden": [200, 200]}},
              "train": {"batch_size": args.batch, "lr": args.lr, "eval_samples": 10000},
              "execution": args.execution, "device": args.device,
              "output": {"wall_clock": True, "plot": False, "progress": False}}
    if args.case == "fedavg":
        cfg = {**common, "name": "many_fedavg", "nodes": args.clients + 1, "topology": {"kind": "star"},
               "algorithm": {"name": "fedavg", "frac_clients": args.frac, "local_steps": args.local_steps,
                             "rounds": args.rounds},
               "train": {**common["train"], "epochs": args.rounds}}
    else:
        cfg = {**common, "name": "many_dsgd", "nodes": args.clients,
               "topology": {"kind": "random_regular", "degree": 4},
               "algorithm": {"name": "dsgd", "schedule": "rounds"} if args.schedule_rounds else "dsgd",
               "train": {**common["train"], "epochs": args.epochs, "eval_samples": 1000}}
    config = parse_config(cfg)
    called = time.time()
    with tempfile.TemporaryDirectory() as out:
        res = run_experiment(dataclasses.replace(config), out, progress=False)
        manifest = json.loads((res.run_dir / "manifest.json").read_text())
    execution = manifest.get("execution") or {}
    # the first simulated event: the run's own start-up (data, split, nodes, world) after the call
    return {"train_start": called + execution.get("startup_s", float("nan")), "final_acc": res.final("test_acc", "avg"),
            "status": res.status, "sim_time_s": res.sim_time, "execution": execution}


def child(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    out = plain_loop(args) if args.child == "plain" else simbench_run(args)
    print("RESULT " + json.dumps(out), flush=True)


# -- the driver ---------------------------------------------------------------------------------------
from simbench._malloc import MALLOC_ENV  # noqa: E402


def measure(side: str, argv: list[str]) -> dict:
    """Run one side in a child process: its wall time, peak RSS (from ``wait4``) and what it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if side == "simbench" or os.environ.get("TUNED_PLAIN"):
        env.update(MALLOC_ENV)  # what `simbench run` sets for itself (simbench/_malloc.py)
    launched = time.time()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", side, *argv], stdout=out, stderr=err,
                                text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it: Popen must not wait for it again
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{side} failed (exit code {proc.returncode}):\n{stderr[-3000:]}")
    row = json.loads(line[7:])
    startup = row.pop("train_start") - launched  # interpreter, imports, data, building: until training starts
    return {"side": side, "wall_s": wall, "startup_s": startup, "train_s": wall - startup,
            "peak_rss_mb": usage.ru_maxrss / 1024, **row}


CHILD_OPTIONS = ("case", "clients", "frac", "rounds", "epochs", "local_steps", "batch", "lr", "seed", "threads",
                 "device", "execution", "data_root")
"""What a side's process is told (the driver's own options stay with the driver)."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("fedavg", "dsgd"), default="fedavg")
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--frac", type=float, default=1.0, help="C: fraction of clients per round (fedavg)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5, help="epochs (dsgd)")
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--execution", default="batched", choices=("batched", "sequential"))
    p.add_argument("--schedule-rounds", action="store_true", help="dsgd: wait for every neighbour each round")
    p.add_argument("--data-root", default=os.environ.get("SIMBENCH_DATA"))
    p.add_argument("--only", choices=("simbench", "plain"), default=None)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--child", choices=("plain", "simbench"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not args.data_root or not (Path(args.data_root) / "MNIST").is_dir():
        print("many_clients: MNIST is needed: set SIMBENCH_DATA or --data-root to a folder holding MNIST/",
              file=sys.stderr)
        return 2
    passthrough = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                   if name in CHILD_OPTIONS]
    passthrough += ["--schedule-rounds"] if args.schedule_rounds else []
    sides = [args.only] if args.only else (["plain", "simbench"] if args.case == "fedavg" else ["simbench"])
    rows = []
    for rep in range(args.repeats):
        for side in sides:
            row = measure(side, passthrough)
            row["repeat"] = rep
            rows.append(row)
            print(f"{side:9} wall {row['wall_s']:7.1f} s (start-up {row['startup_s']:5.1f} s, training "
                  f"{row['train_s']:7.1f} s)  peak RSS {row['peak_rss_mb']:7.0f} MiB  final acc {row['final_acc']:.4f}"
                  + (f"  [{row.get('status')}, {row.get('execution')}]" if side == "simbench" else ""), flush=True)
    if set(sides) == {"plain", "simbench"}:
        for rep in range(args.repeats):
            a = next(r for r in rows if r["side"] == "simbench" and r["repeat"] == rep)
            b = next(r for r in rows if r["side"] == "plain" and r["repeat"] == rep)
            print(f"repeat {rep}: simbench / plain loop: training {a['train_s'] / b['train_s']:.2f}x, "
                  f"wall with start-up {a['wall_s'] / b['wall_s']:.2f}x, peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x, "
                  f"accuracy {a['final_acc'] - b['final_acc']:+.4f}")
    if args.case == "dsgd":
        r = rows[-1]
        print(f"memory per node: {r['peak_rss_mb'] / args.clients:.2f} MiB ({r['peak_rss_mb']:.0f} MiB / {args.clients})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
