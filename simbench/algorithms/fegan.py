"""FeGAN (Guirguis, Le Merrer, Kermarrec, Guerraoui: "FeGAN: Scaling Distributed GANs",
Middleware 2020): FL-GAN (:mod:`simbench.algorithms.flgan`) plus balanced sampling of the
devices and KL-divergence weighting of their updates.

Source of the exact rules: the paper's full text was not available offline, so the rules
are those of the authors' implementation, seed 001 (LPD-EPFL/FeGAN): ``dist-lsgan.py``
(``init_groups``, ``average_models``, the ``entropies`` line), ``dist-dcgan.py`` (weak
devices) and ``datasets.py`` (``DatasetManager.get_train_set``, the non-iid split), restated
here.

**Class statistics.** Each device k sends its class counts c_k (length L) once. With
n_k = sum(c_k), device k's score is ``e_k = KL(c_k / n_k || q) · n_k / N`` with
KL(p || q) = sum_l p_l log(p_l / q_l) and 0 log 0 = 0 (``scipy.stats.entropy(p, q)``).
simbench takes q and N from the devices' union, q = sum_k c_k / N and N = sum_k n_k; the seed
hard-codes MNIST's training-set proportions for q and N = 60000 (``dist-lsgan.py``; uniform q
and N = 500 · classes in ``dist-dcgan.py``). The two agree for a disjoint split of the whole
training set; on a subset, or on FeGAN's overlapping split (``dataset.partition: fegan``,
where the union counts shared images once per device), simbench's N is smaller, so its
scores are larger and ``exp`` is further from uniform than the seed's.

**KL weighting** (``weight_avg: true``). For the devices S heard from in a round, the server
averages G and D with weights w_k, sum_{k in S} w_k = 1:

* ``exp``:    w_k = exp(e_k) / sum_{j in S} exp(e_j)  (a softmax of the scores);
* ``linear``: w_k = e_k / sum_{j in S} e_j;
* ``dirac``:  the linear weights, then every w_k < 0.5 is set to 0 and the rest renormalised
  (the seed's threshold), i.e. all weight on a device holding at least half of the linear
  mass.

Two cases are **simbench's own rules**, not the seed's: when no device reaches 0.5, ``dirac``
puts all weight on the device with the largest score (the seed's server crashes there:
``list /= 0`` raises a TypeError; it cannot happen with the seed's README runs, whose rounds
pick 2 devices, but can from 3 on); and when every e_k is 0 (identical class
distributions), ``linear`` and ``dirac`` use the plain average (the seed divides 0 by 0 and
the model becomes NaN).

``weight_avg: false`` is the plain average of FL-GAN.

**Balanced sampling** (``sample: true``). The server keeps ``taken``, the number of samples
of each class held by the devices picked so far (over all rounds), and per class l a
queue of the devices holding class l. To fill a group of m devices it repeats m times:
take the class l with the smallest ``taken`` (lowest index on ties), rotate l's queue until
a device not yet in this group comes up (a rotated device goes to the back of the queue),
add it, and add its class counts to ``taken``. Deviations from the seed: the queues are in
ascending id order (the seed fills them from the highest rank down, the server included);
when every device of l's queue is already in the group, class l is skipped for the rest of
this group (the seed leaves the slot empty, so its group is smaller); groups are drawn each
round (the seed precomputes 101 groups and cycles through them). ``sample: false`` samples
uniformly as in FL-GAN.

**Other seed flags.** ``iid: 1`` is ``dataset.partition: iid``; ``iid: 0`` is
``dataset.partition: fegan`` (the seed's split: device r gets min(10, floor(200 r / K) + 1)
classes with random per-class caps growing as r^2, see :func:`simbench.data.partition.fegan`),
whose ``magic_num`` is ``dataset.max_per_class``. Weak devices (``--weak_percent``) are
``scenario.weak_workers`` with ``mode: half_steps``, what ``auto`` means here (see
:mod:`.flgan`). ``timeout`` bounds the server's wait for its sub-group; ``num_servers`` > 1
adds backup servers that take over from the last replicated state when the primary falls
silent (see :mod:`.flgan`). Unlike the seed, the server holds no data and is never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.node import Node, NodeContext
from ..core.runtime import Runtime
from ..core.units import parse_duration
from .flgan import FedGanDevice, FedGanServer, FLGan, FLGanParams
from .kit import fed_roles

SCHEMES = ("exp", "linear", "dirac")


@dataclass(frozen=True)
class FeGanParams(FLGanParams):
    sample: bool = True
    """Balanced sampling of the devices (seed ``--sample``); false = uniform at random."""
    weight_avg: bool = True
    """KL-weighted averaging (seed ``--weight_avg``); false = plain average."""
    weight_scheme: str = field(default="exp", metadata={"choices": SCHEMES})
    """How scores become weights: exp (softmax), linear, dirac (seed ``--weight_scheme``)."""
    num_servers: int = field(default=1, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """Servers 0..num_servers-1; the backups take over when the primary crashes (seed ``--num_servers``)."""
    failover: float = field(default=60.0, metadata={"parse": parse_duration, "check": (lambda x: x > 0, "must be > 0")})
    """Silence (seconds, × backup rank) after which a backup server takes over; must exceed a round."""


# -- pure rules ----------------------------------------------------------------------------
def kl_scores(counts: np.ndarray, global_counts: np.ndarray | None = None) -> np.ndarray:
    """e_k = KL(c_k/n_k || q) · n_k/N for each row c_k of ``counts`` (devices × classes).

    ``global_counts`` (default: the column sums of ``counts``) gives q and N.
    """
    c = np.asarray(counts, dtype=np.float64)
    g = c.sum(axis=0) if global_counts is None else np.asarray(global_counts, dtype=np.float64)
    total = g.sum()
    q = g / total
    n = c.sum(axis=1)
    p = c / np.maximum(n, 1e-300)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=1) * n / total


def kl_weights(scores, scheme: str) -> np.ndarray:
    """FeGAN's aggregation weights of the devices with ``scores`` e_k (they sum to 1)."""
    e = np.asarray(scores, dtype=np.float64)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown weight_scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    if scheme == "exp":
        w = np.exp(e - e.max())  # the same softmax, without overflow
        return w / w.sum()
    if e.sum() <= 0:
        return np.full(len(e), 1.0 / len(e))
    w = e / e.sum()
    if scheme == "dirac":
        w = np.where(w < 0.5, 0.0, w)
        if w.sum() == 0:
            w = np.zeros(len(e))
            w[int(np.argmax(e))] = 1.0
        w = w / w.sum()
    return w


