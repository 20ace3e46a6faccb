"""Gossip mixing matrices derived from a topology, for decentralized averaging."""

from __future__ import annotations

import networkx as nx
import numpy as np

from simbench.topology.builders import TopologyError


def metropolis_hastings_weights(graph: nx.Graph) -> np.ndarray:
    """Metropolis-Hastings mixing matrix of an undirected graph.

    ``W[i, j] = 1 / (1 + max(d_i, d_j))`` for every edge ``(i, j)``, the diagonal takes
    the remaining mass ``W[i, i] = 1 - sum_j W[i, j]`` and all other entries are 0. Using
    the larger degree keeps every row sum <= 1 while staying symmetric, so the result is
    doubly stochastic without any knowledge beyond each pair of neighbours.

    Parameters
    ----------
    graph : networkx.Graph
        Undirected, without self-loops, nodes ``0..n-1`` (row/column ``i`` is node ``i``).

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64 matrix, symmetric, nonnegative, rows and columns summing to 1.

    Raises
    ------
    TopologyError
        Directed graph, self-loops, or node ids other than ``0..n-1``.
    """
    n = graph.number_of_nodes()
    if graph.is_directed():
        raise TopologyError("metropolis_hastings_weights: graph must be undirected")
    if set(graph.nodes) != set(range(n)):
        raise TopologyError(f"metropolis_hastings_weights: node ids must be 0..{n - 1}")
    if nx.number_of_selfloops(graph):
        raise TopologyError("metropolis_hastings_weights: self-loops are not allowed (they distort degrees)")
    degree = np.array([graph.degree[i] for i in range(n)], dtype=float)
    weights = np.zeros((n, n))
    if graph.number_of_edges():
        u, v = np.array(graph.edges, dtype=int).T
        w = 1.0 / (1.0 + np.maximum(degree[u], degree[v]))
        weights[u, v] = w
        weights[v, u] = w
    np.fill_diagonal(weights, 1.0 - weights.sum(axis=1))
    return weights
