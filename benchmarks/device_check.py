"""Every registered algorithm, briefly, on one torch device: does the whole path run there?

Each algorithm runs its own example config (the tiny config of
:func:`simbench.testing.check_algorithm`: the algorithm's ``example`` over its workload's
base, on the embedded digits data) with ``device`` set to what ``--device`` asks. A row
per algorithm: finished or the error's last line, simulated and wall seconds, and the
run's quality. The exit status is 1 if any case failed, so a GPU session can run it as
its smoke check:

    python benchmarks/device_check.py --device cuda          # on a machine with a GPU
    python benchmarks/device_check.py --only dsgd,fegan      # a quick CPU run
    python benchmarks/device_check.py --set model.name=cnn --only dsgd,ps_async
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import yaml

from simbench import registry
from simbench.experiment.config import parse_config, set_path
from simbench.experiment.run import run_experiment
from simbench.testing import example_config


def cases() -> list[str]:
    """Every algorithm simbench knows: built in and installed by entry points."""
    return [e.name for e in registry.catalogue("algorithms") if e.obj is not None]


def config(name: str, device: str, sets: list[str] = ()) -> dict:
    cfg = example_config(name, {"device": device})
    cfg["name"] = f"device_{registry.label(name)}"
    for item in sets:
        key, _, raw = item.partition("=")
        set_path(cfg, key.strip(), yaml.safe_load(raw))
    return cfg


def check(name: str, device: str, out: str, sets: list[str] = ()) -> dict:
    t0 = time.perf_counter()
    try:
        cfg = parse_config(config(name, device, sets))
        res = run_experiment(cfg, out)
    except Exception as exc:  # noqa: BLE001 -- a row per case, whatever broke
        return {"case": name, "status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                "sim_s": math.nan, "wall_s": time.perf_counter() - t0, "quality": ""}
    quality = cfg.workload_class().headline(res.final)
    status = res.status if res.status == "finished" else f"{res.status}: {str(res.error or '').splitlines()[:1]}"
    return {"case": name, "status": status, "sim_s": res.sim_time, "wall_s": time.perf_counter() - t0,
            "quality": quality}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device of every run")
    p.add_argument("--only", help="comma-separated algorithms (default: all): " + ", ".join(cases()))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every case's config, e.g. model.name=cnn")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else cases()
    unknown = [n for n in names if n not in cases()]
    if unknown:
        print(f"device_check: --only: unknown case(s) {', '.join(unknown)}; allowed: {', '.join(cases())}",
              file=sys.stderr)
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
            row = check(name, args.device, out, args.sets)
            failed += row["status"] != "finished"
            print(f"{row['case']:<16} {row['status']:<10} sim {row['sim_s']:7.2f}s  wall {row['wall_s']:6.1f}s  "
                  f"{row['quality']}", flush=True)
    print(f"{len(names) - failed}/{len(names)} cases finished on {args.device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
