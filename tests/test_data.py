"""Data sets and partitioners: real loading paths and partition invariants."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simbench.data import DatasetError, load_dataset
from simbench.data import partition as P

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_digits_is_embedded_and_normalised():
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    assert abs(float(d.x_train.mean())) < 1e-4 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert sorted(torch.unique(d.y_test).tolist()) == list(range(10))


def test_subsets_are_seeded():
    a = load_dataset("digits", max_train=100, max_test=50, seed=3)
    b = load_dataset("digits", max_train=100, max_test=50, seed=3)
    assert len(a.y_train) == 100 and torch.equal(a.y_train, b.y_train)


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason="shared/data/MNIST not present")
def test_mnist_from_a_read_only_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE", str(tmp_path))
    d = load_dataset("mnist", str(SHARED))
    assert d.x_train.shape == (60000, 1, 28, 28) and len(d.y_test) == 10000
    assert int((d.y_train == 0).sum()) == 5923  # the known MNIST label histogram


def test_unknown_dataset_and_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; allowed: digits"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="set dataset.root or SIMBENCH_DATA"):
        load_dataset("fashion_mnist", str(tmp_path / "empty"), download=False)


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


@settings(max_examples=30, deadline=None)
@given(labels_st, st.integers(2, 6), st.floats(0.1, 10), st.integers(0, 100))
def test_dirichlet_uses_every_sample_once(labels, n, alpha, seed):
    parts = P.dirichlet(labels, n, alpha, np.random.default_rng(seed))
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == len(labels) and min(map(len, parts)) >= 1


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
