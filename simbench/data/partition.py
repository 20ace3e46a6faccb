"""Partitioners: pure, seeded functions that split sample indices over nodes.

Each takes the label array and a ``numpy.random.Generator`` and returns one sorted index
array per node, disjoint from the others, except :func:`fegan` (FeGAN's own sampling, whose
nodes share samples, as in the seed) and :func:`parity` (seed 000's, whose nodes share a half). Nothing here touches tensors or files, so they are
easy to test alone. Each scheme's docstring names the paper or code it follows:

* ``iid``: a uniform shuffle cut into equal parts;
* ``shards``: McMahan et al. 2017's pathological non-IID split (sort by label, equal shards
  dealt at random);
* ``k_classes``: k classes drawn at random per node (Li et al. 2022, NIID-Bench's ``#C=k``);
* ``dirichlet``: Hsu et al. 2019 (per-node class mix ~ Dir(alpha p)); variant ``per_class``
  (per-class split over nodes ~ Dir(alpha), Yurochkin et al. 2019 / NIID-Bench);
* ``file_order``: seed 002's layout (the data set in file order, cut into files);
* ``fegan``: FeGAN's overlapping, skewed sampling (seed 001);
* ``parity``: DEGAN's even and odd digits (seed 000);
* ``flwr``: any partitioner of Flower Datasets (``flwr_datasets.partitioner``, optional
  dependency ``simbench[flwr]``), run on the label array.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

SCHEMES = ("iid", "shards", "k_classes", "dirichlet", "file_order", "fegan", "parity", "flwr")

DIRICHLET_VARIANTS = ("hsu", "per_class")

# Parameters each scheme of :func:`partition` accepts, with their defaults.
_PARAMS = {
    "iid": {},
    "shards": {"shards_per_client": 2},
    "k_classes": {"k": 2},
    "dirichlet": {"alpha": 0.5, "variant": "hsu", "min_size": 1},
    "file_order": {"shard_size": 50},
    "fegan": {"magic_num": 5000},
    "parity": {},
    "flwr": {"partitioner": None},
}

FLWR_SET_BY_SIMBENCH = ("num_partitions", "partition_by", "seed")
"""Arguments of a Flower Datasets partitioner that simbench fills in (see :func:`flwr`)."""


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
              min_size: int = 1, max_tries: int = 1000, variant: str = "hsu") -> list[np.ndarray]:
    """Label skew drawn from a Dirichlet distribution, as Hsu et al. 2019 (the default) or
    per class (``variant="per_class"``).

    ``hsu`` (T.-M. H. Hsu, H. Qi, M. Brown, "Measuring the effects of non-identical data
    distribution for federated visual classification", arXiv:1909.06335, section 3): node i
    gets an equal share of the samples (sizes differ by at most one) with class proportions
    q_i ~ Dir(alpha p), p being the data set's class distribution; its samples are drawn
    without replacement, so when a class runs out a node's draw is renormalised over the
    classes left (the last nodes may then deviate from their q_i). alpha -> inf gives iid
    nodes, alpha -> 0 one class per node. Every sample is used once.

    ``per_class`` (Yurochkin et al. 2019; NIID-Bench's ``noniid-labeldir``, Li et al. 2022,
    ``partition_data`` in Xtra-Computing/NIID-Bench ``utils.py``): each class's samples
    are split over the nodes in proportions drawn from Dir(alpha); node sizes vary. Draws
    are repeated until every node has ``min_size`` samples.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels.
    n_nodes : int
    alpha : float
        Concentration; small values give skewed, non-iid shards.
    rng : np.random.Generator
    min_size : int
        ``per_class``: redraw until every node has at least this many samples.
    max_tries : int
        ``per_class``: draws before giving up.
    variant : str
        ``hsu`` or ``per_class``.

    Returns
    -------
    list of np.ndarray
        Sorted, disjoint index arrays covering every sample.

    Raises
    ------
    ValueError
        ``alpha <= 0``, an unknown variant, or (``per_class``) no draw in ``max_tries`` met
        ``min_size``.
    """
    _check_nodes(n_nodes)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if variant not in DIRICHLET_VARIANTS:
        raise ValueError(f"unknown dirichlet variant {variant!r}; allowed: {', '.join(DIRICHLET_VARIANTS)}")
    labels = np.asarray(labels)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    if variant == "hsu":
        return _dirichlet_hsu(by_class, len(labels), n_nodes, float(alpha), rng)
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


def _dirichlet_hsu(by_class: list[np.ndarray], total: int, n_nodes: int, alpha: float,
                   rng: np.random.Generator) -> list[np.ndarray]:
    pools = [rng.permutation(idx) for idx in by_class]
    left = np.array([len(p) for p in pools], dtype=np.int64)
    prior = left / left.sum()
    sizes = [len(s) for s in np.array_split(np.arange(total), n_nodes)]
    parts = []
    for need in sizes:
        # Dir(alpha p); a component that underflows to 0 for tiny alpha is harmless
        q = rng.dirichlet(np.maximum(alpha * prior, 1e-300))
        counts = np.zeros(len(pools), dtype=np.int64)
        while need > 0:
            w = np.where(left > 0, q, 0.0)
            if not w.sum() > 0:  # the node's classes are used up: draw from what is left
                w = left.astype(float)
            got = np.minimum(rng.multinomial(need, w / w.sum()), left)
            counts += got
            left -= got
            need -= int(got.sum())
        start = np.array([len(p) for p in pools]) - left - counts  # first unused of each pool
        parts.append(np.sort(np.concatenate([p[s:s + c] for p, s, c in zip(pools, start, counts)])).astype(np.int64))
    return parts


def shards(labels: np.ndarray, n_nodes: int, rng: np.random.Generator, shards_per_client: int = 2) -> list[np.ndarray]:
    """McMahan et al. 2017's pathological non-IID split: sort by label, cut into
    ``n_nodes * shards_per_client`` equal shards, deal them at random.

    H. B. McMahan et al., "Communication-efficient learning of deep networks from
    decentralized data", AISTATS 2017, section 3: "sort the data by digit label, divide it
    into 200 shards of size 300, and assign each of 100 clients 2 shards" (so most clients
    hold two digits). The samples are ordered by label, index order kept within a class;
    shard j is samples ``j*S .. (j+1)*S - 1`` of that order with ``S = N // (n *
    shards_per_client)``; a random permutation (``rng``, the run's seed) deals them,
    ``shards_per_client`` to each node. A shard at a class boundary holds two classes, and
    two shards of one class may land on one node, so a node holds 1 to ``2 *
    shards_per_client`` classes, at most ``shards_per_client`` when every class size is a
    multiple of S. The ``N mod (n * shards_per_client)`` last samples of that order are
    unused (none for MNIST with 100 nodes and 2 shards each).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels.
    n_nodes : int
    rng : np.random.Generator
    shards_per_client : int

    Returns
    -------
    list of np.ndarray
        Sorted, disjoint index arrays of ``shards_per_client * S`` samples each.

    Raises
    ------
    ValueError
        ``shards_per_client < 1``, or fewer samples than shards.
    """
    _check_nodes(n_nodes)
    if int(shards_per_client) < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    n_shards = int(n_nodes) * int(shards_per_client)
    size = len(labels) // n_shards
    if size < 1:
        raise ValueError(f"{len(labels)} samples cannot be cut into {n_shards} shards; use fewer nodes or "
                         f"fewer shards_per_client")
    order = np.argsort(np.asarray(labels), kind="stable")[:n_shards * size].reshape(n_shards, size)
    deal = rng.permutation(n_shards).reshape(n_nodes, shards_per_client)
    return [np.sort(order[d].reshape(-1)).astype(np.int64) for d in deal]


def k_classes(labels: np.ndarray, n_nodes: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each node holds ``k`` classes drawn at random; a class's samples are split equally
    (after a shuffle) among the nodes that drew it.

    Li et al. 2022, "Federated learning on non-IID data silos: an experimental study"
    (NIID-Bench's ``noniid-#label{k}``, ``partition_data`` in Xtra-Computing/NIID-Bench
    ``utils.py``): node i's first class is ``i mod C`` (so with ``n_nodes >= C`` every class,
    hence every sample, is used), its other ``k - 1`` are drawn uniformly without
    replacement from the rest with ``rng``. Different seeds give different class sets
    (node i's first class excepted); node sizes vary with how many nodes share a class.

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
        Sorted, disjoint index arrays, each of exactly ``k`` classes when every class has at
        least as many samples as nodes that drew it.

    Raises
    ------
    ValueError
        ``k`` out of range.
    """
    _check_nodes(n_nodes)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    c = len(classes)
    if not 1 <= k <= c:
        raise ValueError(f"classes_per_node must be in 1..{c}, got {k}")
    drawn = []
    for i in range(n_nodes):
        first = i % c
        rest = rng.choice(np.delete(np.arange(c), first), size=k - 1, replace=False)
        drawn.append([first, *(int(r) for r in rest)])
    holders: list[list[int]] = [[] for _ in range(c)]
    for node, mine in enumerate(drawn):
        for cls in mine:
            holders[cls].append(node)
    pieces: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
    for cls, nodes in enumerate(holders):
        if nodes:
            chunks = np.array_split(rng.permutation(np.flatnonzero(labels == classes[cls])), len(nodes))
            for node, chunk in zip(nodes, chunks):
                pieces[node].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in pieces]


