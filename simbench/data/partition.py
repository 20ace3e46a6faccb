"""Partitioners: pure, seeded functions that split sample indices over nodes.

Each takes the label array and a ``numpy.random.Generator`` and returns one sorted index
array per node, disjoint from the others, except :func:`fegan` (FeGAN's own sampling, whose
nodes share samples, as in the seed). Nothing here touches tensors or files, so they are
easy to test alone.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("iid", "dirichlet", "k_classes", "shards", "fegan")

# Parameters each scheme of :func:`partition` accepts, with their defaults.
_PARAMS = {
    "iid": {},
    "dirichlet": {"alpha": 0.5, "min_size": 1},
    "k_classes": {"k": 2},
    "shards": {"shard_size": 50},
    "fegan": {"magic_num": 5000},
}


def _check_nodes(n_nodes: int) -> None:
    if int(n_nodes) < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")


def iid(labels: np.ndarray, n_nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and cut into ``n_nodes`` parts whose sizes differ by at most one.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (only their number matters).
    n_nodes : int
    rng : np.random.Generator

    Returns
    -------
    list of np.ndarray
        Sorted, disjoint index arrays covering every sample.
    """
    _check_nodes(n_nodes)
    perm = rng.permutation(len(labels))
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, n_nodes)]


def dirichlet(labels: np.ndarray, n_nodes: int, alpha: float, rng: np.random.Generator,
              min_size: int = 1, max_tries: int = 1000) -> list[np.ndarray]:
    """Per class, split its samples over nodes in proportions drawn from Dir(alpha).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels.
    n_nodes : int
    alpha : float
        Concentration; small values give skewed, non-iid shards.
    rng : np.random.Generator
    min_size : int
        Redraw until every node has at least this many samples.
    max_tries : int
        Draws before giving up.

    Returns
    -------
    list of np.ndarray
        Sorted, disjoint index arrays covering every sample.

    Raises
    ------
    ValueError
        ``alpha <= 0``, or no draw in ``max_tries`` met ``min_size``.
    """
    _check_nodes(n_nodes)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_tries):
        pieces: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
        for idx in by_class:
            idx = rng.permutation(idx)
            cuts = (np.cumsum(rng.dirichlet(np.full(n_nodes, float(alpha)))) * len(idx)).astype(int)[:-1]
            for node, chunk in enumerate(np.split(idx, cuts)):
                pieces[node].append(chunk)
        parts = [np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64) for p in pieces]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(f"could not give each of {n_nodes} nodes {min_size} samples with alpha={alpha} "
                     f"in {max_tries} draws; raise alpha or use fewer nodes")


