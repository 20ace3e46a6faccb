"""DEGAN and Lipizzaner stories: the torus neighbourhoods, the evolutionary rules, a 2×2
Lipizzaner run whose saved mixture `simbench generate` samples from, a crashed cell, and
DEGAN's P=1/ssp=0 equivalence with synchronous gradient summing (the reference's rule) — tiny networks on digits."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from simbench.algorithms.lipizzaner import (LipizzanerParams, d_batches, grid_side, mixture_counts, mutate_lrs,
                                            mutate_weights, neighbourhood, tournament)
from simbench.core.message import Message
from simbench.core.schema import ConfigError
from simbench.experiment.config import parse_config
from simbench.experiment.build import build_nodes
from simbench.experiment.run import run_experiment
from simhelpers import lockstep_sum, run_config_world

torch.set_num_threads(1)

GAN = {"latent_dim": 8, "lr": 0.002, "fid_batch": 60, "grid": 0}
LIPI = {
    "name": "lipi", "seed": 0, "nodes": 4, "topology": {"kind": "complete"},
    "algorithm": {"name": "lipizzaner", **GAN, "batches": 2, "fitness_samples": 32, "es_generations": 2,
                  "mixture_sigma": 0.2},
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "lsgan", "options": {"width": 8, "bn_eps": 1e-5}},
    "train": {"epochs": 2, "batch_size": 16},
    "network": {"latency": "5ms", "bandwidth": "100Mbit/s"},
    "output": {"wall_clock": False, "plot": False, "progress": False},
}


def run(tmp_path, base=LIPI, **changes):
    return run_experiment(parse_config({**base, **changes}), tmp_path)


# -- the grid ------------------------------------------------------------------------------------
def test_neighbourhoods_on_2x2_and_3x3_tori_are_self_north_south_east_west():
    # 2×2: north = south and east = west, each kept once
    assert [neighbourhood(c, 2) for c in range(4)] == [(0, 2, 1), (1, 3, 0), (2, 0, 3), (3, 1, 2)]
    assert [neighbourhood(c, 3) for c in range(9)] == [
        (0, 6, 3, 1, 2), (1, 7, 4, 2, 0), (2, 8, 5, 0, 1),
        (3, 0, 6, 4, 5), (4, 1, 7, 5, 3), (5, 2, 8, 3, 4),
        (6, 3, 0, 7, 8), (7, 4, 1, 8, 6), (8, 5, 2, 6, 7)]
    for side in (2, 3, 4):  # being neighbours is mutual
        for c in range(side * side):
            assert all(c in neighbourhood(j, side) for j in neighbourhood(c, side))


@pytest.mark.parametrize("nodes", [1, 2, 5, 8])
def test_a_non_square_cell_count_is_a_one_line_error_naming_nodes(tmp_path, nodes):
    with pytest.raises(ConfigError) as err:
        run(tmp_path, nodes=nodes)
    msg = str(err.value)
    assert msg.startswith("nodes: lipizzaner needs a square grid") and "perfect squares >= 4" in msg
    assert "\n" not in msg
    assert grid_side(9) == 3


def test_lipizzaner_needs_the_master_linked_to_every_cell(tmp_path):
    with pytest.raises(ConfigError, match="topology: lipizzaner needs .*kind: complete"):
        run(tmp_path, nodes=9, topology={"kind": "torus"})


# -- the evolutionary rules -------------------------------------------------------------------------
def test_mixture_weights_stay_a_probability_vector():
    rng = np.random.default_rng(0)
    w = np.full(5, 0.2)
    for sigma in (0.01, 0.3, 5.0):
        for _ in range(200):
            w = mutate_weights(w, sigma, rng)
            assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    class Down:  # a draw that pushes every weight below zero
        def normal(self, loc, scale, size):
            return np.full(size, -2.0)
    one_hot = np.array([0.0, 1.0, 0.0])
    assert mutate_weights(one_hot, 0.01, Down()).tolist() == [0.0, 1.0, 0.0]  # all clipped: unchanged
    assert mixture_counts([0.5, 0.25, 0.25], 10).tolist() == [5, 3, 2]  # largest remainder, ties to the first
    assert mixture_counts([1 / 3] * 3, 100).sum() == 100


def test_tournament_picks_the_fittest_contestant_and_lrs_never_go_negative():
    rng = np.random.default_rng(1)
    fit = [3.0, 1.0, 2.0]
    assert tournament(fit, 3, 4, rng) == [1, 1, 1, 1]          # everyone competes: the best always wins
    assert tournament(fit, 1, 50, rng) != [1] * 50              # size 1: a uniform draw
    wins = tournament(fit, 2, 300, rng)
    assert wins.count(0) == 0                                   # the worst never wins a pair
    assert mutate_lrs([1e-3] * 4, 2e-4, 0.0, 1.0, rng) == [1e-3] * 4  # alpha 0: no change
    assert min(mutate_lrs([1e-6] * 100, 1.0, 1.0, 1.0, rng)) == 0.0   # clipped at zero
    assert mutate_lrs([1e-3] * 3, 2e-4, 1.0, 0.0, rng) == [1e-3] * 3  # probability 0: no change


# -- one generation, against the reference (ALFA-group/lipizzaner-gan, src/) ---------------------
def built_cell(**changes):
    """Cell 0 of a 2×2 grid with its two neighbours' networks gathered, and a counter of the
    G and D steps its learner takes."""
    cfg = parse_config({**LIPI, "algorithm": {**LIPI["algorithm"], **changes}})
    built = build_nodes(cfg)
    cell = built.nodes[0]
    for j in cell.nbhd[1:]:
        cell.copies[j] = (built.nodes[j].g.copy(), built.nodes[j].d.copy())
    steps = {"g": 0, "d": 0}
    learner = cell.learner
    g_step, d_step = learner.g_step, learner.d_step

    def count(part, step):
        def counted(*a, **k):
            steps[part] += 1
            return step(*a, **k)
        return counted
    learner.g_step, learner.d_step = count("g", g_step), count("d", d_step)
    return cell, built, steps


def test_the_defaults_are_the_reference_mnist_configuration():
    """configuration/lipizzaner-gan/mnist.yml: population_size 1, tournament_size 2,
    discriminator_skip_each_nth_step 1, fitness_sample_size 1000; data/data_loader.py: the
    whole training set per cell."""
    p = LipizzanerParams()
    assert (p.population_size, p.tournament_size, p.discriminator_skip_each_nth_step, p.fitness_samples, p.data) == \
        (1, 2, 1, 1000, "whole")
    assert [d_batches(5, 1), d_batches(6, 1), d_batches(5, 0), d_batches(7, 2)] == [3, 3, 5, 3]


def test_a_generation_trains_one_winner_of_g_and_of_d_and_d_on_every_other_batch():
    """training/ea/lipizzaner_gan_trainer.py (train): population_size tournament winners are
    trained (ea_trainer.py tournament_selection), and D only on batches b with
    b % (discriminator_skip_each_nth_step + 1) == 0: of 5 batches, 5 G steps and 3 D steps
    (b = 0, 2, 4). The earlier rule trained a copy per neighbourhood member (3 on a 2×2
    grid) and D on every batch: 15 and 15, still reachable by options."""
    cell, _, steps = built_cell(batches=5)
    cell.ctx.workload = None  # no mixture scoring
    cell.evolve(np.random.default_rng(0))
    assert steps == {"g": 5, "d": 3}
    cell, _, steps = built_cell(batches=5, population_size=None, discriminator_skip_each_nth_step=0)
    cell.ctx.workload = None
    cell.evolve(np.random.default_rng(0))
    assert steps == {"g": 15, "d": 15}


def test_every_cell_trains_on_the_whole_training_set_in_its_own_order():
    """data/data_loader.py: each client loads the full training set with shuffle=True and its
    own seed. ``data: partition`` gives each cell its part of dataset.partition instead."""
    _, built, _ = built_cell()
    total = len(built.workload.data.y_train)
    learners = [built.nodes[c].learner for c in range(4)]
    assert [lr.num_samples for lr in learners] == [total] * 4
    firsts = [lr.next_batch() for lr in learners]
    assert not any(torch.equal(firsts[0], f) for f in firsts[1:])  # independent shuffles
    _, shards, _ = built_cell(data="partition")
    sizes = [shards.nodes[c].learner.num_samples for c in range(4)]
    assert sum(sizes) == total and max(sizes) - min(sizes) <= 1  # iid shards


def test_fitness_scores_every_pair_on_its_own_noise():
    """networks/competetive_net.py: compute_loss_against draws ``noise`` at every call, so
    identical networks get different losses; a shared noise batch (the earlier rule) gave
    them all the same."""
    cell, _, _ = built_cell()
    same = [cell.g.copy() for _ in range(3)]
    real = cell.learner.x[:64]
    d_loss, g_loss = cell.losses(same, [cell.d.copy() for _ in range(3)], real)
    assert len(np.unique(g_loss)) == 9 and len(np.unique(d_loss)) == 9


class RecordingFid:
    """A workload whose FID returns the given scores in turn and keeps what it scored."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def fid(self, samples):
        self.seen.append(samples.clone())
        return self.scores.pop(0)


