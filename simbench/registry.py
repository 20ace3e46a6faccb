"""Names of algorithms, models and data sets: built in, installed, or given by import path.

A config names each of the three by a string, resolved here in this order:

1. **Built in**: the explicit registries :data:`simbench.algorithms.ALGORITHMS`,
   :data:`simbench.models.MODELS` (classifiers) and :data:`simbench.gan.GAN_MODELS` (GAN
   pairs), and :data:`simbench.data.datasets.LOADERS`.
2. **Installed**: an entry point of an installed distribution in the group
   ``simbench.algorithms``, ``simbench.models`` or ``simbench.datasets``; its name is the
   entry point's name::

       [project.entry-points."simbench.algorithms"]
       fedprox = "mypkg.algos:FedProx"

3. **Import path** ``package.module:object``, e.g. ``algorithm: {name: mypkg.algos:FedProx}``.
   The module is looked up on ``sys.path`` and then in the current directory (as ``python -m``
   does), so a ``fedprox.py`` next to where you run ``simbench`` is found as ``fedprox:FedProx``.
   Importing runs the module's code, so a config is as trusted as the code it names.

What each object must be:

* an algorithm: a subclass of :class:`simbench.core.node.Algorithm` with a ``Params``
  dataclass and ``make_node``;
* a model factory: ``factory(input_shape, num_classes, **options) -> torch.nn.Module`` for
  classifier algorithms, ``factory(input_shape, latent_dim=..., **options) -> (generator,
  discriminator, loss)`` with ``loss`` ``"lsgan"`` or ``"bce"`` for GAN algorithms;
* a data set loader: ``loader(root, *, download, seed) -> simbench.data.Dataset``.

A name that does not resolve, or resolves to the wrong kind of object, is one
:class:`~simbench.core.schema.ConfigError` line naming the field and what is allowed.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, Callable

from .core.schema import ConfigError, suggest

KINDS = ("algorithms", "models", "datasets")
GROUPS = {kind: f"simbench.{kind}" for kind in KINDS}
FIELDS = {"algorithms": "algorithm", "models": "model.name", "datasets": "dataset.name"}
WHAT = {"algorithms": "an Algorithm subclass", "models": "a model factory (a callable)",
        "datasets": "a data set loader (a callable)"}


@dataclass(frozen=True)
class Entry:
    """One resolvable name: its object and where it comes from."""

    name: str
    obj: Any
    source: str
    """``simbench``, ``entry point of <distribution>`` or ``import path``."""

    @property
    def summary(self) -> str:
        text = getattr(self.obj, "summary", "") or (inspect.getdoc(self.obj) or "").split("\n")[0]
        return text.strip()


def _builtins(kind: str) -> dict[str, Any]:
    if kind == "algorithms":
        from .algorithms import ALGORITHMS
        return dict(ALGORITHMS)
    if kind == "models":
        from .gan.models import GAN_MODELS
        from .models import MODELS
        return {**MODELS, **GAN_MODELS}
    from .data.datasets import LOADERS
    return dict(LOADERS)


def builtin_names(kind: str) -> tuple[str, ...]:
    return tuple(_builtins(kind))


def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    eps = metadata.entry_points(group=GROUPS[kind])
    return {ep.name: ep for ep in eps}


def _check(kind: str, name: str, obj: Any) -> Any:
    """``obj`` if it is the right kind of object for ``kind``, else a one-line ConfigError."""
    field = FIELDS[kind]
    if kind == "algorithms":
        from .core.node import Algorithm
        ok = isinstance(obj, type) and issubclass(obj, Algorithm) and hasattr(obj, "Params") and obj is not Algorithm
    else:
        ok = callable(obj) and not isinstance(obj, type(inspect))
    if not ok:
        raise ConfigError(f"{field}: {name!r} is {type(obj).__name__} {obj!r:.60}, not {WHAT[kind]}")
    return obj


def _import(kind: str, path: str) -> Any:
    module, _, attr = path.partition(":")
    field = FIELDS[kind]
    if not module or not attr:
        raise ConfigError(f"{field}: {path!r} is not an import path; write package.module:object")
    cwd = os.getcwd()
    if cwd not in sys.path:  # after everything else: a local file never shadows an installed module
        sys.path.append(cwd)
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix, in one line
        raise ConfigError(f"{field}: cannot import {module!r} for {path!r} ({type(exc).__name__}: {exc})") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{field}: module {module!r} has no {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj


def resolve(kind: str, name: str) -> Entry:
    """The entry ``name`` stands for in ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown registry {kind!r}; allowed: {', '.join(KINDS)}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{FIELDS[kind]}: expected a name, got {name!r}")
    return _resolve(kind, name)


def clear_cache() -> None:
    """Forget resolved names (after installing a package, or changing sys.path, in one process)."""
    _resolve.cache_clear()


@lru_cache(maxsize=None)
def _resolve(kind: str, name: str) -> Entry:
    builtins = _builtins(kind)
    if name in builtins:
        return Entry(name, builtins[name], "simbench")
    eps = _entry_points(kind)
    if name in eps:
        ep = eps[name]
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{FIELDS[kind]}: entry point {name!r} ({ep.value}) does not load "
                              f"({type(exc).__name__}: {exc})") from None
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        return Entry(name, _check(kind, name, obj), f"entry point of {dist}")
    if ":" in name:
        return Entry(name, _check(kind, name, _import(kind, name)), "import path")
    allowed = [*builtins, *eps]
    raise ConfigError(f"{FIELDS[kind]}: {name!r} is not allowed; allowed: {', '.join(allowed)}, or an import path "
                      f"like mypkg.module:object{suggest(name, allowed)}")


def algorithm(name: str):
    """The Algorithm class ``name`` stands for."""
    return resolve("algorithms", name).obj


def model(name: str) -> Callable:
    """The model factory ``name`` stands for."""
    return resolve("models", name).obj


def dataset(name: str) -> Callable:
    """The data set loader ``name`` stands for."""
    return resolve("datasets", name).obj


def catalogue(kind: str) -> list[Entry]:
    """Every listed name of ``kind``: built-in ones, then installed entry points (an entry
    point that fails to load is listed with the error as its source)."""
    out = [Entry(n, o, "simbench") for n, o in _builtins(kind).items()]
    for name, ep in sorted(_entry_points(kind).items()):
        if any(e.name == name for e in out):
            continue
        try:
            out.append(resolve(kind, name))
        except ConfigError as exc:
            out.append(Entry(name, None, f"broken entry point: {exc}"))
    return out


def label(name: str) -> str:
    """A short, path-safe label of a name (``mypkg.algos:FedProx`` -> ``FedProx``) for run ids."""
    short = name.rsplit(":", 1)[-1].rsplit(".", 1)[-1] if ":" in name else name
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in short).strip(".") or "x"