def file_order(labels: np.ndarray, shard_size: int, n_nodes: int) -> list[np.ndarray]:
    """Seed 002's layout: the data set in file order, cut into files of ``shard_size`` samples.

    Worker ``n`` gets files ``n*F .. (n+1)*F - 1`` with ``F = n_files // n_nodes``; files
    left over and a partial last file are unused, as in the seed. Not a label skew: MNIST's
    file order mixes the digits, so every node holds all ten.

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


def parity(labels: np.ndarray, n_nodes: int) -> list[np.ndarray]:
    """Seed 000's DEGAN split (m-faezi/DEGAN ``pgelib/redis_ako.py``, where it loads MNIST:
    ``if nID == 0 or nID == 2: X = X_even`` else ``X_odd``): nodes 0 and 2 each hold every
    sample of an even class (0, 2, 4, ...), every other node every sample of an odd class.
    The nodes' sets overlap (nodes 0 and 2 hold the same half), as in the seed. Differences
    from the seed: it adds the test images of the same digits to its training set, simbench
    keeps the test set for evaluation; it draws each minibatch uniformly with replacement
    from the whole half, simbench's learners shuffle the node's samples each epoch.

    Parameters
    ----------
    labels : np.ndarray
        Integer class labels.
    n_nodes : int

    Returns
    -------
    list of np.ndarray
        Sorted index arrays: the even-class samples for nodes 0 and 2, the odd-class ones for
        the others.
    """
    _check_nodes(n_nodes)
    labels = np.asarray(labels)
    even = np.flatnonzero(labels % 2 == 0).astype(np.int64)
    odd = np.flatnonzero(labels % 2 == 1).astype(np.int64)
    return [even.copy() if i in (0, 2) else odd.copy() for i in range(int(n_nodes))]


def flwr(labels: np.ndarray, n_nodes: int, rng: np.random.Generator, partitioner: dict | None) -> list[np.ndarray]:
    """A Flower Datasets partitioner (``flwr_datasets.partitioner``) run on the labels.

    ``partitioner`` is ``{"name": <class name>, **its keyword arguments}``, e.g. ``{"name":
    "DirichletPartitioner", "alpha": 0.3}`` or ``{"name": "PathologicalPartitioner",
    "num_classes_per_partition": 2}``. simbench sets ``num_partitions`` (the data holders),
    ``partition_by`` (the label column) and ``seed`` (drawn from ``rng``, so the run's seed
    decides the split) where the class takes them. The labels become a ``datasets.Dataset``
    with a ``label`` and an ``index`` column; partition i is node i's ``index`` values.
    Flower's partitioners are the reference for their own rules (flwr-datasets,
    ``flwr_datasets/partitioner/*.py``); some may repeat or leave out samples.

    Raises
    ------
    ValueError
        flwr-datasets not installed, no or an unknown partitioner name, an argument simbench
        sets, or the partitioner's own failure (any exception it raises, its first line, with
        the number of partitions asked for), each in one line.
    """
    _check_nodes(n_nodes)
    spec = dict(partitioner or {})
    name = spec.pop("name", None)
    try:
        import datasets
        from flwr_datasets import partitioner as flp
    except ImportError:
        raise ValueError("partition flwr needs Flower Datasets: pip install 'simbench[flwr]'") from None
    known = sorted(n for n in dir(flp) if n.endswith("Partitioner") and n != "Partitioner"
                   and isinstance(getattr(flp, n), type) and issubclass(getattr(flp, n), flp.Partitioner))
    if name not in known:
        raise ValueError(f"flwr: name must be one of {', '.join(known)}, got {name!r}")
    taken = sorted(set(spec) & set(FLWR_SET_BY_SIMBENCH))
    if taken:
        raise ValueError(f"flwr: {', '.join(taken)}: set by simbench (num_partitions: the data holders, "
                         f"partition_by: the label column, seed: from the run's seed)")
    cls = getattr(flp, name)
    accepts = inspect.signature(cls.__init__).parameters
    given = {"num_partitions": int(n_nodes), "partition_by": "label", "seed": int(rng.integers(2**31))}
    kwargs = {k: v for k, v in given.items() if k in accepts} | spec
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Flower's retries and notes; data_split.txt shows the outcome
            part = cls(**kwargs)
            part.dataset = datasets.Dataset.from_dict({"label": np.asarray(labels).tolist(),
                                                       "index": np.arange(len(labels)).tolist()})
            return [np.sort(np.asarray(part.load_partition(i)["index"], dtype=np.int64)) for i in range(int(n_nodes))]
    except Exception as exc:  # whatever a third-party partitioner raises comes from the config
        first = (str(exc).strip().splitlines() or [""])[0]
        if not isinstance(exc, (TypeError, ValueError)) or not first:
            first = f"{type(exc).__name__}: {first}".rstrip(": ")
        raise ValueError(f"flwr: {name} ({int(n_nodes)} partitions, one per data holder): {first}") from None


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
        ``shards``: ``shards_per_client`` (2); ``k_classes``: ``k`` (2); ``dirichlet``:
        ``alpha`` (0.5), ``variant`` (hsu), ``min_size`` (1); ``file_order``: ``shard_size``
        (50); ``fegan``: ``magic_num`` (5000); ``flwr``: ``partitioner`` (a dict, see
        :func:`flwr`); ``iid``, ``parity``: none.

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
    if scheme == "shards":
        return shards(labels, n_nodes, rng, kw["shards_per_client"])
    if scheme == "dirichlet":
        return dirichlet(labels, n_nodes, kw["alpha"], rng, kw["min_size"], variant=kw["variant"])
    if scheme == "k_classes":
        return k_classes(labels, n_nodes, kw["k"], rng)
    if scheme == "fegan":
        return fegan(labels, n_nodes, rng, kw["magic_num"])
    if scheme == "parity":
        return parity(labels, n_nodes)
    if scheme == "flwr":
        return flwr(labels, n_nodes, rng, kw["partitioner"])
    return file_order(labels, kw["shard_size"], n_nodes)


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


def summary(parts: list[np.ndarray], labels: np.ndarray, num_classes: int, nodes: list[int] | None = None,
            title: str = "") -> str:
    """A plain-text table of the split: per node its sample count, its classes and the
    count of each class, then totals (how many samples are used, and how many twice).

    Parameters
    ----------
    parts : list of np.ndarray
    labels : np.ndarray
    num_classes : int
    nodes : list of int, optional
        The node ids of ``parts`` (default 0..n-1).
    title : str
        A first line.

    Returns
    -------
    str
    """
    labels = np.asarray(labels)
    hist = class_histogram(parts, labels, num_classes)
    nodes = list(range(len(parts))) if nodes is None else list(nodes)
    width = max(5, len(str(int(hist.max()))) if hist.size else 1)
    lines = [title] if title else []
    lines.append("node  samples  classes  " + " ".join(f"{c:>{width}}" for c in range(num_classes)))
    for node, row in zip(nodes, hist):
        lines.append(f"{node:>4}  {int(row.sum()):>7}  {int((row > 0).sum()):>7}  "
                     + " ".join(f"{int(v):>{width}}" for v in row))
    used = np.concatenate(parts) if parts else np.empty(0, np.int64)
    distinct = len(np.unique(used))
    per_node = (hist > 0).sum(axis=1) if len(hist) else np.zeros(0)
    lines.append(f"total {len(used)} samples on {len(parts)} nodes, {distinct} distinct of {len(labels)} "
                 f"({len(labels) - distinct} unused, {len(used) - distinct} held more than once); "
                 f"classes per node: min {int(per_node.min()) if len(per_node) else 0}, "
                 f"mean {float(per_node.mean()) if len(per_node) else 0:.2f}, max {int(per_node.max()) if len(per_node) else 0}; "
                 f"distinct class sets: {len({tuple(np.flatnonzero(r)) for r in hist})}")
    return "\n".join(lines) + "\n"
