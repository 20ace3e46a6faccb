"""Lipizzaner's rules on hand-computed cases (ALFA-group/lipizzaner-gan, src/, is the
specification; see simbench/algorithms/lipizzaner.py): the grid, the draws of tournaments,
learning-rate and weight mutations made visible by scripted random streams, exact sample
counts, the mixture's sampling and its saved files, what ``simbench generate`` writes (file
names and pixels for a fixed seed), and a cell's replacement, mixture ES and cost."""

import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from PIL import Image

from simbench.algorithms.lipizzaner import (Individual, Lipizzaner, LipizzanerCell, LipizzanerParams, Mixture,
                                            d_batches, generate_samples, grid_side, known, mixture_counts, mutate_lrs,
                                            mutate_weights, neighbourhood, save_mixture, tournament)
from simbench.core.node import NodeContext
from simbench.core.schema import ConfigError
from simbench.gan import build_gan

from algorithms.test_degan_lipizzaner import RecordingFid
from algorithms.test_rules_by_hand import FakeRt, drive

torch.set_num_threads(1)


class Script:
    """A random stream whose draws are given in advance; it records every call."""

    def __init__(self, normal=(), random=(), choice=(), integers=()):
        self.draws = {"normal": list(normal), "random": list(random), "choice": list(choice),
                      "integers": list(integers)}
        self.calls = []

    def _next(self, kind, args, kwargs):
        self.calls.append((kind, args, kwargs))
        return np.array(self.draws[kind].pop(0), dtype=float if kind in ("normal", "random") else int)

    def normal(self, *args, **kwargs):
        return self._next("normal", args, kwargs)

    def random(self, *args, **kwargs):
        return self._next("random", args, kwargs)

    def choice(self, *args, **kwargs):
        return self._next("choice", args, kwargs)

    def integers(self, *args, **kwargs):
        return self._next("integers", args, kwargs)


# -- the grid -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, side", [(4, 2), (9, 3), (16, 4), (25, 5)])
def test_grid_side_of_perfect_squares(n, side):
    assert grid_side(n) == side


@pytest.mark.parametrize("n", [-4, 0, 1, 2, 3, 5, 8, 10, 15, 24])
def test_grid_side_rejects_the_rest_in_one_line(n):
    with pytest.raises(ConfigError) as err:
        grid_side(n)
    assert str(err.value) == (f"nodes: lipizzaner needs a square grid of cells; {n} is not allowed; "
                              "allowed: perfect squares >= 4 (4, 9, 16, ...)")


def test_neighbourhood_on_a_4x4_torus_is_self_north_south_east_west():
    """Row-major cells; cell 5 = (1, 1): north 1, south 9, east 6, west 4; the corners wrap."""
    assert neighbourhood(5, 4) == (5, 1, 9, 6, 4)
    assert neighbourhood(0, 4) == (0, 12, 4, 1, 3)
    assert neighbourhood(15, 4) == (15, 11, 3, 12, 14)
    assert neighbourhood(7, 4) == (7, 3, 11, 4, 6)
    assert neighbourhood(13, 4) == (13, 9, 1, 14, 12)


# -- draws ------------------------------------------------------------------------------------------
def test_mutate_weights_adds_the_drawn_noise_clips_at_zero_and_renormalises():
    rng = Script(normal=[[0.1, -0.4, 0.05]])
    w = mutate_weights([0.5, 0.3, 0.2], 0.7, rng)
    assert rng.calls == [("normal", (0.0, 0.7), {"size": 3})]
    assert w.tolist() == pytest.approx([0.6 / 0.85, 0.0, 0.25 / 0.85], abs=1e-15)
    assert w[1] == 0.0


def test_mutate_weights_keeps_a_copy_of_the_weights_when_every_one_clips_to_zero():
    start = np.array([0.25, 0.75])
    w = mutate_weights(start, 0.1, Script(normal=[[-0.3, -0.75]]))
    assert w.tolist() == [0.25, 0.75] and w is not start
    w[0] = 9.0
    assert start.tolist() == [0.25, 0.75]
    ints = mutate_weights([0, 1], 0.1, Script(normal=[[-0.5, -1.5]]))   # integer weights come back as floats
    assert ints.dtype == np.float64 and ints.tolist() == [0.0, 1.0]
    # a single survivor gets everything
    assert mutate_weights(start, 0.1, Script(normal=[[-0.3, -0.7]])).tolist() == pytest.approx([0.0, 1.0])


def test_mixture_counts_by_largest_remainder():
    assert mixture_counts([0.1, 0.45, 0.45], 7).tolist() == [1, 3, 3]      # .7 beats .15 and .15
    assert mixture_counts([0.5, 0.25, 0.25], 10).tolist() == [5, 3, 2]     # tie: the first
    assert mixture_counts([0.6, 0.4], 5).tolist() == [3, 2]                # exact: nothing added
    assert mixture_counts([0.3, 0.3, 0.4], 1).tolist() == [0, 0, 1]
    assert mixture_counts([0.0, 1.0], 4).tolist() == [0, 4]


def test_mixture_counts_break_ties_by_position_among_many_generators():
    """1000 generators whose shares have remainders 0.25 and 0.5 in turn, 375 samples: the
    375 extra samples go to the first 375 generators with remainder 0.5 (a stable sort)."""
    raw = np.tile([0.25, 0.5], 500)
    counts = mixture_counts(raw / raw.sum(), 375)
    expected = np.zeros(1000, dtype=int)
    expected[1:750:2] = 1
    assert counts.tolist() == expected.tolist()


def test_tournament_draws_distinct_contestants_and_the_fittest_wins_ties_to_the_lower_index():
    rng = Script(choice=[[2, 1], [1, 0], [3, 2]])
    fit = [1.0, 1.0, 0.5, 2.0]
    assert tournament(fit, 2, 3, rng) == [2, 0, 2]
    assert rng.calls == [("choice", (4,), {"size": 2, "replace": False})] * 3
    rng = Script(choice=[[2, 0, 1]])
    assert tournament([3.0, 2.0, 4.0], 5, 1, rng) == [1]   # size above the population: everyone
    assert rng.calls == [("choice", (3,), {"size": 3, "replace": False})]
    assert tournament(fit, 2, 0, Script()) == []


def test_tournament_returns_python_ints():
    out = tournament([1.0, 0.0], 2, 1, np.random.default_rng(0))
    assert out == [1] and type(out[0]) is int


@pytest.mark.parametrize("batches, skip, n", [(5, 1, 3), (6, 1, 3), (5, 0, 5), (7, 2, 3), (6, 2, 2),
                                              (1, 3, 1), (0, 1, 0), (9, 3, 3), (8, 3, 2)])
def test_d_batches_counts_the_batches_with_b_mod_s_plus_1_zero(batches, skip, n):
    assert d_batches(batches, skip) == n == sum(1 for b in range(batches) if b % (skip + 1) == 0)


