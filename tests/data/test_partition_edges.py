"""Edges of the partitioners: the bounds each accepts, its one-line errors, the dispatcher's
arguments, dtypes, and the printed split summary, character for character.

Each test here failed on a mutant that survived the rest of the suite (``benchmarks/mutation.sh
data``): a bound off by one, a parameter the dispatcher dropped, an unstable sort, a summary
with the wrong count.
"""

import numpy as np
import pytest

from simbench.data import partition as P


def rng(seed=0):
    return np.random.default_rng(seed)


# -- errors: one line naming the parameter and the value ---------------------------------
@pytest.mark.parametrize("call,message", [
    (lambda: P.iid(np.zeros(4), 0, rng()), "n_nodes must be >= 1, got 0"),
    (lambda: P.shards(np.zeros(4), 2, rng(), 0), "shards_per_client must be >= 1, got 0"),
    (lambda: P.shards(np.zeros(3), 2, rng(), 2), "3 samples cannot be cut into 4 shards; use fewer nodes or "
                                                 "fewer shards_per_client"),
    (lambda: P.k_classes(np.arange(3), 2, 4, rng()), "classes_per_node must be in 1..3, got 4"),
    (lambda: P.k_classes(np.arange(3), 2, 0, rng()), "classes_per_node must be in 1..3, got 0"),
    (lambda: P.dirichlet(np.arange(4), 2, 0, rng()), "alpha must be > 0, got 0"),
    (lambda: P.dirichlet(np.arange(4), 2, 1.0, rng(), variant="zipf"),
     "unknown dirichlet variant 'zipf'; allowed: hsu, per_class"),
    (lambda: P.file_order(np.zeros(10), 0, 2), "shard_size must be >= 1, got 0"),
    (lambda: P.file_order(np.zeros(10), 5, 3), "2 files of 5 samples cannot be spread over 3 nodes"),
    (lambda: P.fegan(np.arange(4), 2, rng(), 0), "magic_num must be >= 1, got 0"),
    (lambda: P.cap_per_class([np.arange(3)], np.zeros(3, int), -1), "cap must be >= 0, got -1"),
])
def test_errors_name_the_parameter_and_the_value(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_dispatcher_lists_every_allowed_parameter():
    with pytest.raises(ValueError) as err:
        P.partition(np.arange(10), 2, "dirichlet", rng(), beta=1, gamma=2)
    assert str(err.value) == "partition dirichlet takes alpha, variant, min_size, not beta, gamma"


# -- the smallest values each partitioner accepts ----------------------------------------
def test_one_shard_per_client_of_one_sample():
    labels = np.array([3, 1, 2, 0])
    parts = P.shards(labels, 4, rng(), shards_per_client=1)  # 4 shards of size 1: the smallest split
    assert sorted(p.tolist() for p in parts) == [[0], [1], [2], [3]]
    assert all(p.dtype == np.int64 for p in parts)


def test_shards_are_runs_of_one_class_in_index_order():
    """The sort by label keeps index order within a class (a stable sort), so a shard is a
    run of consecutive same-class indices, as in the paper's "sort the data by digit label"."""
    labels = np.tile(np.arange(4), 250)  # 1000 samples, classes interleaved
    parts = P.shards(labels, 20, rng(3), shards_per_client=1)  # shards of 50
    by_class = {c: np.flatnonzero(labels == c) for c in range(4)}
    runs = sorted(tuple(p.tolist()) for p in parts)
    want = sorted(tuple(by_class[c][j * 50:(j + 1) * 50].tolist()) for c in range(4) for j in range(5))
    assert runs == want


def test_dispatcher_passes_shards_per_client():
    labels = np.repeat(np.arange(4), 6)
    via = P.partition(labels, 4, "shards", rng(5), shards_per_client=3)
    direct = P.shards(labels, 4, rng(5), 3)
    assert [p.tolist() for p in via] == [p.tolist() for p in direct]
    assert [len(p) for p in via] == [6] * 4
    default = P.partition(labels, 4, "shards", rng(5))
    assert [p.tolist() for p in default] == [p.tolist() for p in P.shards(labels, 4, rng(5), 2)]
    assert [p.tolist() for p in default] != [p.tolist() for p in via]


def test_k_classes_may_be_every_class():
    labels = np.repeat(np.arange(3), 4)
    parts = P.k_classes(labels, 2, 3, rng())
    assert [sorted(set(labels[p].tolist())) for p in parts] == [[0, 1, 2], [0, 1, 2]]
    assert sorted(np.concatenate(parts).tolist()) == list(range(12))


def test_file_order_with_files_of_one_sample_and_one_file_each():
    assert [p.tolist() for p in P.file_order(np.zeros(5), 1, 2)] == [[0, 1], [2, 3]]
    one_each = P.file_order(np.zeros(13), 4, 3)  # 3 files of 4, one per node; 1 sample unused
    assert [p.tolist() for p in one_each] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert all(p.dtype == np.int64 for p in one_each)


def test_fegan_with_magic_num_one_caps_every_large_draw():
    labels = np.repeat(np.arange(2), 50)
    parts = P.fegan(labels, 3, rng(1), magic_num=1)
    # rank r's caps are U{1..r^2}; a cap above 1 becomes ceil((r + 1) * 1 / 4) = 1
    assert [len(p) for p in parts] == [2, 2, 2]


def test_fegan_class_count_follows_200_r_over_k():
    """Rank r draws min(C, floor(200 r / K) + 1) classes: with K = 7, rank 3 draws
    floor(600 / 7) + 1 = 86 of 100 classes (201 r / K would give 87)."""
    labels = np.repeat(np.arange(100), 3)
    parts = P.fegan(labels, 7, rng(2), magic_num=5000)
    assert [len(set(labels[p].tolist())) for p in parts[:3]] == [29, 58, 86]


def test_dirichlet_tiny_alpha_is_accepted():
    labels = np.repeat(np.arange(2), 10)
    parts = P.dirichlet(labels, 2, 1e-9, rng())
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))