def test_mixture_es_rescores_both_weight_vectors_each_on_fresh_noise_and_keeps_the_new_only_if_lower():
    """lipizzaner_gan_trainer.py mutate_mixture_weights_with_score: every generation the
    current and the mutated weights are scored, each on a MixedGeneratorDataset with its own
    noise (mixed_generator_dataset.py: z=None draws noise); the new weights are kept only on
    a strictly lower FID. With identical generators and a mutation too small to move a
    sample between them, shared noise (the earlier rule) scored two identical sample sets."""
    cell, _, _ = built_cell(es_generations=1, mixture_sigma=1e-9)
    for j in cell.nbhd[1:]:
        cell.copies[j] = (cell.g.copy(), cell.d.copy())
    cells = cell.members()
    start = cell.weight_vector(cells)
    cell.ctx.workload = RecordingFid([50.0, 50.0])  # a tie keeps the current weights
    cell._evolve_weights(cells, np.random.default_rng(3))
    first, second = cell.ctx.workload.seen
    assert first.shape == second.shape == (LIPI["algorithm"]["fid_batch"], 1, 8, 8)
    assert not torch.allclose(first, second)
    assert [cell.weights[c] for c in cells] == pytest.approx(start, abs=0) and cell.score == 50.0
    cell.params = dataclasses.replace(cell.params, mixture_sigma=0.3)
    cell.ctx.workload = RecordingFid([50.0, 49.0])  # strictly lower: the mutated weights
    cell._evolve_weights(cells, np.random.default_rng(3))
    kept = np.array([cell.weights[c] for c in cells])
    assert kept == pytest.approx(mutate_weights(start, 0.3, np.random.default_rng(3)))
    assert cell.score == 49.0 and not np.allclose(kept, start)


