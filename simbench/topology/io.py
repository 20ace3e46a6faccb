"""Read, write, summarise and configure topologies from files and config blocks.

Three file formats are understood, picked by extension.

YAML (``.yaml``/``.yml``), the format meant for hand editing::

    # comment
    defaults: {latency: 1ms, bandwidth: 1Gbit/s}   # optional; applied to edges without their own
    nodes: 4                       # either a count, or a list:
    # nodes:
    #   - {id: 0, role: server, speed: 2.0}
    #   - 1
    edges:
      - [0, 1]
      - {u: 1, v: 2, latency: 5ms, bandwidth: 100Mbit/s}
      - [2, 3, {latency: 20ms}]

Top-level keys: ``defaults`` (keys ``latency``, ``bandwidth``), ``nodes`` (required),
``edges`` (required) and an optional free-text ``description``. Node mappings allow
``id``, ``role`` (a string) and ``speed`` (relative compute speed, > 0, default 1.0).
Edges are ``[u, v]``, ``[u, v, {attrs}]`` or ``{u, v, latency, bandwidth}``. Latency is
a duration (``5ms``, ``0.005``: seconds) and bandwidth a rate (``100Mbit/s``, ``10MB/s``,
a bare number: bytes/s); graphs hold them as floats in seconds and bytes/s.

Edge list (``.edgelist``/``.txt``), networkx-compatible: one edge a line, ``u v``,
``u v key=value ...`` or ``u v {'latency': '5ms'}``; ``#`` starts a comment. Two
optional comment directives carry what edges cannot: ``#: nodes N`` and
``#: node 0 role=server speed=2.0``.

GraphML (``.graphml``): node ids must read as integers; the same attribute names.

Every file is validated the same way: node ids exactly ``0..n-1``, edges between
existing, distinct nodes, no duplicates, known keys only, readable units and a
connected graph. Failures raise :class:`TopologyError` with one line naming the file,
the node or edge and the field.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import networkx as nx
import yaml

from simbench.core.units import parse_bandwidth, parse_duration
from simbench.topology.builders import TopologyError, build

NODE_KEYS = ("id", "role", "speed")
EDGE_KEYS = ("u", "v", "latency", "bandwidth")
DEFAULT_KEYS = ("latency", "bandwidth")
TOP_KEYS = ("defaults", "nodes", "edges", "description")
YAML_SUFFIXES = (".yaml", ".yml")
EDGELIST_SUFFIXES = (".edgelist", ".txt")
GRAPHML_SUFFIXES = (".graphml",)
_ALL_SUFFIXES = YAML_SUFFIXES + EDGELIST_SUFFIXES + GRAPHML_SUFFIXES


# ------------------------------------------------------------------- human units


_DURATION_SCALES = (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9))
_BITRATE_SCALES = (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3), ("bit/s", 1.0))


def _with_unit(value: float, scales, sep: str) -> str:
    """``value`` in the largest unit it reaches (the smallest unit below that)."""
    if math.isinf(value):
        return "inf"
    # Zero reads best in the base unit ("0s"), not the smallest one ("0ns").
    unit, scale = next(((u, s) for u, s in scales if abs(value) >= s or value == 0), scales[-1])
    return f"{value / scale:.12g}{sep}{unit}"


def format_duration(seconds: float, sep: str = "") -> str:
    """Seconds as a short human string: ``0.005 -> "5ms"`` (``sep=" "`` gives ``"5 ms"``)."""
    return _with_unit(seconds, _DURATION_SCALES, sep)


def format_bandwidth(bytes_per_s: float, sep: str = "") -> str:
    """Bytes/s as bits/s with a prefix: ``12.5e6 -> "100Mbit/s"``."""
    return _with_unit(bytes_per_s * 8, _BITRATE_SCALES, sep)


def _exact_text(value: float, scales, factor: float, parser):
    """A unit string that parses back to exactly ``value``, else the float itself.

    Saved files should round-trip bit for bit, and ``0.2 * 1e-3 != 0.0002`` in floating
    point, so every unit is tried, the natural one first.
    """
    natural = _with_unit(value * factor, scales, "")
    candidates = [natural] + [f"{value * factor / s:.12g}{u}" for u, s in scales]
    return next((text for text in candidates if parser(text) == value), float(value))


# ------------------------------------------------------------------- validation


def _text(path: Path) -> str:
    """A topology file's UTF-8 text (a TopologyError line when it is not that)."""
    from ..core.schema import ConfigError
    from ..core.yamlio import read_text_file
    try:
        return read_text_file(path, "topology")
    except ConfigError as exc:
        raise TopologyError(str(exc)) from None


