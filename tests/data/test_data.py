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


def _class_sets(parts, labels):
    return [frozenset(np.unique(labels[p]).tolist()) for p in parts]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1000))
def test_shards_is_mcmahans_pathological_split(seed):
    """Two shards per client: at most 2 classes each (every class size a multiple of the shard
    size, so no shard straddles two), every image used exactly once, reproducible per seed."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), 60))
    parts = P.shards(labels, 20, np.random.default_rng(seed), shards_per_client=2)  # 40 shards of 15
    _check_disjoint(parts, len(labels))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    assert all(len(p) == 30 for p in parts)
    assert all(1 <= len(c) <= 2 for c in _class_sets(parts, labels))
    for p in parts:  # each shard is 15 images of one class
        counts = np.bincount(labels[p], minlength=10)
        assert set(counts[counts > 0].tolist()) <= {15, 30}
    again = P.shards(labels, 20, np.random.default_rng(seed), shards_per_client=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_shards_are_dealt_at_random_across_seeds():
    labels = np.repeat(np.arange(10), 300)  # 100 clients x 2 shards of 15
    sets = [_class_sets(P.shards(labels, 100, np.random.default_rng(s)), labels) for s in range(3)]
    assert sets[0] != sets[1] != sets[2]
    # random deals, not the fixed pairs (0,5), (1,6), ... of a strided deal: many distinct digit sets
    assert all(len(set(s)) > 30 for s in sets)
    assert len({c for c in sets[0] if len(c) == 2} - {frozenset((d, d + 5)) for d in range(5)}) > 20


def test_shards_on_unequal_classes_most_clients_hold_two():
    labels = load_dataset("digits").y_train.numpy()  # classes of ~143 images, shards of 7
    parts = P.shards(labels, 100, np.random.default_rng(0))
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == 100 * 2 * (len(labels) // 200)  # the remainder is unused
    per = [len(c) for c in _class_sets(parts, labels)]
    assert max(per) <= 4 and np.mean(np.array(per) <= 2) > 0.8
    with pytest.raises(ValueError, match="cannot be cut into 400 shards"):
        P.shards(labels[:300], 200, np.random.default_rng(0))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(0, 1000))
def test_k_classes_gives_k_random_classes(k, seed):
    labels = np.repeat(np.arange(10), 30)
    parts = P.k_classes(labels, 10, k, np.random.default_rng(seed))
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == len(labels)  # n >= classes: every class, every sample used
    assert all(len(c) == k for c in _class_sets(parts, labels))
    assert [i in c for i, c in enumerate(_class_sets(parts, labels))] == [True] * 10  # node i holds class i
    again = P.k_classes(labels, 10, k, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_k_classes_draws_differ_across_seeds_and_nodes():
    labels = np.repeat(np.arange(10), 300)
    sets = [_class_sets(P.k_classes(labels, 100, 2, np.random.default_rng(s)), labels) for s in range(2)]
    assert sets[0] != sets[1]
    assert len(set(sets[0])) > 25  # the strided deal gave 5 pairs
    few = P.k_classes(labels, 3, 2, np.random.default_rng(0))  # fewer nodes than classes: some unused
    assert all(len(c) == 2 for c in _class_sets(few, labels)) and sum(map(len, few)) < len(labels)


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
@given(labels_st, st.integers(2, 6), st.floats(0.1, 10), st.integers(0, 100), st.sampled_from(P.DIRICHLET_VARIANTS))
def test_dirichlet_uses_every_sample_once(labels, n, alpha, seed, variant):
    if variant == "per_class" and len(labels) < 4 * n:
        return  # per_class may not give every node a sample: covered below
    parts = P.dirichlet(labels, n, alpha, np.random.default_rng(seed), variant=variant)
    _check_disjoint(parts, len(labels))
    assert sum(map(len, parts)) == len(labels) and min(map(len, parts)) >= 1
    if variant == "hsu":  # Hsu et al.: equal node sizes
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    again = P.dirichlet(labels, n, alpha, np.random.default_rng(seed), variant=variant)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_dirichlet_gives_up_with_a_clear_error():
    with pytest.raises(ValueError, match="could not give each of 50 nodes 5 samples"):
        P.dirichlet(np.zeros(60, dtype=int), 50, 0.01, np.random.default_rng(0), min_size=5, max_tries=20,
                    variant="per_class")
    with pytest.raises(ValueError, match="unknown dirichlet variant 'x'; allowed: hsu, per_class"):
        P.dirichlet(np.zeros(60, dtype=int), 5, 1.0, np.random.default_rng(0), variant="x")


@pytest.mark.parametrize("variant", P.DIRICHLET_VARIANTS)
def test_dirichlet_alpha_sets_the_skew(variant):
    labels = np.repeat(np.arange(10), 200)

    def top_share(alpha):
        hist = P.class_histogram(P.dirichlet(labels, 8, alpha, np.random.default_rng(0), variant=variant), labels, 10)
        return float((hist.max(axis=1) / hist.sum(axis=1)).mean())

    assert top_share(0.1) > 0.4  # iid would be ~0.1
    assert top_share(1000.0) < 0.2


def test_dirichlet_hsu_tiny_alpha_gives_one_class_per_node():
    labels = np.repeat(np.arange(10), 100)
    parts = P.dirichlet(labels, 10, 1e-4, np.random.default_rng(3))
    hist = P.class_histogram(parts, labels, 10)
    assert (hist.sum(axis=1) == 100).all()
    # a node whose class is not used up yet gets that class alone; once two nodes have drawn
    # the same class, a later one takes what is left (sampling without replacement)
    assert hist[0].max() == 100 and float(hist.max(axis=1).mean()) > 60


def test_cap_per_class_and_shards_and_val_split():
    labels = np.repeat(np.arange(10), 60)
    capped = P.cap_per_class(P.iid(labels, 4, np.random.default_rng(0)), labels, 5)
    assert P.class_histogram(capped, labels, 10).max() == 5
    shards = P.file_order(np.zeros(1200, dtype=int), 50, 10)  # seed 002: 24 files -> 2 per worker
    assert [len(s) for s in shards] == [100] * 10 and shards[3][0] == 300
    tr, va = P.split_val(np.arange(100), 0.1, np.random.default_rng(0))
    assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)


def test_partition_dispatch_errors():
    with pytest.raises(ValueError, match="unknown partition 'zipf'; allowed: iid, shards, k_classes, dirichlet, file_order, "
                                         "fegan"):
        P.partition(np.zeros(10, dtype=int), 2, "zipf", np.random.default_rng(0))
    with pytest.raises(ValueError, match="partition iid takes no parameters, not alpha"):
        P.partition(np.zeros(10, dtype=int), 2, "iid", np.random.default_rng(0), alpha=1)
    with pytest.raises(ValueError, match="partition k_classes takes k, not classes"):
        P.partition(np.zeros(10, dtype=int), 2, "k_classes", np.random.default_rng(0), classes=1)
    with pytest.raises(ValueError, match="partition shards takes shards_per_client, not shard_size"):
        P.partition(np.zeros(10, dtype=int), 2, "shards", np.random.default_rng(0), shard_size=5)
    labels = np.repeat(np.arange(2), 50)
    assert [len(p) for p in P.partition(labels, 2, "file_order", np.random.default_rng(0), shard_size=10)] == [50, 50]
    assert [len(p) for p in P.partition(labels, 5, "shards", np.random.default_rng(0), shards_per_client=4)] == [20] * 5
    labels = np.repeat(np.arange(4), 10)
    parts = P.partition(labels, 4, "k_classes", np.random.default_rng(0), k=1)
    hist = P.class_histogram(parts, labels, 4)
    assert (hist.sum(axis=0) == 10).all() and ((hist > 0).sum(axis=1) == 1).all()


def test_parity_is_degans_even_and_odd_digits():
    """Seed 000 (m-faezi/DEGAN ``pgelib/redis_ako.py``): nodes 0 and 2 take every even digit,
    the others every odd one, so nodes 0 and 2 (and 1, 3) hold the same samples."""
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 7, 2])
    parts = P.partition(labels, 4, "parity", np.random.default_rng(0))
    even, odd = [0, 2, 4, 6, 8, 10, 12], [1, 3, 5, 7, 9, 11]
    assert [p.tolist() for p in parts] == [even, odd, even, odd]
    five = P.partition(labels, 5, "parity", np.random.default_rng(1))
    assert [p.tolist() for p in five][3:] == [odd, odd]  # the seed's rule: only 0 and 2 are even
    with pytest.raises(ValueError, match="takes no parameters"):
        P.partition(labels, 4, "parity", np.random.default_rng(0), k=2)


def _fegan_by_hand(labels: np.ndarray, k: int, seed: int, magic: int) -> list[list[int]]:
    """Seed 001's rule (LPD-EPFL/FeGAN ``datasets.py``, ``get_train_set`` with iid = 0) written
    out: rank r = 1..k draws min(C, floor(200 r / k) + 1) classes without replacement, a cap
    U{1..r^2} per class (above magic: ceil((r + 1) magic / (k + 1))), and takes the first cap
    samples of each drawn class in index order."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels.tolist()))
    out = []
    for r in range(1, k + 1):
        chosen = rng.choice(len(classes), size=min(len(classes), (200 * r) // k + 1), replace=False)
        caps = rng.integers(1, r * r + 1, size=len(classes))
        idx = []
        for c in chosen:
            cap = int(caps[c]) if caps[c] <= magic else -(-(r + 1) * magic // (k + 1))
            idx += [i for i in range(len(labels)) if labels[i] == classes[c]][:cap]
        out.append(sorted(idx))
    return out


@pytest.mark.parametrize("k,magic", [(5, 7), (6, 30), (300, 5000)])
def test_fegan_split_is_the_seeds_rule_sample_for_sample(k, magic):
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(10), 40))  # classes interleaved: "first" is index order
    parts = P.partition(labels, k, "fegan", np.random.default_rng(11), magic_num=magic)
    want = _fegan_by_hand(labels, k, 11, magic)
    assert [p.tolist() for p in parts] == want
    if k == 300:  # the class count grows with the rank: floor(200 r / 300) + 1 = 1, 2, 3 for r = 1..3
        assert [len(set(labels[p].tolist())) for p in parts[:3]] == [1, 2, 3]
    if magic == 7:  # some caps exceed magic_num and are replaced
        assert all(len(set(labels[p].tolist())) == 10 for p in parts)  # 200 r / 5 + 1 > 10 classes


def test_config_offers_every_partition_the_dispatcher_knows():
    """``dataset.partition``'s choices are a second list of the partitioners (the config module
    stays free of torch); they must name the same schemes."""
    from simbench.experiment.config import PARTITIONS

    assert PARTITIONS == P.SCHEMES


# -- Flower Datasets' partitioners (partition: flwr) ---------------------------------------------
def test_flwr_pathological_partitioner_gives_two_classes_per_node_from_the_runs_seed():
    pytest.importorskip("flwr_datasets")
    labels = np.repeat(np.arange(10), 40)
    spec = {"name": "PathologicalPartitioner", "num_classes_per_partition": 2}
    parts = P.partition(labels, 10, "flwr", np.random.default_rng(0), partitioner=spec)
    _check_disjoint(parts, len(labels))
    assert len(parts) == 10 and all(len(c) == 2 for c in _class_sets(parts, labels))
    again = P.partition(labels, 10, "flwr", np.random.default_rng(0), partitioner=spec)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = P.partition(labels, 10, "flwr", np.random.default_rng(1), partitioner=spec)
    assert _class_sets(other, labels) != _class_sets(parts, labels)  # the seed comes from rng


def test_flwr_dirichlet_partitioner_uses_every_sample_once_and_alpha_sets_the_skew():
    pytest.importorskip("flwr_datasets")
    labels = np.repeat(np.arange(10), 100)
    classes = {}
    for alpha in (0.1, 100.0):
        parts = P.partition(labels, 8, "flwr", np.random.default_rng(3),
                            partitioner={"name": "DirichletPartitioner", "alpha": alpha, "min_partition_size": 5})
        _check_disjoint(parts, len(labels))
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
        classes[alpha] = np.mean([len(c) for c in _class_sets(parts, labels)])
    assert classes[100.0] == 10 and classes[0.1] < 6


@pytest.mark.parametrize("spec, message", [
    ({}, "flwr: name must be one of .*DirichletPartitioner.*, got None"),
    ({"name": "Nope"}, "flwr: name must be one of .*PathologicalPartitioner.*, got 'Nope'"),
    ({"name": "DirichletPartitioner", "alpha": 1.0, "seed": 3}, "flwr: seed: set by simbench"),
    ({"name": "IidPartitioner", "num_partitions": 3}, "flwr: num_partitions: set by simbench"),
    ({"name": "DirichletPartitioner"}, r"flwr: DirichletPartitioner \(4 partitions, one per data holder\): .*alpha"),
    ({"name": "ShardPartitioner", "num_shards_per_partition": 50}, "flwr: ShardPartitioner .*: ZeroDivisionError"),
    ({"name": "SizePartitioner", "partition_sizes": [1, 2]}, r"flwr: SizePartitioner \(4 partitions.*KeyError"),
])
def test_flwr_partitioner_errors_are_one_line(spec, message):
    pytest.importorskip("flwr_datasets")
    with pytest.raises(ValueError, match=message) as err:
        P.partition(np.repeat(np.arange(4), 10), 4, "flwr", np.random.default_rng(0), partitioner=spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("exc, reason", [
    (RuntimeError("the first line\n  and a second one"), "RuntimeError: the first line"),
    (ValueError("sizes do not add up\n  details"), "sizes do not add up"),
    (ValueError(""), "ValueError"),
])
def test_flwr_partitioner_failure_is_reported_by_its_first_line(monkeypatch, exc, reason):
    flp = pytest.importorskip("flwr_datasets.partitioner")

    def fail(self, partition_id):
        raise exc

    monkeypatch.setattr(flp.IidPartitioner, "load_partition", fail)
    with pytest.raises(ValueError) as err:
        P.partition(np.arange(10) % 2, 2, "flwr", np.random.default_rng(0), partitioner={"name": "IidPartitioner"})
    assert str(err.value) == f"flwr: IidPartitioner (2 partitions, one per data holder): {reason}"


def test_flwr_names_the_partitioner_classes_not_their_abstract_base():
    pytest.importorskip("flwr_datasets")
    with pytest.raises(ValueError) as err:
        P.partition(np.repeat(np.arange(4), 10), 4, "flwr", np.random.default_rng(0), partitioner={"name": "Partitioner"})
    names = str(err.value).split("one of ", 1)[1].split(", got", 1)[0].split(", ")
    assert "Partitioner" not in names and {"IidPartitioner", "DirichletPartitioner"} <= set(names)


def test_flwr_partition_without_flower_datasets_says_what_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"pip install 'simbench\[flwr\]'"):
        P.partition(np.arange(10) % 2, 2, "flwr", np.random.default_rng(0), partitioner={"name": "IidPartitioner"})
