"""Model registry: name -> builder, and ``build_model`` with seeded initialisation."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from .classifiers import cnn, logistic, mlp, resnet_gn

MODELS: dict[str, Callable[..., nn.Module]] = {"logistic": logistic, "mlp": mlp, "cnn": cnn, "resnet_gn": resnet_gn}


def build_model(name: str, input_shape: tuple, num_classes: int, *, seed: int | None = None, **kw) -> nn.Module:
    """Build classifier ``name`` with seeded initial weights.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    input_shape : tuple
        Shape of one sample, e.g. ``Dataset.input_shape``.
    num_classes : int
    seed : int, optional
        Same seed, same initial weights; the global random state is left as it was.
        None draws from the global state.
    **kw
        The architecture's options (e.g. ``hidden`` for ``mlp``, ``depth`` for ``resnet_gn``).

    Returns
    -------
    nn.Module

    Raises
    ------
    ValueError
        Unknown name or option (one line naming the allowed ones), or a bad option value.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    fn = MODELS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("input_shape", "num_classes")]
    for key in kw:
        if key not in allowed:
            raise ValueError(f"model {name} has no option {key!r}; allowed: {', '.join(allowed)}")
    if seed is None:
        return fn(tuple(input_shape), num_classes, **kw)
    # Initialisers draw from the global generator; fork it so a seeded build leaves the
    # caller's random stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return fn(tuple(input_shape), num_classes, **kw)


__all__ = ["MODELS", "build_model"]
