"""Partitioners: pure, seeded functions that split sample indices over nodes.

Each takes the label array and a ``numpy.random.Generator`` and returns one sorted index
array per node. Nothing here touches tensors or files, so they are easy to test alone.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("iid", "dirichlet", "k_classes", "shards")


def iid(labels: np.ndarray, n_nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and cut into ``n_nodes`` parts whose sizes differ by at most one."""
    perm = rng.permutation(len(labels))
    return [np.sort(p) for p in np.array_split(perm, n_nodes)]


def dirichlet(labels: np.ndarray, n_nodes: int, alpha: float, rng: np.random.Generator,
              min_size: int = 1, max_tries: int = 1000) -> list[np.ndarray]:
    """Per class, split its samples over nodes in proportions drawn from Dir(alpha).

    Small ``alpha`` gives skewed, non-iid shards. Redrawn until every node has at least
    ``min_size`` samples.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_nodes)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_nodes, alpha))) * len(idx)).astype(int)[:-1]
            for node, chunk in enumerate(np.split(idx, cuts)):
                parts[node].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not give every one of {n_nodes} nodes {min_size} samples with alpha={alpha}; raise alpha")


def k_classes(labels: np.ndarray, n_nodes: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each node gets samples of ``k`` classes (McMahan et al.'s shards).

    Samples sorted by label (random order within a class) are cut into ``n_nodes * k``
    shards; node ``perm[i]`` takes shards ``i, i + n, ..., i + (k-1) n``. Shards ``n`` apart
    lie in different classes whenever each class spans at most ``n`` shards, which holds
    for balanced labels since ``k <= num_classes``.
    """
    num_classes = len(np.unique(labels))
    if not 1 <= k <= num_classes:
        raise ValueError(f"classes_per_node must be in 1..{num_classes}, got {k}")
    shuffled = rng.permutation(len(labels))  # random order within each class
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    if (n_nodes * k) % num_classes == 0:  # cut every class into the same number of shards
        per_class = n_nodes * k // num_classes
        shards = [piece for c in np.unique(labels)
                  for piece in np.array_split(order[labels[order] == c], per_class)]
    else:
        shards = np.array_split(order, n_nodes * k)
    perm = rng.permutation(n_nodes)
    parts = [np.concatenate([shards[i + j * n_nodes] for j in range(k)]) for i in range(n_nodes)]
    return [np.sort(parts[int(np.flatnonzero(perm == node)[0])]).astype(np.int64) for node in range(n_nodes)]


def shards_of(labels: np.ndarray, shard_size: int, n_nodes: int) -> list[np.ndarray]:
    """Seed 002's layout: the data set in order, cut into files of ``shard_size`` samples;
    worker n gets files n*F .. (n+1)*F - 1 with F = n_files // n_nodes."""
    n_files = len(labels) // shard_size
    per = n_files // n_nodes
    if per < 1:
        raise ValueError(f"{n_files} files of {shard_size} samples cannot be spread over {n_nodes} nodes")
    return [np.arange(n * per * shard_size, (n + 1) * per * shard_size, dtype=np.int64) for n in range(n_nodes)]


def cap_per_class(parts: list[np.ndarray], labels: np.ndarray, cap: int) -> list[np.ndarray]:
    """Keep at most ``cap`` samples of each class on each node (FeGAN's ``magic_num``)."""
    out = []
    for p in parts:
        keep = []
        for c in np.unique(labels[p]):
            keep.append(p[labels[p] == c][:cap])
        out.append(np.sort(np.concatenate(keep)) if keep else p[:0])
    return out


def split_val(indices: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation split of about ``frac`` out of a node's shard (>= 1 each side)."""
    n = len(indices)
    if n < 2 or frac <= 0:
        return np.sort(indices), indices[:0]
    k = min(n - 1, max(1, int(round(frac * n))))
    perm = rng.permutation(indices)
    return np.sort(perm[k:]), np.sort(perm[:k])


def partition(labels: np.ndarray, n_nodes: int, scheme: str, rng: np.random.Generator, **params) -> list[np.ndarray]:
    """Dispatch to a partitioner by name (``SCHEMES``)."""
    allowed = {"iid": (), "dirichlet": ("alpha", "min_size"), "k_classes": ("k",), "shards": ("shard_size",)}
    if scheme not in allowed:
        raise ValueError(f"unknown partition {scheme!r}; allowed: {', '.join(SCHEMES)}")
    extra = set(params) - set(allowed[scheme])
    if extra:
        raise ValueError(f"partition {scheme} takes {', '.join(allowed[scheme]) or 'no parameters'}, not {', '.join(sorted(extra))}")
    if scheme == "iid":
        return iid(labels, n_nodes, rng)
    if scheme == "dirichlet":
        return dirichlet(labels, n_nodes, params.get("alpha", 0.5), rng, params.get("min_size", 1))
    if scheme == "k_classes":
        return k_classes(labels, n_nodes, params.get("k", 2), rng)
    return shards_of(labels, params.get("shard_size", 50), n_nodes)


def class_histogram(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n_nodes × num_classes sample counts."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