def test_dirichlet_min_size_is_inclusive():
    """A draw whose smallest node holds exactly ``min_size`` samples is accepted."""
    labels = np.repeat(np.arange(5), 20)
    first = P.dirichlet(labels, 4, 0.5, rng(7), min_size=0, variant="per_class")
    smallest = min(len(p) for p in first)
    again = P.dirichlet(labels, 4, 0.5, rng(7), min_size=smallest, max_tries=1, variant="per_class")
    assert [p.tolist() for p in again] == [p.tolist() for p in first]
    with pytest.raises(ValueError, match="could not give each of 4 nodes"):
        P.dirichlet(labels, 4, 0.5, rng(7), min_size=smallest + 1, max_tries=1, variant="per_class")


def test_dirichlet_default_min_size_is_one():
    """The default ``min_size`` is 1: a draw with an empty node is redrawn."""
    labels = np.repeat(np.arange(2), 3)
    for seed in range(20):
        parts = P.dirichlet(labels, 5, 0.05, rng(seed), variant="per_class")
        assert min(len(p) for p in parts) >= 1


def test_dirichlet_per_class_empty_node_is_an_empty_index_array():
    labels = np.zeros(3, dtype=int)
    for seed in range(50):  # with alpha 0.01 almost every draw leaves some of 6 nodes empty
        parts = P.dirichlet(labels, 6, 0.01, rng(seed), min_size=0, variant="per_class")
        if any(len(p) == 0 for p in parts):
            break
    empty = [p for p in parts if len(p) == 0]
    assert empty and all(p.dtype == np.int64 and p.shape == (0,) for p in empty)
    assert sorted(np.concatenate(parts).tolist()) == [0, 1, 2]


