"""Tests for simbench.topology: builders, file formats, mixing weights and drawing."""

from __future__ import annotations


import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simbench.topology import (
    BUILDERS,
    TopologyError,
    build,
    describe,
    draw,
    from_spec,
    load,
    metropolis_hastings_weights,
    save,
)

from simhelpers import REPO

TOPOLOGIES = REPO / "topologies"

# Sizes each builder accepts with its default parameters (small, edge-case heavy).
VALID_SIZES = {
    "ring": [2, 3, 8],
    "line": [1, 2, 7],
    "complete": [1, 2, 6],
    "star": [2, 3, 9],
    "grid": [1, 4, 9, 16],
    "torus": [1, 4, 9, 16],
    "erdos_renyi": [1, 2, 10, 30],
    "random_regular": [4, 6, 10],
    "small_world": [5, 10, 20],
    "exponential": [1, 2, 8, 13],
}


def _snapshot(graph: nx.Graph):
    """Everything that defines a topology, in a comparable form."""
    nodes = sorted(graph.nodes(data=True))
    edges = sorted((min(u, v), max(u, v), sorted(d.items())) for u, v, d in graph.edges(data=True))
    return nodes, edges


# ----------------------------------------------------------------------- builders


def test_registry_covers_every_kind_under_test():
    assert set(BUILDERS) == set(VALID_SIZES)


@pytest.mark.parametrize("kind,n", [(k, n) for k, sizes in VALID_SIZES.items() for n in sizes])
def test_builder_invariants(kind, n):
    graph = build(kind, n, seed=7)
    assert isinstance(graph, nx.Graph) and not graph.is_directed()
    assert sorted(graph.nodes) == list(range(n))
    assert nx.is_connected(graph)
    assert nx.number_of_selfloops(graph) == 0
    assert _snapshot(build(kind, n, seed=7)) == _snapshot(graph)
    same_rng = build(kind, n, seed=np.random.default_rng(3)), build(kind, n, seed=np.random.default_rng(3))
    assert _snapshot(same_rng[0]) == _snapshot(same_rng[1])


def test_ring_degrees_and_two_node_ring():
    assert {d for _, d in build("ring", 8).degree} == {2}
    assert sorted(build("ring", 2).edges) == [(0, 1)]


def test_line_is_a_path():
    assert sorted(build("line", 4).edges) == [(0, 1), (1, 2), (2, 3)]


def test_torus_3x3():
    graph = build("torus", 9)
    assert {d for _, d in graph.degree} == {4}
    assert set(graph[0]) == {1, 2, 3, 6}
    assert set(graph[4]) == {1, 3, 5, 7}


def test_torus_small_sides_stay_simple():
    assert sorted(build("torus", 4).edges) == [(0, 1), (0, 2), (1, 3), (2, 3)]
    assert {d for _, d in build("torus", 6, rows=2, cols=3).degree} == {3}


def test_grid_3x3_and_rectangular():
    graph = build("grid", 9)
    assert graph.degree[0] == 2 and graph.degree[4] == 4 and graph.number_of_edges() == 12
    rect = build("grid", 10, rows=2, cols=5)
    assert set(rect[0]) == {1, 5} and set(rect[9]) == {4, 8}
    assert set(build("grid", 10, cols=5)[0]) == {1, 5}


def test_grid_needs_square_or_shape():
    with pytest.raises(TopologyError, match=r"n=10 must be a perfect square.*`rows` and `cols`"):
        build("grid", 10)
    with pytest.raises(TopologyError, match="`rows`"):
        build("torus", 10, rows=3, cols=3)


def test_star_roles():
    graph = build("star", 6)
    assert graph.degree[0] == 5
    assert graph.nodes[0]["role"] == "server"
    assert {graph.nodes[i]["role"] for i in range(1, 6)} == {"worker"}


def test_star_with_several_hubs_links_each_hub_to_everyone():
    graph = build("star", 10, hubs=3)
    assert [graph.degree[h] for h in range(3)] == [9, 9, 9]
    assert {graph.degree[i] for i in range(3, 10)} == {3}  # workers reach only the hubs
    assert [graph.nodes[i]["role"] for i in range(10)] == ["server"] * 3 + ["worker"] * 7
    assert sorted(build("star", 5, hubs=1).edges()) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    with pytest.raises(TopologyError, match=r"star: parameter `hubs`=4 must be < n=4"):
        build("star", 4, hubs=4)
    with pytest.raises(TopologyError, match=r"star: parameter `hubs` must be an integer >= 1, got 0"):
        build("star", 4, hubs=0)


