"""Fidelity: simulated vs real time to finish, and bytes per node, for the same config.

Two workloads, each run (a) in the simulator and (b) as real processes, one per Linux
network namespace on a bridge:

* ``dsgd``: DSGD on a ring of 4 (``swap_timeout: null``: a fixed set of messages);
* ``fedavg``: FedAvg, a server and 4 clients on a star, a fixed number of rounds and local steps.

The network is the same in both: a one-way delay per message (``--delay``) and each
host's upload limited to ``--rate``. In the namespaces the rate is a kernel ``tbf``
qdisc on every host's egress; the delay is ``tc netem`` where the kernel has netem,
otherwise the real runtime's own link-delay layer (the config's ``network.latency``).
The simulator gets ``latency = delay``, ``uplink = rate`` x TCP goodput (1448/1514: tbf
counts frame headers, the simulator message bytes) and ``compute.flops_per_s``
calibrated here: FLOPs of one training step / the measured wall time of one step, with
as many processes stepping at once as the workload has training nodes (they share this
machine's cores, as the real nodes do).

    sudo python benchmarks/fidelity.py [--delay 20ms] [--rate 50Mbit/s] [--epochs 4] [--rounds 6]

Prints, per workload: simulated and real time to finish and to reach a target accuracy
(the mean of the reporting nodes' test accuracy at an epoch end, timed when the last of
them got there: real runs write no average-model rows without snapshots), their ratios
(target 0.85-1.15), and the bytes every node sent in each mode (must be equal).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MODEL = {"name": "mlp", "options": {"hidden": [256, 256]}}
BASE = {
    "seed": 0, "dataset": {"name": "digits", "partition": "iid", "val_fraction": 0.0},
    "model": MODEL, "train": {"batch_size": 32, "lr": 0.05, "eval_samples": 200},
    "output": {"plot": False, "progress": False},
}


# accuracy each workload is timed to: reached after about three quarters of its default run
TARGETS = {"dsgd": 0.70, "fedavg": 0.85}


def workloads(epochs: int, rounds: int, local_steps: int) -> dict[str, tuple[dict, int]]:
    """name -> (config, number of nodes that compute at the same time)."""
    dsgd = {**BASE, "name": "fidelity-dsgd", "nodes": 4, "topology": {"kind": "ring"},
            "algorithm": {"name": "dsgd", "swap_timeout": None}, "train": {**BASE["train"], "epochs": epochs}}
    fedavg = {**BASE, "name": "fidelity-fedavg", "nodes": 5, "topology": {"kind": "star"},
              "algorithm": {"name": "fedavg", "rounds": rounds, "local_steps": local_steps}}
    return {"dsgd": (dsgd, 4), "fedavg": (fedavg, 4)}


# -- calibration ------------------------------------------------------------------------
def step_time(config: dict, steps: int = 200) -> tuple[float, float]:
    """(seconds per training step, FLOPs per step) of node 1's learner, one torch thread."""
    import torch

    from simbench.experiment.config import parse_config
    from simbench.experiment.build import build_nodes

    torch.set_num_threads(1)
    cfg = parse_config(config)
    learner = build_nodes(cfg, only=1).contexts[1].learner
    for _ in range(10):
        learner.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        learner.train_step()
    return (time.perf_counter() - t0) / steps, learner.flops_per_step()


def calibrate(config: dict, parallel: int) -> dict:
    """Step time measured in ``parallel`` processes at once (the real run's contention)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--calibrate-worker", f.name], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(parallel)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    os.unlink(f.name)
    seconds = sum(r[0] for r in results) / len(results)
    flops = results[0][1]
    single = step_time(config)[0]
    return {"flops_per_step": flops, "step_s": seconds, "step_s_alone": single, "flops_per_s": flops / seconds}


# -- the two modes ----------------------------------------------------------------------
# tbf meters whole Ethernet frames; the simulator meters message bytes. A full TCP segment
# carries 1448 payload bytes in a 1514-byte frame (timestamps on), so messages get this share.
GOODPUT = 1448 / 1514


def network_block(delay: float, rate: float) -> dict:
    return {"latency": delay, "bandwidth": "inf", "uplink": rate * GOODPUT, "downlink": "inf"}


def time_to_target(epochs, target: float) -> float:
    """First epoch end at which the nodes' mean test accuracy reaches ``target`` (nan: never)."""
    import pandas as pd
    rows = epochs[(epochs["node"].astype(str) != "avg") & pd.notna(epochs["test_acc"])]
    per_epoch = rows.groupby("epoch").agg(acc=("test_acc", "mean"), time_s=("time_s", "max")).sort_index()
    hit = per_epoch[per_epoch["acc"] >= target]
    return float(hit["time_s"].iloc[0]) if len(hit) else float("nan")


def simulate(config: dict, out: Path, target: float) -> tuple[float, float, list[int]]:
    from simbench.experiment.config import parse_config
    from simbench.experiment.run import run_experiment

    import torch
    torch.set_num_threads(1)  # simulated time does not depend on it; wall time on a busy box does
    res = run_experiment(parse_config(config), out, progress=False)
    ev = res.events
    done = ev[ev["metric"] == "bytes_sent_total"]
    return (float(done["time_s"].max()), time_to_target(res.epochs, target),
            [int(v) for v in done.sort_values("node")["value"]])


