"""Dataset loaders: torchvision's real data sets and an embedded offline default.

``digits`` (scikit-learn's bundled 8×8 digits) and ``synthetic`` need no network.
``mnist``, ``fashion_mnist`` and ``cifar10`` load through torchvision from a data root:
``root`` argument > ``$SIMBENCH_DATA`` > ``~/.cache/simbench/data``, downloading when
online. A read-only root that holds torchvision's archives (``MNIST/raw/*.gz``) is
copied to a writable cache (``$SIMBENCH_CACHE`` or ``~/.cache/simbench/data``) once, where
torchvision verifies and unpacks it with no network.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic")

_TORCHVISION = {
    # name: (torchvision class name, folder, mean, std)
    "mnist": ("MNIST", "MNIST", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST", (0.2860,), (0.3530,)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DatasetError(ValueError):
    """A data set cannot be found or loaded; one line saying where it looked."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: argument, else $SIMBENCH_DATA, else ~/.cache/simbench/data."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("SIMBENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simbench" / "data"


def _cache_dir() -> Path:
    env = os.environ.get("SIMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simbench" / "data"


def _read_only(path: Path) -> bool:
    # The mode bits, not os.access: root passes os.access on folders meant to stay read-only.
    return not (path.stat().st_mode & stat.S_IWUSR) or not os.access(path, os.W_OK)


def _writable_root(root: Path, folder: str) -> Path:
    """``root`` if torchvision can write there, else a cache holding a copy of its archives."""
    raw = root / folder / "raw"
    if not raw.is_dir() or not _read_only(raw):
        return root
    cache = _cache_dir()
    dest = cache / folder / "raw"
    dest.mkdir(parents=True, exist_ok=True)
    for f in raw.iterdir():
        target = dest / f.name
        if f.is_file() and (not target.exists() or target.stat().st_size != f.stat().st_size):
            shutil.copyfile(f, target)
    return cache


def _subset(n: int, k: int | None, seed: int) -> np.ndarray | None:
    if k is None or k >= n:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _standardise(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)
    mean, std = float(xtr.mean()), float(xtr.std())
    t = lambda a: torch.from_numpy((a - mean) / std).float()  # noqa: E731
    return Dataset("digits", t(xtr), torch.from_numpy(ytr).long(), t(xte), torch.from_numpy(yte).long(), 10)


def _synthetic(seed: int) -> Dataset:
    """Ten Gaussian classes in 20 dimensions: a convex-friendly problem for tests."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, size=(10, 20))
    def draw(n):
        y = rng.integers(0, 10, size=n)
        return (centres[y] + rng.normal(0, 1.0, size=(n, 20))).astype(np.float32), y
    xtr, ytr = draw(4000)
    xte, yte = draw(1000)
    return Dataset("synthetic", torch.from_numpy(xtr), torch.from_numpy(ytr).long(),
                   torch.from_numpy(xte), torch.from_numpy(yte).long(), 10)


def _torchvision(name: str, root: Path, download: bool) -> Dataset:
    import torchvision

    cls_name, folder, mean, std = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    base = _writable_root(root, folder)
    try:
        train = cls(str(base), train=True, download=download)
        test = cls(str(base), train=False, download=download)
    except (RuntimeError, OSError) as exc:
        raise DatasetError(
            f"dataset {name}: not found under {root} ({str(exc).splitlines()[0]}); set dataset.root or SIMBENCH_DATA "
            f"to a folder holding {folder}/"
        ) from None

    def tensors(ds):
        data = torch.as_tensor(np.asarray(ds.data))
        x = data.float().div_(255.0)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        return _standardise(x, mean, std).contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()

    xtr, ytr = tensors(train)
    xte, yte = tensors(test)
    return Dataset(name, xtr, ytr, xte, yte, 10)


@functools.lru_cache(maxsize=8)
def _load_full(name: str, root: str, download: bool, seed: int) -> Dataset:
    if name == "digits":
        return _digits(seed)
    if name == "synthetic":
        return _synthetic(seed)
    return _torchvision(name, Path(root), download)


def load_dataset(name: str, root: str | None = None, *, download: bool = True, seed: int = 0,
                 max_train: int | None = None, max_test: int | None = None) -> Dataset:
    """Load data set ``name`` (see :data:`DATASETS`) as normalised tensors.

    Parameters
    ----------
    name : one of ``DATASETS``
    root : data root for torchvision data sets (see :func:`resolve_root`)
    download : let torchvision download missing files
    seed : seed of the embedded sets' train/test split and of the subsets
    max_train, max_test : keep a seeded random subset of this size
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    full = _load_full(name, str(resolve_root(root)), download, seed if name in ("digits", "synthetic") else 0)
    tr = _subset(len(full.y_train), max_train, seed)
    te = _subset(len(full.y_test), max_test, seed + 1)
    if tr is None and te is None:
        return full
    pick = lambda x, idx: x if idx is None else x[torch.from_numpy(idx)]  # noqa: E731
    return Dataset(full.name, pick(full.x_train, tr), pick(full.y_train, tr), pick(full.x_test, te),
                   pick(full.y_test, te), full.num_classes)
