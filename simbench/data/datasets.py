"""Dataset loaders: torchvision's real data sets and an embedded offline default.

``digits`` (scikit-learn's bundled 8×8 digits) and ``synthetic`` need no network.
``mnist``, ``fashion_mnist`` and ``cifar10`` load through torchvision from a data root:
``root`` argument (``dataset.root``) > ``$SIMBENCH_DATA`` > the cache. A root that holds
torchvision's unpacked files is read in place, even when read-only. simbench never writes
into a root that is not the cache: archives found there (``MNIST/raw/*.gz``) are copied
once to the cache (``$SIMBENCH_CACHE`` or ``~/.cache/simbench/data``), where torchvision
checks their MD5s and unpacks them with no network; a download goes to the cache too.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic")

_TORCHVISION = {
    # name: (torchvision class name, folder under the root, per-channel mean, per-channel std)
    "mnist": ("MNIST", "MNIST", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST", (0.2860,), (0.3530,)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DatasetError(ValueError):
    """A data set cannot be named, found or loaded; the message is one line."""


@dataclass(frozen=True)
class Dataset:
    """Normalised train/test tensors of one data set, shared by every node of a run."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])


# -- roots and the writable cache --------------------------------------------------------
def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root to use.

    Parameters
    ----------
    root : str, path or None
        Explicit root; wins when given.

    Returns
    -------
    Path
        ``root``, else ``$SIMBENCH_DATA``, else ``~/.cache/simbench/data``.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("SIMBENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simbench" / "data"


def _cache_dir() -> Path:
    env = os.environ.get("SIMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simbench" / "data"


def _archives(cls, root: Path, folder: str) -> list[Path]:
    """The archives torchvision would download for ``cls``, where it expects them under ``root``."""
    if hasattr(cls, "resources"):  # the MNIST family: several .gz files in <folder>/raw
        return [root / folder / "raw" / fname for fname, _md5 in cls.resources]
    if hasattr(cls, "filename"):  # CIFAR: one tarball next to its folder
        return [root / cls.filename]
    return []


def _copy_to_cache(files: list[Path], root: Path) -> Path:
    """Copy ``files`` (paths under ``root``) to the writable cache, keeping their layout."""
    cache = _cache_dir()
    for src in files:
        dest = cache / src.relative_to(root)
        if dest.exists() and dest.stat().st_size == src.stat().st_size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # atomic, so a parallel loader never sees half a file
    return cache


def _dirs_under(top: Path) -> list[Path]:
    return [top, *[p for p in top.rglob("*") if p.is_dir()]] if top.is_dir() else []


def _remove_new_empty_dirs(top: Path, before: set[Path]) -> None:
    """Remove the empty folders under ``top`` (and ``top``) that were not there before."""
    for d in sorted(_dirs_under(top), key=lambda p: len(p.parts), reverse=True):
        if d not in before:
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass


# -- tensor conversion -------------------------------------------------------------------
def _standardise_(x: torch.Tensor, mean, std) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x.sub_(torch.tensor(mean, dtype=x.dtype).view(shape)).div_(torch.tensor(std, dtype=x.dtype).view(shape))
    return x


NORMALIZE = ("standard", "unit", "none")
"""Pixel scalings of the built-in image sets (``dataset.normalize``)."""


def _images_to_tensor(data, mean, std, normalize: str = "standard") -> torch.Tensor:
    """uint8 N×H×W or N×H×W×C images to a float32 N×C×H×W tensor, in one go: standardised
    with ``mean``/``std`` of the [0, 1] values, in [0, 1] (``unit``) or raw 0..255 (``none``)."""
    x = torch.as_tensor(np.asarray(data)).to(torch.float32)
    if normalize != "none":
        x.div_(255.0)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return _standardise_(x.contiguous(), mean, std) if normalize == "standard" else x.contiguous()


# -- the loaders -------------------------------------------------------------------------
def _digits(seed: int, normalize: str = "standard") -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None, :, :]  # pixel values are 0..16
    if normalize != "none":
        x = x / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)
    # training statistics only: no test leakage
    mean, std = (float(xtr.mean()), float(xtr.std())) if normalize == "standard" else (0.0, 1.0)

    def t(a):
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    return Dataset("digits", t(xtr), torch.from_numpy(ytr).long(), t(xte), torch.from_numpy(yte).long(), 10)


