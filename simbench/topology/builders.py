"""Build the standard communication graphs of decentralized training by name.

Every builder returns an undirected, simple, connected ``nx.Graph`` whose nodes are
the integers ``0..n-1``. Builders are plain functions collected in the explicit
registry :data:`BUILDERS`; :func:`build` looks a kind up, rejects unknown parameters
and calls it. Random builders take a ``seed`` the way networkx does (an int, a
``np.random.Generator``/``random.Random`` or ``None``) and are deterministic for an
int seed.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Callable, Iterator

import networkx as nx
import numpy as np

MAX_TRIES = 1000  # redraws allowed before a random builder gives up on connectivity


class TopologyError(ValueError):
    """A topology could not be built or loaded; the message is one line naming the culprit."""

    def __init__(self, message: str):
        # Callers log these as single lines, so never let a newline slip through.
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- checks


def _check_n(kind: str, n, minimum: int = 1) -> int:
    """Return ``n`` as an int, or raise naming ``n`` when it is not an int >= minimum."""
    try:
        if isinstance(n, bool):
            raise TypeError
        value = operator.index(n)
    except TypeError:
        raise TopologyError(f"{kind}: parameter `n` (nodes) must be an integer >= {minimum}, got {n!r}") from None
    if value < minimum:
        raise TopologyError(f"{kind}: parameter `n` (nodes) must be an integer >= {minimum}, got {value}")
    return value


def _int_param(kind: str, name: str, value, minimum: int) -> int:
    """Validate an integer parameter (bools are rejected: ``True`` is not a degree)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise TopologyError(f"{kind}: parameter `{name}` must be an integer >= {minimum}, got {value!r}") from None
    if result < minimum:
        raise TopologyError(f"{kind}: parameter `{name}` must be an integer >= {minimum}, got {result}")
    return result