def test_mutate_lrs_adds_alpha_times_the_drawn_delta_where_the_coin_says_so():
    """delta ~ N(-lr0/10, lr0); a learning rate mutates unless its coin is below 1 - prob
    (coin 0.5 with prob 0.5: mutates); the result is clipped at 0."""
    rng = Script(normal=[[1e-4, -3e-4, -1e-3, 2e-4]], random=[[0.9, 0.2, 0.95, 0.5]])
    out = mutate_lrs([1e-3, 2e-3, 5e-6, 1e-3], 2e-4, 0.5, 0.5, rng)
    assert rng.calls[0] == ("normal", (-2e-5, 2e-4), {"size": 4})
    assert rng.calls[1] == ("random", (4,), {})
    assert out == pytest.approx([1e-3 + 5e-5, 2e-3, 0.0, 1e-3 + 1e-4], abs=1e-18)
    assert out[2] == 0.0 and out[1] == 2e-3
    assert all(type(x) is float for x in out)


def test_known_is_the_score_or_the_default_while_nan():
    assert known(3.5) == 3.5
    assert known(math.nan) is None
    assert known(math.nan, 7.0) == 7.0
    assert known(0.0, 7.0) == 0.0


# -- the mixture --------------------------------------------------------------------------------
class ScaleLearner:
    """A learner whose 'generator' is one number g: sample(z) = g * z; noise(n) = rows 1..n."""

    def __init__(self, g=-1.0):
        self.g = torch.tensor(g)
        self.set_calls = []

    def get_g(self):
        return self.g.clone()

    def set_g(self, g):
        self.set_calls.append(float(g.flatten()[0]))
        self.g = g.clone()

    def noise(self, n):
        return torch.arange(1.0, n + 1).reshape(n, 1)

    def sample(self, n=None, z=None):
        return self.g * z


def test_mixture_samples_each_generator_on_its_own_contiguous_slice_and_restores_g():
    learner = ScaleLearner()
    gens = [torch.tensor(1.0), torch.tensor(10.0), torch.tensor(0.0), torch.tensor(100.0)]
    mix = Mixture(learner, gens, [0.5, 0.25, 0.0, 0.25], [3, 1, 7, 2])
    out = mix.sample(7)                       # counts 3, 2, 0, 2 of z = 1..7
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 40.0, 50.0, 600.0, 700.0]
    assert learner.set_calls == [1.0, 10.0, 100.0, -1.0]   # the empty one is skipped; G restored
    assert float(learner.g) == -1.0
    z = torch.tensor([[2.0], [4.0]])
    assert mix.sample(z=z).flatten().tolist() == [2.0, 40.0]
    assert mix.weights.dtype == np.float64 and mix.cells == [3, 1, 7, 2]
    ints = Mixture(learner, gens[:2], [1, 0], [0, 1]).weights
    assert ints.dtype == np.float64 and ints.tolist() == [1.0, 0.0]


ARCH = {"model": "lsgan", "options": {"width": 8, "bn_eps": 1e-5}, "latent_dim": 4}


def generators(shape, seeds):
    """Flat trainable parameters of lsgan generators built with the given seeds."""
    out = []
    for s in seeds:
        g, _, _ = build_gan("lsgan", shape, latent_dim=4, seed=s, **ARCH["options"])
        out.append(torch.nn.utils.parameters_to_vector([p for p in g.parameters() if p.requires_grad]).detach())
    return out


def test_save_mixture_writes_float32_generators_and_its_json(tmp_path):
    gens = [torch.arange(3, dtype=torch.float64), torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)]
    mix = Mixture(None, gens, [0.25, 0.75], [2, 0])
    arch = {**ARCH, "input_shape": [1, 8, 8]}
    d = tmp_path / "a" / "b"
    assert save_mixture(d, mix, arch, 12.5, 2, {"init_fid": 13.0}) == d
    meta = {"cell": 2, "fid": 12.5, "cells": [2, 0], "weights": [0.25, 0.75],
            "generators": ["generator_2.npy", "generator_0.npy"], "init_fid": 13.0, **arch}
    assert (d / "mixture.json").read_text() == json.dumps(meta, indent=2) + "\n"
    assert list(json.loads((d / "mixture.json").read_text())) == list(meta)
    g2, g0 = np.load(d / "generator_2.npy"), np.load(d / "generator_0.npy")
    assert g2.dtype == np.float32 and g2.tolist() == [0.0, 1.0, 2.0] and g0.tolist() == [0.5, -1.5, 2.0]
    save_mixture(d, mix, None, 11.0, 0)      # again into the same directory; no extra keys, no arch
    assert json.loads((d / "mixture.json").read_text()) == {
        "cell": 0, "fid": 11.0, "cells": [2, 0], "weights": [0.25, 0.75],
        "generators": ["generator_2.npy", "generator_0.npy"]}
    assert sorted(p.name for p in d.iterdir()) == ["generator_0.npy", "generator_2.npy", "mixture.json"]


# -- simbench generate ----------------------------------------------------------------------------
def saved_mixture(tmp_path, shape, seeds, weights):
    gens = generators(shape, seeds)
    src = tmp_path / "mixture"
    save_mixture(src, Mixture(None, gens, weights, list(range(len(gens)))), {**ARCH, "input_shape": list(shape)},
                 1.0, 0)
    return src, gens


def expected_pixels(shape, gens, weights, n, seed):
    """By hand: z ~ N(0, I) from a generator seeded ``seed``, the first counts[0] rows to G_0,
    the next to G_1, ...; each G in training mode; [-1, 1] -> 0..255, rounded; (H, W[, C])."""
    g, _, _ = build_gan("lsgan", shape, latent_dim=4, seed=123, **ARCH["options"])
    g.train()
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    images, off = [], 0
    for flat, k in zip(gens, mixture_counts(weights, n)):
        torch.nn.utils.vector_to_parameters(flat, [p for p in g.parameters() if p.requires_grad])
        with torch.no_grad():
            images.append(g(z[off:off + k]))
        off += k
    x = ((torch.cat(images).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    x = x.transpose(0, 2, 3, 1)
    return x[..., 0] if shape[0] == 1 else x


def test_generate_writes_one_png_per_sample_with_the_mixtures_pixels_for_the_seed(tmp_path):
    """Weights (0.5, 0.25, 0.25) of 7 samples: G_0 draws z[0:3], G_1 z[3:5], G_2 z[5:7]; the
    noise comes from the given seed, not from torch's global stream."""
    weights = [0.5, 0.25, 0.25]
    src, gens = saved_mixture(tmp_path, (1, 8, 8), [1, 2, 3], weights)
    out = tmp_path / "x" / "y"
    torch.manual_seed(99)
    paths = generate_samples(src, 7, out, seed=5)
    assert paths == [out / f"sample_{i:04d}.png" for i in range(7)]
    assert sorted(p.name for p in out.iterdir()) == [f"sample_{i:04d}.png" for i in range(7)]
    want = expected_pixels((1, 8, 8), gens, weights, 7, 5)
    for i, p in enumerate(paths):
        img = Image.open(p)
        assert img.mode == "L" and img.size == (8, 8)
        assert np.array_equal(np.asarray(img), want[i]), i
    # again into the existing directory, another seed: other pixels
    torch.manual_seed(5)
    again = generate_samples(src, 2, out, seed=6)
    assert again == paths[:2]
    assert np.array_equal(np.asarray(Image.open(again[1])), expected_pixels((1, 8, 8), gens, weights, 2, 6)[1])
    assert not np.array_equal(np.asarray(Image.open(again[0])), want[0])
    default = generate_samples(src, 1, tmp_path / "default")            # seed 0 unless given
    assert np.array_equal(np.asarray(Image.open(default[0])), expected_pixels((1, 8, 8), gens, weights, 1, 0)[0])


def test_generate_keeps_the_colour_channels_of_rgb_images(tmp_path):
    weights = [0.75, 0.25]
    src, gens = saved_mixture(tmp_path, (3, 8, 8), [4, 5], weights)
    paths = generate_samples(src, 4, tmp_path / "out", seed=1)
    want = expected_pixels((3, 8, 8), gens, weights, 4, 1)
    for i, p in enumerate(paths):
        img = Image.open(p)
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), want[i])


