"""Write the small example population traces under ``topologies/traces/`` (no download).

    python benchmarks/make_traces.py                      # rewrites topologies/traces/*.csv
    python benchmarks/make_traces.py --fetch-fedscale DIR # FedScale's full traces (network)

The examples are synthetic, in simbench's own format (:mod:`simbench.core.population`),
drawn with a fixed seed so the committed files are reproducible byte for byte:

``devices_mobile.csv`` (``node, flops_per_s, up_bps, down_bps``), 1,000 clients calibrated to
what is reported of FedScale's capacity trace: forward latencies log-uniform on 15-200 ms
per sample, turned into FLOP/s so that the geometric-mean device runs at 4 GFLOP/s (the
``phone`` device profile); WiFi bandwidths lognormal around a median of 6.1 Mbit/s with 26 %
under 3 Mbit/s (sigma 1.1), clipped to 0.2-100 Mbit/s, the same up and down as FedScale's one
number. ``availability_churn.csv`` (``node, start_s, end_s, period_s``), 1,000 clients with
online sessions and offline gaps drawn from exponentials (means :data:`ONLINE_S` and
:data:`OFFLINE_S`), repeating every :data:`PERIOD_S` seconds: churn compressed to the
minutes a small MNIST run lasts (FedScale's real sessions are charging periods of hours).

``--fetch-fedscale DIR`` downloads FedScale's ``client_device_capacity`` (500,000 devices)
and ``client_behave_trace`` (107,749 devices) from the FedScale repository, checks their
sha256 against the digests below before keeping them, and prints the population section
that reads them. simbench reads these pickles without running code (see
:func:`simbench.core.population.read_plain_pickle`).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "topologies" / "traces"
CLIENTS = 1000
SEED = 2021
MS_RANGE = (15.0, 200.0)
PHONE_FLOPS = 4e9
MEDIAN_KBPS, SIGMA = 6100.0, 1.1
KBPS_RANGE = (200.0, 100_000.0)
ONLINE_S, OFFLINE_S, PERIOD_S = 240.0, 120.0, 3600.0

FEDSCALE_RAW = "https://raw.githubusercontent.com/SymbioticLab/FedScale/master/benchmark/dataset/data/device_info/"
FEDSCALE_FILES = {
    # sha256 as pinned by a third-party reproduction (CETAS tracesim/setup_data.sh)
    "client_device_capacity": "477f61049443987318fc5667cafa059b3b420eb0e03ccb5ceb3262d20e059e53",
    "client_behave_trace": "d0b6f81a01f0ea5f7ec432583f5afe93b1e72424db4c1affa88c484f15901662",
}


def devices(rng: np.random.Generator, n: int) -> list[tuple[int, float, float, float]]:
    lo, hi = MS_RANGE
    ms = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    ref = PHONE_FLOPS * math.sqrt(lo * hi) / 1000.0  # forward FLOPs per sample of the geometric-mean device
    kbps = np.clip(MEDIAN_KBPS * np.exp(rng.normal(0.0, SIGMA, n)), *KBPS_RANGE)
    return [(i, float(f"{ref * 1000.0 / m:.4g}"), float(f"{k * 1000:.4g}"), float(f"{k * 1000:.4g}"))
            for i, (m, k) in enumerate(zip(ms, kbps))]


def sessions(rng: np.random.Generator, n: int) -> list[tuple[int, float, float, float]]:
    rows = []
    p_on = ONLINE_S / (ONLINE_S + OFFLINE_S)
    for i in range(n):
        t, online = 0.0, bool(rng.random() < p_on)
        while t < PERIOD_S:
            d = float(rng.exponential(ONLINE_S if online else OFFLINE_S))
            end = min(PERIOD_S, round(t + d, 1))
            if online and end > t:
                rows.append((i, round(t, 1), end, PERIOD_S))
            t, online = end, not online
    return rows


def write(path: Path, header: str, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(header + "\n")
        for row in rows:
            f.write(",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(rows)} rows)")


def fetch_fedscale(out: Path, verify: bool = True) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, digest in FEDSCALE_FILES.items():
        dest = out / name
        tmp = dest.with_suffix(".part")
        print(f"downloading {name} ...")
        with urllib.request.urlopen(FEDSCALE_RAW + name, timeout=120) as resp, open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
        got = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if verify and got != digest:
            tmp.unlink()
            print(f"{name}: sha256 {got} differs from the pinned {digest}; not kept "
                  "(--no-verify keeps it)", file=sys.stderr)
            return 1
        tmp.replace(dest)
        print(f"{dest}: sha256 {got}")
    print("population:\n"
          f"  devices: {{trace: {out / 'client_device_capacity'}, format: fedscale}}\n"
          f"  availability: {{trace: {out / 'client_behave_trace'}, format: fedscale}}\n"
          "  mapping: sample")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fetch-fedscale", metavar="DIR", help="download FedScale's full traces into DIR")
    ap.add_argument("--no-verify", action="store_true", help="keep downloaded files whatever their sha256")
    args = ap.parse_args(argv)
    if args.fetch_fedscale:
        return fetch_fedscale(Path(args.fetch_fedscale), verify=not args.no_verify)
    rng = np.random.default_rng(SEED)
    dev_rng, avail_rng = rng.spawn(2)
    write(OUT / "devices_mobile.csv", "node,flops_per_s,up_bps,down_bps", devices(dev_rng, CLIENTS))
    write(OUT / "availability_churn.csv", "node,start_s,end_s,period_s", sessions(avail_rng, CLIENTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
