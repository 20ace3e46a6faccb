"""Every registered algorithm, briefly, on one torch device: does the whole path run there?

Each algorithm runs a tiny config on the embedded digits data (classifiers with an MLP and
one with the CNN, GANs with a narrow LSGAN), a few simulated seconds each, with
``device`` set to what ``--device`` asks. A row per case: finished or the error's last line,
simulated and wall seconds, and the run's quality (test accuracy or generator FID). The
exit status is 1 if any case failed, so a GPU session can run it as its smoke check:

    python benchmarks/device_check.py --device cuda          # on a machine with a GPU
    python benchmarks/device_check.py --only dsgd,fegan     # a quick CPU run
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

from simbench.algorithms import ALGORITHMS
from simbench.experiment.config import parse_config
from simbench.experiment.run import run_experiment

CLASSIFIER = {
    "seed": 0, "nodes": 6, "topology": {"kind": "ring"},
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.1, "eval_samples": 300},
    "network": {"latency": "5ms", "bandwidth": "100Mbit/s"},
    "compute": {"step_time": "10ms"},
    "output": {"wall_clock": False, "plot": False, "progress": False},
}
GAN = {"latent_dim": 16, "lr": 0.002, "fid_batch": 100, "grid": 16}
GAN_BASE = {**CLASSIFIER, "nodes": 5, "topology": {"kind": "star"},
            "model": {"name": "lsgan", "options": {"width": 16, "bn_eps": 1e-5}},
            "train": {"epochs": 2, "batch_size": 32}}

# name -> (changes to the base, base); every registered algorithm needs a row (checked below).
CASES: dict[str, tuple[dict, dict]] = {
    "dsgd": ({}, CLASSIFIER),
    "dsgd_cnn": ({"algorithm": "dsgd", "nodes": 4, "model": {"name": "cnn"}, "train": {**CLASSIFIER["train"], "epochs": 1}},
                 CLASSIFIER),
    "fedavg": ({"topology": {"kind": "star"}}, CLASSIFIER),
    "ps_sync": ({"topology": {"kind": "star"}}, CLASSIFIER),
    "ps_sync_shards": ({"algorithm": {"name": "ps_sync", "shards": 2}, "nodes": 7, "topology": {"kind": "star", "hubs": 2}},
                       CLASSIFIER),
    "ps_async": ({"topology": {"kind": "star"}, "algorithm": {"name": "ps_async", "compression": "adacomp"}}, CLASSIFIER),
    "ps_async_shards": ({"algorithm": {"name": "ps_async", "shards": 2, "compression": "adacomp"}, "nodes": 7,
                         "topology": {"kind": "star", "hubs": 2}}, CLASSIFIER),
    "gossip": ({}, CLASSIFIER),
    "admm": ({}, CLASSIFIER),
    "pdmm": ({}, CLASSIFIER),
    "admm_isvr": ({}, CLASSIFIER),
    "pdmm_isvr": ({}, CLASSIFIER),
    "cadmm": ({}, CLASSIFIER),
    "ako": ({"topology": {"kind": "complete"}, "algorithm": {"name": "ako", "P": 2}}, CLASSIFIER),
    "gan_single": ({"nodes": 1, "topology": {"kind": "complete"}}, GAN_BASE),
    "flgan": ({"algorithm": {"name": "flgan", **GAN, "frac_workers": 0.5, "local_steps": 3}}, GAN_BASE),
    "fegan": ({"algorithm": {"name": "fegan", **GAN, "frac_workers": 0.5, "local_steps": 3}}, GAN_BASE),
    "mdgan": ({"algorithm": {"name": "mdgan", **GAN}}, GAN_BASE),
    "degan": ({"nodes": 3, "topology": {"kind": "complete"},
               "algorithm": {"name": "degan", **GAN, "P": 2, "ssp_bound": 1, "batches": 3}}, GAN_BASE),
    "lipizzaner": ({"nodes": 4, "topology": {"kind": "complete"},
                    "algorithm": {"name": "lipizzaner", **GAN, "batches": 2, "fitness_samples": 32,
                                  "es_generations": 2}}, GAN_BASE),
}


def config(name: str, device: str) -> dict:
    changes, base = CASES[name]
    return {**base, "name": f"device_{name}", "algorithm": name, **changes, "device": device}


def algorithm_of(name: str) -> str:
    algo = config(name, "cpu")["algorithm"]
    return algo["name"] if isinstance(algo, dict) else algo


missing = set(ALGORITHMS) - {algorithm_of(name) for name in CASES}
assert not missing, f"device_check has no case for {sorted(missing)}"


def check(name: str, device: str, out: str) -> dict:
    t0 = time.perf_counter()
    try:
        res = run_experiment(parse_config(config(name, device)), out)
    except Exception as exc:  # noqa: BLE001 -- a row per case, whatever broke
        return {"case": name, "status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                "sim_s": math.nan, "wall_s": time.perf_counter() - t0, "quality": ""}
    fid = res.final("fid", "avg")
    quality = f"FID {fid:.0f}" if fid == fid else f"acc {res.final('test_acc', 'avg'):.3f}"
    status = res.status if res.status == "finished" else f"{res.status}: {str(res.error or '').splitlines()[:1]}"
    return {"case": name, "status": status, "sim_s": res.sim_time, "wall_s": time.perf_counter() - t0,
            "quality": quality}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--only", help="comma-separated cases (default: all): " + ", ".join(CASES))
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"device_check: --only: unknown case(s) {', '.join(unknown)}; allowed: {', '.join(CASES)}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("device_check: --device cuda but no CUDA GPU is available", file=sys.stderr)
            return 2
        print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    failed = 0
    with tempfile.TemporaryDirectory() as out:
        for name in names:
            row = check(name, args.device, out)
            failed += row["status"] != "finished"
            print(f"{row['case']:<16} {row['status']:<10} sim {row['sim_s']:7.2f}s  wall {row['wall_s']:6.1f}s  "
                  f"{row['quality']}", flush=True)
    print(f"{len(names) - failed}/{len(names)} cases finished on {args.device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