def _prob_param(kind: str, name: str, value) -> float:
    """Validate a probability parameter in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TopologyError(f"{kind}: parameter `{name}` must be a probability in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise TopologyError(f"{kind}: parameter `{name}` must be a probability in [0, 1], got {value}")
    return float(value)


def _attempt_seeds(seed) -> Iterator:
    """Yield one seed per draw attempt, deterministically derived from an int ``seed``.

    The first attempt uses the seed itself, so a graph that is connected on the first
    draw equals the plain networkx generator's output. A generator object is passed
    through unchanged: its state advances between draws, which is what makes redraws
    differ.
    """
    if isinstance(seed, bool):
        raise TopologyError(f"parameter `seed` must be an int, a random generator or None, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        seed = int(seed)
        yield seed
        for attempt in range(1, MAX_TRIES):
            state = np.random.SeedSequence([abs(seed), int(seed < 0), attempt]).generate_state(1)[0]
            yield int(state)
    else:
        for _ in range(MAX_TRIES):
            yield seed


def _connected_draw(kind: str, draw: Callable, seed, hint: str) -> nx.Graph:
    """Call ``draw(seed)`` with derived seeds until the graph is connected."""
    for attempt_seed in _attempt_seeds(seed):
        graph = draw(attempt_seed)
        if nx.is_connected(graph):
            return graph
    raise TopologyError(f"{kind}: no connected graph in {MAX_TRIES} draws; {hint}")


def _lattice(kind: str, n, rows, cols, periodic: bool) -> nx.Graph:
    """Row-major rows x cols lattice; periodic adds wrap-around links (a torus)."""
    rows, cols = _grid_shape(kind, n, rows, cols)
    graph = nx.Graph()
    graph.add_nodes_from(range(rows * cols))
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((1, 0), (0, 1)):
                rr, cc = r + dr, c + dc
                if periodic:
                    rr, cc = rr % rows, cc % cols
                elif rr >= rows or cc >= cols:
                    continue
                # On a side of length 1 the wrap points back at the node itself, and on a
                # side of 2 it repeats an existing link; nx.Graph dedups the latter.
                if (rr, cc) != (r, c):
                    graph.add_edge(r * cols + c, rr * cols + cc)
    graph.graph.update(rows=rows, cols=cols)
    return graph


def _grid_shape(kind: str, n, rows, cols) -> tuple[int, int]:
    """Resolve (rows, cols) from whichever of n, rows, cols were given."""
    n = _check_n(kind, n)
    if rows is None and cols is None:
        side = math.isqrt(n)
        if side * side != n:
            raise TopologyError(f"{kind}: n={n} must be a perfect square, or give parameters `rows` and `cols` with rows*cols == n")
        return side, side
    if rows is not None:
        rows = _int_param(kind, "rows", rows, 1)
    if cols is not None:
        cols = _int_param(kind, "cols", cols, 1)
    if rows is None or cols is None:
        given, name = (rows, "rows") if rows is not None else (cols, "cols")
        if n % given:
            raise TopologyError(f"{kind}: n={n} is not divisible by `{name}`={given}; rows*cols must equal n")
        rows, cols = (given, n // given) if name == "rows" else (n // given, given)
    if rows * cols != n:
        raise TopologyError(f"{kind}: parameters `rows`*`cols` = {rows}*{cols} = {rows * cols} must equal n={n}")
    return rows, cols


def _finish(graph: nx.Graph, kind: str) -> nx.Graph:
    """Tag the graph with its kind (drawing uses it to pick a layout)."""
    graph.graph["kind"] = kind
    return graph


# ------------------------------------------------------------------------- builders


def ring(n: int, *, seed=None) -> nx.Graph:
    """Cycle 0-1-...-(n-1)-0; with n == 2 it is a single edge."""
    return _finish(nx.cycle_graph(_check_n("ring", n, 2)), "ring")


def line(n: int, *, seed=None) -> nx.Graph:
    """Path 0-1-...-(n-1)."""
    return _finish(nx.path_graph(_check_n("line", n)), "line")


def complete(n: int, *, seed=None) -> nx.Graph:
    """Every pair of nodes linked."""
    return _finish(nx.complete_graph(_check_n("complete", n)), "complete")


def star(n: int, *, seed=None, hubs=1) -> nx.Graph:
    """Nodes ``0..hubs-1`` (``role="server"``) each linked to every other node; the rest
    (``role="worker"``) only to the hubs. ``hubs > 1`` is the network of a sharded parameter
    server or of federated servers with backups."""
    n = _check_n("star", n, 2)
    hubs = _int_param("star", "hubs", hubs, 1)
    if hubs >= n:
        raise TopologyError(f"star: parameter `hubs`={hubs} must be < n={n} (at least one worker)")
    graph = nx.complete_multipartite_graph(*([1] * hubs), n - hubs)  # hubs 0..hubs-1, then the leaves
    graph = nx.Graph(graph.edges())  # drop networkx's `subset` attributes
    graph.add_nodes_from(range(n))
    nx.set_node_attributes(graph, "worker", "role")
    for h in range(hubs):
        graph.nodes[h]["role"] = "server"
    return _finish(graph, "star")


def grid(n: int, *, seed=None, rows=None, cols=None) -> nx.Graph:
    """2-D rows x cols grid, nodes numbered row-major; square if rows/cols absent."""
    return _finish(_lattice("grid", n, rows, cols, periodic=False), "grid")


def torus(n: int, *, seed=None, rows=None, cols=None) -> nx.Graph:
    """2-D grid with wrap-around links, kept simple for sides of length 1 or 2."""
    return _finish(_lattice("torus", n, rows, cols, periodic=True), "torus")


def erdos_renyi(n: int, *, seed=None, p=None) -> nx.Graph:
    """G(n, p) redrawn until connected; default ``p = 2 ln(n) / n`` (clipped to [0, 1])."""
    n = _check_n("erdos_renyi", n)
    # 2 ln(n)/n is twice the connectivity threshold, so a redraw is rarely needed.
    p = min(1.0, 2 * math.log(n) / n) if p is None else _prob_param("erdos_renyi", "p", p)
    graph = _connected_draw(
        "erdos_renyi", lambda s: nx.erdos_renyi_graph(n, p, seed=s), seed,
        f"raise parameter `p` (got {p:g}; about ln(n)/n = {math.log(n) / n:.3g} or more is needed)")
    return _finish(graph, "erdos_renyi")


def random_regular(n: int, *, seed=None, degree=3) -> nx.Graph:
    """Uniform random ``degree``-regular graph redrawn until connected."""
    n = _check_n("random_regular", n)
    degree = _int_param("random_regular", "degree", degree, 0)
    if degree >= n:
        raise TopologyError(f"random_regular: parameter `degree`={degree} must be < n={n}")
    if (n * degree) % 2:
        raise TopologyError(f"random_regular: n*`degree` = {n}*{degree} must be even")
    if degree < 2 and n > degree + 1:
        raise TopologyError(f"random_regular: parameter `degree`={degree} cannot connect n={n} nodes; use degree >= 2")
    graph = _connected_draw(
        "random_regular", lambda s: nx.random_regular_graph(degree, n, seed=s), seed,
        "raise parameter `degree`")
    return _finish(graph, "random_regular")


def small_world(n: int, *, seed=None, k=4, p=0.1) -> nx.Graph:
    """Connected Watts-Strogatz graph: ring lattice of ``k`` neighbours, rewired with ``p``."""
    n = _check_n("small_world", n, 3)
    k = _int_param("small_world", "k", k, 2)
    # networkx silently floors an odd k to k-1; refuse instead of surprising the user.
    if k % 2 or k >= n:
        raise TopologyError(f"small_world: parameter `k`={k} must be an even integer with 2 <= k < n={n}")
    p = _prob_param("small_world", "p", p)
    next(_attempt_seeds(seed))  # validates the seed type
    try:
        graph = nx.connected_watts_strogatz_graph(n, k, p, tries=MAX_TRIES, seed=seed)
    except nx.NetworkXError:
        raise TopologyError(f"small_world: no connected graph in {MAX_TRIES} draws; lower parameter `p` or raise `k`") from None
    return _finish(graph, "small_world")


def exponential(n: int, *, seed=None) -> nx.Graph:
    """Static exponential graph (Ying et al., 2021): i linked to (i + 2**j) % n for 2**j < n."""
    n = _check_n("exponential", n)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    hop = 1
    while hop < n:
        graph.add_edges_from((i, (i + hop) % n) for i in range(n))
        hop *= 2
    return _finish(graph, "exponential")


BUILDERS: dict[str, Callable[..., nx.Graph]] = {
    "ring": ring,
    "grid": grid,
    "torus": torus,
    "star": star,
    "complete": complete,
    "erdos_renyi": erdos_renyi,
    "random_regular": random_regular,
    "small_world": small_world,
    "exponential": exponential,
    "line": line,
}


def allowed_params(builder: Callable) -> list[str]:
    """Keyword-only parameters of a builder, other than ``seed``."""
    return [name for name, param in inspect.signature(builder).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY and name != "seed"]


def build(kind: str, n: int, *, seed=None, **params) -> nx.Graph:
    """Build a named topology.

    Parameters
    ----------
    kind : str
        A key of :data:`BUILDERS` (``"ring"``, ``"torus"``, ...).
    n : int
        Number of nodes; the result has nodes ``0..n-1``.
    seed : int, numpy.random.Generator, random.Random or None
        Randomness for random kinds, networkx-style; an int makes the result deterministic.
    **params
        Kind-specific parameters (``rows``/``cols`` for grid and torus, ``p`` for
        erdos_renyi, ``degree`` for random_regular, ``k``/``p`` for small_world).

    Returns
    -------
    networkx.Graph
        Undirected, simple and connected; ``graph.graph["kind"]`` holds ``kind``.

    Raises
    ------
    TopologyError
        Unknown kind, unknown parameter, or a parameter value the kind cannot use.
    """
    builder = BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise TopologyError(f"unknown topology kind {kind!r}; allowed: {', '.join(BUILDERS)}")
    allowed = allowed_params(builder)
    for name in params:
        if name not in allowed:
            raise TopologyError(f"{kind}: unknown parameter `{name}`; allowed: {', '.join(allowed) or '(none)'}")
    return builder(n, seed=seed, **params)
