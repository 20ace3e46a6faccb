"""Every random stream of a run, derived from its root seed in this one module.

A run's root seed is split with ``numpy.random.SeedSequence`` into independent streams per
purpose, and the world's stream again per purpose and per node, so that adding a fault, a
node or a straggler never shifts another stream (the data split stays the same when a crash
is added; node 3's algorithm draws stay the same when node 7 becomes a straggler)::

    root seed
      ├─ topology   (random graphs)                  RunStreams.topology
      ├─ data       (partition, validation split)    RunStreams.data
      ├─ init       (model initialisation)           RunStreams.init
      ├─ faults     (stragglers, weak workers)       RunStreams.faults
      ├─ world ─┬─ network (latency jitter, loss)    WorldStreams.network / .network_of(i)
      │         ├─ faults  (random crash times)      WorldStreams.faults
      │         ├─ nodes   (rt.rng, one per node)    WorldStreams.node(i)
      │         ├─ stragglers (slowdowns, per node)  WorldStreams.straggler(i)
      │         └─ sleep   (sleep_factor, per node)  WorldStreams.sleep(i)
      ├─ learners (batch order, one per node)        RunStreams.learner_seed(i)
      └─ population (trace sampling, device and      RunStreams.population
                     session draws)

The simulator and the real runtime take the same streams (a real node process draws only
its own), so a node's algorithm decisions, straggler draws and crash schedule agree
between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _int(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])


class RunStreams:
    """The per-purpose streams of one run (see the module docstring).

    ``data`` and ``faults`` are generators (drawn from in a fixed order by the experiment
    layer); the others are integer seeds handed to the code that owns the draw.
    """

    def __init__(self, seed: int) -> None:
        # spawn(7)'s first six children are spawn(6)'s: the population stream shifts no other
        topo, data, init, faults, world, learners, population = np.random.SeedSequence(int(seed)).spawn(7)
        self.seed = int(seed)
        self.topology: int = _int(topo)
        self.data = np.random.default_rng(data)
        self.init: int = _int(init)
        self.faults = np.random.default_rng(faults)
        self.world: int = _int(world)
        self._learners = learners
        self.population = np.random.default_rng(population)
        self._learner_seeds: list[int] | None = None

    def model_seed(self, node: int, same_init: bool) -> int:
        """Initial weights of ``node``'s model: one seed for every node when ``same_init``."""
        return self.init if same_init else self.init + node + 1

    def learner_seeds(self, n: int) -> list[int]:
        """Batch-order seeds of nodes ``0..n-1`` (drawn once per run: spawning is stateful)."""
        if self._learner_seeds is None or len(self._learner_seeds) != n:
            self._learner_seeds = [_int(s) for s in self._learners.spawn(n)]
        return self._learner_seeds

    def node_seed(self, node: int, purpose: str) -> int:
        """A seed of ``node``'s own for an algorithm's set-up (e.g. its compressor's random-k draw)."""
        key = [self.seed, node] + [ord(c) for c in purpose]
        return _int(np.random.SeedSequence(key))


@dataclass
class NodeStreams:
    """One node's world streams: what a real node process draws from."""

    rng: np.random.Generator
    straggler: np.random.Generator
    network: np.random.Generator
    faults: np.random.Generator
    """The world's fault stream (the same in every node: it draws the crash schedule)."""
    sleep: np.random.Generator | None = None
    """Node ``i``'s ``sleep_factor`` draws (one per epoch)."""


class WorldStreams:
    """The world seed split per purpose and per node (``n`` nodes)."""

    def __init__(self, world_seed: int, n: int) -> None:
        self.n = n
        # spawn(5)'s first four children are spawn(4)'s: the sleep streams shift no other
        self._net, self._faults, self._nodes, self._strag, self._sleep = np.random.SeedSequence(int(world_seed)).spawn(5)
        self._node_seqs = self._nodes.spawn(n)
        self._strag_seqs = self._strag.spawn(n)
        self._sleep_seqs = self._sleep.spawn(n)
        self._net_seqs: list | None = None

    @property
    def network(self) -> np.random.Generator:
        """The simulated network's one stream (latency jitter and losses of every link)."""
        return np.random.default_rng(self._net)

    @property
    def faults(self) -> np.random.Generator:
        """The crash schedule's stream."""
        return np.random.default_rng(self._faults)

    def node(self, i: int) -> np.random.Generator:
        """``rt.rng`` of node ``i``: its algorithm's decisions."""
        return np.random.default_rng(self._node_seqs[i])

    def straggler(self, i: int) -> np.random.Generator:
        """Node ``i``'s straggler slowdown draws."""
        return np.random.default_rng(self._strag_seqs[i])

    def sleep(self, i: int) -> np.random.Generator:
        """Node ``i``'s draws of ``scenario.sleep_factor``'s rest after each epoch."""
        return np.random.default_rng(self._sleep_seqs[i])

    def network_of(self, i: int) -> np.random.Generator:
        """Node ``i``'s own network stream (a real node injects latency and loss itself)."""
        if self._net_seqs is None:
            self._net_seqs = self._net.spawn(self.n)
        return np.random.default_rng(self._net_seqs[i])

    def node_streams(self, i: int) -> NodeStreams:
        return NodeStreams(rng=self.node(i), straggler=self.straggler(i), network=self.network_of(i),
                           faults=self.faults, sleep=self.sleep(i))