def _fail(source, where: str, problem: str):
    raise TopologyError(f"{source}: {where}: {problem}")


def _node_id(source, where: str, value) -> int:
    """Node ids are plain ints (YAML ``yes`` would otherwise sneak in as True == 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(source, where, f"node id must be an integer 0..n-1, got {value!r}")
    return value


def _node_attrs(source, where: str, raw: dict) -> dict:
    """Validate a node's ``role``/``speed`` and return them."""
    attrs = {}
    for key, value in raw.items():
        if key not in NODE_KEYS:
            _fail(source, where, f"unknown key {key!r}; allowed: {', '.join(NODE_KEYS)}")
        if key == "role":
            if not isinstance(value, str) or not value:
                _fail(source, where, f"field `role` must be a non-empty string, got {value!r}")
            attrs["role"] = value
        elif key == "speed":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not 0 < value < math.inf:
                _fail(source, where, f"field `speed` must be a positive number (1.0 = nominal), got {value!r}")
            attrs["speed"] = float(value)
    return attrs


def _edge_attrs(source, where: str, raw: dict, allowed=DEFAULT_KEYS) -> dict:
    """Parse ``latency``/``bandwidth`` unit strings into seconds and bytes/s."""
    attrs = {}
    for key, value in raw.items():
        if key not in allowed:
            _fail(source, where, f"unknown key {key!r}; allowed: {', '.join(allowed)}")
        if key == "latency":
            attrs[key] = _parse_field(source, where, key, value, parse_duration)
            if not 0 <= attrs[key] < math.inf:
                _fail(source, where, f"field `latency` must be a finite duration >= 0, got {value!r}")
        elif key == "bandwidth":
            attrs[key] = _parse_field(source, where, key, value, parse_bandwidth)
            if not attrs[key] > 0:
                _fail(source, where, f"field `bandwidth` must be a rate > 0, got {value!r}")
    return attrs


def _parse_field(source, where: str, key: str, value, parser) -> float:
    try:
        return parser(value)
    except ValueError as exc:
        _fail(source, where, f"field `{key}`: {exc}")


def _check_ids(source, ids: list[int], n: int):
    """Node ids must be 0..n-1, each exactly once."""
    seen, duplicates = set(), set()
    for node in ids:
        (duplicates if node in seen else seen).add(node)
    missing = sorted(set(range(n)) - seen)
    unexpected = sorted(seen - set(range(n)))
    if duplicates or missing or unexpected:
        _fail(source, "nodes", f"ids must be exactly 0..{n - 1}, each once; "
              f"missing {missing}, unexpected {unexpected}, duplicated {sorted(duplicates)}")


def _components_text(graph: nx.Graph) -> str:
    parts = []
    for comp in sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0]):
        shown = ", ".join(map(str, comp[:8])) + (", ..." if len(comp) > 8 else "")
        parts.append("{" + shown + "}")
    return " ".join(parts)


def _assemble(source, n: int, node_attrs: dict, edges: list, defaults: dict) -> nx.Graph:
    """Turn validated records into a graph, checking edges and connectivity.

    ``edges`` holds ``(where, u, v, attrs)`` with attrs already parsed.
    """
    graph = nx.Graph(source=str(source))
    graph.add_nodes_from(range(n))
    for node, attrs in node_attrs.items():
        if not 0 <= node < n:
            _fail(source, f"node {node}", f"does not exist; allowed node ids: 0..{n - 1}")
        graph.nodes[node].update(attrs)
    first_seen = {}
    for where, u, v, attrs in edges:
        for node in (u, v):
            if not 0 <= node < n:
                _fail(source, where, f"node {node} does not exist; allowed node ids: 0..{n - 1}")
        if u == v:
            _fail(source, where, f"self-loop on node {u} is not allowed; an edge joins two different nodes")
        key = (min(u, v), max(u, v))
        if key in first_seen:
            _fail(source, where, f"duplicate edge {key}, first given at {first_seen[key]}; list each undirected edge once")
        first_seen[key] = where
        graph.add_edge(u, v, **{**defaults, **attrs})
    if n and not nx.is_connected(graph):
        count = nx.number_connected_components(graph)
        _fail(source, "edges", f"graph is disconnected ({count} components: {_components_text(graph)}); "
              "every node must be reachable")
    return graph


