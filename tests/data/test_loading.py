"""Loading paths of :mod:`simbench.data.datasets` on a tiny fake MNIST, with no real data.

The fake MNIST is written as torchvision expects it (idx files: big-endian magic 2051 or
2049, the sizes, then uint8 values; ``<root>/MNIST/raw/<name>`` unpacked, ``<name>.gz``
archives). A test subclass *named* ``MNIST`` (torchvision derives the folder from the class
name) checks the fake archives' MD5s and downloads from a mirror served on 127.0.0.1 (a
``file://`` URL does not do: torchvision reads the response's ``length``), so the real
check/unpack/download code runs offline. Every test runs in a working directory holding a
decoy ``None/MNIST`` with other data: a path that is lost on the way (``str(None)``) reads
the decoy and shows up as wrong values.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision

import simbench.data.datasets as D
from simbench.data import Dataset, DatasetError, load_dataset, resolve_root

N_TRAIN, N_TEST, ROWS, COLS = 30, 10, 28, 28
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MEAN, STD = 0.1307, 0.3081


def _fake(offset: int, label_of) -> dict[str, np.ndarray]:
    def images(n, base):
        i, r, c = np.meshgrid(np.arange(n), np.arange(ROWS), np.arange(COLS), indexing="ij")
        return ((base + 7 * i + 3 * r + 5 * c) % 256).astype(np.uint8)

    return {"x_train": images(N_TRAIN, offset), "y_train": np.array([label_of(i) for i in range(N_TRAIN)], np.uint8),
            "x_test": images(N_TEST, offset + 101), "y_test": np.array([label_of(3 * i + 1) for i in range(N_TEST)], np.uint8)}


REAL = _fake(0, lambda i: i % 10)  # train labels 0..9 three times, test labels 1, 4, 7, 0, ...
DECOY = _fake(50, lambda i: 7)  # what a lost path (``None/MNIST`` in the working directory) would read


def _idx(data: dict[str, np.ndarray]) -> dict[str, bytes]:
    def img(x):
        return struct.pack(">IIII", 2051, *x.shape) + x.tobytes()

    def lab(y):
        return struct.pack(">II", 2049, len(y)) + y.tobytes()

    return dict(zip(NAMES, (img(data["x_train"]), lab(data["y_train"]), img(data["x_test"]), lab(data["y_test"]))))


RAW = _idx(REAL)
GZ = {name + ".gz": gzip.compress(b, mtime=0) for name, b in RAW.items()}
RESOURCES = [(name, hashlib.md5(b).hexdigest()) for name, b in GZ.items()]


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, b in files.items():
        (folder / name).write_bytes(b)


def _tree(top: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``top``, by relative path."""
    return {str(p.relative_to(top)): (p.read_bytes() if p.is_file() else None) for p in top.rglob("*")} \
        if top.exists() else {}


