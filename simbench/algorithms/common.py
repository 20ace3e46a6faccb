"""Pure helpers shared by algorithms: weighted averages and server selection."""

from __future__ import annotations

from typing import Sequence

import networkx as nx
import torch

from ..core.node import Algorithm
from ..core.schema import ConfigError


def weighted_average(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_i w_i v_i / sum_i w_i for flat parameter (or gradient) vectors."""
    if not vectors:
        raise ValueError("nothing to average")
    total = float(sum(weights))
    out = torch.zeros_like(vectors[0])
    for v, w in zip(vectors, weights):
        out.add_(v, alpha=float(w) / total)
    return out


def server_roles(graph: nx.Graph, algorithm: str) -> dict[int, str]:
    """One server linked to every other node: the node with role ``server`` or the hub.

    Raises ConfigError naming ``topology`` when no node is adjacent to all others.
    """
    declared = [i for i, r in graph.nodes(data="role") if r == "server"]
    n = graph.number_of_nodes()
    if declared:
        server = declared[0]
    else:
        server = max(graph.nodes, key=lambda i: (graph.degree(i), -i))
    if graph.degree(server) != n - 1:
        raise ConfigError(
            f"topology: {algorithm} needs a server linked to every other node (e.g. topology: {{kind: star}}); "
            f"node {server} reaches only {graph.degree(server)} of {n - 1}"
        )
    return {i: ("server" if i == server else "worker") for i in graph.nodes}


def require_hubs(graph: nx.Graph, algorithm: str, servers, hint: str) -> None:
    """ConfigError naming ``topology`` unless every node in ``servers`` is linked to all others."""
    n = graph.number_of_nodes()
    for s in servers:
        if graph.degree(s) != n - 1:
            raise ConfigError(f"topology: {algorithm} needs server node {s} linked to every other node ({hint}); "
                              f"it reaches {graph.degree(s)} of {n - 1}")


class ServerAlgorithm(Algorithm):
    """An algorithm with a central server: it holds a model and its rows are the global model's."""

    model_holders: tuple[str, ...] = ("worker", "server")

    @classmethod
    def model_roles(cls):
        return cls.model_holders

    @classmethod
    def reporting_roles(cls):
        return ("server",)