@pytest.mark.parametrize("variant", ["hsu", "per_class"])
def test_dispatcher_passes_every_dirichlet_parameter(variant):
    labels = np.repeat(np.arange(4), 25)
    via = P.partition(labels, 5, "dirichlet", rng(9), alpha=0.3, variant=variant, min_size=2)
    direct = P.dirichlet(labels, 5, 0.3, rng(9), min_size=2, variant=variant)
    assert [p.tolist() for p in via] == [p.tolist() for p in direct]
    other = P.dirichlet(labels, 5, 100.0, rng(9), min_size=2, variant=variant)
    assert [p.tolist() for p in via] != [p.tolist() for p in other]  # alpha is not the default's


def test_dispatcher_passes_min_size():
    labels = np.repeat(np.arange(2), 3)
    with pytest.raises(ValueError, match="could not give each of 3 nodes 3 samples"):
        P.partition(labels, 3, "dirichlet", rng(), alpha=0.5, variant="per_class", min_size=3)


def _hsu_by_hand(labels, n_nodes, alpha, seed):
    """Hsu et al.'s split written out sample by sample with the same random draws: per node
    q ~ Dir(alpha p); multinomial draws of what is still needed over the classes that have
    samples left (all that are left when q's classes are used up), capped by what is left."""
    g = np.random.default_rng(seed)
    classes = sorted(set(labels.tolist()))
    pools = [list(g.permutation(np.flatnonzero(labels == c))) for c in classes]
    prior = np.array([len(p) for p in pools]) / len(labels)
    sizes = [len(s) for s in np.array_split(np.arange(len(labels)), n_nodes)]
    out = []
    for need in sizes:
        q = g.dirichlet(np.maximum(alpha * prior, 1e-300))
        mine = []
        while need > 0:
            w = np.array([q[c] if pools[c] else 0.0 for c in range(len(pools))])
            if w.sum() <= 0:
                w = np.array([float(len(p)) for p in pools])
            draw = g.multinomial(need, w / w.sum())
            for c, k in enumerate(draw):
                k = min(int(k), len(pools[c]))
                mine += pools[c][:k]
                del pools[c][:k]
                need -= k
        out.append(sorted(int(i) for i in mine))
    return out


@pytest.mark.parametrize("alpha,seed", [(0.05, 0), (0.5, 1), (5.0, 2)])
def test_dirichlet_hsu_sample_for_sample(alpha, seed):
    """Classes of unequal sizes (1, 2, 7, 20 samples) so that classes run out, one with a
    single sample left, mid-node."""
    labels = np.random.default_rng(4).permutation(np.repeat(np.arange(4), [1, 2, 7, 20]))
    parts = P.dirichlet(labels, 4, alpha, rng(seed))
    assert [p.tolist() for p in parts] == _hsu_by_hand(labels, 4, alpha, seed)


# -- cap per class, validation split ----------------------------------------------------
def test_cap_per_class_keeps_the_first_samples_of_each_class_in_index_order():
    labels = np.random.default_rng(0).integers(0, 3, size=300)
    part = np.random.default_rng(1).permutation(300)[:200]
    (kept,) = P.cap_per_class([part], labels, 4)
    mine = np.sort(part)
    want = sorted(int(i) for c in range(3) for i in mine[labels[mine] == c][:4])
    assert kept.tolist() == want
    assert P.cap_per_class([part], labels, 0)[0].tolist() == []


def test_split_val_bounds():
    idx = np.arange(10)
    tr, va = P.split_val(idx, 0.01, rng())  # rounds to 0: still one validation sample
    assert (len(tr), len(va)) == (9, 1)
    tr, va = P.split_val(idx, 1.0, rng())  # everything: still one training sample
    assert (len(tr), len(va)) == (1, 9)
    tr, va = P.split_val(np.arange(3), 0.1, rng())
    assert (len(tr), len(va)) == (2, 1)
    tr, va = P.split_val(idx, 0.0, rng())
    assert tr.tolist() == list(range(10)) and va.tolist() == []


def test_split_val_of_one_sample_leaves_the_random_stream_alone():
    """A node too small to split draws nothing, so the next node's split does not depend on it."""
    g = rng(3)
    tr, va = P.split_val(np.array([7]), 0.5, g)
    assert tr.tolist() == [7] and va.tolist() == []
    assert g.integers(0, 1 << 30) == rng(3).integers(0, 1 << 30)