def test_generate_grid_writes_one_samples_png_tiled_and_doubled(tmp_path):
    """4 samples: a 2 x 2 grid, 2 pixels of padding, every pixel doubled: 44 x 44."""
    weights = [0.5, 0.5]
    src, gens = saved_mixture(tmp_path, (1, 8, 8), [1, 2], weights)
    out = tmp_path / "g" / "h"
    paths = generate_samples(src, 4, out, seed=3, grid=True)
    assert paths == [out / "samples.png"] and [p.name for p in out.iterdir()] == ["samples.png"]
    arr = np.asarray(Image.open(paths[0]))
    assert arr.shape == (44, 44)
    want = expected_pixels((1, 8, 8), gens, weights, 4, 3)
    small = arr[::2, ::2]
    for k in range(4):
        r, c = divmod(k, 2)
        assert np.array_equal(small[2 + r * 10:10 + r * 10, 2 + c * 10:10 + c * 10], want[k])
    assert (small[:2] == 0).all() and (small[:, 10:12] == 0).all()
    generate_samples(src, 4, out, seed=3, grid=True)   # the directory exists: fine


def test_generate_without_a_mixture_json_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        generate_samples(tmp_path, 3, tmp_path / "out")
    assert str(err.value) == (f"--mixture-source: {tmp_path} holds no mixture.json "
                              "(a lipizzaner run's mixture/ directory)")
    assert not (tmp_path / "out").exists()


# -- a cell -----------------------------------------------------------------------------------------
class CellLearner(ScaleLearner):
    """What a cell reads of its learner: G and D as flat tensors (sampling multiplies the
    noise by G's first entry), real Adams over a dummy parameter, step FLOPs per part."""

    def __init__(self):
        super().__init__()
        self.g, self.d = torch.tensor([1.0, 2.0]), torch.tensor([3.0])
        self.batch_size, self.steps_per_epoch = 16, 4
        self.adams = []
        self.opt_g, self.opt_d = self.make_adam("g", 0.5), self.make_adam("d", 0.25)
        self.adams.clear()

    def get_d(self):
        return self.d.clone()

    def set_d(self, d):
        self.d = d.clone()

    def sample(self, n=None, z=None):
        return self.g[0] * z

    def make_adam(self, part, lr):
        self.adams.append((part, lr))
        return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr, betas=(0.5, 0.999))

    def flops_per_step(self, part="both"):
        return {"g": 7.0, "d": 11.0, "gen": 13.0}[part]


def make_cell(node_id=0, nodes=4, workload=None, **params):
    ctx = NodeContext(node_id=node_id, role="master" if node_id == 0 else "cell",
                      params=LipizzanerParams(**{"lr": 0.002, **params}), learner=CellLearner(),
                      roles={i: "master" if i == 0 else "cell" for i in range(nodes)}, workload=workload)
    return LipizzanerCell(ctx)


def ind(params, lr, fitness=math.inf):
    return Individual(torch.as_tensor(params, dtype=torch.float32), lr, fitness)


def test_a_new_cell_holds_its_learners_networks_at_the_configured_lr_and_knows_its_torus_neighbours():
    cell = make_cell(node_id=5, nodes=9, lr=0.003)
    assert cell.nbhd == (5, 2, 8, 3, 4) and cell.gen == 0
    assert cell.g.params.tolist() == [1.0, 2.0] and cell.d.params.tolist() == [3.0]
    assert (cell.g.lr, cell.d.lr, cell.g.fitness, cell.d.fitness) == (0.003, 0.003, math.inf, math.inf)
    assert cell.copies == {} and cell.silent == set() and cell.weights == {}
    assert math.isnan(cell.score) and math.isnan(cell.init_score)
    cell.learner.g[0] = 9.0                     # its own copy, not the learner's tensor
    assert cell.g.params.tolist() == [1.0, 2.0]


def test_an_individuals_copy_has_its_own_params_lr_and_fitness_but_no_optimizer():
    a = ind([1.0, 2.0], 0.01, 2.5)
    a.opt = object()
    b = a.copy()
    assert (b.params.tolist(), b.lr, b.fitness, b.opt) == ([1.0, 2.0], 0.01, 2.5, None)
    b.params[0] = 7.0
    assert a.params[0] == 1.0


def test_members_are_the_cell_then_the_neighbours_heard_from_in_torus_order():
    cell = make_cell(node_id=4, nodes=9)
    assert cell.members() == [4]
    cell.copies = {3: None, 1: None, 7: None}
    assert cell.members() == [4, 1, 7, 3]


def test_weight_vector_gives_a_newly_seen_cell_1_over_len_then_normalises():
    cell = make_cell()
    cell.weights = {0: 0.5, 2: 0.3}
    w = cell.weight_vector([0, 2, 1])
    assert w.tolist() == pytest.approx([0.5 / (0.8 + 1 / 3), 0.3 / (0.8 + 1 / 3), (1 / 3) / (0.8 + 1 / 3)], abs=1e-15)
    assert cell.weight_vector([2]).tolist() == [1.0]


def test_the_cells_mixture_is_its_own_generator_then_its_neighbours_copies():
    cell = make_cell()
    cell.copies = {2: (ind([10.0], 0.1), ind([0.0], 0.1)), 1: (ind([100.0], 0.1), ind([0.0], 0.1))}
    cell.weights = {0: 0.5, 2: 0.25, 1: 0.25}
    mix = cell.mixture()
    assert mix.cells == [0, 2, 1] and mix.weights.tolist() == [0.5, 0.25, 0.25]
    assert [g.tolist() for g in mix.generators] == [[1.0, 2.0], [10.0], [100.0]]
    assert mix.learner is cell.learner
    assert mix.sample(4).flatten().tolist() == [1.0, 2.0, 30.0, 400.0]
    only = cell.mixture([0, 1], np.array([0.0, 1.0]))
    assert [g.tolist() for g in only.generators] == [[1.0, 2.0], [100.0]] and only.weights.tolist() == [0.0, 1.0]


