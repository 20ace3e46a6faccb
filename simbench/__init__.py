"""simbench: simulation-first benchmarks for distributed and decentralized training."""

__version__ = "0.1.0"