# ------------------------------------------------------------------------- YAML


def _yaml_nodes(source, spec) -> tuple[int, dict]:
    """``nodes:`` as a count or a list of ids / mappings -> (n, {id: attrs})."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            _fail(source, "nodes", f"count must be >= 1, got {spec}")
        return spec, {}
    if not isinstance(spec, list):
        _fail(source, "nodes", f"must be a count or a list of ids / {{id, role, speed}} mappings, got {spec!r}")
    ids, attrs = [], {}
    for i, entry in enumerate(spec):
        where = f"nodes[{i}]"
        if isinstance(entry, dict):
            if "id" not in entry:
                _fail(source, where, f"missing key `id`; allowed: {', '.join(NODE_KEYS)}")
            node = _node_id(source, where, entry["id"])
            attrs[node] = _node_attrs(source, f"{where} (id {node})", entry)
        else:
            node = _node_id(source, where, entry)
        ids.append(node)
    if not ids:
        _fail(source, "nodes", "the list is empty; a topology needs at least one node")
    _check_ids(source, ids, len(ids))
    return len(ids), attrs


def _yaml_edge(source, i: int, entry) -> tuple:
    """One ``edges:`` entry -> (where, u, v, raw attrs)."""
    where = f"edges[{i}]"
    if isinstance(entry, dict):
        for key in ("u", "v"):
            if key not in entry:
                _fail(source, where, f"missing key `{key}`; allowed: {', '.join(EDGE_KEYS)}")
        u, v, raw = entry["u"], entry["v"], {k: x for k, x in entry.items() if k not in ("u", "v")}
        for key in raw:
            if key not in EDGE_KEYS:
                _fail(source, where, f"unknown key {key!r}; allowed: {', '.join(EDGE_KEYS)}")
    elif isinstance(entry, list) and len(entry) in (2, 3):
        u, v, raw = entry[0], entry[1], entry[2] if len(entry) == 3 else {}
        if not isinstance(raw, dict):
            _fail(source, where, f"third item must be a {{latency, bandwidth}} mapping, got {raw!r}")
    else:
        _fail(source, where, f"must be [u, v], [u, v, {{attrs}}] or {{u, v, latency, bandwidth}}, got {entry!r}")
    return where, _node_id(source, where, u), _node_id(source, where, v), raw


def _load_yaml(path: Path) -> nx.Graph:
    from ..core.schema import ConfigError
    from ..core.yamlio import load_yaml_file
    try:
        doc = load_yaml_file(path, "topology")
    except ConfigError as exc:
        raise TopologyError(str(exc)) from None
    if not isinstance(doc, dict):
        _fail(path, "top level", f"must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in doc:
        if key not in TOP_KEYS:
            _fail(path, "top level", f"unknown key {key!r}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("nodes", "edges"):
        if key not in doc:
            _fail(path, key, f"missing required key `{key}`; see the format in simbench/topology/io.py")
    raw_defaults = doc.get("defaults") or {}
    if not isinstance(raw_defaults, dict):
        _fail(path, "defaults", f"must be a mapping with keys {', '.join(DEFAULT_KEYS)}")
    defaults = _edge_attrs(path, "defaults", raw_defaults, DEFAULT_KEYS)
    n, node_attrs = _yaml_nodes(path, doc["nodes"])
    if not isinstance(doc["edges"], list):
        _fail(path, "edges", f"must be a list of edges, got {doc['edges']!r}")
    edges = []
    for i, entry in enumerate(doc["edges"]):
        where, u, v, raw = _yaml_edge(path, i, entry)
        edges.append((where, u, v, _edge_attrs(path, f"{where} ({u}, {v})", raw)))
    return _assemble(path, n, node_attrs, edges, defaults)


def _node_entry(node: int, attrs: dict):
    """A node as written to YAML: a bare id unless it carries attributes."""
    return {"id": node, **attrs} if attrs else node


def _edge_entry(u: int, v: int, attrs: dict):
    """An edge as written to YAML: ``[u, v]`` or a one-line ``{u, v, latency, bandwidth}``."""
    return {"u": u, "v": v, **_edge_text_attrs(attrs)} if attrs else [u, v]


def _edge_text_attrs(attrs: dict) -> dict:
    """Edge attributes as human unit strings where that is exact."""
    out = {}
    if "latency" in attrs:
        out["latency"] = _exact_text(attrs["latency"], _DURATION_SCALES, 1.0, parse_duration)
    if "bandwidth" in attrs:
        out["bandwidth"] = _exact_text(attrs["bandwidth"], _BITRATE_SCALES, 8.0, parse_bandwidth)
    return out


def _save_yaml(graph: nx.Graph, path: Path) -> None:
    node_attrs = {node: _saved_node_attrs(graph, node) for node in graph.nodes}
    nodes = ([_node_entry(node, node_attrs[node]) for node in sorted(graph.nodes)]
             if any(node_attrs.values()) else graph.number_of_nodes())
    edges = [_edge_entry(*sorted((u, v)), _saved_edge_attrs(graph, u, v)) for u, v in sorted(graph.edges)]
    body = yaml.safe_dump({"nodes": nodes, "edges": edges}, sort_keys=False, default_flow_style=None)
    path.write_text(f"# simbench topology: {describe(graph)}\n{body}")


# -------------------------------------------------------------------- edge list


def _kv_tokens(source, where: str, tokens: list[str]) -> dict:
    raw = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq or not key:
            _fail(source, where, f"expected key=value or a {{dict}} after the node ids, got {token!r}")
        raw[key] = value
    return raw


def _edgelist_attrs(source, where: str, rest: str) -> dict:
    """The part of a line after ``u v``: a python dict literal or key=value tokens."""
    rest = rest.strip()
    if not rest.startswith("{"):
        return _kv_tokens(source, where, rest.split())
    try:
        raw = ast.literal_eval(rest)
    except (ValueError, SyntaxError):
        raw = None
    if not isinstance(raw, dict):
        _fail(source, where, f"cannot read {rest!r} as a {{key: value}} dict")
    return raw


def _int_token(source, where: str, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        _fail(source, where, f"node id must be an integer 0..n-1, got {token!r}")


def _directive(source, where: str, text: str, node_attrs: dict) -> int | None:
    """Handle ``#: nodes N`` / ``#: node I key=value``; returns N for the former."""
    parts = text.split()
    if len(parts) == 2 and parts[0] == "nodes":
        return _int_token(source, where, parts[1])
    if len(parts) >= 2 and parts[0] == "node":
        node = _int_token(source, where, parts[1])
        raw = _kv_tokens(source, where, parts[2:])
        if "speed" in raw:
            raw["speed"] = _float_token(source, where, raw["speed"])
        node_attrs[node] = _node_attrs(source, f"{where} (node {node})", raw)
        return None
    _fail(source, where, f"unknown directive {text!r}; allowed: '#: nodes N', '#: node I role=R speed=S'")