def test_a_copy_of_the_own_network_continues_its_adam_and_a_neighbours_starts_fresh():
    cell = make_cell()
    L = cell.learner
    p = L.opt_g.param_groups[0]["params"][0]
    p.grad = torch.ones(2)
    L.opt_g.step()                                  # the own G's Adam has a step behind it
    pop = [ind([1.0], 0.01), ind([2.0], 0.02), ind([3.0], 0.03)]
    out = cell._copies(pop, [2, 0], "g")
    assert [x.params.tolist() for x in out] == [[3.0], [1.0]] and out[1].params is not pop[0].params
    assert L.adams == [("g", 0.03), ("g", 0.01)]
    assert out[0].opt.state_dict()["state"] == {}
    own_state = out[1].opt.state_dict()["state"][0]
    assert own_state["step"] == 1 and own_state["exp_avg"].tolist() == pytest.approx([0.5, 0.5])
    assert out[1].opt.param_groups[0]["lr"] == 0.5   # the own optimizer's state, its lr included
    own_state["exp_avg"][0] = 9.0                    # a copy of the state, not the state itself
    assert L.opt_g.state_dict()["state"][0]["exp_avg"].tolist() == pytest.approx([0.5, 0.5])
    L.adams.clear()
    d = cell._copies(pop, [0], "d")
    assert L.adams == [("d", 0.01)] and d[0].opt.state_dict()["state"] == {}  # D's Adam has no step yet
    assert d[0].opt.param_groups[0]["lr"] == 0.25


def test_mutate_draws_new_learning_rates_for_the_selected_with_the_cells_lr0_alpha_and_probability():
    cell = make_cell(lr=2e-4, alpha=0.5, mutation_probability=0.25)
    sel = [ind([0.0], 1e-3), ind([0.0], 2e-3)]
    rng = Script(normal=[[1e-4, -2e-4]], random=[[0.8, 0.7]])    # 0.7 < 0.75: the second stays
    cell._mutate(sel, rng)
    assert rng.calls[0] == ("normal", (-2e-5, 2e-4), {"size": 2})
    assert [x.lr for x in sel] == pytest.approx([1e-3 + 5e-5, 2e-3], abs=1e-18)


def test_replacement_needs_a_strictly_lower_loss_than_the_own_networks_fitness():
    cell = make_cell()
    L = cell.learner
    cell.g.fitness, cell.d.fitness = 2.0, 1.0
    sel = [ind([5.0], 0.1), ind([6.0], 0.2), ind([7.0], 0.3)]
    for x in sel:
        x.opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=x.lr)
    own_g = cell.g
    cell._replace(sel, np.array([2.0, 2.5, 2.0]), "g")     # a tie keeps the own network
    assert cell.g is own_g and L.opt_g.param_groups[0]["lr"] == 0.5
    cell._replace(sel, np.array([2.5, 1.5, 1.75]), "g")
    assert cell.g is sel[1] and cell.g.fitness == 1.5 and type(cell.g.fitness) is float and cell.g.opt is None
    assert L.opt_g.param_groups[0]["lr"] == 0.2 and L.opt_d.param_groups[0]["lr"] == 0.25
    assert cell.d.params.tolist() == [3.0]
    cell._replace(sel, np.array([0.5, 3.0, 0.25]), "d")
    assert cell.d is sel[2] and cell.d.fitness == 0.25 and L.opt_d.param_groups[0]["lr"] == 0.3
    assert cell.g is sel[1] and L.opt_g.param_groups[0]["lr"] == 0.2


def test_cost_of_a_generation_by_hand():
    """n = 3 members, k = 3 trained copies (population_size null), 5 batches of which D
    trains on 3 (s = 1); fitness 33 samples at B = 16: 3 forwards per pair; FID of 40
    samples: 3 per mixture. FLOPs: g 7, d 11, gen 13.
    pairs = 3*3 + 2*3*3 = 27; evals = 13*3*27*3 = 3159; mixture = 13*(2*2)*3 = 156;
    train = 5*3*7 + 3*(3*11 + 13) = 243; steps = (5 + 3)*3 = 24."""
    cell = make_cell(population_size=None, batches=5, fitness_samples=33, fid_batch=40, es_generations=2)
    cell.copies = {1: None, 2: None}
    work = cell.cost()
    assert (work.flops, work.steps) == (3159 + 156 + 243, 24)
    # k = 1, one pass of 4 batches, D on all 4 (s = 0), es 0 scores once: mixture 13*1*3 = 39;
    # pairs 9 + 6 = 15: evals 13*3*15*3 = 1755; train 4*7 + 4*(11 + 13) = 124; steps 8
    cell = make_cell(fitness_samples=33, fid_batch=40, es_generations=0, discriminator_skip_each_nth_step=0)
    cell.copies = {1: None, 2: None}
    work = cell.cost()
    assert (work.flops, work.steps) == (1755 + 39 + 124, 8)
    # optimize_mixture: no per-generation ES; alone (n = 1): pairs 1 + 2 = 3, evals 13*3*3*2
    cell = make_cell(fitness_samples=32, optimize_mixture=True, batches=3)
    work = cell.cost()
    assert (work.flops, work.steps) == (13 * 3 * 3 * 2 + 3 * 7 + 2 * (11 + 13), 5)


def test_final_cost_is_one_g_forward_per_batch_of_samples_per_evaluation():
    cell = make_cell(optimize_generations=4, optimize_samples=33)
    assert (cell.final_cost().flops, cell.final_cost().steps) == (13 * 5 * 3, 0)
    assert make_cell(optimize_generations=0, optimize_samples=32).final_cost().flops == 13 * 1 * 2


def test_es_generations_0_scores_the_current_weights_once_and_keeps_them():
    cell = make_cell(workload=RecordingFid([42.0]), es_generations=0, fid_batch=6)
    cell.copies = {2: (ind([10.0], 0.1), ind([0.0], 0.1))}
    cell.weights = {0: 0.25, 2: 0.75}
    cell._evolve_weights([0, 2], Script())
    assert cell.score == 42.0 and type(cell.score) is float
    assert cell.weights == {0: 0.25, 2: 0.75}
    (seen,) = cell.ctx.workload.seen
    assert seen.shape == (6, 1)  # 6 samples: 2 of G_0, 4 of G_2 (times noise 1..6)
    assert seen.flatten().tolist() == [1.0, 2.0, 30.0, 40.0, 50.0, 60.0]