def test_mixture_weights_start_uniform_over_the_neighbourhood():
    """distribution/neighbourhood.py _init_mixture_weights: 1/len for every member. The old
    start {own cell: 1.0} and 1/3 for the others gave (0.6, 0.2, 0.2) on a 2x2 grid."""
    cell, _, _ = built_cell()
    assert cell.weight_vector(cell.members()) == pytest.approx([1 / 3] * 3, abs=1e-12)


def test_final_es_defaults_are_the_reference_weights_optimisation_settings():
    """lipizzaner_gan_trainer.py __init__: the final ES runs only with an ``optimize_mixture``
    section, absent from configuration/lipizzaner-gan/mnist.yml; the MNIST configs that
    enable it (quickstart-weights-optimization/mnist.yml) set es_generations 50, sample size
    10000, es_random_init False, mixture_sigma 0.01 (= the trainer's, our null)."""
    p = LipizzanerParams()
    assert (p.optimize_mixture, p.optimize_generations, p.optimize_samples, p.optimize_random_init,
            p.optimize_sigma, p.mixture_sigma) == (False, 50, 10000, False, None, 0.01)


def test_final_es_scores_every_candidate_on_one_noise_batch_and_keeps_only_strict_improvements():
    """lipizzaner_gan_trainer.py optimize_generator_mixture_weights: z drawn once; the start
    weights are scored, then es_generations mutations of the best so far, each kept only if
    its FID is strictly lower. FIDs 50 (start), 51 (worse), 49, 49 (a tie), 48: 1 + 4
    evaluations; the kept weights are the start mutated at the 2nd and then the 4th try."""
    cell, _, _ = built_cell(optimize_mixture=True, optimize_generations=4, optimize_samples=40,
                            optimize_sigma=0.3)
    cells = cell.members()
    zs, sample = [], cell.learner.sample
    cell.learner.sample = lambda n=None, z=None: (zs.append(z.clone()), sample(n, z))[1]
    cell.ctx.workload = RecordingFid([50.0, 51.0, 49.0, 49.0, 48.0])
    cell.optimize_weights(np.random.default_rng(7))
    seen = cell.ctx.workload.seen
    assert len(seen) == 5 and all(x.shape == (40, 1, 8, 8) for x in seen)
    noise = torch.cat(zs).reshape(5, 40, -1)  # the noise fed to the generators, per evaluation
    assert all(torch.equal(noise[0], x) for x in noise[1:])  # drawn once (the per-generation ES draws anew)
    rng = np.random.default_rng(7)
    w0 = np.full(3, 1 / 3)
    worse = mutate_weights(w0, 0.3, rng)
    w2 = mutate_weights(w0, 0.3, rng)
    mutate_weights(w2, 0.3, rng)                 # the tie: not kept
    w4 = mutate_weights(w2, 0.3, rng)
    kept = np.array([cell.weights[c] for c in cells])
    assert kept == pytest.approx(w4, abs=1e-12) and not np.allclose(kept, worse)
    assert (cell.init_score, cell.score) == (50.0, 48.0)
    # only worse candidates: the start weights stay, with their score
    cell.weights = {}
    cell.ctx.workload = RecordingFid([50.0, 50.5, 60.0, 51.0, 50.0])
    cell.optimize_weights(np.random.default_rng(7))
    assert [cell.weights[c] for c in cells] == pytest.approx([1 / 3] * 3, abs=1e-12) and cell.score == 50.0
    # es_random_init: the start is U[0,1)^n normalised, from the same stream
    cell.weights = {}
    cell.params = dataclasses.replace(cell.params, optimize_random_init=True, optimize_generations=0)
    cell.ctx.workload = RecordingFid([55.0])
    cell.optimize_weights(np.random.default_rng(7))
    u = np.random.default_rng(7).random(3)
    assert [cell.weights[c] for c in cells] == pytest.approx(u / u.sum(), abs=1e-12) and cell.score == 55.0