def real(config: dict, out: Path, delay: float, rate: float, target: float) -> tuple[float, float, list[int]]:
    from simbench.experiment.config import parse_config
    from simbench.experiment.distributed import netns
    from simbench.experiment.distributed.launch import node_command, supervise
    from simbench.experiment.distributed.merge import merge

    n = config["nodes"]
    cfg = parse_config(config)
    cfg_path = out / f"{config['name']}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    key = out / "key"
    key.write_text(secrets.token_hex(32))
    with netns.Hosts(n, subnet=78) as hosts:
        native = netns.has_netem()
        hosts.rate(rate)
        if native:
            hosts.delay(delay)
        flags = ["--hosts", str(hosts.hosts_file(out / "hosts.yaml")), "--key-file", str(key), "--threads", "1",
                 "--no-snapshots", *(["--native-network"] if native else [])]
        run_dir = out / "real" / cfg.name / cfg.run_id()
        cmds = {k: [*hosts.exec(k), *node_command(str(cfg_path), [], out / "real", [*flags, "--node-id", str(k)])]
                for k in range(n)}
        outcomes = supervise(cmds, {k: {**os.environ, "OMP_NUM_THREADS": "1"} for k in range(n)}, run_dir, timeout=300)
    bad = [o for o in outcomes if o.status != "finished"]
    if bad:
        raise SystemExit(f"real run failed: {bad}")
    merge(run_dir, cfg, outcomes, avg=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    import pandas as pd
    ev = pd.read_csv(run_dir / "events.csv")
    finish = float(ev[ev["metric"] == "bytes_sent_total"]["time_s"].max())
    reach = time_to_target(pd.read_csv(run_dir / "epochs.csv", dtype={"node": str}), target)
    return finish, reach, [n["bytes_sent"] for n in manifest["nodes"]]


def main() -> None:
    from simbench.core.units import parse_bandwidth, parse_duration
    from simbench.experiment.distributed import netns

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", default="20ms")
    ap.add_argument("--rate", default="50Mbit/s")
    ap.add_argument("--epochs", type=int, default=4, help="DSGD epochs")
    ap.add_argument("--rounds", type=int, default=6, help="FedAvg rounds")
    ap.add_argument("--local-steps", type=int, default=20, help="FedAvg local steps per round")
    ap.add_argument("--only", choices=("dsgd", "fedavg"), default=None)
    ap.add_argument("--calibrate-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.calibrate_worker:
        print(json.dumps(step_time(yaml.safe_load(Path(args.calibrate_worker).read_text()))))
        return
    why = netns.unavailable()
    if why:
        raise SystemExit(f"fidelity: {why}")
    delay, rate = parse_duration(args.delay), parse_bandwidth(args.rate)
    print(f"network: {args.delay} one-way delay, {args.rate} upload per host "
          f"({'netem' if netns.has_netem() else 'delay injected by the runtime; no netem in this kernel'} + tbf); "
          f"{os.cpu_count()} cores")
    rows = []
    for name, (config, parallel) in workloads(args.epochs, args.rounds, args.local_steps).items():
        if args.only and name != args.only:
            continue
        cal = calibrate(config, parallel)
        config = {**config, "network": network_block(delay, rate), "compute": {"flops_per_s": cal["flops_per_s"]}}
        target = TARGETS[name]
        with tempfile.TemporaryDirectory() as tmp:
            sim_t, sim_reach, sim_bytes = simulate(config, Path(tmp) / "sim", target)
            real_t, real_reach, real_bytes = real(config, Path(tmp), delay, rate, target)
        rows.append((name, cal, sim_t, real_t, sim_bytes, real_bytes, sim_reach, real_reach))
        print(f"\n{name}: {config['nodes']} nodes; one step {cal['flops_per_step'] / 1e6:.1f} MFLOP, "
              f"{cal['step_s'] * 1e3:.2f} ms with {parallel} stepping at once ({cal['step_s_alone'] * 1e3:.2f} ms alone) "
              f"-> compute.flops_per_s = {cal['flops_per_s']:.3g}")
        print(f"  time to finish: simulated {sim_t:.3f} s, real {real_t:.3f} s, real/sim = {real_t / sim_t:.3f}")
        print(f"  time to {target:.0%} accuracy: simulated {sim_reach:.3f} s, real {real_reach:.3f} s, "
              f"real/sim = {real_reach / sim_reach:.3f}")
        print(f"  bytes per node: simulated {sim_bytes}")
        print(f"                  real      {real_bytes}  ({'equal' if sim_bytes == real_bytes else 'DIFFERENT'})")
    ok = all(0.85 <= r[3] / r[2] <= 1.15 and 0.85 <= r[7] / r[6] <= 1.15 and r[4] == r[5] for r in rows)
    print(f"\n{'PASS' if ok else 'MISS'}: target real/sim within 15% (finish and target accuracy) and equal bytes")


if __name__ == "__main__":
    main()