def _shard_counts(sizes: np.ndarray, n_shards: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """How many shards to cut from each class: every class at least one when there are enough
    shards, the rest by D'Hondt (to the class whose shards are largest), at most ``cap`` each."""
    counts = np.zeros(len(sizes), dtype=np.int64)
    if n_shards < len(sizes):  # too few shards for every class: a seeded choice of classes
        counts[rng.choice(len(sizes), size=n_shards, replace=False)] = 1
        return counts
    counts[:] = 1
    limit = np.minimum(sizes, cap)
    for _ in range(n_shards - len(sizes)):
        quotient = np.where(counts < limit, sizes / (counts + 1.0), -1.0)
        best = int(np.argmax(quotient))
        if quotient[best] < 0:
            raise ValueError(f"cannot cut {n_shards} shards of distinct classes out of {int(sizes.sum())} samples "
                             f"in {len(sizes)} classes; use fewer nodes or a smaller k")
        counts[best] += 1
    return counts


def k_classes(labels: np.ndarray, n_nodes: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each node gets samples of exactly ``k`` classes (McMahan et al.'s shards).

    Samples sorted by label (random order within a class) are cut into ``n_nodes * k``
    shards that never straddle two classes; a class gets a number of shards in proportion to
    its size, at least one when ``n_nodes * k >= num_classes`` (so every class is used), and
    at most ``n_nodes``. With shards in class order, node ``perm[i]`` takes shards ``i, i + n,
    ..., i + (k-1) n``: a class's shards are a run of at most ``n`` consecutive shards, so no
    node gets two shards of one class.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels.
    n_nodes : int
    k : int
        Classes per node, ``1 <= k <= num_classes``.
    rng : np.random.Generator

    Returns
    -------
    list of np.ndarray
        Sorted, disjoint index arrays: every sample when ``n_nodes * k >= num_classes``,
        else the samples of ``n_nodes * k`` classes drawn with ``rng``.

    Raises
    ------
    ValueError
        ``k`` out of range, or too few samples for ``n_nodes * k`` single-class shards.
    """
    _check_nodes(n_nodes)
    classes, sizes = np.unique(labels, return_counts=True)
    if not 1 <= k <= len(classes):
        raise ValueError(f"classes_per_node must be in 1..{len(classes)}, got {k}")
    counts = _shard_counts(sizes, n_nodes * k, n_nodes, rng)
    shards = []
    for c, m in zip(classes, counts):
        if m:
            shards += np.array_split(rng.permutation(np.flatnonzero(labels == c)), m)
    perm = rng.permutation(n_nodes)  # which node gets which deal
    parts: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * n_nodes
    for i in range(n_nodes):
        parts[perm[i]] = np.sort(np.concatenate(shards[i::n_nodes])).astype(np.int64)
    return parts


def shards_of(labels: np.ndarray, shard_size: int, n_nodes: int) -> list[np.ndarray]:
    """Seed 002's layout: the data set in order, cut into files of ``shard_size`` samples.

    Worker ``n`` gets files ``n*F .. (n+1)*F - 1`` with ``F = n_files // n_nodes``; files
    left over and a partial last file are unused, as in the seed.

    Parameters
    ----------
    labels : np.ndarray
        Labels (only their number matters).
    shard_size : int
        Samples per file.
    n_nodes : int

    Returns
    -------
    list of np.ndarray
        Contiguous index ranges.
    """
    _check_nodes(n_nodes)
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    n_files = len(labels) // shard_size
    per = n_files // n_nodes
    if per < 1:
        raise ValueError(f"{n_files} files of {shard_size} samples cannot be spread over {n_nodes} nodes")
    span = per * shard_size
    return [np.arange(n * span, (n + 1) * span, dtype=np.int64) for n in range(n_nodes)]


def fegan(labels: np.ndarray, n_nodes: int, rng: np.random.Generator, magic_num: int = 5000) -> list[np.ndarray]:
    """FeGAN's non-iid sampling (seed 001, LPD-EPFL/FeGAN ``datasets.py``,
    ``DatasetManager.get_train_set`` with ``iid = 0``): class proportions and sizes that
    differ from node to node, growing with the node's rank.

    With K = ``n_nodes``, C classes and node i the seed's device rank r = i + 1:

    * r gets num_cls(r) = min(C, floor(200 r / K) + 1) classes, drawn uniformly without
      replacement (so for K <= 22 every node has every class, and the skew is in the caps);
    * a cap per class, cap(r, l) ~ U{1, ..., r^2}; a cap above ``magic_num`` becomes
      ceil((r + 1) · magic_num / (K + 1));
    * r takes the first cap(r, l) samples of each of its classes l in index order (all of
      them when the class has fewer).

    Hence node r holds about num_cls · r^2 / 2 samples in normalised-uniform class
    proportions, and the nodes' sets **overlap**: a smaller cap's samples are a prefix of a
    larger one's (the seed's sampling, not a partition). Differences from the seed: the
    seed's server (rank 0) also holds data (all classes, caps U{1..magic_num}, at most 7500
    samples), simbench's servers hold none; the seed draws from Python's unseeded ``random``,
    this from ``rng``; the seed's "first" is the data set's order, here the label array's.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels.
    n_nodes : int
    rng : np.random.Generator
    magic_num : int
        The seed's ``--magic_num`` (default 5000; its README runs use 3000 and 500).

    Returns
    -------
    list of np.ndarray
        Sorted index arrays, overlapping between nodes; none is empty.
    """
    _check_nodes(n_nodes)
    if int(magic_num) < 1:
        raise ValueError(f"magic_num must be >= 1, got {magic_num}")
    labels = np.asarray(labels)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    k, c = int(n_nodes), len(classes)
    out = []
    for r in range(1, k + 1):
        chosen = rng.choice(c, size=min(c, 200 * r // k + 1), replace=False)
        caps = rng.integers(1, r * r + 1, size=c)
        caps = np.where(caps > magic_num, -(-(r + 1) * int(magic_num) // (k + 1)), caps)
        out.append(np.sort(np.concatenate([by_class[l][:caps[l]] for l in chosen])).astype(np.int64))
    return out


def cap_per_class(parts: list[np.ndarray], labels: np.ndarray, cap: int) -> list[np.ndarray]:
    """Keep at most ``cap`` samples of each class on each node (FeGAN's ``magic_num``).

    Parameters
    ----------
    parts : list of np.ndarray
        Index arrays, one per node.
    labels : np.ndarray
    cap : int
        The first ``cap`` samples (in index order) of each class on a node are kept.

    Returns
    -------
    list of np.ndarray
        Sorted subsets of ``parts``.
    """
    if int(cap) < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    out = []
    for p in parts:
        p = np.sort(p)
        lab = labels[p]
        order = np.argsort(lab, kind="stable")  # by class, index order kept within a class
        sorted_lab = lab[order]
        first = np.searchsorted(sorted_lab, sorted_lab, side="left")
        rank = np.arange(len(p)) - first  # position of each sample within its class
        out.append(np.sort(p[order[rank < cap]]).astype(np.int64))
    return out


def split_val(indices: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation split of about ``frac`` out of a node's shard.

    Parameters
    ----------
    indices : np.ndarray
        The node's shard.
    frac : float
        Share for validation; with ``frac > 0`` and two or more samples, each side gets at
        least one sample.
    rng : np.random.Generator

    Returns
    -------
    (train, val) : tuple of np.ndarray
        Sorted and disjoint; ``val`` is empty when ``frac <= 0`` or the shard has < 2 samples.
    """
    indices = np.asarray(indices)
    n = len(indices)
    if n < 2 or frac <= 0:
        return np.sort(indices), indices[:0]
    k = min(n - 1, max(1, int(round(frac * n))))
    perm = rng.permutation(indices)
    return np.sort(perm[k:]), np.sort(perm[:k])


def partition(labels: np.ndarray, n_nodes: int, scheme: str, rng: np.random.Generator, **params) -> list[np.ndarray]:
    """Split ``labels``' indices over ``n_nodes`` nodes with a named scheme.

    Parameters
    ----------
    labels : np.ndarray
    n_nodes : int
    scheme : str
        One of :data:`SCHEMES`.
    rng : np.random.Generator
    **params
        ``dirichlet``: ``alpha`` (0.5), ``min_size`` (1); ``k_classes``: ``k`` (2);
        ``shards``: ``shard_size`` (50); ``fegan``: ``magic_num`` (5000); ``iid``: none.

    Returns
    -------
    list of np.ndarray

    Raises
    ------
    ValueError
        Unknown scheme or parameter (one line naming the allowed ones).
    """
    if scheme not in _PARAMS:
        raise ValueError(f"unknown partition {scheme!r}; allowed: {', '.join(SCHEMES)}")
    allowed = _PARAMS[scheme]
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise ValueError(f"partition {scheme} takes {', '.join(allowed) or 'no parameters'}, not {', '.join(extra)}")
    kw = {**allowed, **params}
    labels = np.asarray(labels)
    if scheme == "iid":
        return iid(labels, n_nodes, rng)
    if scheme == "dirichlet":
        return dirichlet(labels, n_nodes, kw["alpha"], rng, kw["min_size"])
    if scheme == "k_classes":
        return k_classes(labels, n_nodes, kw["k"], rng)
    if scheme == "fegan":
        return fegan(labels, n_nodes, rng, kw["magic_num"])
    return shards_of(labels, kw["shard_size"], n_nodes)


def class_histogram(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Sample counts per node and class.

    Parameters
    ----------
    parts : list of np.ndarray
    labels : np.ndarray
    num_classes : int

    Returns
    -------
    np.ndarray
        ``n_nodes × num_classes`` integer counts.
    """
    if not parts:
        return np.zeros((0, num_classes), dtype=np.int64)
    return np.stack([np.bincount(labels[p], minlength=num_classes)[:num_classes] for p in parts])