def test_final_es_costs_its_fid_evaluations_and_replaces_the_per_generation_es():
    """The final ES's 1 + 50 evaluations of 10000 samples cost G forwards as the
    per-generation ES's 2 x fid_batch do (batch B = 16: ceil(10000 / 16) = 625 per
    evaluation); with optimize_mixture on, a generation no longer pays (nor runs) that ES."""
    cell, _, _ = built_cell(optimize_mixture=True)
    gen = cell.learner.flops_per_step("gen")
    assert cell.final_cost().flops == pytest.approx(gen * 51 * 625)
    off, _, _ = built_cell()
    assert off.cost().flops - cell.cost().flops == pytest.approx(gen * 2 * 2 * 4)  # es_generations 2, ceil(60/16)
    cell.ctx.workload = RecordingFid([])
    cell.params = dataclasses.replace(cell.params, batches=1)
    cell.evolve(np.random.default_rng(0))  # would pop from an empty score list if it scored
    assert cell.ctx.workload.seen == []


def test_lipizzaner_2x2_with_optimize_mixture_saves_the_optimised_weights(tmp_path):
    """End to end: no per-generation mixture FID; after the last generation every cell logs
    its final ES (start and kept FID, kept weights), the master saves the lowest-FID cell's
    kept weights and FID, and the final ES took simulated time after the last epoch."""
    res = run(tmp_path, algorithm={**LIPI["algorithm"], "optimize_mixture": True, "optimize_generations": 6,
                                   "optimize_samples": 60})
    assert res.status == "finished"
    ep, ev = res.epochs, res.events
    assert "mixture_fid" not in ep.columns or ep["mixture_fid"].isna().all()
    final = ev[ev["metric"] == "final_mixture_fid"].set_index("node")["value"]
    init = ev[ev["metric"] == "final_init_fid"].set_index("node")["value"]
    assert sorted(final.index) == ["0", "1", "2", "3"] and (final <= init).all()
    meta = json.loads((res.run_dir / "mixture" / "mixture.json").read_text())
    best = str(meta["cell"])
    assert meta["fid"] == pytest.approx(final.min()) and meta["fid"] == pytest.approx(final[best])
    assert meta["init_fid"] == pytest.approx(init[best])
    assert (meta["optimize_generations"], meta["optimize_samples"]) == (6, 60)
    weights = ev[(ev["node"] == best) & ev["metric"].str.startswith("final_weight_")]
    logged = {int(m.rsplit("_", 1)[1]): v for m, v in zip(weights["metric"], weights["value"])}
    assert [logged[c] for c in meta["cells"]] == pytest.approx(meta["weights"], abs=1e-12)
    moved = not np.allclose(meta["weights"], 1 / 3)
    assert moved == (meta["fid"] < meta["init_fid"])
    last_epoch = ep[(ep["node"] == best) & (ep["epoch"] == 2)]["time_s"].iloc[0]
    assert ev[(ev["node"] == best) & (ev["metric"] == "final_mixture_fid")]["time_s"].iloc[0] > last_epoch


