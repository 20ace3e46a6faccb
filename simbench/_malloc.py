"""Tune glibc's allocator and OpenMP for training loops before the interpreter does real work.

PyTorch on CPU allocates fresh multi-megabyte activations and parameter copies every step;
glibc serves these with ``mmap`` and hands them back at once, so every step pays page
faults again (measured here: memory-bound tensor ops 3-5x slower, big-batch throughput
halved). Keeping freed memory in the heap fixes it. OpenMP threads that spin while they
wait for work compete with everything else on a small machine (the quickstart took 7-100 s
instead of 1-3 s next to another busy process); ``OMP_WAIT_POLICY=PASSIVE`` lets them sleep
(a value you set yourself is kept). glibc and OpenMP read these variables only at start-up,
so the CLI re-executes itself once with them set.
"""

from __future__ import annotations

import os
import sys

MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "536870912",
}


def reexec_with_malloc_env() -> None:
    """Re-exec this process with MALLOC_ENV set (Linux only; no-op once set or if disabled)."""
    if not sys.platform.startswith("linux") or os.environ.get("SIMBENCH_NO_MALLOC_TUNING"):
        return
    wanted = {**MALLOC_ENV, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    env = {**os.environ, **wanted}
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # carry on untuned rather than fail
