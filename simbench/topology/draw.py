"""Render a topology to a PNG: roles as colours, compute speed as size, link costs as labels."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from simbench.topology.io import describe, format_bandwidth, format_duration

ROLE_COLOURS = {"server": "#d62728", "worker": "#1f77b4"}
_EXTRA_COLOURS = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
NO_ROLE = "(no role)"
_NO_ROLE_COLOUR = "#7f7f7f"
_CIRCULAR_KINDS = {"ring", "complete", "exponential"}


def _is_star(graph: nx.Graph) -> bool:
    n = graph.number_of_nodes()
    degrees = sorted(d for _, d in graph.degree)
    return n >= 3 and degrees[-1] == n - 1 and degrees[-2] == 1


def _is_circular(graph: nx.Graph) -> bool:
    """Rings and cliques read best on a circle; so do circulant graphs like exponential."""
    n, m = graph.number_of_nodes(), graph.number_of_edges()
    if graph.graph.get("kind") in _CIRCULAR_KINDS or m == n * (n - 1) // 2:
        return True
    return n >= 3 and nx.is_connected(graph) and all(d == 2 for _, d in graph.degree)


MAX_NODES, MAX_EDGES = 1000, 20_000
"""The largest topology :func:`draw` draws (a bigger one would be an unreadable hairball that
takes minutes)."""


def _lattice_layout(graph: nx.Graph) -> dict | None:
    """Row-major grid positions for grids and tori (their builders record rows and cols)."""
    rows, cols = graph.graph.get("rows"), graph.graph.get("cols")
    if graph.graph.get("kind") not in ("grid", "torus") or not rows or not cols or rows * cols != len(graph):
        return None
    return {v: np.array([v % cols, -(v // cols)], dtype=float) for v in graph.nodes}


def _wraps(graph: nx.Graph, pos: dict) -> list[tuple[int, int]]:
    """A torus's wrap-around links: those longer than one grid step."""
    return [(u, v) for u, v in graph.edges if np.abs(pos[u] - pos[v]).sum() > 1.5]


def _layout(graph: nx.Graph) -> dict:
    """Grid for grids and tori, circle for ring/complete-like graphs, hub-and-spokes for
    stars, seeded spring otherwise."""
    lattice = _lattice_layout(graph)
    if lattice is not None:
        return lattice
    nodes = sorted(graph.nodes)
    if graph.graph.get("kind") == "star" or _is_star(graph):
        top = max(d for _, d in graph.degree)
        hubs = [v for v in nodes if graph.degree(v) == top]  # one hub, or a star's several servers
        return nx.shell_layout(graph, [hubs, [v for v in nodes if v not in hubs]])
    if _is_circular(graph):
        # Node 0 at the top, ids increasing clockwise, as people draw rings.
        angles = np.pi / 2 - 2 * np.pi * np.arange(len(nodes)) / max(len(nodes), 1)
        return {v: np.array([np.cos(a), np.sin(a)]) for v, a in zip(nodes, angles)}
    return nx.spring_layout(graph, seed=0)


def _role_colours(graph: nx.Graph) -> dict[str, str]:
    """Fixed colours for server/worker, a stable palette for any other role."""
    # Sorted so colours are stable across graphs; nodes without a role listed last.
    roles = sorted({data.get("role", NO_ROLE) for _, data in graph.nodes(data=True)}, key=lambda r: (r == NO_ROLE, r))
    colours, extra = {}, iter(_EXTRA_COLOURS * (len(roles) // len(_EXTRA_COLOURS) + 1))
    for role in roles:
        colours[role] = ROLE_COLOURS.get(role) or (_NO_ROLE_COLOUR if role == NO_ROLE else next(extra))
    return colours


def _edge_label(data: dict) -> str:
    parts = []
    if "latency" in data:
        parts.append(format_duration(data["latency"], sep=" ").replace("us", "µs"))
    if "bandwidth" in data:
        parts.append(format_bandwidth(data["bandwidth"], sep=" "))
    return " / ".join(parts)


def _draw_edge_labels(ax, graph: nx.Graph, pos: dict) -> str | None:
    """Label edges; when every link is identical return one caption instead of clutter."""
    labels = {(u, v): _edge_label(d) for u, v, d in graph.edges(data=True)}
    labels = {e: text for e, text in labels.items() if text}
    if not labels:
        return None
    distinct = set(labels.values())
    if len(distinct) == 1 and len(labels) == graph.number_of_edges():
        return f"all links: {distinct.pop()}"
    nx.draw_networkx_edge_labels(graph, pos, edge_labels=labels, ax=ax, font_size=6,
                                 bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    return None


def _legend(ax, colours: dict[str, str], speeds: list[float]) -> None:
    handles = [Line2D([], [], marker="o", linestyle="", markersize=9, markerfacecolor=c,
                      markeredgecolor="black", label=role) for role, c in colours.items()]
    if min(speeds) != max(speeds):
        handles.append(Line2D([], [], linestyle="", label="size ∝ compute speed"))
    ax.legend(handles=handles, title="role", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def draw(graph: nx.Graph, path_png, title: str | None = None) -> None:
    """Save a PNG picture of a topology.

    Parameters
    ----------
    graph : networkx.Graph
        Optional node attributes ``role`` (colour) and ``speed`` (size); optional edge
        attributes ``latency``/``bandwidth`` (edge labels such as ``"5 ms / 100 Mbit/s"``).
    path_png : str or os.PathLike
        Output file; parent directories are created.
    title : str, optional
        Figure title; the one-line :func:`describe` summary is always shown under it.

    Returns
    -------
    None
    """
    n = graph.number_of_nodes()
    if n > MAX_NODES or graph.number_of_edges() > MAX_EDGES:
        raise ValueError(f"{n} nodes and {graph.number_of_edges()} edges are too many to draw; at most {MAX_NODES} "
                         f"nodes and {MAX_EDGES} edges")
    side = 6.0 if n <= 20 else 8.0
    # Figure + Agg canvas instead of pyplot: no global state, no GUI, safe in threads.
    fig = Figure(figsize=(side + 2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    pos = _layout(graph)
    colours = _role_colours(graph)
    nodes = sorted(graph.nodes)
    speeds = [float(graph.nodes[v].get("speed", 1.0)) for v in nodes]
    base = float(np.clip(6000 / max(n, 1), 80, 500))
    wraps = _wraps(graph, pos) if graph.graph.get("kind") == "torus" else []
    straight = [e for e in graph.edges if e not in set(wraps)]
    nx.draw_networkx_edges(graph, pos, edgelist=straight, ax=ax, edge_color="#999999", width=1.2)
    if wraps:  # a torus's wrap-around links as dashed arcs, not lines across the grid
        nx.draw_networkx_edges(graph, pos, edgelist=wraps, ax=ax, edge_color="#bbbbbb", width=1.0, style="dashed",
                               arrows=True, arrowstyle="-", connectionstyle="arc3,rad=0.25")
    nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, edgecolors="black", linewidths=0.8,
                           node_color=[colours[graph.nodes[v].get("role", NO_ROLE)] for v in nodes],
                           node_size=[base * float(np.clip(s, 0.25, 4.0)) for s in speeds])
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8 if n <= 40 else 6, font_color="white",
                            font_weight="bold")
    caption = _draw_edge_labels(ax, graph, pos)
    _legend(ax, colours, speeds or [1.0])
    fig.suptitle(title or "Topology", fontsize=13)
    ax.set_title(describe(graph) + (f"\n{caption}" if caption else ""), fontsize=9, color="#444444")
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120, bbox_inches="tight")