# -- end to end -------------------------------------------------------------------------------
def test_lipizzaner_2x2_saves_a_mixture_that_generate_samples(tmp_path, capsys):
    from simbench.cli import main
    res = run(tmp_path)
    assert res.status == "finished"
    avg = res.epochs[res.epochs["node"] == "avg"]
    assert list(avg["epoch"]) == [0, 1, 2] and avg["fid"].notna().all()
    cells = res.epochs[res.epochs["node"].isin(["1", "2", "3"])]
    assert cells.groupby("node")["mixture_fid"].count().tolist() == [2, 2, 2]  # each cell scored 2 generations
    mix = res.run_dir / "mixture"
    meta = json.loads((mix / "mixture.json").read_text())
    assert len(meta["cells"]) == 3 and meta["cells"][0] == meta["cell"]   # a 2×2 neighbourhood: 3 generators
    assert sorted(meta["cells"]) == sorted(neighbourhood(meta["cell"], 2))
    w = np.array(meta["weights"])
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    out = tmp_path / "samples"
    assert main(["generate", "--mixture-source", str(mix), "--sample-size", "7", "-o", str(out)]) == 0
    assert "wrote 7 images" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 7 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_crashed_cell_does_not_stop_its_neighbours(tmp_path):
    res = run(tmp_path, algorithm={**LIPI["algorithm"], "peer_timeout": "0.5s",
                                                         "result_timeout": "10s", "es_generations": 0},
              train={**LIPI["train"], "epochs": 3}, scenario={"crashes": [{"node": 3, "at": 0.001}]})
    ep, ev = res.epochs, res.events
    assert res.status == "finished"
    assert ep[ep["node"] == "3"]["epoch"].max() < 3
    for cell in ("0", "1", "2"):
        assert ep[ep["node"] == cell]["epoch"].max() == 3
    assert ev[ev["metric"] == "missing_results"]["value"].tolist() == [1.0]   # cell 3's
    assert sorted(ev[ev["metric"] == "missing_neighbours"]["node"]) == ["1", "2"]  # waited for once
    assert (res.run_dir / "mixture" / "mixture.json").exists()


