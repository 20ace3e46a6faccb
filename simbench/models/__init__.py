"""Model registry: name -> builder, and ``build_model`` with seeded initialisation."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from .classifiers import cnn, cnn_fedavg, logistic, mlp, resnet_gn

MODELS: dict[str, Callable[..., nn.Module]] = {"logistic": logistic, "mlp": mlp, "cnn": cnn, "cnn_fedavg": cnn_fedavg,
                                               "resnet_gn": resnet_gn}


def build_model(name: str, input_shape: tuple, num_classes: int, *, seed: int | None = None,
                factory: Callable[..., nn.Module] | None = None, **kw) -> nn.Module:
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
    factory : callable, optional
        ``factory(input_shape, num_classes, **kw)`` for a model that is not built in (see
        :mod:`simbench.registry`); ``name`` then only labels it.
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
    if factory is None:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
        factory = MODELS[name]
    check_options(name, factory, kw, skip=("input_shape", "num_classes"))
    # Initialisers draw from the global generator; fork it so a seeded build leaves the
    # caller's random stream untouched.
    if seed is None:
        model = factory(tuple(input_shape), num_classes, **kw)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = factory(tuple(input_shape), num_classes, **kw)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_options(name: str, factory: Callable, options: dict, skip: tuple[str, ...], what: str = "model") -> None:
    """ValueError naming the allowed options when ``options`` holds a keyword ``factory`` lacks."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p in params if p not in skip]
    for key in options:
        if key not in allowed:
            raise ValueError(f"{what} {name} has no option {key!r}; allowed: {', '.join(allowed) or 'none'}")


__all__ = ["MODELS", "build_model", "check_options"]
