"""Image grids of generated samples, saved as PNG (the seed's ``save_image(..., nrow=5)``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(n, C, H, W) images in [-1, 1] tiled into one uint8 (H', W', C) array."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    out = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        out[y0:y0 + h, x0:x0 + w, :] = x[k].transpose(1, 2, 0)
    return out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write a PNG grid of ``images`` (values in [-1, 1]), each pixel ``scale``× enlarged."""
    from PIL import Image

    arr = grid_array(images, nrow)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)
    return path