# -- DEGAN --------------------------------------------------------------------------------------
DEGAN = {**LIPI, "nodes": 2, "algorithm": {"name": "degan", **GAN, "P": 1, "ssp_bound": 0, "batches": 6},
         "train": {"epochs": 2, "batch_size": 16}}


def test_degan_p1_ssp0_two_workers_is_synchronous_summing_of_g_and_d_gradients():
    """m-faezi/DEGAN, pgelib/redis_ako.py: the own [g_G, g_D] plus the peers' are summed and
    applied with one Adam; with P = 1 and lockstep every replica follows that sum exactly."""
    cfg = parse_config(DEGAN)
    nodes, _ = run_config_world(cfg)
    ref = build_nodes(cfg).nodes
    learners = [ref[i].learner for i in range(2)]
    x = lockstep_sum(learners, cfg.train.epochs * 3)  # 6 batches dealt to 2 workers: 3 each
    n_g = learners[0].num_g
    for i in range(2):
        got = nodes[i].learner.get_flat()
        assert torch.allclose(got[:n_g], x[:n_g], rtol=1e-5, atol=1e-6)   # the generator
        assert torch.allclose(got[n_g:], x[n_g:], rtol=1e-5, atol=1e-6)   # the discriminator
    assert not torch.allclose(x, ref[1].learner.get_flat())  # it did train


def test_degan_hands_its_optimizer_the_sum_of_its_own_and_the_received_g_and_d_gradients():
    """m-faezi/DEGAN, pgelib/redis_ako.py: total_grads = get_others_grads() + (_grads +
    _grads_d), no division by the number of workers (simbench averaged: half of this with
    2 workers). A received partition that straddles G and D adds to both."""
    cfg = parse_config(DEGAN)
    worker = build_nodes(cfg).nodes[0]
    learner = worker.learner
    n, n_g = learner.num_params, learner.num_g
    own = torch.linspace(-1.0, 1.0, n)
    received = torch.full((10,), 0.25)
    worker.own = own.clone()
    worker.held = [Message("ako", {"it": 0, "lo": n_g - 5}, {"g": received})]
    handed = []
    set_grad = learner.set_grad_flat
    learner.set_grad_flat = lambda g: (handed.append(g.clone()), set_grad(g))
    worker.apply(1, n_workers=2)
    expected = own.clone()
    expected[n_g - 5:n_g + 5] += 0.25
    assert len(handed) == 1 and torch.equal(handed[0], expected)


def test_degan_deals_the_jobs_batches_round_robin_to_the_workers():
    """m-faezi/DEGAN (as mesh-umn/TF.AKO), pgelib/redis_ako.py: for j in range(num_batches):
    if j % num_workers == nID -- the seed's 10 batches per epoch on 4 workers are 3, 3, 2, 2
    iterations. With P = 1 each iteration sends one message to each of the 3 peers, and
    every worker ends by telling its peers it is done."""
    res = run_config_world(parse_config({**DEGAN, "nodes": 4, "train": {"epochs": 1, "batch_size": 16},
                                         "algorithm": {**DEGAN["algorithm"], "batches": 10, "ssp_bound": None}}))
    nodes, recorder = res
    assert [nodes[i].t for i in range(4)] == [3, 3, 2, 2]
    ev = recorder.events_frame()
    sent = ev[ev["metric"] == "msgs_sent_total"].set_index("node")["value"]
    assert {str(k): v for k, v in sent.items()} == {"0": 3 * 3 + 3, "1": 3 * 3 + 3, "2": 2 * 3 + 3, "3": 2 * 3 + 3}
    with pytest.raises(ConfigError, match=r"^algorithm.batches: 3 minibatches per epoch .* at least 4$"):
        build_nodes(parse_config({**DEGAN, "nodes": 4, "algorithm": {**DEGAN["algorithm"], "batches": 3}}))