def test_the_mixture_es_mutates_with_mixture_sigma_and_scores_old_then_new():
    """Old 50, new 49: the new weights and their score; then old 48, new 48.5: kept old,
    score 48 (the old weights' fresh score, not the earlier 49); then a tie 47, 47: kept old."""
    cell = make_cell(workload=RecordingFid([50.0, 49.0, 48.0, 48.5, 47.0, 47.0]), es_generations=3, mixture_sigma=0.3,
                     fid_batch=4)
    cell.copies = {2: (ind([10.0], 0.1), ind([0.0], 0.1))}
    rng = Script(normal=[[0.25, -0.25], [0.5, 0.0], [-0.75, 0.0]])
    cell._evolve_weights([0, 2], rng)
    assert [c[1] for c in rng.calls] == [(0.0, 0.3)] * 3
    assert cell.weights == pytest.approx({0: 0.75, 2: 0.25}) and cell.score == 47.0 and type(cell.score) is float
    seen = [s.flatten().tolist() for s in cell.ctx.workload.seen]
    assert seen == [[1.0, 2.0, 30.0, 40.0],     # 1/2, 1/2
                    [1.0, 2.0, 3.0, 40.0],      # 3/4, 1/4: kept
                    [1.0, 2.0, 3.0, 40.0],      # 3/4, 1/4 against (1.25, 0.25)/1.5
                    [1.0, 2.0, 3.0, 40.0],      # 5/6, 1/6: 3.33 and 0.67 samples, 3 and 1
                    [1.0, 2.0, 3.0, 40.0],      # 3/4, 1/4 against (0, 0.25)/0.25: all G_2
                    [10.0, 20.0, 30.0, 40.0]]
    # no workload: nothing scored, the weights are still written down
    cell = make_cell(es_generations=3)
    cell._evolve_weights([0, 1, 2], Script())
    assert cell.weights == pytest.approx({0: 1 / 3, 1: 1 / 3, 2: 1 / 3}) and math.isnan(cell.score)
    cell = make_cell(workload=RecordingFid([]), optimize_mixture=True)
    cell._evolve_weights([0], Script())
    assert cell.weights == {} and cell.ctx.workload.seen == []


def test_the_final_es_uses_optimize_sigma_or_mixture_sigma_on_optimize_samples_noise_vectors():
    cell = make_cell(workload=RecordingFid([5.0, 4.0, 4.5]), optimize_generations=2, optimize_samples=4,
                     optimize_sigma=0.2, mixture_sigma=0.7)
    cell.copies = {2: (ind([10.0], 0.1), ind([0.0], 0.1))}
    rng = Script(normal=[[0.25, -0.25], [-0.5, 0.5]])
    cell.optimize_weights(rng)
    assert [c[1] for c in rng.calls] == [(0.0, 0.2), (0.0, 0.2)]
    assert (cell.init_score, cell.score) == (5.0, 4.0) and cell.weights == pytest.approx({0: 0.75, 2: 0.25})
    assert [s.flatten().tolist() for s in cell.ctx.workload.seen] == [[1.0, 2.0, 30.0, 40.0], [1.0, 2.0, 3.0, 40.0],
                                                                      [1.0, 20.0, 30.0, 40.0]]
    cell = make_cell(workload=RecordingFid([5.0, 6.0]), optimize_generations=1, optimize_samples=4, mixture_sigma=0.7)
    rng = Script(normal=[[0.1]])
    cell.optimize_weights(rng)
    assert rng.calls[0][1] == (0.0, 0.7) and cell.score == 5.0 and cell.weights == {0: 1.0}
    assert type(cell.score) is float and type(cell.init_score) is float
    # no workload: the (random) start weights are kept, unscored
    cell = make_cell(optimize_random_init=True)
    cell.copies = {2: (ind([10.0], 0.1), ind([0.0], 0.1))}
    cell.optimize_weights(Script(random=[[0.25, 0.75]]))
    assert cell.weights == {0: 0.25, 2: 0.75} and math.isnan(cell.score) and math.isnan(cell.init_score)
    # with a workload the random start is what is scored: 1 sample of G_0, 3 of G_2
    cell.ctx.workload, cell.weights = RecordingFid([6.0]), {}
    cell.params = LipizzanerParams(lr=0.002, optimize_random_init=True, optimize_generations=0, optimize_samples=4)
    cell.optimize_weights(Script(random=[[0.25, 0.75]]))
    assert [s.flatten().tolist() for s in cell.ctx.workload.seen] == [[1.0, 20.0, 30.0, 40.0]]
    assert (cell.init_score, cell.score, cell.weights) == (6.0, 6.0, {0: 0.25, 2: 0.75})


# -- one generation, scripted -----------------------------------------------------------------------
class EvoLearner(CellLearner):
    """G and D are one number each. Losses of a pair: G (g - 2)^2 + d/100, D (d - 30)^2/100 + g/10;
    a G step adds its Adam's lr to g, a D step adds 10 lr to d; everything is recorded."""

    def __init__(self):
        super().__init__()
        self.g, self.d = torch.tensor([1.0]), torch.tensor([10.0])
        self.x, self.device, self.num_samples = torch.arange(10.0).reshape(10, 1), torch.device("cpu"), 10
        self.batches, self.noises, self.reals, self.g_steps, self.d_steps = 0, [], [], [], []

    def noise(self, n):
        self.noises.append(n)
        return torch.zeros(n, 1)

    def eval_losses(self, real, z):
        self.reals.append(real.flatten().tolist())
        g, d = float(self.g[0]), float(self.d[0])
        return (d - 30) ** 2 / 100 + g / 10, (g - 2) ** 2 + d / 100

    def next_batch(self):
        self.batches += 1
        return torch.full((4, 1), float(self.batches))

    def g_step(self, opt):
        lr = opt.param_groups[0]["lr"]
        self.g_steps.append((round(float(self.g[0]), 6), round(lr, 6), float(self.d[0])))
        self.g = self.g + lr

    def d_step(self, fake, opt, batch):
        lr = opt.param_groups[0]["lr"]
        self.d_steps.append((round(float(self.d[0]), 6), round(lr, 6), [round(x, 6) for x in fake.flatten().tolist()],
                             float(batch[0, 0])))
        self.d = self.d + 10 * lr

    def sample(self, n=None, z=None):
        return self.g[0] * torch.ones(int(n) if z is None else len(z), 1)


def evo_cell(own, copies, **params):
    """Cell 0 of a 2 x 2 grid on an EvoLearner: own ((G, lr), (D, lr)) and the neighbours'
    copies {cell: ((G, lr), (D, lr))}; fitness on 3 real images."""
    cell = make_cell(fitness_samples=3, **params)
    cell.learner = cell.ctx.learner = EvoLearner()
    cell.g, cell.d = (ind([v], lr) for v, lr in own)
    cell.copies = {c: (ind([g], lg), ind([d], ld)) for c, ((g, lg), (d, ld)) in copies.items()}
    return cell, cell.learner


