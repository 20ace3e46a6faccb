"""Topologies for simbench: build, load, save, describe, draw and mix over communication graphs.

A topology is an undirected, connected ``nx.Graph`` with nodes ``0..n-1``. Nodes may
carry ``role`` (str) and ``speed`` (relative compute speed, default 1.0); edges may
carry ``latency`` (seconds) and ``bandwidth`` (bytes/s).
"""

from simbench.topology.builders import BUILDERS, TopologyError, build
from simbench.topology.draw import draw
from simbench.topology.io import describe, format_bandwidth, format_duration, from_spec, load, save
from simbench.topology.mixing import metropolis_hastings_weights

__all__ = [
    "BUILDERS",
    "TopologyError",
    "build",
    "describe",
    "draw",
    "format_bandwidth",
    "format_duration",
    "from_spec",
    "load",
    "metropolis_hastings_weights",
    "save",
]