def test_degan_with_partitions_and_an_iteration_cap_runs(tmp_path):
    res = run(tmp_path, base=DEGAN, nodes=3,
              algorithm={**DEGAN["algorithm"], "P": 2, "ssp_bound": 1, "batches": 9, "max_iterations": 4})
    ev = res.events
    assert res.status == "finished"
    assert ev[ev["metric"] == "ako_P"]["value"].eq(2).all()
    avg = res.epochs[res.epochs["node"] == "avg"]
    assert list(avg["epoch"]) == [0, 1] and avg["fid"].notna().all()  # 4 iterations: one epoch of 3, then the cap
    sync = parse_config({**DEGAN, "algorithm": {**DEGAN["algorithm"], "ssp_bound": 5, "synchronous": True}})
    assert sync.algorithm_params.synchronous is True


@pytest.mark.parametrize("target, iterations", [(1e9, 3 + 2 + 1), (1e-3, 6 * 3)])
def test_degan_stops_every_worker_at_the_same_iteration_once_the_judge_reaches_the_target_fid(tmp_path, target,
                                                                                           iterations):
    """Worker 0 judges from epoch 1 on; reached there (t0 = 3), all stop at t0 + ssp_bound + 1 = 6, not 18."""
    res = run(tmp_path, base=DEGAN, nodes=3, train={"epochs": 6, "batch_size": 16},
              algorithm={**DEGAN["algorithm"], "P": 2, "ssp_bound": 2, "batches": 9, "target_fid": target})
    ev = res.events
    assert res.status == "finished"
    judged = ev[ev["metric"] == "judge_fid"]
    assert set(judged["node"].astype(str)) == {"0"} and (judged["value"] > 0).all()
    reached = ev[ev["metric"] == "target_reached"]
    totals = ev[ev["metric"] == "msgs_sent_total"]
    sent = pd.Series(totals["value"].to_numpy(), index=totals["node"].astype(str))
    done = 2  # every worker ends by telling its 2 peers
    if target > 1:
        assert len(reached) == 1 and reached["value"].iloc[0] == judged["value"].iloc[0]  # at epoch 1
        assert sent.to_dict() == {"0": 2 * iterations + 2 + done, "1": 2 * iterations + done,
                                  "2": 2 * iterations + done}  # + the stop
        assert list(res.epochs[res.epochs["node"] == "avg"]["epoch"]) == [0, 1, 2]  # iteration 6 ends epoch 2
    else:
        assert len(judged) == 6 and reached.empty
        assert sent.to_dict() == {k: 2 * iterations + done for k in "012"}


def test_lipizzaner_2x2_as_real_processes_scores_its_mixture_and_saves_it(tmp_path):
    """The same Lipizzaner classes on 4 local processes: the master scores its mixture (FID
    rows, and the avg rows built from them), every cell its mixture_fid, and the best
    mixture is saved for `generate`."""
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "lipi.yaml"
    cfg.write_text(yaml.safe_dump({**LIPI, "train": {"epochs": 1, "batch_size": 16}}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "simbench.cli", "launch", str(cfg), "--local", "4", "--insecure",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = next((out / "lipi").iterdir())
    ep = pd.read_csv(run_dir / "epochs.csv", dtype={"node": str})
    master = ep[ep["node"] == "0"].set_index("epoch")
    assert master["fid"].notna().all() and list(master.index) == [0, 1]
    avg = ep[ep["node"] == "avg"].set_index("epoch")
    assert avg["fid"].tolist() == master["fid"].tolist()
    cells = ep[(ep["epoch"] == 1) & (ep["node"] != "avg")]
    assert len(cells) == 4 and cells["mixture_fid"].notna().all()
    saved = json.loads((run_dir / "mixture" / "mixture.json").read_text())
    assert abs(sum(saved["weights"]) - 1) < 1e-6 and len(list((run_dir / "mixture").glob("generator_*.npy"))) >= 1