class BalancedSampler:
    """The seed's balanced sampling with its state (JSON-able, so backups can resume it)."""

    def __init__(self, counts: np.ndarray, state: dict | None = None) -> None:
        self.counts = np.asarray(counts, dtype=np.float64)
        k, classes = self.counts.shape
        if state:
            self.taken = np.asarray(state["taken"], dtype=np.float64)
            self.queues = [list(q) for q in state["queues"]]
        else:
            self.taken = np.zeros(classes)
            self.queues = [[d for d in range(k) if self.counts[d, l] > 0] for l in range(classes)]

    def state(self) -> dict:
        return {"taken": self.taken.tolist(), "queues": [list(q) for q in self.queues]}

    def sample(self, m: int) -> list[int]:
        """Indices (rows of ``counts``) of up to ``m`` distinct devices."""
        group: list[int] = []
        skipped = np.zeros(len(self.taken), dtype=bool)
        while len(group) < m and not skipped.all():
            l = int(np.argmin(np.where(skipped, np.inf, self.taken)))
            q = self.queues[l]
            for _ in range(len(q)):
                d = q.pop(0)
                q.append(d)
                if d not in group:
                    group.append(d)
                    self.taken += self.counts[d]
                    break
            else:
                skipped[l] = True
        return group


class FeGanServer(FedGanServer):
    def _rows(self) -> np.ndarray:
        return np.stack([self.counts.get(d, np.zeros_like(next(iter(self.counts.values())))) for d in self.clients])

    def choose(self, rt: Runtime, m: int) -> list[int]:
        if not self.params.sample or not self.counts:
            return super().choose(rt, m)
        sampler = BalancedSampler(self._rows(), self.sampler_state)
        group = sampler.sample(m)
        self.sampler_state = sampler.state()
        return sorted(self.clients[i] for i in group)

    def weights(self, senders: list[int]) -> list[float] | None:
        if not self.params.weight_avg or not self.counts:
            return None
        rows = self._rows()
        scores = kl_scores(rows)
        idx = {d: i for i, d in enumerate(self.clients)}
        w = kl_weights([scores[idx[s]] for s in senders], self.params.weight_scheme)
        return [float(x) for x in w]


class FeGan(FLGan):
    name = "fegan"
    Params = FeGanParams
    summary = "FeGAN: FL-GAN with balanced device sampling and KL-weighted averaging; backup servers"
    example = {"algorithm": {"frac_workers": 0.5, "local_steps": 3, "timeout": "1s"}}

    @classmethod
    def roles(cls, graph, params):
        return fed_roles(graph, cls.name, params.num_servers)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return FeGanServer(ctx) if ctx.role == "server" else FedGanDevice(ctx)