def test_a_generation_by_hand():
    """Cell 0 of a 2 x 2 grid: members 0, 2, 1 with G = 1, 2, 3 and D = 10, 20, 30 (the
    neighbours' copies at lr 0.1 for G, 0.2 for D). Fitness on real rows 7, 2, 5: G
    (1.2, 0.2, 1.2), D (4.2, 1.2, 0.2). Tournaments (members 2 vs 1 of G: G_2 wins; 0 vs 1 of D: D_2
    wins). 3 batches, D on batches 0 and 2. Learning rates: G 0.1 -> 0.15 (mutated), 0.15
    (coin 0.1: kept), 0 (0.15 - 1 clipped); D 0.2 -> 0.3, then kept. G_2 trains to 2.3 and
    D_2 to 26; both beat the own networks' fitness (0.29 < 1.2, 0.36 < 4.2) and replace them."""
    cell, L = evo_cell(((1.0, 0.002), (10.0, 0.002)), {2: ((2.0, 0.1), (20.0, 0.2)), 1: ((3.0, 0.1), (30.0, 0.2))},
                       batches=3, alpha=1.0, mutation_probability=0.5, es_generations=1, mixture_sigma=0.1, fid_batch=6)
    cell.ctx.workload = RecordingFid([5.0, 4.0])
    own_g, own_d = cell.g, cell.d
    rng = Script(choice=[[7, 2, 5], [2, 1], [0, 1]],
                 normal=[[0.05], [0.1], [-0.2], [-1.0], [0.0], [0.1, 0.0, -0.1]],
                 random=[[0.9], [0.7], [0.1], [0.6], [0.2]],
                 integers=[0, 0, 0, 0, 0])
    cell.evolve(rng)
    assert [(k, a, kw) for k, a, kw in rng.calls if k == "choice"] == [
        ("choice", (10,), {"size": 3, "replace": False}),
        ("choice", (3,), {"size": 2, "replace": False}), ("choice", (3,), {"size": 2, "replace": False})]
    assert [k for k, _, _ in rng.calls] == ["choice"] * 3 + [
        "normal", "random", "integers", "normal", "random", "integers",   # batch 0: G, then D
        "normal", "random", "integers",                                    # batch 1: G only
        "normal", "random", "integers", "normal", "random", "integers",     # batch 2: G, then D
        "normal"]                                                           # the mixture weights
    assert [a for k, a, _ in rng.calls if k == "integers"] == [(1,)] * 5
    assert [a for k, a, _ in rng.calls if k == "normal"][:5] == [(-0.0002, 0.002)] * 5
    assert rng.calls[-1] == ("normal", (0.0, 0.1), {"size": 3})
    assert L.adams == [("g", 0.1), ("d", 0.2)]     # the winners' fresh Adams, over G's and D's parameters
    # fitness: every pair once on the real rows 7, 2, 5, each on its own noise; then 3 + 3 re-scores
    assert L.reals == [[7.0, 2.0, 5.0]] * 15 and L.noises == [3] * 15 + [6, 6]
    assert [own_g.fitness, cell.copies[2][0].fitness, cell.copies[1][0].fitness] == pytest.approx([1.2, 0.2, 1.2])
    assert [own_d.fitness, cell.copies[2][1].fitness, cell.copies[1][1].fitness] == pytest.approx([4.2, 1.2, 0.2])
    assert L.batches == 3
    # G steps: (g before, lr, the D it trains against)
    assert L.g_steps == [(2.0, 0.15, 20.0), (2.15, 0.15, 23.0), (2.3, 0.0, 23.0)]
    # D steps: (d before, lr, fakes of the trained G, the batch)
    assert L.d_steps == [(20.0, 0.3, [2.15] * 4, 1.0), (23.0, 0.3, [2.3] * 4, 3.0)]
    assert cell.g is not own_g and cell.g.params.tolist() == pytest.approx([2.3]) and cell.g.lr == 0.0
    assert cell.g.fitness == pytest.approx(0.09 + 0.2) and cell.g.opt is None
    assert cell.d.params.tolist() == pytest.approx([26.0]) and cell.d.lr == pytest.approx(0.3)
    assert cell.d.fitness == pytest.approx(0.16 + 0.2)
    assert L.opt_g.param_groups[0]["lr"] == 0.0 and L.opt_d.param_groups[0]["lr"] == pytest.approx(0.3)
    assert cell.copies[2][0].params.tolist() == [2.0]       # the gathered copy is not trained itself
    assert L.g.tolist() == pytest.approx([2.3]) and L.d.tolist() == pytest.approx([26.0])
    # the mixture ES on the new own G (2.3) and the gathered ones (2, 3): uniform, then mutated, kept
    seen = [[round(x, 6) for x in t.flatten().tolist()] for t in cell.ctx.workload.seen]
    assert seen == [[2.3, 2.3, 2.0, 2.0, 3.0, 3.0], [2.3, 2.3, 2.3, 2.0, 2.0, 3.0]]
    assert cell.weights == pytest.approx({0: 1 / 3 + 0.1, 2: 1 / 3, 1: 1 / 3 - 0.1}) and cell.score == 4.0


def test_a_generation_with_one_tournament_per_member_keeps_the_own_networks_when_no_copy_is_better():
    """population_size null: 3 tournaments each (G: 0 vs 1, 1 vs 2 (a tie: the lower), 2 vs 0;
    D: 0 vs 2, 1 vs 2, 2 vs 1), so 3 trained copies of each; every learning rate is 0 and
    nothing mutates. The own networks are the fittest (G 0.2, D 0.2), and a copy of them
    only ties: no replacement. The D the G copies train against and the G whose fakes D
    trains on are drawn among the 3 copies."""
    cell, L = evo_cell(((2.0, 0.0), (30.0, 0.0)), {2: ((1.0, 0.0), (20.0, 0.0)), 1: ((3.0, 0.0), (10.0, 0.0))},
                       batches=1, population_size=None, mutation_probability=0.0, discriminator_skip_each_nth_step=0)
    own_g, own_d = cell.g, cell.d
    rng = Script(choice=[[1, 2, 3], [0, 1], [1, 2], [2, 0], [0, 2], [1, 2], [2, 1]],
                 normal=[[0.5] * 3] * 2, random=[[0.1] * 3] * 2, integers=[1, 2])
    cell.evolve(rng)
    assert [a for k, a, _ in rng.calls if k == "integers"] == [(3,), (3,)]
    assert [kw["size"] for k, _, kw in rng.calls if k == "normal"] == [3, 3]
    assert cell.g is own_g and cell.d is own_d
    assert L.g_steps == [(2.0, 0.0, 20.0), (1.0, 0.0, 20.0), (2.0, 0.0, 20.0)]
    assert L.d_steps == [(30.0, 0.0, [2.0] * 4, 1.0), (20.0, 0.0, [2.0] * 4, 1.0), (20.0, 0.0, [2.0] * 4, 1.0)]
    assert L.noises == [3] * 27
    assert L.g.tolist() == [2.0] and L.d.tolist() == [30.0]


# -- messages -------------------------------------------------------------------------------------
def rt_for(node_id=0, nodes=(0, 1, 2, 3)):
    return FakeRt(node_id=node_id, nodes=nodes)


def test_publish_sends_generation_lrs_and_both_networks_to_each_neighbour():
    cell = make_cell(node_id=3)
    cell.gen, cell.g.lr, cell.d.lr = 4, 0.01, 0.02
    rt = rt_for(3)
    drive(cell.publish(rt))
    sent = rt.sent_of("cell")
    assert [dst for dst, _ in sent] == [1, 2]
    for _, m in sent:
        assert m.meta == {"gen": 4, "lr_g": 0.01, "lr_d": 0.02}
        assert m.tensors["g"].tolist() == [1.0, 2.0] and m.tensors["d"].tolist() == [3.0]