def test_complete_edge_count():
    assert build("complete", 6).number_of_edges() == 15


def test_exponential_neighbours():
    assert set(build("exponential", 8)[0]) == {1, 2, 4, 6, 7}
    for n in (5, 12):
        graph = build("exponential", n)
        hops = [2**j for j in range(n.bit_length()) if 2**j < n]
        for i in range(n):
            assert set(graph[i]) == {(i + h) % n for h in hops} | {(i - h) % n for h in hops}


def test_random_kinds_respect_parameters_and_seeds():
    assert {d for _, d in build("random_regular", 10, degree=4, seed=1).degree} == {4}
    assert build("erdos_renyi", 12, p=1.0).number_of_edges() == 66
    assert _snapshot(build("erdos_renyi", 30, seed=0)) != _snapshot(build("erdos_renyi", 30, seed=1))
    ring_lattice = build("small_world", 10, k=4, p=0.0, seed=0)
    assert {d for _, d in ring_lattice.degree} == {4}


@pytest.mark.parametrize("kind,n,params,needle", [
    ("hypercube", 8, {}, "unknown topology kind 'hypercube'; allowed: ring, grid"),
    ("ring", 8, {"p": 0.5}, "unknown parameter `p`; allowed: (none)"),
    ("erdos_renyi", 8, {"prob": 0.5}, "unknown parameter `prob`; allowed: p"),
    ("ring", 1, {}, "`n`"),
    ("ring", True, {}, "`n`"),
    ("erdos_renyi", 10, {"p": 1.5}, "`p`"),
    ("erdos_renyi", 10, {"p": 0.0}, "`p`"),
    ("random_regular", 5, {"degree": 3}, "`degree`"),
    ("random_regular", 4, {"degree": 4}, "`degree`"),
    ("random_regular", 6, {"degree": 1}, "`degree`"),
    ("small_world", 10, {"k": 3}, "`k`"),
    ("small_world", 4, {}, "`k`"),
    ("grid", 9, {"rows": "3"}, "`rows`"),
])
def test_build_errors_name_the_parameter(kind, n, params, needle):
    with pytest.raises(TopologyError) as info:
        build(kind, n, seed=0, **params)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------- mixing


@st.composite
def connected_graphs(draw_):
    """Random spanning tree plus random extra edges: always connected, any shape."""
    n = draw_(st.integers(1, 12))
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for child in range(1, n):
        graph.add_edge(child, draw_(st.integers(0, child - 1)))
    if n > 1:
        pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] != e[1])
        graph.add_edges_from(draw_(st.lists(pairs, max_size=2 * n)))
    return graph


@settings(max_examples=150, deadline=None)
@given(connected_graphs())
def test_metropolis_hastings_properties(graph):
    weights = metropolis_hastings_weights(graph)
    n = graph.number_of_nodes()
    assert weights.shape == (n, n)
    np.testing.assert_allclose(weights, weights.T)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (weights >= -1e-12).all()
    for i in range(n):
        for j in range(n):
            if i != j and not graph.has_edge(i, j):
                assert weights[i, j] == 0.0
            elif i != j:
                assert weights[i, j] == pytest.approx(1 / (1 + max(graph.degree[i], graph.degree[j])))


