"""Lipizzaner: coevolutionary GAN training on a toroidal grid of cells (Al-Dujaili,
Schmiedlechner, Hemberg, O'Reilly, "Towards distributed coevolutionary GANs", AAAI Fall
Symposium 2018; Schmiedlechner et al., "Lipizzaner: A System That Scales Robust Generative
Adversarial Network Training", NeurIPS 2018 SysML workshop; seed 004). The rules follow
the reference code, ALFA-group/lipizzaner-gan (under ``src/``):
``training/ea/lipizzaner_gan_trainer.py`` (``train``, ``update_genomes``,
``evaluate_fitness``, ``mutate_hyperparams``, ``mutate_mixture_weights_with_score``,
``optimize_generator_mixture_weights``),
``training/ea/ea_trainer.py`` (``tournament_selection``), ``helpers/population.py``
(``replacement``), ``distribution/neighbourhood.py``, ``data/data_loader.py``,
``networks/competetive_net.py`` and ``training/mixture/mixed_generator_dataset.py``, with
the defaults of its MNIST configuration ``configuration/lipizzaner-gan/mnist.yml``
(``population_size: 1``, ``tournament_size: 2``, ``discriminator_skip_each_nth_step: 1``,
``mutation_probability: 0.5``, ``alpha: 0.0001``, ``mixture_sigma: 0.01``,
``fitness_sample_size: 1000``, ``fitness_mode: average``, score ``fid``).

The N nodes are the cells of a k x k grid (N = k^2, k >= 2), numbered row-major; the grid
wraps around (a torus). Cell c holds one generator G_c and one discriminator D_c, each with
its own Adam state and learning rate. Every cell trains on the **whole training set**,
shuffled by its own random stream (the reference's ``DataLoader(shuffle=True)`` per client;
``data: partition`` gives each cell its part of ``dataset.partition`` instead). Its
neighbourhood is itself, then north, south, east and west (:func:`neighbourhood`;
duplicates removed, so a 2 x 2 cell has 3 distinct members). Generation t of cell c (one per
``train.epochs``):

1. Gather: the latest (G, D, learning rates) each neighbour published. Cells publish after
   every generation and run asynchronously; a cell waits only for a first copy of each
   neighbour (up to ``peer_timeout``, once), so a crashed cell's neighbours continue with
   the copies they have (or without it, if it never published).
2. Fitness (``fitness_mode: average``): on ``fitness_samples`` real images drawn anew each
   generation, a generator's fitness is its loss averaged over the neighbourhood's
   discriminators, a discriminator's its loss averaged over the generators (lower is
   fitter). Every (G, D) pair is scored on its own fresh noise.
3. Tournament selection: ``population_size`` times (default 1), draw ``tournament_size``
   distinct members of the whole neighbourhood uniformly and copy the fittest; separately
   for generators and discriminators. Only these copies are trained.
4. Training, for each of ``batches`` minibatches b = 0, 1, ... (default: one pass over the
   cell's data): mutate the learning rate of every selected generator (with probability
   ``mutation_probability``: lr <- max(0, lr + alpha * delta), delta ~ N(-lr0/10, lr0^2),
   lr0 = ``lr``), then take one Adam step of each against one discriminator drawn from the
   selected ones. If ``discriminator_skip_each_nth_step`` (s) is 0 or b % (s + 1) == 0, the
   same for the discriminators (mutate, one step each on minibatch b against the images of
   one selected generator drawn at random): with the default s = 1, D trains on every
   other batch.
5. Replacement (``n_replacements: 1``): the trained copies are re-scored against the
   gathered neighbourhood on the same real images; the best replaces the cell's own
   network if its loss is strictly lower than the own network's fitness from step 2 (the
   optimizer state travels with it).
6. Mixture weights, a (1+1)-evolution strategy on FID: the cell's generator and its
   neighbours' copies form a mixture with weights w (a probability vector, uniform at the
   start). Each generation (``es_generations`` times; the reference: once):
   w' = clip(w + N(0, mixture_sigma^2 I), 0) / sum; **both** w and w' are scored with FID,
   each on its own fresh noise (``fid_batch`` vectors, split over the generators in exact
   proportions, :func:`mixture_counts`); w' replaces w only if its FID is strictly lower,
   and the cell's score is the FID of the weights it keeps. ``es_generations: 0`` scores w
   once and never mutates it.
7. Publish (G, D, learning rates) to the neighbours.

Final mixture optimisation (``optimize_mixture``, default off): the reference's
``LipizzanerGANTrainer.__init__`` turns it on when ``trainer.params`` holds an
``optimize_mixture`` section, which mnist.yml does not; its weights-optimisation configs
(``configuration/quickstart-weights-optimization/mnist.yml``,
``configuration/tests/weights-optimization/mnist.yml``) set ``es_generations: 50``,
``es_score_sample_size: 10000``, ``es_random_init: False``, ``mixture_sigma: 0.01``. When
on, ``train`` skips step 6 in every generation (the weights stay uniform and unscored, so
no ``mixture_fid`` is logged) and after the last generation each cell runs
``optimize_generator_mixture_weights``: one batch of ``optimize_samples`` [10000] noise
vectors is drawn once and scores every weight vector; the starting weights (the current,
uniform ones, or random ones, u ~ U[0,1)^n / sum, with ``optimize_random_init`` [false])
are scored, then ``optimize_generations`` [50] times w' = clip(w + N(0, s^2 I), 0) / sum
(s = ``optimize_sigma`` [null: ``mixture_sigma``]) replaces the best weights only if its
FID is strictly lower. The cell logs the events ``final_init_fid``, ``final_mixture_fid``
and ``final_weight_<cell>``, and sends the kept weights and their FID to the master, which
saves the best cell's (``mixture.json`` ``fid``, plus ``init_fid``,
``optimize_generations``, ``optimize_samples``). Its 1 + ``optimize_generations`` FID
evaluations are charged as step 6's are (a G forward per ``train.batch_size`` samples).
The reference's fallbacks when a key is missing: ``es_generations`` 10, sample size 10000
(read from the key ``sample_size``: the configs' ``es_score_sample_size`` is never read,
and holds the same 10000), sigma the trainer's ``mixture_sigma``.

Node 0 is also the master: after its last generation it collects every cell's mixture
(generators, weights, FID), keeps the one with the lowest FID and saves it into the run
directory's ``mixture/`` (``generator_<cell>.npy`` and ``mixture.json``, no pickle);
``simbench generate --mixture-source DIR --sample-size N -o OUT`` samples from it. The
master's own mixture is what the run reports each generation; every cell logs its
``mixture_fid``.

Options that restore simbench's earlier rules: ``population_size: null`` (one tournament
per neighbourhood member, all trained), ``discriminator_skip_each_nth_step: 0`` (D on every
batch), ``data: partition`` (a shard per cell).

Deviations from the reference code: a cell holds one G and one D (the reference's
``population_size`` also sizes the cell's own population; here it only sets how many
selected copies are trained, and the best of them may replace the cell's network); Adam
moments of copies taken from neighbours start fresh each generation (cells exchange
parameters and learning rates only; the reference ships the optimizer state, and its
``load_state_dict`` also restores the first learning rate, so its mutated learning rates
never reach Adam, where here they do); the discriminator's loss is the learner's
1/2 (real + fake) (the reference's sum: a constant factor, the same ranking); a (G, D)
pair's G and D losses share that pair's noise (the reference draws separately); the
mixture's generators are the copies gathered at the start of the generation (the
reference fetches the neighbours' best at the end) and its sample counts are exact
(the reference shuffles ceil(n w_i) copies and truncates); the mixture FID uses the run's
FID network and test images (the reference: its MNIST classifier's logits on the first
1000 training images); the torus is the intended von Neumann one (the reference's
``neighbourhood.py`` transposes the cell of off-diagonal cells for k >= 3; on 2 x 2 they
agree); the master is cell 0 and picks the lowest of the cells' own last scores (the
reference's separate master re-scores every cell's mixture); no discriminator mixture. In
the final ES, the split of the fixed noise over the generators is the same contiguous exact
split for every weight vector (the reference reshuffles which noise vector goes to which
generator at each evaluation), so weights that move no sample score exactly the same; its
generators are the copies gathered in the last generation (the reference fetches the
neighbours' current best), and the FID the master reports each epoch is that of the
mixture before the final ES (the optimised one is in the events and the saved mixture).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Runtime, Work
from ..core.schema import ConfigError
from ..core.units import parse_duration
from .gan_common import GanParams
from .kit import drain


DATA = ("whole", "partition")


@dataclass(frozen=True)
class LipizzanerParams(GanParams):
    population_size: Optional[int] = field(default=1, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """Tournament winners trained per generation, of G and of D each (reference ``population_size``);
    null: one per neighbourhood member (simbench's earlier rule)."""
    tournament_size: int = field(default=2, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """Contestants of each tournament (reference ``tournament_size``)."""
    mutation_probability: float = field(default=0.5, metadata={"check": (lambda x: 0 <= x <= 1, "must be in [0, 1]")})
    """Chance that a learning rate mutates at a step (reference ``mutation_probability``)."""
    alpha: float = field(default=1e-4, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Scale of a learning-rate mutation (reference ``alpha``)."""
    mixture_sigma: float = field(default=0.01, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Standard deviation of the mixture-weight mutation (reference ``mixture_sigma``)."""
    es_generations: int = field(default=1, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """(1+1)-ES steps on the mixture weights per generation (0: weights stay uniform)."""
    fitness_samples: int = field(default=1000, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """Real images (and noise vectors per pair) of a fitness evaluation (reference ``fitness_sample_size``)."""
    discriminator_skip_each_nth_step: int = field(default=1, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """s: the discriminators train on batches b with b % (s + 1) == 0; 1 = every other batch (reference), 0 = every batch."""
    data: str = field(default="whole", metadata={"choices": DATA})
    """whole: every cell trains on the whole training set (reference); partition: its part of dataset.partition."""
    batches: Optional[int] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Minibatches per generation (reference ``n_batches``); null: one pass over the cell's data."""
    optimize_mixture: bool = False
    """After the last generation every cell tunes its mixture weights by a (1+1)-ES on fixed noise, and the
    per-generation ES is skipped (reference ``optimize_mixture`` section; absent from mnist.yml: off)."""
    optimize_generations: int = field(default=50, metadata={"check": (lambda x: x >= 0, "must be >= 0")})
    """Mutations tried by the final ES (reference ``optimize_mixture: es_generations``)."""
    optimize_samples: int = field(default=10000, metadata={"check": (lambda x: x >= 2, "must be >= 2")})
    """Noise vectors, drawn once, that score every weight vector of the final ES (reference ``es_score_sample_size``)."""
    optimize_random_init: bool = False
    """Start the final ES from random weights instead of the current ones (reference ``es_random_init``)."""
    optimize_sigma: Optional[float] = field(default=None, metadata={"check": (lambda x: x > 0, "must be > 0")})
    """Mutation standard deviation of the final ES (reference ``optimize_mixture: mixture_sigma``); null: mixture_sigma."""
    peer_timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds a cell waits for a neighbour's first copy before going on without it; null waits forever."""
    result_timeout: Optional[float] = field(default=None, metadata={"parse": parse_duration})
    """Seconds the master waits for the next cell's final result; null waits for every cell."""


# -- pure rules ------------------------------------------------------------------------------
def grid_side(n: int) -> int:
    """k for n = k^2 cells, k >= 2; ConfigError naming ``nodes`` otherwise."""
    k = math.isqrt(n) if n >= 0 else 0
    if k < 2 or k * k != n:
        raise ConfigError(f"nodes: lipizzaner needs a square grid of cells; {n} is not allowed; "
                          f"allowed: perfect squares >= 4 (4, 9, 16, ...)")
    return k


def neighbourhood(cell: int, side: int) -> tuple[int, ...]:
    """``cell``, then its north, south, east and west cells on a side x side torus
    (row-major numbering), each once."""
    r, c = divmod(cell, side)
    members = (cell, ((r - 1) % side) * side + c, ((r + 1) % side) * side + c,
               r * side + (c + 1) % side, r * side + (c - 1) % side)
    return tuple(dict.fromkeys(members))


def mutate_weights(weights, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """w + N(0, sigma^2 I), clipped at 0 and renormalised; ``weights`` unchanged if all clip to 0."""
    w = np.asarray(weights, dtype=float)
    x = np.clip(w + rng.normal(0.0, sigma, size=len(w)), 0.0, None)
    total = x.sum()
    return x / total if total > 0 else w.copy()


def mixture_counts(weights, n: int) -> np.ndarray:
    """Samples per generator out of ``n`` in exact proportion (largest remainders; sums to n)."""
    raw = np.asarray(weights, dtype=float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:n - counts.sum()]] += 1
    return counts


def tournament(fitness, size: int, rounds: int, rng: np.random.Generator) -> list[int]:
    """``rounds`` winners, each the fittest (lowest; ties to the lower index) of ``size``
    distinct members drawn uniformly."""
    k = min(size, len(fitness))
    return [int(min(rng.choice(len(fitness), size=k, replace=False), key=lambda i: (fitness[i], i)))
            for _ in range(rounds)]


def d_batches(batches: int, skip: int) -> int:
    """How many of batches 0..batches-1 train the discriminators: those with b % (skip + 1) == 0."""
    return -(-batches // (skip + 1))


def mutate_lrs(lrs, lr0: float, alpha: float, prob: float, rng: np.random.Generator) -> list[float]:
    """The reference's ``mutate_hyperparams``: lr + alpha * N(-lr0/10, lr0^2) with probability ``prob``, >= 0."""
    deltas = rng.normal(-lr0 / 10, lr0, size=len(lrs))
    deltas[rng.random(len(lrs)) < 1 - prob] = 0.0
    return [max(0.0, float(lr + alpha * d)) for lr, d in zip(lrs, deltas)]


# -- mixtures --------------------------------------------------------------------------------
class Mixture:
    """Generators (flat parameter vectors) with weights, sampled in exact proportions through
    one learner's G (restored afterwards); what a cell scores, reports and saves."""

    def __init__(self, learner, generators: list[torch.Tensor], weights, cells: list[int]) -> None:
        self.learner, self.generators, self.cells = learner, generators, cells
        self.weights = np.asarray(weights, dtype=float)

    def sample(self, n: int | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        learner = self.learner
        z = learner.noise(int(n)) if z is None else z
        own = learner.get_g()
        out, off = [], 0
        for g, k in zip(self.generators, mixture_counts(self.weights, len(z))):
            if k:
                learner.set_g(g)
                out.append(learner.sample(z=z[off:off + k]))
                off += k
        learner.set_g(own)
        return torch.cat(out)


def known(score: float, default=None):
    """``score``, or ``default`` while it is nan (not scored: no workload, or weights waiting
    for the final ES)."""
    return score if score == score else default


def save_mixture(directory, mixture: Mixture, arch: dict, fid: float, cell: int, extra: dict | None = None) -> Path:
    """Write ``generator_<cell>.npy`` per generator and ``mixture.json`` (weights, model, and
    the keys of ``extra``) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for c, g in zip(mixture.cells, mixture.generators):
        files.append(f"generator_{c}.npy")
        np.save(d / files[-1], g.detach().cpu().numpy().astype(np.float32))
    meta = {"cell": cell, "fid": fid, "cells": mixture.cells, "weights": mixture.weights.tolist(),
            "generators": files, **(extra or {}), **(arch or {})}
    (d / "mixture.json").write_text(json.dumps(meta, indent=2) + "\n")
    return d


def generate_samples(source, n: int, out, seed: int = 0, grid: bool = False) -> list[Path]:
    """``n`` PNG images ``sample_XXXX.png`` in ``out`` from the mixture saved in ``source``;
    with ``grid``, one image ``samples.png`` of all of them on a square grid."""
    from PIL import Image

    from ..gan import build_gan
    from ..gan.grids import grid_array, save_grid

    src = Path(source)
    if not (src / "mixture.json").exists():
        raise ConfigError(f"--mixture-source: {src} holds no mixture.json (a lipizzaner run's mixture/ directory)")
    meta = json.loads((src / "mixture.json").read_text())
    g, _, _ = build_gan(meta["model"], meta["input_shape"], latent_dim=meta["latent_dim"], seed=0, **meta["options"])
    params = [p for p in g.parameters() if p.requires_grad]
    gens = [torch.from_numpy(np.load(src / f)) for f in meta["generators"]]
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), int(meta["latent_dim"]), generator=gen)
    images, off = [], 0
    g.train()  # the seed's generators always run in training mode
    with torch.no_grad():
        for flat, k in zip(gens, mixture_counts(meta["weights"], int(n))):
            torch.nn.utils.vector_to_parameters(flat, params)
            if k:
                images.append(g(z[off:off + k]))
                off += k
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if grid:
        return [save_grid(torch.cat(images), out / "samples.png")]
    paths = []
    for i, img in enumerate(torch.cat(images)):
        arr = grid_array(img[None], nrow=1, pad=0)
        paths.append(out / f"sample_{i:04d}.png")
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(paths[-1])
    return paths


# -- the cell ---------------------------------------------------------------------------------
@dataclass
class Individual:
    params: torch.Tensor
    lr: float
    fitness: float = math.inf
    opt: Optional[torch.optim.Optimizer] = None

    def copy(self) -> "Individual":
        return Individual(self.params.clone(), self.lr, self.fitness)


class LipizzanerCell(Node):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        side = grid_side(len(ctx.roles))
        self.nbhd = neighbourhood(ctx.node_id, side)
        self.gen = 0
        lr = ctx.params.lr
        self.g = Individual(self.learner.get_g(), lr)
        self.d = Individual(self.learner.get_d(), lr)
        self.copies: dict[int, tuple[Individual, Individual]] = {}
        self.silent: set[int] = set()  # neighbours never heard from within peer_timeout: not waited for again
        self.weights: dict[int, float] = {}  # none yet: every member weighs 1/len (uniform)
        self.score = math.nan
        self.init_score = math.nan  # the final ES's score of its starting weights

    # -- messaging -------------------------------------------------------------------------
    async def publish(self, rt: Runtime) -> None:
        msg = Message("cell", {"gen": self.gen, "lr_g": self.g.lr, "lr_d": self.d.lr},
                      {"g": self.g.params, "d": self.d.params})
        for j in self.nbhd[1:]:
            await rt.send(j, msg)

    def _keep(self, msg: Message) -> None:
        self.silent.discard(msg.src)
        self.copies[msg.src] = (Individual(msg.tensors["g"], float(msg["lr_g"])),
                                Individual(msg.tensors["d"], float(msg["lr_d"])))

    async def gather(self, rt: Runtime) -> None:
        """The latest copy of every neighbour; wait only for neighbours never heard from
        (once each: one silent for ``peer_timeout`` is left out until it is heard)."""
        for msg in await drain(rt, "cell"):
            self._keep(msg)

        def missing() -> list[int]:
            return [j for j in self.nbhd[1:] if j not in self.copies and j not in self.silent]

        while missing():
            msg = await rt.recv(timeout=self.params.peer_timeout, match="cell")
            if msg is None:
                rt.log("missing_neighbours", len(missing()))
                self.silent.update(missing())
                return
            self._keep(msg)

    # -- one generation --------------------------------------------------------------------
    def members(self) -> list[int]:
        return [self.node_id] + [j for j in self.nbhd[1:] if j in self.copies]

    def cost(self) -> Work:
        lr, p = self.learner, self.params
        n = len(self.members())
        k = p.population_size or n
        nb = p.batches or lr.steps_per_epoch
        nd = d_batches(nb, p.discriminator_skip_each_nth_step)
        gen = lr.flops_per_step("gen")
        pairs = n * n + 2 * k * n  # fitness before training, the copies' after
        evals = gen * 3 * pairs * math.ceil(p.fitness_samples / lr.batch_size)
        mixture = 0 if p.optimize_mixture else gen * (2 * p.es_generations or 1) * math.ceil(p.fid_batch / lr.batch_size)
        train = nb * k * lr.flops_per_step("g") + nd * (k * lr.flops_per_step("d") + gen)
        return Work(flops=train + evals + mixture, steps=(nb + nd) * k)

    def losses(self, gens: list[Individual], discs: list[Individual], real) -> tuple[np.ndarray, np.ndarray]:
        """(D losses, G losses), both indexed [generator, discriminator]; each pair on its own
        fresh noise (the reference's ``compute_loss_against`` draws ``noise`` per call)."""
        L = self.learner
        d_loss, g_loss = np.zeros((len(gens), len(discs))), np.zeros((len(gens), len(discs)))
        for i, g in enumerate(gens):
            L.set_g(g.params)
            for j, d in enumerate(discs):
                L.set_d(d.params)
                d_loss[i, j], g_loss[i, j] = L.eval_losses(real, L.noise(len(real)))
        return d_loss, g_loss

    def evolve(self, rng: np.random.Generator) -> None:
        L, p = self.learner, self.params
        cells = self.members()
        gens = [self.g] + [self.copies[j][0] for j in cells[1:]]
        discs = [self.d] + [self.copies[j][1] for j in cells[1:]]
        n = len(cells)
        idx = torch.from_numpy(rng.choice(L.num_samples, size=min(p.fitness_samples, L.num_samples), replace=False))
        real = L.x[idx.to(L.device)]
        d_loss, g_loss = self.losses(gens, discs, real)
        for i, ind in enumerate(gens):
            ind.fitness = float(g_loss[i].mean())
        for j, ind in enumerate(discs):
            ind.fitness = float(d_loss[:, j].mean())
        k = p.population_size or n
        sel_g = self._copies(gens, tournament([x.fitness for x in gens], p.tournament_size, k, rng), "g")
        sel_d = self._copies(discs, tournament([x.fitness for x in discs], p.tournament_size, k, rng), "d")
        every = p.discriminator_skip_each_nth_step + 1
        for b in range(p.batches or L.steps_per_epoch):
            batch = L.next_batch()  # the reference iterates its loader: every batch is drawn, D uses some
            self._mutate(sel_g, rng)
            L.set_d(sel_d[int(rng.integers(len(sel_d)))].params)
            for ind in sel_g:
                L.set_g(ind.params)
                ind.opt.param_groups[0]["lr"] = ind.lr
                L.g_step(ind.opt)
                ind.params = L.get_g()
            if b % every:
                continue
            self._mutate(sel_d, rng)
            L.set_g(sel_g[int(rng.integers(len(sel_g)))].params)
            fake = L.sample(len(batch))
            for ind in sel_d:
                L.set_d(ind.params)
                ind.opt.param_groups[0]["lr"] = ind.lr
                L.d_step(fake, ind.opt, batch)
                ind.params = L.get_d()
        self._replace(sel_g, self.losses(sel_g, discs, real)[1].mean(axis=1), "g")
        self._replace(sel_d, self.losses(gens, sel_d, real)[0].mean(axis=0), "d")
        self._evolve_weights(cells, rng)
        L.set_g(self.g.params)
        L.set_d(self.d.params)

    def _copies(self, pop: list[Individual], winners: list[int], part: str) -> list[Individual]:
        """Trainable copies of the winners, each with its own Adam: copies of the cell's own
        network (index 0) continue its moments, copies of neighbours' start fresh."""
        own_opt = self.learner.opt_g if part == "g" else self.learner.opt_d
        out = []
        for i in winners:
            ind = pop[i].copy()
            ind.opt = self.learner.make_adam(part, ind.lr)
            if i == 0:
                ind.opt.load_state_dict(copy.deepcopy(own_opt.state_dict()))
            out.append(ind)
        return out

    def _mutate(self, sel: list[Individual], rng) -> None:
        p = self.params
        for ind, lr in zip(sel, mutate_lrs([x.lr for x in sel], p.lr, p.alpha, p.mutation_probability, rng)):
            ind.lr = lr

    def _replace(self, sel: list[Individual], fitness: np.ndarray, part: str) -> None:
        best = int(np.argmin(fitness))
        own = self.g if part == "g" else self.d
        if fitness[best] < own.fitness:
            new = sel[best]
            new.fitness = float(fitness[best])
            (self.learner.opt_g if part == "g" else self.learner.opt_d).load_state_dict(copy.deepcopy(new.opt.state_dict()))
            new.opt = None
            if part == "g":
                self.g = new
            else:
                self.d = new

    def weight_vector(self, cells: list[int]) -> np.ndarray:
        """Current weights of ``cells`` as a probability vector (a newly seen cell gets 1/len)."""
        w = np.array([self.weights.get(c, 1.0 / len(cells)) for c in cells])
        return w / w.sum()

    def mixture(self, cells: list[int] | None = None, weights=None) -> Mixture:
        cells = cells or self.members()
        gens = [self.g.params] + [self.copies[j][0].params for j in cells[1:]]
        return Mixture(self.learner, gens, self.weight_vector(cells) if weights is None else weights, cells)

    def _evolve_weights(self, cells: list[int], rng) -> None:
        """The reference's ``mutate_mixture_weights_with_score``: the current and the mutated
        weights are both scored, each on its own fresh noise; the mutated ones are kept only
        on a strictly lower FID."""
        ev, p = self.ctx.workload, self.params
        if p.optimize_mixture:
            return  # the reference skips this ES when it optimises the weights at the end
        w = self.weight_vector(cells)
        if ev is not None:
            if p.es_generations == 0:
                self.score = float(ev.fid(self.mixture(cells, w).sample(p.fid_batch)))
            for _ in range(p.es_generations):
                w_new = mutate_weights(w, p.mixture_sigma, rng)
                old = ev.fid(self.mixture(cells, w).sample(p.fid_batch))
                new = ev.fid(self.mixture(cells, w_new).sample(p.fid_batch))
                w, self.score = (w_new, float(new)) if new < old else (w, float(old))
        self.weights = dict(zip(cells, w.tolist()))

    def final_cost(self) -> Work:
        """The final ES's FID evaluations, charged as the per-generation ones are: a G forward
        per batch of samples, once for the starting weights and once per mutation."""
        lr, p = self.learner, self.params
        return Work(flops=lr.flops_per_step("gen") * (1 + p.optimize_generations)
                    * math.ceil(p.optimize_samples / lr.batch_size))

    def optimize_weights(self, rng: np.random.Generator) -> None:
        """The reference's ``optimize_generator_mixture_weights``: one noise batch of
        ``optimize_samples`` vectors scores every weight vector; the starting weights (the
        current ones, or random with ``optimize_random_init``) are scored once, then each of
        ``optimize_generations`` mutations of the best so far replaces it only on a strictly
        lower FID."""
        ev, p, L = self.ctx.workload, self.params, self.learner
        cells = self.members()
        w = self.weight_vector(cells)
        if p.optimize_random_init:
            w = rng.random(len(cells))
            w = w / w.sum()
        if ev is not None:
            z = L.noise(p.optimize_samples)
            sigma = p.mixture_sigma if p.optimize_sigma is None else p.optimize_sigma

            def fid(weights) -> float:
                with torch.no_grad():
                    return float(ev.fid(self.mixture(cells, weights).sample(z=z)))

            self.score = self.init_score = fid(w)
            for _ in range(p.optimize_generations):
                w_new = mutate_weights(w, sigma, rng)
                new = fid(w_new)
                if new < self.score:
                    w, self.score = w_new, new
        self.weights = dict(zip(cells, w.tolist()))

    # -- the life cycle ----------------------------------------------------------------------
    def end_epoch(self, rt: Runtime, epoch: int) -> None:
        self.evaluate(rt, epoch)
        if self.score == self.score:  # nan while the weights wait for the final ES (optimize_mixture)
            rt.log("mixture_fid", self.score, epoch=epoch)
        if self.ctx.role == "master" and self.ctx.on_epoch is not None:
            self.ctx.on_epoch(self.node_id, epoch, self.mixture())

    async def run(self, rt: Runtime) -> None:
        await self.publish(rt)
        if self.gen == 0:
            self.end_epoch(rt, 0)
        while self.gen < self.ctx.epochs:
            await self.gather(rt)
            await rt.compute(self.evolve, rt.rng, cost=self.cost())
            self.gen += 1
            await self.publish(rt)
            self.end_epoch(rt, self.gen)
        if self.params.optimize_mixture:
            await rt.compute(self.optimize_weights, rt.rng, cost=self.final_cost())
            self.log_final(rt)
        mix = self.mixture()
        if self.ctx.role != "master":
            await rt.send(min(rt.nodes), Message("result", {"fid": known(self.score), "init_fid": known(self.init_score),
                                                            "cells": mix.cells, "weights": mix.weights.tolist()},
                                                 {str(k): g for k, g in enumerate(mix.generators)}))
            return
        await self.collect(rt, mix)

    def log_final(self, rt: Runtime) -> None:
        """Events of the final ES: the FID of its starting and of its kept weights, and the
        kept weight of every cell of the mixture (``final_weight_<cell>``)."""
        if self.score == self.score:
            rt.log("final_init_fid", self.init_score)
            rt.log("final_mixture_fid", self.score)
        for c, w in self.weights.items():
            rt.log(f"final_weight_{c}", w)

    async def collect(self, rt: Runtime, own: Mixture) -> None:
        """Master: every cell's final mixture; the one with the lowest FID is saved (with
        ``optimize_mixture``, also the FID of its final ES's starting weights: ``init_fid``)."""
        best = (known(self.score, math.inf), self.node_id, own, known(self.init_score))
        waiting = {i for i, r in self.ctx.roles.items() if r == "cell"}
        while waiting:
            msg = await rt.recv(timeout=self.params.result_timeout, match="result")
            if msg is None:
                rt.log("missing_results", len(waiting))
                break
            waiting.discard(msg.src)
            fid = math.inf if msg["fid"] is None else float(msg["fid"])
            gens = [msg.tensors[str(k)] for k in range(len(msg["cells"]))]
            if (fid, msg.src) < best[:2]:
                best = (fid, msg.src, Mixture(self.learner, gens, msg["weights"], list(msg["cells"])), msg.get("init_fid"))
        rt.log("mixture_cell", float(best[1]))
        if self.ctx.workload is not None:
            fid, cell, mixture, init = best
            extra = {"init_fid": init, "optimize_generations": self.params.optimize_generations,
                     "optimize_samples": self.params.optimize_samples} if self.params.optimize_mixture else None
            self.ctx.workload.save_artifact("mixture", lambda d: save_mixture(d, mixture, self.learner.arch, fid, cell,
                                                                              extra))


class Lipizzaner(Algorithm):
    name = "lipizzaner"
    Params = LipizzanerParams
    summary = "Lipizzaner: coevolutionary GANs on a toroidal grid, mixture weights by an ES on FID (seed 004)"
    example = {"nodes": 4, "topology": {"kind": "complete"},
               "algorithm": {"batches": 2, "fitness_samples": 32, "peer_timeout": "1s", "result_timeout": "1s"}}
    workload = "gan"

    @classmethod
    def roles(cls, graph, params):
        n = graph.number_of_nodes()
        side = grid_side(n)
        for c in graph.nodes:
            for j in neighbourhood(c, side)[1:]:
                if not graph.has_edge(c, j):
                    raise ConfigError(f"topology: lipizzaner needs cell {c} linked to its torus neighbour {j} and "
                                      f"node 0 (the master) linked to every cell (topology: {{kind: complete}})")
        if graph.degree(0) != n - 1:
            raise ConfigError("topology: lipizzaner needs node 0 (the master) linked to every cell "
                              "(topology: {kind: complete})")
        return {i: ("master" if i == 0 else "cell") for i in graph.nodes}

    @classmethod
    def data_roles(cls):
        return ("master", "cell")

    @classmethod
    def whole_data(cls, params) -> bool:
        return params.data == "whole"

    @classmethod
    def reporting_roles(cls):
        return ("master",)

    @classmethod
    def make_node(cls, ctx: NodeContext) -> Node:
        return LipizzanerCell(ctx)
