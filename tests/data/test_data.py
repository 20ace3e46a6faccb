"""Data sets and partitioners: real loading paths and partition invariants."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simbench.data import DatasetError, load_dataset, resolve_root
from simbench.data import partition as P


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops on a busy 2-core box: one intra-op thread avoids stalls waiting for a
    descheduled OpenMP worker (seen at 100x slower), and results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

from simhelpers import MNIST_ROOT as SHARED  # noqa: E402


def test_digits_is_embedded_and_normalised():
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    assert abs(float(d.x_train.mean())) < 1e-4 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert sorted(torch.unique(d.y_test).tolist()) == list(range(10))


def test_subsets_are_seeded_and_stratified():
    a = load_dataset("digits", max_train=100, max_test=50, seed=3)
    b = load_dataset("digits", max_train=100, max_test=50, seed=3)
    c = load_dataset("digits", max_train=100, max_test=50, seed=4)
    assert len(a.y_train) == 100 and len(a.y_test) == 50 and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.y_train, c.y_train) or not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train, minlength=10).tolist() == [10] * 10  # digits is balanced
    assert torch.bincount(a.y_test, minlength=10).tolist() == [5] * 10
    full = load_dataset("digits", seed=3)
    assert load_dataset("digits", max_train=10**6, seed=3) is full  # nothing to cut: the shared copy


def test_synthetic_is_seeded_and_flat():
    a, b = load_dataset("synthetic", seed=1), load_dataset("synthetic", seed=1)
    assert a.x_train.shape == (4000, 20) and a.x_test.shape == (1000, 20) and a.input_shape == (20,)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, load_dataset("synthetic", seed=2).x_train)


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason=f"no MNIST archives at {SHARED}/MNIST/raw")
def test_mnist_from_the_shared_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE", str(tmp_path))
    d = load_dataset("mnist", str(SHARED))
    assert d.x_train.shape == (60000, 1, 28, 28) and len(d.y_test) == 10000
    assert int((d.y_train == 0).sum()) == 5923  # the known MNIST label histogram
    assert abs(float(d.x_train.mean())) < 0.01 and abs(float(d.x_train.std()) - 1) < 0.01


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(),
                    reason=f"no FashionMNIST archives at {SHARED}/FashionMNIST/raw")
def test_fashion_mnist_archives_are_unpacked_in_a_cache(tmp_path, monkeypatch):
    # The shared root is read-only and holds only .gz files: they are copied to the cache
    # and unpacked there; the root itself is left alone.
    monkeypatch.setenv("SIMBENCH_CACHE", str(tmp_path))
    raw = SHARED / "FashionMNIST" / "raw"
    before = sorted(p.name for p in raw.iterdir())
    d = load_dataset("fashion_mnist", str(SHARED), download=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and len(d.y_test) == 10000
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert sorted(p.name for p in raw.iterdir()) == before


def test_unknown_dataset_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE", str(tmp_path / "cache"))  # an empty cache: nothing to fall back on
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; allowed: digits"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="set dataset.root or SIMBENCH_DATA") as err:
        load_dataset("fashion_mnist", str(tmp_path / "empty"), download=False)
    assert str(tmp_path / "empty") in str(err.value) and "\n" not in str(err.value)


def test_resolve_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMBENCH_DATA", str(tmp_path))
    assert resolve_root("/x") == Path("/x") and resolve_root(None) == tmp_path
    monkeypatch.delenv("SIMBENCH_DATA")
    assert resolve_root(None) == Path.home() / ".cache" / "simbench" / "data"


labels_st = st.lists(st.integers(0, 9), min_size=40, max_size=300).map(np.array)


def _check_disjoint(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == len(set(allidx.tolist()))
    assert allidx.min() >= 0 and allidx.max() < n


@settings(max_examples=50, deadline=None)
@given(labels_st, st.integers(1, 8), st.integers(0, 1000))
def test_iid_is_an_exact_split(labels, n, seed):
    parts = P.iid(labels, n, np.random.default_rng(seed))
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == len(labels)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    again = P.iid(labels, n, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(0, 1000))
def test_k_classes_gives_k_distinct_labels(k, seed):
    labels = np.repeat(np.arange(10), 30)
    n = 10  # n*k is a multiple of 10 classes
    parts = P.k_classes(labels, n, k, np.random.default_rng(seed))
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == len(labels)
    assert all(len(np.unique(labels[p])) == k for p in parts)
    assert {len(p) for p in parts} == {len(labels) // n}  # balanced classes: equal shards


@st.composite
def k_class_cases(draw):
    """Uneven classes, each with at least n samples, so k distinct classes per node is possible."""
    n = draw(st.integers(1, 12))
    sizes = draw(st.lists(st.integers(n, n + 30), min_size=2, max_size=10))
    k = draw(st.integers(1, len(sizes)))
    labels = np.random.default_rng(draw(st.integers(0, 99))).permutation(np.repeat(np.arange(len(sizes)), sizes))
    return labels, n, k, draw(st.integers(0, 1000))


@settings(max_examples=60, deadline=None)
@given(k_class_cases())
def test_k_classes_exact_k_and_coverage_in_general(case):
    labels, n, k, seed = case
    parts = P.k_classes(labels, n, k, np.random.default_rng(seed))
    _check_disjoint(parts, len(labels))
    assert len(parts) == n and all(np.array_equal(p, np.sort(p)) for p in parts)
    assert all(len(np.unique(labels[p])) == k for p in parts)
    num_classes = len(np.unique(labels))
    if n * k >= num_classes:  # every class, hence every sample, is used
        assert sum(map(len, parts)) == len(labels)
    else:
        assert len(np.unique(labels[np.concatenate(parts)])) == n * k
    again = P.k_classes(labels, n, k, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@settings(max_examples=40, deadline=None)
@given(labels_st, st.integers(1, 6), st.integers(0, 20), st.integers(0, 100))
def test_cap_per_class_is_respected(labels, n, cap, seed):
    parts = P.iid(labels, n, np.random.default_rng(seed))
    capped = P.cap_per_class(parts, labels, cap)
    hist, before = P.class_histogram(capped, labels, 10), P.class_histogram(parts, labels, 10)
    assert (hist == np.minimum(before, cap)).all()
    assert all(set(c.tolist()) <= set(p.tolist()) for c, p in zip(capped, parts))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.floats(0.01, 0.9), st.integers(0, 100))
def test_split_val_is_disjoint_and_non_empty(n, frac, seed):
    idx = np.arange(100, 100 + n)
    tr, va = P.split_val(idx, frac, np.random.default_rng(seed))
    assert not set(tr.tolist()) & set(va.tolist()) and len(tr) + len(va) == n
    if n >= 2:
        assert len(tr) >= 1 and len(va) >= 1


@settings(max_examples=30, deadline=None)
@given(labels_st, st.integers(2, 6), st.floats(0.1, 10), st.integers(0, 100))
def test_dirichlet_uses_every_sample_once(labels, n, alpha, seed):
    parts = P.dirichlet(labels, n, alpha, np.random.default_rng(seed))
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == len(labels) and min(map(len, parts)) >= 1
    again = P.dirichlet(labels, n, alpha, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_dirichlet_gives_up_with_a_clear_error():
    with pytest.raises(ValueError, match="could not give each of 50 nodes 5 samples"):
        P.dirichlet(np.zeros(60, dtype=int), 50, 0.01, np.random.default_rng(0), min_size=5, max_tries=20)


def test_dirichlet_small_alpha_is_skewed():
    labels = np.repeat(np.arange(10), 200)
    hist = P.class_histogram(P.dirichlet(labels, 8, 0.1, np.random.default_rng(0)), labels, 10)
    share = hist.max(axis=1) / hist.sum(axis=1)
    assert share.mean() > 0.4  # iid would be ~0.1


def test_cap_per_class_and_shards_and_val_split():
    labels = np.repeat(np.arange(10), 60)
    capped = P.cap_per_class(P.iid(labels, 4, np.random.default_rng(0)), labels, 5)
    assert P.class_histogram(capped, labels, 10).max() == 5
    shards = P.shards_of(np.zeros(1200, dtype=int), 50, 10)  # seed 002: 24 files -> 2 per worker
    assert [len(s) for s in shards] == [100] * 10 and shards[3][0] == 300
    tr, va = P.split_val(np.arange(100), 0.1, np.random.default_rng(0))
    assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)


def test_partition_dispatch_errors():
    with pytest.raises(ValueError, match="unknown partition 'zipf'; allowed: iid, dirichlet, k_classes, shards"):
        P.partition(np.zeros(10, dtype=int), 2, "zipf", np.random.default_rng(0))
    with pytest.raises(ValueError, match="partition iid takes no parameters, not alpha"):
        P.partition(np.zeros(10, dtype=int), 2, "iid", np.random.default_rng(0), alpha=1)
    with pytest.raises(ValueError, match="partition k_classes takes k, not classes"):
        P.partition(np.zeros(10, dtype=int), 2, "k_classes", np.random.default_rng(0), classes=1)
    labels = np.repeat(np.arange(4), 10)
    parts = P.partition(labels, 4, "k_classes", np.random.default_rng(0), k=1)
    hist = P.class_histogram(parts, labels, 4)
    assert (hist.sum(axis=0) == 10).all() and ((hist > 0).sum(axis=1) == 1).all()