def test_metropolis_hastings_path_of_three():
    expected = np.array([[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(metropolis_hastings_weights(nx.path_graph(3)), expected)


def test_metropolis_hastings_rejects_bad_ids():
    with pytest.raises(TopologyError, match="0..1"):
        metropolis_hastings_weights(nx.Graph([(1, 2)]))


# --------------------------------------------------------------------------- files


def _rich_graph() -> nx.Graph:
    graph = build("ring", 5)
    graph.nodes[0].update(role="server", speed=2.0)
    graph.nodes[3].update(role="worker", speed=0.5)
    graph.edges[0, 1].update(latency=0.005, bandwidth=12.5e6)
    graph.edges[1, 2].update(latency=0.0002)  # 0.2 * 1e-3 != 0.0002 in floating point
    graph.edges[2, 3].update(bandwidth=1.2345678e7, latency=0.0)
    graph.edges[3, 4].update(latency=0.00123456789012345)
    return graph


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".edgelist", ".txt", ".graphml"])
def test_round_trip_keeps_attributes(tmp_path, suffix):
    graph = _rich_graph()
    save(graph, tmp_path / f"g{suffix}")
    assert _snapshot(load(tmp_path / f"g{suffix}")) == _snapshot(graph)


def test_saved_yaml_uses_human_units(tmp_path):
    save(_rich_graph(), tmp_path / "g.yaml")
    text = (tmp_path / "g.yaml").read_text()
    assert "{u: 0, v: 1, latency: 5ms, bandwidth: 100Mbit/s}" in text
    assert "{id: 0, role: server, speed: 2.0}" in text


def test_yaml_example_format(tmp_path):
    path = tmp_path / "ex.yaml"
    path.write_text(
        "# comment\n"
        "defaults: {latency: 1ms, bandwidth: 1Gbit/s}\n"
        "nodes:\n  - {id: 0, role: server, speed: 2.0}\n  - 1\n  - 2\n  - 3\n"
        "edges:\n  - [0, 1]\n  - {u: 1, v: 2, latency: 5ms, bandwidth: 100Mbit/s}\n  - [2, 3, {latency: 20ms}]\n")
    graph = load(path)
    assert graph.nodes[0] == {"role": "server", "speed": 2.0} and graph.nodes[1] == {}
    assert graph.edges[0, 1] == {"latency": 0.001, "bandwidth": 1.25e8}
    assert graph.edges[1, 2] == {"latency": 0.005, "bandwidth": 12.5e6}
    assert graph.edges[2, 3] == {"latency": 0.02, "bandwidth": 1.25e8}


YAML_ERRORS = [
    ("nodes: 2\n", ["`edges`", "missing"]),
    ("edges: [[0, 1]]\n", ["`nodes`", "missing"]),
    ("nodes: 2\nedges: [[0, 5]]\n", ["edges[0]", "node 5 does not exist", "0..1"]),
    ("nodes: 2\nedges: [[0, 1], [1, 1]]\n", ["edges[1]", "self-loop"]),
    ("nodes: 2\nedges: [[0, 1], [1, 0]]\n", ["edges[1]", "duplicate edge (0, 1)", "edges[0]"]),
    ("nodes: 2\nedges: [{u: 0, v: 1, lat: 5ms}]\n", ["edges[0]", "'lat'", "allowed: u, v, latency, bandwidth"]),
    ("nodes: 2\nedges: [[0, 1, {speed: 2}]]\n", ["edges[0]", "'speed'", "allowed: latency, bandwidth"]),
    ("nodes: [{id: 0, spd: 2}, 1]\nedges: [[0, 1]]\n", ["nodes[0]", "'spd'", "allowed: id, role, speed"]),
    ("nodes: [{id: 0, speed: -1}, 1]\nedges: [[0, 1]]\n", ["nodes[0]", "`speed`"]),
    ("nodes: 2\nedges: [{u: 0, v: 1, latency: 5 parsecs}]\n", ["edges[0] (0, 1)", "`latency`", "allowed:"]),
    ("nodes: 2\nedges: [[0, 1, {bandwidth: fast}]]\n", ["edges[0] (0, 1)", "`bandwidth`"]),
    ("defaults: {latency: soon}\nnodes: 2\nedges: [[0, 1]]\n", ["defaults", "`latency`"]),
    ("defaults: {speed: 1}\nnodes: 2\nedges: [[0, 1]]\n", ["defaults", "'speed'", "allowed: latency, bandwidth"]),
    ("nodes: 4\nedges: [[0, 1], [2, 3]]\n", ["disconnected", "2 components", "{0, 1}", "{2, 3}"]),
    ("nodes: [0, 1, 5]\nedges: [[0, 1], [1, 5]]\n", ["nodes", "ids must be exactly 0..2", "missing [2]", "unexpected [5]"]),
    ("nodes: [0, 1, 1]\nedges: [[0, 1]]\n", ["nodes", "duplicated [1]"]),
    ("nodes: 2\nedges: [[0, 1]]\nlinks: []\n", ["'links'", "allowed: defaults, nodes, edges"]),
    ("nodes: 2\nedges: [[0]]\n", ["edges[0]", "[u, v]"]),
]


@pytest.mark.parametrize("text,needles", YAML_ERRORS)
def test_yaml_validation_errors(tmp_path, text, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load(path)
    message = str(info.value)
    assert "bad.yaml" in message and "\n" not in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("text,needles", [
    ("0 1\n1 1\n", ["line 2", "self-loop"]),
    ("0 1 latency\n", ["line 1", "key=value"]),
    ("0 1 color=red\n", ["line 1", "'color'", "allowed: latency, bandwidth"]),
    ("0 1 {'latency': 'slow'}\n", ["line 1", "`latency`"]),
    ("0 x\n", ["line 1", "integer"]),
    ("0 1\n2 3\n", ["disconnected"]),
    ("0 2\n", ["missing [1]"]),
    ("#: nodes 3\n0 1\n1 5\n", ["line 3", "node 5 does not exist"]),
    ("# nothing here\n", ["edges"]),
])
def test_edgelist_validation_errors(tmp_path, text, needles):
    path = tmp_path / "bad.edgelist"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load(path)
    assert "bad.edgelist" in str(info.value)
    for needle in needles:
        assert needle in str(info.value)


def test_edgelist_reads_networkx_dict_format(tmp_path):
    graph = _rich_graph()
    nx.write_edgelist(graph, tmp_path / "nx.edgelist", data=True)
    loaded = load(tmp_path / "nx.edgelist")
    assert sorted(loaded.edges(data=True)) == sorted(graph.edges(data=True))


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(TopologyError, match=r"'\.json'; allowed: \.yaml"):
        load(tmp_path / "g.json")
    with pytest.raises(TopologyError, match="not found"):
        load(tmp_path / "absent.yaml")


@pytest.mark.parametrize("path", sorted(p for p in TOPOLOGIES.glob("*") if p.is_file()), ids=lambda p: p.name)
def test_shipped_topologies_load(path):
    graph = load(path)
    assert nx.is_connected(graph) and sorted(graph.nodes) == list(range(graph.number_of_nodes()))


def test_shipped_topology_contents():
    star = load(TOPOLOGIES / "star_ps16.yaml")
    assert star.number_of_nodes() == 17 and star.degree[0] == 16
    assert star.nodes[0]["role"] == "server" and star.nodes[5]["role"] == "worker"
    assert {d["bandwidth"] for _, _, d in star.edges(data=True)} == {12.5e6}
    torus = load(TOPOLOGIES / "torus9_hetero.yaml")
    assert {d for _, d in torus.degree} == {4}
    assert sorted(v for v, s in torus.nodes(data="speed") if s == 0.5) == [4, 7]
    assert len({(d["latency"], d["bandwidth"]) for _, _, d in torus.edges(data=True)}) == 3


# ---------------------------------------------------------------- spec and summary


def test_from_spec_kinds_and_files():
    assert sorted(from_spec({"kind": "ring"}, 5, seed=0).edges) == sorted(nx.cycle_graph(5).edges)
    assert from_spec({"kind": "torus", "rows": 3, "cols": 3}, None, seed=0).number_of_nodes() == 9
    a = from_spec({"kind": "erdos_renyi", "seed": 4}, 20, seed=1)
    b = from_spec({"kind": "erdos_renyi", "seed": 4}, 20, seed=2)
    assert _snapshot(a) == _snapshot(b)
    ring_file = str(TOPOLOGIES / "ring8.yaml")
    assert from_spec({"file": ring_file}, None, seed=0).number_of_nodes() == 8
    assert from_spec({"file": ring_file}, 8, seed=0).number_of_nodes() == 8


@pytest.mark.parametrize("spec,n,needle", [
    ({"file": str(TOPOLOGIES / "ring8.yaml")}, 10, "`nodes`"),
    ({"kind": "ring"}, None, "`nodes`"),
    ({"kind": "ring", "file": "x.yaml"}, 4, "exactly one of `kind` or `file`"),
    ({}, 4, "exactly one of `kind` or `file`"),
    ({"kind": "ring", "degree": 3}, 4, "`degree`"),
])
def test_from_spec_errors(spec, n, needle):
    with pytest.raises(TopologyError) as info:
        from_spec(spec, n, seed=0)
    assert needle in str(info.value)


def test_describe():
    assert describe(nx.path_graph(3)) == "3 nodes, 2 edges, degree 1-2, diameter 2, connected"
    assert describe(build("torus", 9)) == "9 nodes, 18 edges, degree 4, diameter 2, connected"
    assert "disconnected (2 components)" in describe(nx.Graph([(0, 1), (2, 3)]))


# --------------------------------------------------------------------------- draw


@pytest.mark.parametrize("make", [
    lambda: load(TOPOLOGIES / "torus9_hetero.yaml"),
    lambda: build("star", 7),
    lambda: build("small_world", 12, seed=0),
], ids=["hetero-file", "star", "small-world"])
def test_draw_writes_png(tmp_path, make):
    out = tmp_path / "sub" / "topo.png"
    draw(make(), out, title="test")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