def _float_token(source, where: str, token: str) -> float:
    try:
        return float(token)
    except ValueError:
        _fail(source, where, f"field `speed` must be a positive number, got {token!r}")


def _load_edgelist(path: Path) -> nx.Graph:
    declared, node_attrs, edges = None, {}, []
    for lineno, line in enumerate(_text(path).splitlines(), start=1):
        where = f"line {lineno}"
        stripped = line.strip()
        if stripped.startswith("#:"):
            declared = _directive(path, where, stripped[2:], node_attrs) or declared
            continue
        stripped = stripped.split("#", 1)[0].strip()
        if not stripped:
            continue
        tokens = stripped.split(None, 2)
        if len(tokens) < 2:
            _fail(path, where, f"expected 'u v [key=value ...]', got {stripped!r}")
        u, v = (_int_token(path, where, t) for t in tokens[:2])
        raw = _edgelist_attrs(path, where, tokens[2] if len(tokens) > 2 else "")
        edges.append((where, u, v, _edge_attrs(path, f"{where} ({u}, {v})", raw)))
    if declared is None and not edges:
        _fail(path, "edges", "missing: the file lists no edges")
    n = declared if declared is not None else _edgelist_count(path, edges, node_attrs)
    return _assemble(path, n, node_attrs, edges, {})


