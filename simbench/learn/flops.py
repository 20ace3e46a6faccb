"""FLOPs of a training step, counted once with ``FlopCounterMode`` and cached on disk.

The cost model charges a step's FLOPs ÷ the node's device speed, so every learner needs
its step's FLOP count. ``torch.utils.flop_counter.FlopCounterMode`` counts them exactly,
but its first use in a process imports ``torch._dynamo`` (a dispatch mode's handler is
wrapped in ``torch._disable_dynamo``): about 2.5 s on a laptop-class CPU, longer than the
whole quickstart's training. The count depends only on the model's code and shapes, so it
is kept in a small JSON file and a later run skips the counter altogether.

The key holds everything the count depends on: the source code of every module class in
the model (an edited ``forward`` is a new key), the parameter shapes, the input shape,
dtype and batch size, what the step does (the caller's ``what``) and the torch version.
A class whose source cannot be read (defined in a REPL) is counted in every process.

The cache is ``$SIMBENCH_CACHE_DIR/flops.json`` (default ``$XDG_CACHE_HOME/simbench``,
else ``~/.cache/simbench``); ``SIMBENCH_CACHE_DIR=off`` turns it off. It is written by
atomic rename, so parallel matrix workers never see half a file (one of two racing
writers' new entries may be lost, and is counted again next time).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..core.files import write_atomic

_MEMORY: dict[str, float] = {}


def cache_path() -> Path | None:
    """The cache file, or None when caching on disk is off."""
    root = os.environ.get("SIMBENCH_CACHE_DIR")
    if root is not None and root.strip().lower() in ("", "off", "0", "none"):
        return None
    if root is None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "simbench")
    return Path(root) / "flops.json"


@functools.lru_cache(maxsize=None)
def _class_source(cls: type) -> str | None:
    """A class's source (parsing its file costs ~10 ms: once per class and process)."""
    try:
        return f"{cls.__module__}.{cls.__qualname__}\n{inspect.getsource(cls)}"
    except (OSError, TypeError):
        return None


def _code_digest(modules: Iterable[torch.nn.Module]) -> str | None:
    """A digest of the source of every module class used, or None if one cannot be read."""
    classes = sorted({type(m) for root in modules for m in root.modules()}, key=lambda c: (c.__module__, c.__qualname__))
    h = hashlib.sha1()
    for cls in classes:
        src = _class_source(cls)
        if src is None:
            return None
        h.update(src.encode())
    return h.hexdigest()[:16]


def step_flops(modules: list[torch.nn.Module], what: tuple, count: Callable[[], float]) -> float:
    """FLOPs of the step ``count`` measures, from the cache when it has them.

    Parameters
    ----------
    modules : list of nn.Module
        The networks the step runs (their classes' code and parameter shapes enter the key).
    what : tuple
        Everything else the count depends on: input shape, batch size, loss, step kind.
    count : callable
        Counts the FLOPs (with ``FlopCounterMode``) when the cache has no entry.
    """
    digest = _code_digest(modules)
    shapes = [[list(p.shape) for p in m.parameters()] for m in modules]
    key = json.dumps([torch.__version__.split("+")[0], digest, shapes, [str(w) for w in what]], separators=(",", ":"))
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_path() if digest is not None else None
    stored = _read(path)
    if key in stored:
        _MEMORY[key] = float(stored[key])
        return _MEMORY[key]
    _MEMORY[key] = flops = float(count())
    if path is not None:
        stored = _read(path)  # another process may have added entries meanwhile
        stored[key] = flops
        _write(path, stored)
    return flops


def _read(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    try:
        write_atomic(path, json.dumps(data, indent=0, sort_keys=True))
    except OSError:  # a read-only home: counting again next time is the only cost
        pass