def test_parity_indices_are_int64():
    parts = P.parity(np.array([0, 1, 2, 3]), 2)
    assert [p.dtype for p in parts] == [np.int64, np.int64]


# -- the histogram and the printed summary ------------------------------------------------
def test_class_histogram_of_no_nodes():
    hist = P.class_histogram([], np.zeros(3, int), 4)
    assert hist.shape == (0, 4) and hist.dtype == np.int64


def test_summary_text():
    labels = np.array([0, 0, 1, 1, 2, 2])
    parts = [np.array([0, 1, 2]), np.array([3, 4]), np.array([2, 5]), np.array([4])]
    text = P.summary(parts, labels, 3, nodes=[5, 6, 7, 9], title="split of 6")
    assert text == (
        "split of 6\n"
        "node  samples  classes      0     1     2\n"
        "   5        3        2      2     1     0\n"
        "   6        2        2      0     1     1\n"
        "   7        2        2      0     1     1\n"
        "   9        1        1      0     0     1\n"
        "total 8 samples on 4 nodes, 6 distinct of 6 (0 unused, 2 held more than once); "
        "classes per node: min 1, mean 1.75, max 2; distinct class sets: 3\n")


def test_summary_without_title_or_node_ids_and_with_unused_samples():
    labels = np.array([1, 1, 0, 0, 0])
    text = P.summary([np.array([0]), np.array([2, 3])], labels, 2)
    assert text == (
        "node  samples  classes      0     1\n"
        "   0        1        1      0     1\n"
        "   1        2        1      2     0\n"
        "total 3 samples on 2 nodes, 3 distinct of 5 (2 unused, 0 held more than once); "
        "classes per node: min 1, mean 1.00, max 1; distinct class sets: 2\n")


def test_summary_columns_widen_for_large_counts():
    labels = np.zeros(123456, dtype=int)
    text = P.summary([np.arange(123456)], labels, 2)
    assert text.splitlines()[:2] == ["node  samples  classes       0      1",
                                     "   0   123456        1  123456      0"]


def test_summary_of_no_nodes():
    assert P.summary([], np.array([0, 1]), 2) == (
        "node  samples  classes      0     1\n"
        "total 0 samples on 0 nodes, 0 distinct of 2 (2 unused, 0 held more than once); "
        "classes per node: min 0, mean 0.00, max 0; distinct class sets: 0\n")


def test_defaults_are_the_sources():
    """FeGAN's ``--magic_num`` defaults to 5000 (seed 001); a per-class Dirichlet split is
    drawn up to 1000 times before giving up, and says so."""
    import inspect

    assert inspect.signature(P.fegan).parameters["magic_num"].default == 5000
    with pytest.raises(ValueError) as err:
        P.dirichlet(np.zeros(2, dtype=int), 3, 0.5, rng(), variant="per_class")
    assert str(err.value) == ("could not give each of 3 nodes 1 samples with alpha=0.5 in 1000 draws; "
                              "raise alpha or use fewer nodes")


def test_dirichlet_of_no_samples_gives_empty_int64_parts():
    parts = P.dirichlet(np.zeros(0, dtype=int), 3, 0.5, rng(), min_size=0, variant="per_class")
    assert [(p.shape, p.dtype) for p in parts] == [((0,), np.int64)] * 3


def test_fegan_default_magic_num_replaces_caps_above_5000():
    """Ranks past 70 of 80 draw caps up to r^2 > 5000; each is replaced by
    ceil((r + 1) 5000 / 81): the default must be the seed's 5000."""
    labels = np.repeat(np.arange(2), 5100)
    default = P.fegan(labels, 80, rng(0))
    assert [p.tolist() for p in default] == [p.tolist() for p in P.fegan(labels, 80, rng(0), magic_num=5000)]
    assert [len(p) for p in default] != [len(p) for p in P.fegan(labels, 80, rng(0), magic_num=5001)]
