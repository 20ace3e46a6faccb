"""Model registry: name -> builder, and ``build_model`` with seeded initialisation."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from .classifiers import cnn, logistic, mlp, resnet_gn

MODELS: dict[str, Callable[..., nn.Module]] = {"logistic": logistic, "mlp": mlp, "cnn": cnn, "resnet_gn": resnet_gn}


def build_model(name: str, input_shape: tuple, num_classes: int, *, seed: int | None = None, **kw) -> nn.Module:
    """Build architecture ``name``; the same ``seed`` gives the same initial weights
    without touching the global random state."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    fn = MODELS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("input_shape", "num_classes")]
    for key in kw:
        if key not in allowed:
            raise ValueError(f"model {name} has no option {key!r}; allowed: {', '.join(allowed)}")
    if seed is None:
        return fn(tuple(input_shape), num_classes, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(tuple(input_shape), num_classes, **kw)


__all__ = ["MODELS", "build_model"]