def _edgelist_count(source, edges: list, node_attrs: dict) -> int:
    """Without ``#: nodes N`` the ids that appear must already be 0..n-1."""
    ids = {node for _, u, v, _ in edges for node in (u, v)} | set(node_attrs)
    n = max(ids) + 1
    _check_ids(source, sorted(ids), n)
    return n


def _save_edgelist(graph: nx.Graph, path: Path) -> None:
    lines = [f"# simbench topology: {describe(graph)}", f"#: nodes {graph.number_of_nodes()}"]
    for node in sorted(graph.nodes):
        attrs = _saved_node_attrs(graph, node)
        if attrs:
            lines.append(f"#: node {node} " + " ".join(f"{k}={v!r}" if k == "speed" else f"{k}={v}"
                                                        for k, v in attrs.items()))
    for u, v in sorted(tuple(sorted(e)) for e in graph.edges):
        attrs = _edge_text_attrs(_saved_edge_attrs(graph, u, v))
        lines.append(" ".join([str(u), str(v)] + [f"{k}={val!r}" if isinstance(val, float) else f"{k}={val}"
                                                   for k, val in attrs.items()]))
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------- GraphML


def _load_graphml(path: Path) -> nx.Graph:
    _text(path)  # a readable, not too large UTF-8 file before any XML parsing
    try:
        raw = nx.read_graphml(path)
    except Exception as exc:  # networkx raises assorted XML and key errors
        _fail(path, "GraphML", f"cannot read file: {exc}")
    ids, node_attrs = [], {}
    for node, data in raw.nodes(data=True):
        node_id = _int_token(path, f"node {node!r}", str(node))
        ids.append(node_id)
        node_attrs[node_id] = _node_attrs(path, f"node {node_id}", data)
    _check_ids(path, ids, len(ids))
    edges = []
    for u, v, data in raw.edges(data=True):
        where = f"edge ({u}, {v})"
        edges.append((where, int(u), int(v), _edge_attrs(path, where, data)))
    return _assemble(path, len(ids), node_attrs, edges, {})


def _save_graphml(graph: nx.Graph, path: Path) -> None:
    out = nx.Graph()
    out.add_nodes_from((node, _saved_node_attrs(graph, node)) for node in sorted(graph.nodes))
    out.add_edges_from((u, v, _saved_edge_attrs(graph, u, v)) for u, v in graph.edges)
    nx.write_graphml(out, path)


# ----------------------------------------------------------------------- public


def _saved_node_attrs(graph: nx.Graph, node) -> dict:
    return {k: graph.nodes[node][k] for k in ("role", "speed") if k in graph.nodes[node]}


def _saved_edge_attrs(graph: nx.Graph, u, v) -> dict:
    return {k: float(graph.edges[u, v][k]) for k in DEFAULT_KEYS if k in graph.edges[u, v]}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _ALL_SUFFIXES:
        raise TopologyError(f"{path}: unknown topology file extension {suffix!r}; allowed: {', '.join(_ALL_SUFFIXES)}")
    return suffix