def test_gather_keeps_the_latest_copy_and_waits_once_for_a_silent_neighbour():
    cell = make_cell(peer_timeout=0.5)
    rt = rt_for()
    rt.deliver(0.0, 2, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [1.0], "d": [2.0]})
    rt.deliver(0.0, 2, "cell", {"gen": 1, "lr_g": 0.3, "lr_d": 0.4}, {"g": [5.0], "d": [6.0]})
    late = rt.deliver(0.0, 3, "result", {"fid": 1.0}, {})   # not a neighbour's copy: left in the queue
    drive(cell.gather(rt))
    assert [m for _, _, m in rt.queue] == [late]
    g, d = cell.copies[2]
    assert (g.params.tolist(), g.lr, d.params.tolist(), d.lr) == ([5.0], 0.3, [6.0], 0.4)
    assert type(g.lr) is float and type(d.lr) is float
    assert rt.t == 0.5 and rt.logged("missing_neighbours") == [1] and cell.silent == {1}
    rt.deliver(0.7, 2, "cell", {"gen": 2, "lr_g": 0.5, "lr_d": 0.6}, {"g": [7.0], "d": [8.0]})
    drive(cell.gather(rt))                      # 1 is not waited for again; 2's news not yet here
    assert rt.t == 0.5 and cell.copies[2][0].params.tolist() == [5.0] and cell.members() == [0, 2]
    rt.t = 1.0
    rt.deliver(0.9, 1, "cell", {"gen": 0, "lr_g": 0.7, "lr_d": 0.8}, {"g": [9.0], "d": [1.5]})
    drive(cell.gather(rt))
    assert cell.silent == set() and cell.members() == [0, 2, 1] and cell.copies[2][0].params.tolist() == [7.0]
    assert rt.logged("missing_neighbours") == [1]


def test_gather_waits_for_a_first_copy_of_every_neighbour():
    cell = make_cell()
    rt = rt_for()
    rt.deliver(2.0, 1, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [1.0], "d": [2.0]})
    rt.deliver(3.0, 2, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [1.0], "d": [2.0]})
    drive(cell.gather(rt))
    assert rt.t == 3.0 and cell.members() == [0, 2, 1] and rt.logged("missing_neighbours") == []


class Saver:
    def __init__(self):
        self.saved = []

    def save_artifact(self, name, write):
        self.saved.append((name, write))


def result(rt, at, src, fid, weights, init=None):
    return rt.deliver(at, src, "result", {"fid": fid, "init_fid": init, "cells": [src, 0], "weights": weights},
                      {"0": [float(src)], "1": [0.5]})


def test_the_master_saves_the_lowest_fid_mixture_ties_to_the_lower_cell(tmp_path):
    cell = make_cell(workload=Saver())
    cell.learner.arch = {"model": "m"}
    cell.score = 5.0
    rt = rt_for()
    rt.deliver(0.5, 2, "cell", {"gen": 9, "lr_g": 0.1, "lr_d": 0.2}, {"g": [1.0], "d": [2.0]})  # a late copy: not a result
    result(rt, 1.0, 3, 4.0, [0.5, 0.5])
    result(rt, 2.0, 2, None, [0.1, 0.9])
    result(rt, 3.0, 1, 4.0, [0.25, 0.75])
    drive(cell.collect(rt, cell.mixture()))
    assert rt.logged("mixture_cell") == [1.0] and rt.logged("missing_results") == []
    ((name, write),) = cell.ctx.workload.saved
    assert name == "mixture"
    write(tmp_path)
    meta = json.loads((tmp_path / "mixture.json").read_text())
    assert meta == {"cell": 1, "fid": 4.0, "cells": [1, 0], "weights": [0.25, 0.75],
                    "generators": ["generator_1.npy", "generator_0.npy"], "model": "m"}
    assert np.load(tmp_path / "generator_1.npy").tolist() == [1.0]


def test_the_master_keeps_its_own_mixture_when_no_cell_beats_it_and_stops_waiting_after_the_timeout(tmp_path):
    cell = make_cell(workload=Saver(), result_timeout=1.0, optimize_mixture=True, optimize_generations=3,
                     optimize_samples=20)
    cell.learner.arch = None
    cell.score, cell.init_score = 4.0, 6.0
    cell.weights = {0: 1.0}
    rt = rt_for()
    result(rt, 0.5, 2, 4.0, [0.5, 0.5], init=5.0)   # a tie with the master (cell 0): the master's
    result(rt, 1.2, 3, None, [0.5, 0.5])            # nan scores arrive as None: never the best
    result(rt, 5.0, 1, 1.0, [0.5, 0.5])             # too late
    drive(cell.collect(rt, cell.mixture()))
    assert rt.logged("missing_results") == [1] and rt.logged("mixture_cell") == [0.0]
    ((_, write),) = cell.ctx.workload.saved
    write(tmp_path)
    assert json.loads((tmp_path / "mixture.json").read_text()) == {
        "cell": 0, "fid": 4.0, "cells": [0], "weights": [1.0], "generators": ["generator_0.npy"],
        "init_fid": 6.0, "optimize_generations": 3, "optimize_samples": 20}
    # a cell strictly better than the master, with its final ES's start score
    cell.ctx.workload = Saver()
    rt = rt_for()
    result(rt, 0.5, 2, 3.5, [0.5, 0.5], init=5.0)
    result(rt, 0.6, 1, None, [0.5, 0.5])
    result(rt, 0.7, 3, 3.75, [0.5, 0.5])
    drive(cell.collect(rt, cell.mixture()))
    assert rt.logged("mixture_cell") == [2.0] and rt.logged("missing_results") == []
    ((_, write),) = cell.ctx.workload.saved
    write(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "mixture.json").read_text())
    assert (meta["cell"], meta["fid"], meta["init_fid"]) == (2, 3.5, 5.0)


def test_without_a_workload_the_master_only_logs_the_chosen_cell():
    cell = make_cell()
    rt = rt_for()
    result(rt, 0.5, 1, 2.0, [0.5, 0.5])
    result(rt, 0.5, 2, 1.0, [0.5, 0.5])
    result(rt, 0.5, 3, 3.0, [0.5, 0.5])
    drive(cell.collect(rt, cell.mixture()))     # its own score is nan: any cell's beats it
    assert rt.logged("mixture_cell") == [2.0]


class Evaluating:
    def __init__(self):
        self.calls, self.rts = [], []

    def evaluate(self, rt, ctx, epoch, learner):
        self.calls.append((epoch, learner))
        self.rts.append(rt)
        return {}