def _synthetic(seed: int, classes: int = 10, dim: int = 20, n_train: int = 4000, n_test: int = 1000) -> Dataset:
    """Gaussian classes around random centres: a convex-friendly problem for tests."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, size=(classes, dim))

    def draw(n):
        y = rng.integers(0, classes, size=n)
        x = centres[y] + rng.normal(0.0, 1.0, size=(n, dim))
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y).long()

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return Dataset("synthetic", xtr, ytr, xte, yte, classes)


def _open_torchvision(cls, root: Path, folder: str, download: bool):
    """Both splits of ``cls``; reads unpacked files in place, else unpacks or downloads."""
    try:  # already unpacked: works on read-only roots, never goes online
        return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError:
        pass
    archives = _archives(cls, root, folder)
    local = bool(archives) and all(p.is_file() for p in archives)
    base = root
    if root.resolve() != _cache_dir().resolve():  # the user's folder stays as it is
        base = _copy_to_cache(archives, root) if local else _cache_dir()
        try:  # unpacked in the cache by an earlier run
            return cls(str(base), train=True, download=False), cls(str(base), train=False, download=False)
        except RuntimeError:
            pass
    # With every archive at hand, torchvision's "download" only checks MD5s and unpacks.
    fetch = download or local
    return cls(str(base), train=True, download=fetch), cls(str(base), train=False, download=fetch)


def _torchvision(name: str, root: Path, download: bool, normalize: str = "standard") -> Dataset:
    import torchvision

    cls_name, folder, mean, std = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    bases = [root, _cache_dir()]
    before = {d for base in bases for d in _dirs_under(base / folder)}
    try:
        train, test = _open_torchvision(cls, root, folder, download)
    except (RuntimeError, OSError) as exc:
        for base in bases:  # a failed download leaves no empty folders behind
            _remove_new_empty_dirs(base / folder, before)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        how = "download failed" if download else "download is off"
        raise DatasetError(
            f"dataset {name}: no usable {folder}/ under {root} or the cache {_cache_dir()} ({how}: {reason}); "
            f"set dataset.root or SIMBENCH_DATA to a folder holding {folder}/"
        ) from None
    num_classes = len(getattr(train, "classes", ())) or 10
    return Dataset(name, _images_to_tensor(train.data, mean, std, normalize),
                   torch.as_tensor(np.asarray(train.targets)).long(),
                   _images_to_tensor(test.data, mean, std, normalize), torch.as_tensor(np.asarray(test.targets)).long(),
                   num_classes)


Loader = Callable[..., Dataset]
"""``loader(root, *, download, seed) -> Dataset``: how a data set is loaded (see :mod:`simbench.registry`)."""


def _torchvision_loader(name: str) -> Loader:
    def load(root: Path, *, download: bool = True, seed: int = 0, normalize: str = "standard") -> Dataset:
        return _torchvision(name, Path(root), download, normalize)
    load.__doc__ = f"{name} through torchvision (downloaded when online)."
    return load


LOADERS: dict[str, Loader] = {
    "digits": lambda root, *, download=True, seed=0, normalize="standard": _digits(seed, normalize),
    "mnist": _torchvision_loader("mnist"),
    "fashion_mnist": _torchvision_loader("fashion_mnist"),
    "cifar10": _torchvision_loader("cifar10"),
    "synthetic": lambda root, *, download=True, seed=0, normalize="standard": _synthetic(seed),
}
"""The built-in data sets: name -> loader (the built-in ones also take ``normalize``;
``synthetic`` ignores it: its features are drawn as they are)."""


# Converted data sets per (name, root, seed): many nodes and runs in one process share one
# copy. ``download`` is not part of the key: it only decides how a miss may be filled.
_CACHE: OrderedDict[tuple, Dataset] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def _load_full(name: str, loader: Loader, root: Path, download: bool, seed: int, normalize: str = "standard") -> Dataset:
    key = (name, str(root), seed, normalize)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        kw = {"normalize": normalize} if any(loader is v for v in LOADERS.values()) else {}
        data = loader(root, download=download, seed=seed, **kw)
        if not isinstance(data, Dataset):
            raise DatasetError(f"dataset {name}: the loader returned {type(data).__name__}, not a simbench.data.Dataset")
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return data


def _stratified_subset(labels: torch.Tensor, k: int | None, seed: int, what: str) -> torch.Tensor | None:
    """Indices of ``k`` samples whose class shares follow the full set's, seeded; None for all."""
    n = len(labels)
    if k is None or k >= n:
        return None
    if k < 1:
        raise DatasetError(f"{what} must be >= 1, got {k}")
    lab = labels.numpy()
    perm = np.random.default_rng(seed).permutation(n)
    shuffled = lab[perm]
    counts = np.bincount(shuffled)
    starts = np.cumsum(counts) - counts
    by_class = np.argsort(shuffled, kind="stable")
    rank = np.empty(n, dtype=np.float64)
    rank[by_class] = np.arange(n) - np.repeat(starts, counts)
    # Take samples in order of their position within their class, as a fraction of the
    # class: every class is drawn at the same rate, so the subset keeps the proportions.
    quantile = (rank + 0.5) / counts[shuffled]
    chosen = perm[np.argsort(quantile, kind="stable")[:k]]
    return torch.from_numpy(np.sort(chosen))


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = True, seed: int = 0,
                 max_train: int | None = None, max_test: int | None = None, loader: Loader | None = None,
                 normalize: str = "standard") -> Dataset:
    """Load data set ``name`` as float32 tensors.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : str or path, optional
        Data root of the torchvision data sets (see :func:`resolve_root`).
    download : bool
        Let torchvision download missing files (needs network).
    seed : int
        Seed of the embedded sets (``digits`` split, ``synthetic`` draw) and of the subsets.
    max_train, max_test : int, optional
        Keep a seeded, class-stratified subset of this many samples.
    loader : callable, optional
        ``loader(root, *, download, seed) -> Dataset`` for a data set that is not built in
        (see :mod:`simbench.registry`); ``name`` then only labels it.
    normalize : str
        The built-in image sets' pixel scaling, one of :data:`NORMALIZE`: ``standard``
        (minus the training mean, over its std), ``unit`` ([0, 1]), ``none`` (raw values).
        A loader that is not built in scales its own data: only ``standard`` is accepted.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown name, or files missing where download is impossible.
    """
    if loader is None:
        if name not in LOADERS:
            raise DatasetError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
        loader = LOADERS[name]
    if normalize not in NORMALIZE:
        raise DatasetError(f"dataset.normalize: unknown {normalize!r}; allowed: {', '.join(NORMALIZE)}")
    if normalize != "standard" and not any(loader is v for v in LOADERS.values()):
        raise DatasetError(f"dataset.normalize: {normalize} applies to the built-in data sets; {name}'s own loader "
                           f"scales its data (leave normalize: standard)")
    full = _load_full(name, loader, resolve_root(root), download, seed if name not in _TORCHVISION else 0, normalize)
    tr = _stratified_subset(full.y_train, max_train, seed, "max_train")
    te = _stratified_subset(full.y_test, max_test, seed + 1, "max_test")
    if tr is None and te is None:
        return full

    def pick(t, idx):
        return t if idx is None else t[idx]

    return Dataset(full.name, pick(full.x_train, tr), pick(full.y_train, tr), pick(full.x_test, te),
                   pick(full.y_test, te), full.num_classes)