def load(path) -> nx.Graph:
    """Load a topology file, picking the format by extension.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.yaml``/``.yml``, ``.edgelist``/``.txt`` or ``.graphml`` file (formats in
        this module's docstring).

    Returns
    -------
    networkx.Graph
        Nodes ``0..n-1`` with optional ``role``/``speed``; edges with optional
        ``latency`` (s) and ``bandwidth`` (bytes/s). ``graph.graph["source"]`` is the path.

    Raises
    ------
    TopologyError
        Missing file, unknown extension or any validation failure (one line).
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise TopologyError(f"{path}: topology file not found")
    if suffix in YAML_SUFFIXES:
        return _load_yaml(path)
    if suffix in EDGELIST_SUFFIXES:
        return _load_edgelist(path)
    return _load_graphml(path)


def save(graph: nx.Graph, path) -> None:
    """Write a topology so that :func:`load` gives back the same nodes, edges and attributes.

    Parameters
    ----------
    graph : networkx.Graph
        Nodes ``0..n-1``; only ``role``, ``speed``, ``latency`` and ``bandwidth`` are kept.
    path : str or os.PathLike
        Destination; the extension picks YAML, edge list or GraphML.

    Returns
    -------
    None
    """
    path = Path(path)
    suffix = _suffix(path)
    if set(graph.nodes) != set(range(graph.number_of_nodes())):
        raise TopologyError(f"{path}: cannot save: node ids must be 0..{graph.number_of_nodes() - 1}")
    if suffix in YAML_SUFFIXES:
        _save_yaml(graph, path)
    elif suffix in EDGELIST_SUFFIXES:
        _save_edgelist(graph, path)
    else:
        _save_graphml(graph, path)


def _spec_n(spec: dict, n):
    """Node count for a built kind; grid/torus may take it from rows*cols."""
    if n is not None:
        return n
    rows, cols = spec.get("rows"), spec.get("cols")
    if spec.get("kind") in ("grid", "torus") and isinstance(rows, int) and isinstance(cols, int):
        return rows * cols
    raise TopologyError(f"topology {spec.get('kind')!r}: field `nodes` (the node count) is required")


def from_spec(spec, n: int | None, seed) -> nx.Graph:
    """Build or load the topology described by a config block.

    Parameters
    ----------
    spec : dict or str
        ``{"kind": "ring"}``, ``{"kind": "torus", "rows": 3, "cols": 3}`` or
        ``{"file": "topologies/x.yaml"}``. A bare string is taken as a file when it
        ends in a known extension, otherwise as a kind. A ``seed`` key in a kind
        spec overrides ``seed`` (to keep one graph across runs).
    n : int or None
        The config's node count. Required for built kinds (except grid/torus with
        rows and cols); for a file, it must match the file's own count when given.
    seed : int, numpy.random.Generator or None
        Passed to random builders.

    Returns
    -------
    networkx.Graph

    Raises
    ------
    TopologyError
        Neither or both of ``kind``/``file``, a node-count mismatch (naming ``nodes``),
        or any build/load error.
    """
    if isinstance(spec, str):
        spec = {"file": spec} if spec.lower().endswith(_ALL_SUFFIXES) else {"kind": spec}
    if not isinstance(spec, dict) or ("kind" in spec) == ("file" in spec):
        raise TopologyError(f"topology spec must be a mapping with exactly one of `kind` or `file`, got {spec!r}")
    if "kind" in spec:
        params = {k: v for k, v in spec.items() if k != "kind"}
        # A spec-level seed pins the graph while the run's seed varies everything else.
        seed = params.pop("seed", seed)
        return build(spec["kind"], _spec_n(spec, n), seed=seed, **params)
    extra = sorted(set(spec) - {"file"})
    if extra:
        raise TopologyError(f"topology spec with `file` takes no other keys, got {extra}; allowed: file")
    graph = load(spec["file"])
    if n is not None and n != graph.number_of_nodes():
        raise TopologyError(f"{spec['file']}: defines {graph.number_of_nodes()} nodes but the config's "
                            f"`nodes` is {n}; make them equal or drop `nodes`")
    return graph


def describe(graph: nx.Graph) -> str:
    """One-line, kind-agnostic summary of a graph.

    Parameters
    ----------
    graph : networkx.Graph

    Returns
    -------
    str
        For example ``"12 nodes, 18 edges, degree 2-4, diameter 5, connected"``.
    """
    n, m = graph.number_of_nodes(), graph.number_of_edges()
    if n == 0:
        return "0 nodes, 0 edges, empty"
    degrees = [d for _, d in graph.degree]
    low, high = min(degrees), max(degrees)
    degree = f"degree {low}" if low == high else f"degree {low}-{high}"
    if nx.is_connected(graph):
        return f"{n} nodes, {m} edges, {degree}, diameter {nx.diameter(graph)}, connected"
    parts = nx.number_connected_components(graph)
    return f"{n} nodes, {m} edges, {degree}, diameter inf, disconnected ({parts} components)"