def test_end_epoch_evaluates_logs_the_mixture_fid_and_tells_the_master_observer():
    seen = []
    cell = make_cell(workload=Evaluating())
    cell.ctx.on_epoch = lambda node, epoch, mix: seen.append((node, epoch, mix.cells, mix.weights.tolist()))
    rt = rt_for()
    cell.end_epoch(rt, 3)                                  # not scored yet: no mixture_fid
    assert rt.logs == [] and cell.ctx.workload.calls == [(3, cell.learner)] and seen == [(0, 3, [0], [1.0])]
    assert cell.ctx.workload.rts == [rt]
    cell.score = 12.5
    cell.end_epoch(rt, 4)
    assert rt.logs == [("mixture_fid", 12.5)] and rt.log_kw == [("mixture_fid", {"epoch": 4})]
    other = make_cell(node_id=2, workload=Evaluating())
    other.ctx.on_epoch = cell.ctx.on_epoch
    other.end_epoch(rt, 1)                                 # a cell's observer is not told
    assert len(seen) == 2


def test_log_final_logs_the_final_es_scores_and_every_kept_weight():
    cell = make_cell()
    cell.weights = {0: 0.25, 2: 0.75}
    rt = rt_for()
    cell.log_final(rt)
    assert rt.logs == [("final_weight_0", 0.25), ("final_weight_2", 0.75)]
    cell.score, cell.init_score = 3.0, 4.0
    rt = rt_for()
    cell.log_final(rt)
    assert rt.logs == [("final_init_fid", 4.0), ("final_mixture_fid", 3.0), ("final_weight_0", 0.25),
                       ("final_weight_2", 0.75)]


# -- the algorithm ----------------------------------------------------------------------------------
def test_roles_need_torus_links_and_a_master_linked_to_every_cell():
    assert Lipizzaner.roles(nx.complete_graph(4), None) == {0: "master", 1: "cell", 2: "cell", 3: "cell"}
    g = nx.complete_graph(4)
    g.remove_edge(1, 3)
    with pytest.raises(ConfigError) as err:
        Lipizzaner.roles(g, None)
    assert str(err.value) == ("topology: lipizzaner needs cell 1 linked to its torus neighbour 3 and node 0 "
                              "(the master) linked to every cell (topology: {kind: complete})")
    torus = nx.Graph([(c, j) for c in range(9) for j in neighbourhood(c, 3)[1:]])
    with pytest.raises(ConfigError) as err:
        Lipizzaner.roles(torus, None)
    assert str(err.value) == ("topology: lipizzaner needs node 0 (the master) linked to every cell "
                              "(topology: {kind: complete})")
    torus.add_edges_from((0, j) for j in range(1, 9))
    assert Lipizzaner.roles(torus, None) == {i: "master" if i == 0 else "cell" for i in range(9)}
    with pytest.raises(ConfigError, match="^nodes: "):
        Lipizzaner.roles(nx.complete_graph(5), None)
    assert Lipizzaner.data_roles() == ("master", "cell") and Lipizzaner.reporting_roles() == ("master",)
    assert Lipizzaner.whole_data(LipizzanerParams()) is True
    assert Lipizzaner.whole_data(LipizzanerParams(data="partition")) is False
    cell = make_cell()
    assert type(Lipizzaner.make_node(cell.ctx)) is LipizzanerCell


def test_a_cell_runs_its_generations_then_sends_its_mixture_to_the_master():
    """Cell 2 of a 2 x 2 grid, 2 generations and the final ES: it publishes before and after
    every generation, is evaluated at epochs 0, 1, 2, charges each generation's cost and
    the final ES's, and sends its kept weights, scores and generators to node 0."""
    cell = make_cell(node_id=2, workload=Evaluating(), optimize_mixture=True, optimize_generations=2,
                     optimize_samples=32, fitness_samples=16, batches=1)
    cell.ctx.epochs = 2
    rt = rt_for(2)
    rt.deliver(0.0, 0, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [5.0], "d": [6.0]})
    rt.deliver(0.0, 3, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [7.0], "d": [8.0]})
    calls = []
    cell.evolve = lambda rng: calls.append(("evolve", rng is rt.rng, cell.gen, cell.members())) if len(calls) < 3 \
        else pytest.fail("more generations than epochs")

    def optimize(rng):
        calls.append(("optimize", rng is rt.rng, cell.gen))
        cell.score, cell.init_score, cell.weights = 3.0, 4.0, {2: 0.5, 0: 0.25, 3: 0.25}
    cell.optimize_weights = optimize
    drive(cell.run(rt))
    assert calls == [("evolve", True, 0, [2, 0, 3]), ("evolve", True, 1, [2, 0, 3]), ("optimize", True, 2)]
    assert cell.gen == 2 and [e for e, _ in cell.ctx.workload.calls] == [0, 1, 2]
    assert cell.ctx.workload.rts == [rt] * 3
    assert rt.costs == [cell.cost(), cell.cost(), cell.final_cost()]
    assert [(dst, m["gen"]) for dst, m in rt.sent_of("cell")] == [(0, 0), (3, 0), (0, 1), (3, 1), (0, 2), (3, 2)]
    assert rt.logs == [("final_init_fid", 4.0), ("final_mixture_fid", 3.0), ("final_weight_2", 0.5),
                       ("final_weight_0", 0.25), ("final_weight_3", 0.25)]
    ((dst, msg),) = rt.sent_of("result")
    assert dst == 0 and msg.meta == {"fid": 3.0, "init_fid": 4.0, "cells": [2, 0, 3], "weights": [0.5, 0.25, 0.25]}
    assert {k: v.tolist() for k, v in msg.tensors.items()} == {"0": [1.0, 2.0], "1": [5.0], "2": [7.0]}


def test_without_the_final_es_a_cell_sends_none_for_scores_it_never_had_and_the_master_collects():
    cell = make_cell(node_id=1, workload=Evaluating())
    cell.ctx.epochs = 1
    rt = rt_for(1, nodes=(3, 1, 2, 0))
    rt.deliver(0.0, 0, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [5.0], "d": [6.0]})
    rt.deliver(0.0, 3, "cell", {"gen": 0, "lr_g": 0.1, "lr_d": 0.2}, {"g": [7.0], "d": [8.0]})
    cell.evolve = lambda rng: pytest.fail("more generations than epochs") if cell.gen > 0 else None
    cell.optimize_weights = lambda rng: pytest.fail("the final ES is off")
    drive(cell.run(rt))
    ((dst, msg),) = rt.sent_of("result")
    assert dst == 0 and msg.meta == {"fid": None, "init_fid": None, "cells": [1, 3, 0], "weights": [1 / 3] * 3}
    assert rt.logs == [] and rt.costs == [cell.cost()]
    master = make_cell(node_id=0, workload=Evaluating())
    master.ctx.epochs = 1
    master.gen = 1                                   # nothing left to train, epoch 0 long evaluated
    seen = []

    async def collect(rt_, own):
        seen.append((rt_ is rt, own.cells))
    master.collect = collect
    rt = rt_for(0)
    drive(master.run(rt))
    assert seen == [(True, [0])] and rt.sent_of("result") == [] and master.ctx.workload.calls == []
    assert [dst for dst, _ in rt.sent_of("cell")] == [2, 1]