def _mnist(mirror: str, **attrs):
    attrs = {"resources": RESOURCES, "mirrors": [mirror], **attrs}
    return type("MNIST", (torchvision.datasets.MNIST,), attrs)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The URL of a local HTTP server holding the fake archives (``<url>missing/`` is empty)."""
    folder = tmp_path_factory.mktemp("mirror")
    _write(folder / "mnist", GZ)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch, mirror):
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    _write(cwd / "None" / "MNIST" / "raw", _idx(DECOY))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SIMBENCH_CACHE", str(cache))
    monkeypatch.delenv("SIMBENCH_DATA", raising=False)
    for var in ("no_proxy", "NO_PROXY"):  # the mirror is local even behind a proxy
        monkeypatch.setenv(var, "127.0.0.1")
    monkeypatch.setattr(torchvision.datasets, "MNIST", _mnist(mirror + "mnist/"))
    D._CACHE.clear()
    yield SimpleNamespace(cache=cache, mirror=mirror + "mnist/", broken=mirror + "missing/", root=tmp_path / "root")
    D._CACHE.clear()


def _expected(x: np.ndarray, normalize: str) -> torch.Tensor:
    t = torch.from_numpy(x.astype(np.float32))[:, None]
    if normalize == "none":
        return t
    t = t / 255.0
    return t if normalize == "unit" else (t - MEAN) / STD


def _check(d: Dataset, normalize: str = "standard", data=REAL) -> None:
    """``d`` is the fake MNIST: shapes, the right split in each half, pixel values, labels."""
    assert d.name == "mnist" and d.num_classes == 10 and d.input_shape == (1, ROWS, COLS)
    assert d.x_train.shape == (N_TRAIN, 1, ROWS, COLS) and d.x_test.shape == (N_TEST, 1, ROWS, COLS)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == data["y_train"].tolist() and d.y_test.tolist() == data["y_test"].tolist()
    assert torch.allclose(d.x_train, _expected(data["x_train"], normalize), rtol=0, atol=1e-6)
    assert torch.allclose(d.x_test, _expected(data["x_test"], normalize), rtol=0, atol=1e-6)


# -- torchvision: where the files come from ---------------------------------------------
@pytest.mark.parametrize("normalize", ["standard", "unit", "none"])
def test_unpacked_files_are_read_in_place(env, normalize):
    _write(env.root / "MNIST" / "raw", RAW)
    before = _tree(env.root)
    d = load_dataset("mnist", env.root, download=False, normalize=normalize)
    _check(d, normalize)
    assert d.x_train.is_contiguous() and d.x_test.is_contiguous()
    assert _tree(env.root) == before and not env.cache.exists()  # nothing written anywhere


def test_unpacked_files_with_download_on_are_still_read_in_place(env):
    _write(env.root / "MNIST" / "raw", RAW)
    before = _tree(env.root)
    _check(load_dataset("mnist", str(env.root), download=True))
    assert _tree(env.root) == before and not env.cache.exists()


def test_archives_are_copied_to_the_cache_and_unpacked_there(env, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST", _mnist(env.broken))  # all is at hand: no download
    _write(env.root / "MNIST" / "raw", GZ)
    before = _tree(env.root)
    _check(load_dataset("mnist", env.root, download=False))
    assert _tree(env.root) == before  # the user's folder stays as it is
    cached = _tree(env.cache / "MNIST" / "raw")
    assert {k: cached[k] for k in GZ} == GZ and {k: cached[k] for k in RAW} == RAW
    # Again, archives still in the root: the copies are kept, the unpacked cache is read.
    D._CACHE.clear()
    _check(load_dataset("mnist", env.root, download=False, normalize="unit"), "unit")
    assert _tree(env.cache / "MNIST" / "raw") == cached and _tree(env.root) == before
    # The root's archives gone: the cache alone serves.
    shutil.rmtree(env.root / "MNIST")
    D._CACHE.clear()
    _check(load_dataset("mnist", env.root, download=False, normalize="none"), "none")


def test_a_root_that_is_the_cache_is_unpacked_in_place(env, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE", str(env.root))
    monkeypatch.setattr(torchvision.datasets, "MNIST", _mnist(env.broken))
    _write(env.root / "MNIST" / "raw", GZ)
    _check(load_dataset("mnist", env.root, download=False))
    raw = _tree(env.root / "MNIST" / "raw")
    assert {k: raw[k] for k in RAW} == RAW and not env.cache.exists()


def test_a_download_lands_in_the_cache(env):
    env.root.mkdir()
    _check(load_dataset("mnist", env.root))  # download is on by default
    assert _tree(env.root) == {}
    cached = _tree(env.cache / "MNIST" / "raw")
    assert {k: cached[k] for k in GZ} == GZ and {k: cached[k] for k in RAW} == RAW


def test_the_builtin_loader_downloads_and_standardises_by_default(env):
    assert D.LOADERS["mnist"].__doc__ == "mnist through torchvision (downloaded when online)."
    loader = D._torchvision_loader("mnist")  # made here, not at import: a fresh one
    assert loader.__doc__ == "mnist through torchvision (downloaded when online)."
    with pytest.raises(DatasetError, match=r"\(download is off: "):
        loader(env.root, download=False)
    _check(loader(str(env.root)))
    assert {k: _tree(env.cache / "MNIST" / "raw")[k] for k in RAW} == RAW
    _write(env.root / "MNIST" / "raw", RAW)
    D._CACHE.clear()
    _check(loader(env.root, download=False, normalize="unit"), "unit")


def test_torchvision_standardises_by_default(env):
    _write(env.root / "MNIST" / "raw", RAW)
    _check(D._torchvision("mnist", env.root, False))


def _message(root: Path, cache: Path, how: str) -> str:
    return (f"dataset mnist: no usable MNIST/ under {root} or the cache {cache} ({how}); "
            f"set dataset.root or SIMBENCH_DATA to a folder holding MNIST/")


def test_nothing_anywhere_with_download_off_is_one_line_and_leaves_no_folders(env):
    # The mirror works: an error shows that no download was tried.
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", env.root, download=False)
    assert str(err.value) == _message(env.root, env.cache, "download is off: Dataset not found. "
                                      "You can use download=True to download it")
    assert not env.root.exists() and not env.cache.exists()


def test_a_failed_download_says_why_and_removes_only_its_new_folders(env, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST", _mnist(env.broken))
    keep = env.cache / "MNIST" / "old"  # an empty folder that was there before stays
    keep.mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", env.root, download=True)
    assert str(err.value) == _message(env.root, env.cache,
                                      "download failed: Error downloading train-images-idx3-ubyte.gz:")
    assert keep.is_dir() and _tree(env.cache / "MNIST") == {"old": None} and not env.root.exists()


def test_a_failed_download_into_a_fresh_cache_leaves_no_folder(env, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST", _mnist(env.broken))
    with pytest.raises(DatasetError, match=r"\(download failed: Error downloading "):
        load_dataset("mnist", env.root)
    assert not (env.cache / "MNIST").exists() and not env.root.exists()


def test_an_error_without_a_message_is_named_by_its_type(env, monkeypatch):
    class MNIST(torchvision.datasets.MNIST):
        def __init__(self, *args, **kwargs):
            raise PermissionError()

    monkeypatch.setattr(torchvision.datasets, "MNIST", MNIST)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", env.root, download=False)
    assert str(err.value) == _message(env.root, env.cache, "download is off: PermissionError")


@pytest.mark.parametrize("classes, expected", [(["a", "b", "c", "d", "e"], 5), ([], 10)])
def test_num_classes_follows_the_class_list(env, monkeypatch, classes, expected):
    monkeypatch.setattr(torchvision.datasets, "MNIST", _mnist(env.mirror, classes=classes))
    _write(env.root / "MNIST" / "raw", RAW)
    assert load_dataset("mnist", env.root, download=False).num_classes == expected


def test_each_root_has_its_own_cached_copy_shared_across_seeds(env, tmp_path):
    _write(env.root / "MNIST" / "raw", RAW)
    other = tmp_path / "other"
    _write(other / "MNIST" / "raw", _idx(DECOY))
    a = load_dataset("mnist", env.root, download=False, seed=1)
    assert load_dataset("mnist", env.root, download=False, seed=2) is a  # no seed in torchvision sets
    assert list(D._CACHE) == [("mnist", str(env.root), 0, "standard")]
    _check(load_dataset("mnist", other, download=False), data=DECOY)
    assert load_dataset("mnist", env.root, download=False, normalize="unit") is not a


# -- the cache copy and folder clean-up --------------------------------------------------
def test_copy_to_cache_keeps_same_sized_files_and_replaces_others(env, tmp_path):
    root = tmp_path / "src"
    _write(root / "a", {"same": b"new1", "other": b"new22", "absent": b"abc"})
    _write(env.cache / "a", {"same": b"old1", "other": b"o"})
    files = [root / "a" / "same", root / "a" / "other", root / "a" / "absent"]
    assert D._copy_to_cache(files, root) == env.cache
    assert _tree(env.cache) == {"a": None, "a/same": b"old1", "a/other": b"new22", "a/absent": b"abc"}


def test_archives_are_where_torchvision_wants_them(tmp_path):
    assert D._archives(torchvision.datasets.MNIST, tmp_path, "MNIST") == [
        tmp_path / "MNIST" / "raw" / name for name, _ in torchvision.datasets.MNIST.resources]
    assert D._archives(torchvision.datasets.CIFAR10, tmp_path, "cifar-10-batches-py") == [
        tmp_path / "cifar-10-python.tar.gz"]
    assert D._archives(object, tmp_path, "x") == []


def test_remove_new_empty_dirs_keeps_old_and_full_folders(tmp_path):
    top = tmp_path / "top"
    (top / "old").mkdir(parents=True)
    before = set(D._dirs_under(top))
    assert before == {top, top / "old"}
    (top / "new" / "deeper" / "deepest").mkdir(parents=True)
    (top / "full" / "x").mkdir(parents=True)
    (top / "full" / "f").write_bytes(b"1")
    D._remove_new_empty_dirs(top, before)
    assert _tree(top) == {"old": None, "full": None, "full/f": b"1"}
    assert D._dirs_under(tmp_path / "nothing") == []


# -- tensor conversion -------------------------------------------------------------------
def test_colour_images_become_channels_first():
    data = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3) * 2  # N, H, W, C
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    unit = torch.from_numpy(data.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    x = D._images_to_tensor(data, mean, std)  # standard by default
    assert x.shape == (2, 3, 3, 4) and x.is_contiguous()
    want = (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, want, rtol=0, atol=1e-6)
    assert torch.equal(D._images_to_tensor(data, mean, std, "unit"), unit)
    raw = D._images_to_tensor(data, mean, std, "none")
    assert raw.shape == (2, 3, 3, 4) and raw[1, 2, 0, 3].item() == data[1, 0, 3, 2] == 2 * (36 + 9 + 2)


def test_standardise_works_at_the_tensors_precision():
    x = D._standardise_(torch.zeros(2, 1, 2, 2, dtype=torch.float64), (MEAN,), (STD,))
    assert x.dtype == torch.float64 and (x == -MEAN / STD).all()


# -- the embedded sets -------------------------------------------------------------------
def _digits_split(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    return train_test_split(d.images.astype(np.float32)[:, None], d.target, test_size=0.2, random_state=seed,
                            stratify=d.target)


@pytest.mark.parametrize("normalize", ["none", "unit", "standard"])
def test_digits_values(normalize):
    xtr, xte, ytr, yte = _digits_split(3)
    d = D._digits(3, normalize)
    assert d.name == "digits" and d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert len(d.y_train) == 1437 and len(d.y_test) == 360
    assert d.y_train.tolist() == ytr.tolist() and d.y_test.tolist() == yte.tolist()
    if normalize == "none":
        assert torch.equal(d.x_train, torch.from_numpy(xtr)) and float(d.x_train.max()) == 16.0
        assert torch.equal(d.x_test, torch.from_numpy(xte))
    elif normalize == "unit":
        assert torch.equal(d.x_train, torch.from_numpy(xtr / 16)) and float(d.x_train.max()) == 1.0
        assert torch.equal(d.x_test, torch.from_numpy(xte / 16))
    else:
        assert abs(float(d.x_train.mean())) < 1e-5 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-3)
        m, s = float((xtr / 16).mean()), float((xtr / 16).std())  # training statistics only, in float32
        assert torch.equal(d.x_train, torch.from_numpy((xtr / 16 - m) / s))
        assert torch.equal(d.x_test, torch.from_numpy((xte / 16 - m) / s))
        assert float(d.x_test.mean()) != pytest.approx(0.0, abs=1e-4)


def test_digits_defaults_and_seeds():
    a = D._digits(3)
    assert abs(float(a.x_train.mean())) < 1e-5 and float(a.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(a.x_train, D._digits(3).x_train) and torch.equal(a.y_test, D._digits(3).y_test)
    assert not torch.equal(a.y_train, D._digits(4).y_train)
    assert load_dataset("digits") is load_dataset("digits", seed=0)
    assert float(load_dataset("digits", normalize="none").x_train.max()) == 16.0


def test_synthetic_follows_its_recipe():
    rng = np.random.default_rng(5)
    centres = rng.normal(0.0, 1.5, size=(10, 20))
    want = []
    for n in (4000, 1000):
        y = rng.integers(0, 10, size=n)
        want += [centres[y] + rng.normal(0.0, 1.0, size=(n, 20)), y]
    d = D._synthetic(5)
    assert d.name == "synthetic" and d.num_classes == 10 and d.input_shape == (20,)
    assert d.x_train.shape == (4000, 20) and d.x_test.shape == (1000, 20) and d.x_train.dtype == torch.float32
    assert torch.equal(d.x_train, torch.from_numpy(want[0].astype(np.float32))) and d.y_train.tolist() == want[1].tolist()
    assert torch.equal(d.x_test, torch.from_numpy(want[2].astype(np.float32))) and d.y_test.tolist() == want[3].tolist()
    assert torch.bincount(d.y_train).tolist() == np.bincount(want[1]).tolist() and len(torch.bincount(d.y_train)) == 10
    assert torch.equal(D._synthetic(5).x_train, d.x_train) and not torch.equal(D._synthetic(6).x_train, d.x_train)


# -- load_dataset: subsets, custom loaders, the in-process cache ------------------------
def _toy(labels_train, labels_test, name="toy"):
    def t(labels):
        return torch.arange(len(labels), dtype=torch.float32)[:, None], torch.tensor(labels)

    return Dataset(name, *t(labels_train), *t(labels_test), 3)


TOY = _toy([0] * 60 + [1] * 30 + [2] * 10, [2] * 8 + [0] * 24 + [1] * 8)


class Recorder:
    """A custom loader (no ``normalize`` keyword) that notes its calls."""

    def __init__(self, data=TOY):
        self.calls, self.data = [], data

    def __call__(self, root, *, download, seed):
        self.calls.append((root, download, seed))
        return self.data


def _reference_subset(labels, k, seed):
    """The stratified subset written out: within each class, samples in the order of the
    seeded permutation are at quantiles (j + 0.5) / class size; the k lowest are kept, ties
    going to the earlier place in the permutation."""
    labels = np.asarray(labels)
    perm = np.random.default_rng(seed).permutation(len(labels))
    size, seen, keyed = Counter(labels.tolist()), Counter(), []
    for place, i in enumerate(perm.tolist()):
        c = int(labels[i])
        keyed.append(((seen[c] + 0.5) / size[c], place, i))
        seen[c] += 1
    return sorted(i for _, _, i in sorted(keyed)[:k])


def test_subsets_are_stratified_seeded_and_exact(tmp_path):
    d = load_dataset("toy", tmp_path, loader=Recorder(), max_train=10, max_test=5, seed=3)
    assert d.name == "toy" and d.num_classes == 3
    assert torch.bincount(d.y_train).tolist() == [6, 3, 1] and len(d.y_test) == 5
    assert d.x_train[:, 0].long().tolist() == _reference_subset(TOY.y_train, 10, 3)
    assert d.x_test[:, 0].long().tolist() == _reference_subset(TOY.y_test, 5, 4)  # the test draw uses seed + 1
    assert torch.equal(d.y_train, TOY.y_train[d.x_train[:, 0].long()])
    again = load_dataset("toy", tmp_path, loader=Recorder(), max_train=10, max_test=5, seed=3)
    assert torch.equal(again.x_test, d.x_test) and torch.equal(again.x_train, d.x_train)


@pytest.mark.parametrize("sizes", [None, (75, 75, 75, 75), (30, 90, 90, 90)])
@pytest.mark.parametrize("seed", range(3))
def test_subsets_match_the_written_out_rule(seed, sizes):
    # Random class sizes, then sizes where quantiles tie across classes (equal sizes, or a
    # size ratio of 3): which of the tied samples is kept is the permutation's order.
    rng = np.random.default_rng(100 + seed)
    labels = torch.from_numpy(rng.choice(4, size=300, p=[0.4, 0.3, 0.2, 0.1]) if sizes is None
                              else rng.permutation(np.repeat(np.arange(4), sizes)))
    for k in (1, 7, 50, 149, 299):
        got = D._stratified_subset(labels, k, seed, "max_train")
        assert got.tolist() == _reference_subset(labels, k, seed)


def test_one_sided_and_whole_subsets(tmp_path):
    d = load_dataset("toy", tmp_path, loader=Recorder(), max_train=4)
    assert len(d.y_train) == 4 and d.x_train.shape == (4, 1) and d.x_test is TOY.x_test and d.y_test is TOY.y_test
    e = load_dataset("toy", tmp_path, loader=Recorder(), max_test=1)
    assert e.x_train is TOY.x_train and e.x_test.shape == (1, 1) and len(e.y_test) == 1
    assert load_dataset("toy", tmp_path, loader=Recorder(), max_train=100, max_test=40) is TOY  # nothing to cut
    assert len(load_dataset("toy", tmp_path, loader=Recorder(), max_train=99).y_train) == 99


@pytest.mark.parametrize("kw, msg", [({"max_train": 0}, "max_train must be >= 1, got 0"),
                                     ({"max_test": -2}, "max_test must be >= 1, got -2")])
def test_subset_sizes_below_one_are_refused(tmp_path, kw, msg):
    with pytest.raises(DatasetError) as err:
        load_dataset("toy", tmp_path, loader=Recorder(), **kw)
    assert str(err.value) == msg


def test_names_and_normalize_are_checked():
    with pytest.raises(DatasetError) as err:
        load_dataset("imagenet")
    assert str(err.value) == "unknown dataset 'imagenet'; allowed: digits, mnist, fashion_mnist, cifar10, synthetic"
    with pytest.raises(DatasetError) as err:
        load_dataset("digits", normalize="bogus")
    assert str(err.value) == "dataset.normalize: unknown 'bogus'; allowed: standard, unit, none"
    with pytest.raises(DatasetError) as err:
        load_dataset("toy", loader=Recorder(), normalize="unit")
    assert str(err.value) == ("dataset.normalize: unit applies to the built-in data sets; toy's own loader "
                              "scales its data (leave normalize: standard)")


def test_a_custom_loader_gets_root_download_and_seed_and_is_cached(tmp_path):
    rec = Recorder()
    assert load_dataset("toy", tmp_path, loader=rec, download=False, seed=5, normalize="standard") is TOY
    assert load_dataset("toy", tmp_path, loader=rec, download=True, seed=5) is TOY
    assert rec.calls == [(tmp_path, False, 5)]  # download is not part of the key
    load_dataset("toy", tmp_path, loader=rec, download=True, seed=6)
    assert rec.calls[1] == (tmp_path, True, 6) and rec.calls[1][1] is True
    assert [type(c[0]) for c in rec.calls] == [type(tmp_path)] * 2


def test_a_custom_loader_must_return_a_dataset(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("toy", tmp_path, loader=Recorder({"x": 1}))
    assert str(err.value) == "dataset toy: the loader returned dict, not a simbench.data.Dataset"
    assert not D._CACHE


def test_the_cache_keeps_the_most_recently_used(tmp_path):
    rec = Recorder()
    size = D._CACHE_SIZE
    first = [load_dataset(f"s{i}", tmp_path, loader=rec) for i in range(size)]
    assert len(D._CACHE) == size and len(rec.calls) == size
    assert load_dataset("s0", tmp_path, loader=rec) is first[0] and len(rec.calls) == size  # s0: used last
    load_dataset("new", tmp_path, loader=rec)
    assert [k[0] for k in D._CACHE] == [f"s{i}" for i in range(2, size)] + ["s0", "new"]
    load_dataset("s0", tmp_path, loader=rec)
    load_dataset("new", tmp_path, loader=rec)
    assert len(rec.calls) == size + 1  # s0 and new were kept
    load_dataset("s1", tmp_path, loader=rec)
    assert len(rec.calls) == size + 2  # s1 was dropped


def test_load_full_keys_by_normalize_standard_by_default(tmp_path):
    d = D._load_full("digits", D.LOADERS["digits"], tmp_path, True, 0)
    assert list(D._CACHE) == [("digits", str(tmp_path), 0, "standard")]
    assert abs(float(d.x_train.mean())) < 1e-5 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert D._load_full("digits", D.LOADERS["digits"], tmp_path, True, 0, "none") is not d


# -- roots -------------------------------------------------------------------------------
def test_resolve_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = tmp_path / "home" / ".cache" / "simbench" / "data"
    assert resolve_root(None) == default and resolve_root("") == default
    monkeypatch.setenv("SIMBENCH_DATA", "")  # empty counts as unset
    assert resolve_root(None) == default
    monkeypatch.setenv("SIMBENCH_DATA", "~/data")
    assert resolve_root(None) == tmp_path / "home" / "data" and resolve_root("") == tmp_path / "home" / "data"
    assert resolve_root("~/mine") == tmp_path / "home" / "mine" and resolve_root(tmp_path) == tmp_path


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMBENCH_CACHE", "~/c")
    assert D._cache_dir() == tmp_path / "home" / "c"
    monkeypatch.delenv("SIMBENCH_CACHE")
    assert D._cache_dir() == tmp_path / "home" / ".cache" / "simbench" / "data"
    monkeypatch.setenv("SIMBENCH_CACHE", "")
    assert D._cache_dir() == tmp_path / "home" / ".cache" / "simbench" / "data"
