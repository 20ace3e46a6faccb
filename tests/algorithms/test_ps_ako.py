"""Stories of the parameter-server family and Ako: AdaComp (Hardy et al.'s, seed 002's; and
Chen et al.'s) and the other push-path compressors, asynchronous SGD with a parameter server
(per-update and per-parameter staleness, single vs multi handlers, supervisor, shards) and
Ako's partial gradient exchange (sum of gradients, exact synchronous limit, stale-synchronous
bound)."""

import math

import pytest
import torch

from simbench.algorithms.ako import auto_partitions, partition_bounds
from simbench.algorithms.ps import shard_ranges
from simbench.algorithms.ps_async import TouchLog, scale_by_parameter_staleness
from simbench.algorithms.compression import (CompressionParams, Layer, chen_mask, compress, decompress, hardy_k,
                                             split_payload, payload_bytes, train_compressed)
from simbench.core.message import Message
from simbench.core.schema import ConfigError
from simbench.experiment.config import load_config, parse_config
from simbench.experiment.build import build_nodes
from simbench.experiment.run import run_experiment
from simhelpers import REPO, Scripted, lockstep_average, lockstep_sum, run_config_world

BASE = {
    "name": "t", "seed": 0, "nodes": 9, "topology": {"kind": "star"}, "algorithm": "ps_async",
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.1, "eval_samples": 400},
    "network": {"latency": "5ms", "bandwidth": "100Mbit/s"},
    "compute": {"step_time": "10ms"},
    "output": {"wall_clock": False, "plot": False, "progress": False},
}


def run(tmp_path, **changes):
    return run_experiment(parse_config({**BASE, **changes}), tmp_path)


def metric(res, name, node=None):
    ev = res.events
    ev = ev[ev["metric"] == name]
    if node is not None:
        ev = ev[ev["node"] == str(node)]
    return ev["value"].to_numpy()


# -- AdaComp and friends: pure functions ------------------------------------------------------
def test_adacomp_chen_sends_the_bin_local_winners_and_keeps_the_rest():
    residue = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0])
    dw = torch.tensor([0.1, 0.2, -0.3, 0.05, 0.0, 0.2, -0.1, 0.0, 0.3, 0.0])
    # G = residue + dW = [.1 .7 -.3 .05 0 | .3 -.1 0 .3 0];  H = G + dW = [.2 .9 -.6 .1 0 | .5 -.2 0 .6 0]
    # bin 1: g_max = .7, only |H| = .9 passes (-.6 would pass bin 2's threshold, but bins are local)
    # bin 2: g_max = .3, |H| = .5 and .6 pass
    params = CompressionParams(compression="adacomp_chen", adacomp_fc_bin=5)
    layers = [Layer("w", 0, 10, "fc")]
    payload, res = compress(dw, residue, layers, params)
    acc = residue + dw
    assert payload["idx"].tolist() == [1, 5, 8]
    assert torch.equal(payload["val"], acc[[1, 5, 8]])
    expected_res = acc.clone()
    expected_res[[1, 5, 8]] = 0
    assert torch.equal(res, expected_res)
    assert torch.equal(decompress(payload, 10) + res, acc)  # nothing is lost
    assert chen_mask(acc, dw, 5).tolist() == [False, True, False, False, False, True, False, False, True, False]


@pytest.mark.parametrize("method,quantize", [("adacomp_chen", False), ("adacomp_chen", True), ("topk", False),
                                             ("random_k", False), ("none", False)])
def test_sent_plus_residual_is_the_accumulated_gradient(method, quantize):
    gen = torch.Generator().manual_seed(0)
    layers = [Layer("conv.w", 0, 300, "conv"), Layer("conv.b", 300, 310, "conv"), Layer("fc.w", 310, 2310, "fc")]
    params = CompressionParams(compression=method, adacomp_quantize=quantize, k_fraction=0.05)
    residual, total_sent, total_grad = None, torch.zeros(2310), torch.zeros(2310)
    for _ in range(6):
        g = torch.randn(2310, generator=gen)
        acc = g if residual is None else residual + g
        payload, residual = compress(g, residual, layers, params, gen)
        sent = decompress(payload, 2310)
        if method == "none":
            assert residual is None and torch.equal(sent, g)
            return
        if quantize:
            assert torch.allclose(sent + residual, acc, atol=1e-6)
        else:
            assert torch.equal(sent + residual, acc)
        total_sent += sent
        total_grad += g
    assert torch.allclose(total_sent + residual, total_grad, atol=1e-5)


def _cnn_learner():
    from simbench.data.datasets import load_dataset
    from simbench.learn import Learner, OptimConfig
    from simbench.models import build_model
    data = load_dataset("digits", None, seed=0)
    # the digits scaled to MNIST's 28x28, so the CNN is seed 002's Keras net (1.2M parameters, fc 9216x128)
    x = torch.nn.functional.interpolate(data.x_train[:320], size=(28, 28), mode="bilinear")
    model = build_model("cnn", (1, 28, 28), data.num_classes, seed=0)
    return Learner(model, x, data.y_train[:320], batch_size=10, optim=OptimConfig(lr=0.1), seed=0)


def test_adacomp_chen_compresses_a_real_cnn_fc_gradient_over_10x():
    learner = _cnn_learner()
    layers = [Layer(*t) for t in learner.layer_slices()]
    assert [lay.kind for lay in layers] == ["conv", "conv", "conv", "conv", "fc", "fc", "fc", "fc"]
    params = CompressionParams(compression="adacomp_chen")
    warmup, steps = 5, 10  # the residue builds up over the first steps; measure after them
    # seed 002's ASGD: batch 10, lr 0.1, the update is what was sent
    sent_counts, payload = train_compressed(learner, layers, params, steps, warmup)
    # bytes: dense float32 vs (int32 index + float32 value) per sent entry
    ratios = {lay.name: lay.numel * 4 * steps / max(1.0, 8 * c) for lay, c in zip(layers, sent_counts)}
    print("Chen et al.'s AdaComp compression ratio per layer (Keras MNIST CNN on 28x28 digits, steps 5-15):",
          {k: round(float(v), 1) for k, v in ratios.items()})
    fc1 = layers[4]
    assert fc1.numel == 9216 * 128
    assert ratios[fc1.name] > 15
    # and the real encoded message of the whole gradient is much smaller than the dense one
    dense = len(Message("grad", {"version": 0}, {"g": learner.get_grad_flat()}).encode(1))
    small = len(Message("grad", {"version": 0}, payload).encode(1))
    assert dense / small > 5
    assert abs(payload_bytes(payload) - small) < 200  # the rest is the JSON header


# -- AdaComp (Hardy et al., NCA 2017; seed 002) ---------------------------------------------------
def test_adacomp_sends_each_layers_largest_entries_and_drops_the_rest():
    """Hardy-c/AdaComp, Communication.py::encode_variables: per layer (weights and biases
    separately) k = int(max(1, n * compression_rate)) entries of the raw gradient largest in
    |g|, with their indices; the worker keeps no residual (Worker.py assigns a fresh
    gradient to its W_grad variables every step), so unsent entries are dropped."""
    layers = [Layer("w", 0, 25, "fc"), Layer("b", 25, 30, "fc"), Layer("v", 30, 40, "conv")]
    g = torch.zeros(40)
    g[[3, 7, 11, 20]] = torch.tensor([0.5, -0.9, 0.6, -0.55])   # layer w: k = int(25 * 0.1) = 2 -> 7, 11
    g[[25, 28]] = torch.tensor([0.01, -0.02])                     # layer b: k = max(1, 0.5) = 1 -> 28
    g[[30, 39]] = torch.tensor([-3.0, 2.0])                       # layer v: k = 1 -> 30
    params = CompressionParams(compression="adacomp", compression_rate=0.1)
    payload, residual = compress(g, None, layers, params)
    assert payload["idx"].dtype == torch.int32 and payload["val"].dtype == torch.float32
    assert payload["idx"].tolist() == [7, 11, 28, 30]
    assert payload["val"].tolist() == pytest.approx([-0.9, 0.6, -0.02, -3.0])
    assert residual is None
    # no error feedback: the next push depends on the new gradient only, not on what was dropped
    g2 = torch.zeros(40).index_put_((torch.tensor([0, 4, 26, 35]),), torch.tensor([1.0, 0.7, 0.1, -0.1]))
    again, _ = compress(g2, torch.full((40,), 5.0), layers, params)  # a residual passed in is ignored
    assert again["idx"].tolist() == [0, 4, 26, 35]
    assert again["val"].tolist() == pytest.approx([1.0, 0.7, 0.1, -0.1])
    assert payload_bytes(payload) == 4 * 8  # int32 index + float32 value per sent entry
    dense, _ = compress(g, None, layers, CompressionParams(compression="adacomp", compression_rate=1.0))
    assert torch.equal(dense["g"], g)  # the reference's compression >= 1 branch sends everything


def test_adacomp_k_per_layer_of_the_references_cnn_and_of_keras_mnist_cnn():
    """k = int(max(1, n * 0.01)) per tensor (Hardy-c/AdaComp, Communication.py). The
    reference's own CNN (Model_DNN.py, 421,642 parameters) sends 4,216 entries per push; the
    Keras mnist_cnn that seed 002's README names (simbench's ``cnn``) sends 11,998."""
    reference = [288, 32, 18432, 64, 401408, 128, 1280, 10]
    assert [hardy_k(n, 0.01) for n in reference] == [2, 1, 184, 1, 4014, 1, 12, 1]
    keras = [288, 32, 18432, 64, 1179648, 128, 1280, 10]
    assert [hardy_k(n, 0.01) for n in keras] == [2, 1, 184, 1, 11796, 1, 12, 1]
    learner = _cnn_learner()
    assert [lay[2] - lay[1] for lay in learner.layer_slices()] == keras
    learner.compute_grad()
    payload, _ = compress(learner.get_grad_flat(), None, [Layer(*t) for t in learner.layer_slices()],
                          CompressionParams(compression="adacomp"))
    assert len(payload["idx"]) == 11998 and payload_bytes(payload) == 8 * 11998  # 95,984 B against 4,799,528 dense


def test_parameter_staleness_counts_the_updates_since_the_pull_that_touched_each_entry():
    """Hardy-c/AdaComp, PS.py (count_pred and the PUSH branch): s_i = number of updates
    applied since the pusher's pull whose index set holds i; each entry is divided by
    max(1, s_i). A dense update touches every parameter. Unlike the reference's
    history[-0:], no update in between means s_i = 0."""
    log = TouchLog(6)
    log.record(0, torch.tensor([0, 1], dtype=torch.int32))
    log.record(1, torch.tensor([1, 2], dtype=torch.int32))
    log.record(2, None)                                   # a dense update
    log.record(3, torch.tensor([1, 5], dtype=torch.int32))
    assert log.staleness(0, torch.tensor([1, 2, 4])).tolist() == [4, 2, 1]
    assert log.staleness(1, torch.tensor([0, 1])).tolist() == [1, 3]
    assert log.staleness(3, None).tolist() == [0, 1, 0, 0, 0, 1]
    assert log.staleness(4, torch.tensor([1])).tolist() == [0]   # nothing since the pull (reference: 4)
    g = torch.tensor([8.0, 8.0, 8.0, 8.0, 8.0, 8.0])
    scale_by_parameter_staleness(g, torch.tensor([1, 2, 4]), torch.tensor([4, 2, 0]))
    assert g.tolist() == [8.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    log.forget_before(3)
    assert log.staleness(0, torch.tensor([1])).tolist() == [1]


def _scripted_server_run(algorithm: dict, scripts: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from simbench.metrics.recorder import Recorder
    from simbench.sim.world import SimWorld
    cfg = parse_config({**BASE, "nodes": 1 + len(scripts), "model": {"name": "logistic"},
                        "algorithm": {"name": "ps_async", "handle_time": "1ms", **algorithm}})
    built = build_nodes(cfg)
    x0 = built.nodes[0].learner.get_flat().clone()
    nodes = {0: built.nodes[0], **{w: Scripted(0, s) for w, s in scripts.items()}}
    SimWorld(built.graph, nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
             scenario=cfg.scenario, profiles=built.profiles, recorder=Recorder("t"), seed=0).run()
    return x0, built.nodes[0].learner.get_flat()


def test_the_async_server_scales_each_sent_entry_by_its_own_staleness():
    """Hardy-c/AdaComp, PS.py: W_i <- W_i - lr * g_i / max(1, s_i), plain SGD (lr 0.1 here),
    s_i counted per parameter over the updates since the pusher's pull; on by default with
    compression: adacomp. Three workers pull version 0; A, B, C push in turn; A pushes again
    (its pull saw version 1), and once more with nobody in between (s = 0, factor 1)."""
    scripts = {1: [(0.1, [0, 1], [1.0, 1.0]), (0.4, [1], [1.0]), (0.6, [1], [1.0])],  # A
               2: [(0.2, [1, 2], [1.0, 1.0])],                                          # B
               3: [(0.3, [1, 2, 3], [1.0, 1.0, 1.0])]}                                  # C
    x0, x = _scripted_server_run({"compression": "adacomp"}, scripts)
    step = torch.zeros_like(x0)
    step[[0, 1]] += 1.0                    # A at version 0: s = 0, 0
    step[[1, 2]] += 1.0                    # B, pulled 0: entry 1 touched by A (s = 1), 2 by none
    step[[1, 2, 3]] += torch.tensor([1 / 2, 1.0, 1.0])  # C, pulled 0: s = 2 (A, B), 1 (B), 0
    step[1] += 1 / 2                       # A, pulled 1: B and C touched entry 1 since
    step[1] += 1.0                         # A, pulled 4: nothing since (the reference divides by 5)
    assert torch.allclose(x, x0 - 0.1 * step, atol=1e-7)
    # and the rule is AdaComp's server, not the plain or the whole-update (Zhang) one
    _, plain = _scripted_server_run({"compression": "adacomp", "parameter_staleness": False}, scripts)
    plain_step = torch.zeros_like(x0)
    plain_step[:4] = torch.tensor([1.0, 5.0, 2.0, 1.0])
    assert torch.allclose(plain, x0 - 0.1 * plain_step, atol=1e-7)


def test_parameter_staleness_follows_the_compression_and_excludes_zhangs_rule():
    """The seed's configuration (compression: adacomp, as examples/asgd_mnist.yaml) turns on
    Hardy-c/AdaComp's per-parameter rule (PS.py); other compressions keep plain ASGD; both
    staleness rules at once is a one-line error."""
    algo = lambda **a: parse_config({**BASE, "algorithm": {"name": "ps_async", **a}}).algorithm_params  # noqa: E731
    assert algo(compression="adacomp").per_parameter is True
    assert algo(compression="adacomp").compression_rate == 0.01
    assert algo(compression="topk").per_parameter is False
    assert algo(compression="adacomp_chen", staleness_aware=True).per_parameter is False
    assert algo(compression="topk", parameter_staleness=True).per_parameter is True
    with pytest.raises(ConfigError) as err:
        algo(compression="adacomp", staleness_aware=True)
    assert str(err.value).startswith("algorithm.staleness_aware: true cannot be combined with parameter_staleness")
    seed = load_config(REPO / "examples" / "asgd_mnist.yaml")
    p = seed.algorithm_params
    assert (p.compression, p.compression_rate, p.per_parameter, p.staleness_aware, p.ps_mode) == (
        "adacomp", 0.01, True, False, "single")
    assert (seed.train.batch_size, seed.train.lr, seed.train.momentum) == (10, 0.1, 0.0)


def test_ako_partition_rule():
    # 16 workers, a 4.8 MB gradient, 1 Gbit/s (125 MB/s), 50 ms per step: ceil(15 * 4.8e6 / 6.25e6) = 12
    assert auto_partitions(16, 4.8e6, 125e6, 0.05, 10**6) == 12
    assert auto_partitions(1, 4.8e6, 125e6, 0.05, 10**6) == 1
    assert auto_partitions(64, 4.8e6, math.inf, 0.05, 10**6) == 1
    assert auto_partitions(64, 4.8e6, 1.0, 0.05, 100) == 100  # clamped to the parameter count
    assert partition_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]


# -- config errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("algo,field,allowed", [
    ({"name": "ps_async", "compression": "zip"}, "algorithm.compression", "none, adacomp, adacomp_chen, topk, random_k"),
    ({"name": "ps_sync", "compression": "gzip"}, "algorithm.compression", "none, adacomp, adacomp_chen, topk, random_k"),
    ({"name": "ps_async", "compression_rate": 0}, "algorithm.compression_rate", "must be in (0, 1]"),
    ({"name": "ako", "aggregate": "median"}, "algorithm.aggregate", "sum, mean"),
    ({"name": "ps_async", "ps_mode": "triple"}, "algorithm.ps_mode", "single, multi"),
    ({"name": "ako", "P": "many"}, "algorithm.P", "an integer >= 1 or auto"),
    ({"name": "ako", "P": 0}, "algorithm.P", "an integer >= 1 or auto"),
])
def test_bad_values_are_rejected_with_one_line(algo, field, allowed):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "algorithm": algo})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(field + ":") and allowed in msg


def test_ako_needs_a_complete_topology():
    with pytest.raises(ConfigError, match="topology: ako .* complete"):
        build_nodes(parse_config({**BASE, "algorithm": "ako", "topology": {"kind": "ring"}}))


# -- asynchronous SGD with a parameter server ------------------------------------------------------
def test_staleness_is_zero_with_one_worker_and_grows_with_workers(tmp_path):
    one = run(tmp_path / "one", nodes=2)
    st1 = metric(one, "staleness")
    assert len(st1) > 50 and (st1 == 0).all()
    eight = run(tmp_path / "eight", nodes=9)
    st8 = metric(eight, "staleness")
    assert eight.status == "finished"
    assert st8.mean() > 3  # 8 workers: about 7 other updates land while a gradient is computed
    srv = eight.epochs[eight.epochs["node"] == "0"]
    assert list(srv["epoch"]) == [0, 1, 2] and srv["test_acc"].iloc[-1] > 0.6


def test_multi_handler_server_finishes_sooner_under_load(tmp_path):
    load = {"handle_time": "5ms"}  # 8 workers x 10 ms steps offer 800 requests/s; one handler serves 200/s
    single = run(tmp_path / "s", algorithm={"name": "ps_async", "ps_mode": "single", **load})
    multi = run(tmp_path / "m", algorithm={"name": "ps_async", "ps_mode": "multi", "handlers": 4, **load})
    assert single.status == multi.status == "finished"
    assert multi.sim_time < 0.85 * single.sim_time
    assert len(metric(single, "staleness")) == len(metric(multi, "staleness"))


def test_adacomp_shrinks_the_bytes_on_the_wire_and_the_supervisor_watches(tmp_path):
    plain = run(tmp_path / "p")
    comp = run(tmp_path / "c", algorithm={"name": "ps_async", "compression": "adacomp", "supervisor": True,
                                          "supervise_every": "0.1s"})
    workers = [str(i) for i in range(1, 8)]  # node 8 is the supervisor in the compressed run
    sent = lambda r: sum(metric(r, "bytes_sent_total", w)[0] for w in workers)  # noqa: E731
    assert sent(comp) < sent(plain) / 5
    assert metric(comp, "compression_ratio").min() > 5
    sup = metric(comp, "sup_test_acc", 8)
    assert len(sup) >= 3 and sup[-1] > 0.6 and sup[-1] > sup[0]


def test_ps_sync_with_topk_compression_still_learns(tmp_path):
    res = run(tmp_path, algorithm={"name": "ps_sync", "compression": "topk", "k_fraction": 0.1},
              train={**BASE["train"], "epochs": 3})
    srv = res.epochs[res.epochs["node"] == "0"]
    assert srv["test_acc"].iloc[-1] > 0.6
    assert metric(res, "compression_ratio").min() > 4


# -- Ako ---------------------------------------------------------------------------------------
AKO = {**BASE, "nodes": 4, "topology": {"kind": "complete"}, "model": {"name": "logistic"},
       "train": {**BASE["train"], "epochs": 2, "batch_size": 32}}


def test_ako_sums_its_own_and_the_received_gradients_by_default():
    """mesh-umn/TF.AKO, redis_ako.py: total_grads = get_others_grads() (the sum of every
    partial gradient received) + the own gradient, applied with one optimizer step, no
    division by N. With P = 1 and lockstep (ssp_bound 0) every replica follows
    x <- SGD(x, sum_k g_k): with 4 workers a 4x larger step than averaging."""
    cfg = parse_config({**AKO, "algorithm": {"name": "ako", "P": 1, "ssp_bound": 0}})
    nodes, _ = run_config_world(cfg)
    ref = build_nodes(cfg).nodes
    learners = [ref[i].learner for i in range(4)]
    steps = cfg.train.epochs * learners[0].steps_per_epoch
    x = lockstep_sum(learners, steps)
    for i in range(4):
        assert torch.allclose(nodes[i].learner.get_flat(), x, rtol=1e-5, atol=1e-6)
    mean = lockstep_average([build_nodes(cfg).nodes[i].learner for i in range(4)], steps)
    assert (x - mean).abs().max() > 1e-2  # the two rules part: the test tells them apart
    assert cfg.algorithm_params.aggregate == "sum"


def test_ako_p1_ssp0_mean_is_synchronous_all_to_all_averaging():
    cfg = parse_config({**AKO, "algorithm": {"name": "ako", "P": 1, "ssp_bound": 0, "aggregate": "mean"}})
    nodes, _ = run_config_world(cfg)
    # the reference: the same learners (same shards, batch order, init) averaging gradients in lockstep
    ref = build_nodes(cfg).nodes
    learners = [ref[i].learner for i in range(4)]
    steps = cfg.train.epochs * learners[0].steps_per_epoch
    assert all(lr.steps_per_epoch * cfg.train.epochs == steps for lr in learners)
    x = lockstep_average(learners, steps)
    for i in range(4):
        assert torch.allclose(nodes[i].learner.get_flat(), x, rtol=1e-5, atol=1e-6)
    assert not torch.equal(x, ref[1].learner.get_flat() * 0)  # it did train


def test_ako_never_runs_more_than_ssp_bound_ahead_of_a_straggler():
    bound = 1
    cfg = parse_config({**AKO, "algorithm": {"name": "ako", "P": 2, "ssp_bound": bound},
                        "scenario": {"stragglers": {"nodes": [1], "slowdown": 4}}})
    nodes, recorder = run_config_world(cfg)
    ev = recorder.events_frame()
    gaps = ev[ev["metric"] == "ssp_gap"]
    assert gaps["value"].max() == bound  # the bound binds: fast workers wait for node 1
    # real progress: node i starts iteration t (its t-th ssp_gap row) only after every peer
    # started iteration t - bound - 1 (whose gradient it must have received)
    starts = {n: g["time_s"].to_numpy() for n, g in gaps.groupby("node")}
    for i, ti in starts.items():
        for t, tau in enumerate(ti[:-1]):
            for j, tj in starts.items():
                if j != i:
                    assert (tj <= tau).sum() >= t - bound
    slow, fast = starts["1"], starts["0"]
    assert fast[-1] >= slow[-2]  # and nobody finished long before the straggler


def test_ako_is_fully_asynchronous_by_default():
    """mesh-umn/TF.AKO and m-faezi/DEGAN, redis_ako_config.py: synchronous_training = False,
    so no worker ever waits for a peer (the SSP wait, receive_pong, runs only in synchronous
    mode). ssp_bound defaults to null: a worker applies whatever has arrived. With equal
    speeds (10 ms steps, 5 ms latency) and P = 1, the peers' gradients of iteration t - 1 are
    still in flight when a worker starts iteration t, so it applies its own g^{t-1} and the
    peers' g^{t-2}, then the rest at the end. And fast workers run ahead of a 4x straggler by
    far more than any bound, finish first and wait only for its last gradient."""
    even = parse_config({**AKO, "algorithm": {"name": "ako", "P": 1}})
    nodes, _ = run_config_world(even)
    learners = [build_nodes(even).nodes[i].learner for i in range(4)]
    total = even.train.epochs * learners[0].steps_per_epoch
    g = []  # g[t][i]: worker i's gradient of iteration t, at its own replica
    for t in range(total + 1):
        for i, lr in enumerate(learners):
            peers = [g[t - 2][j] for j in range(4) if j != i] if t >= 2 else []
            if t == total:  # the end: the peers' last gradients come in with their ako_done
                peers += [g[t - 1][j] for j in range(4) if j != i]
            if t >= 1:
                lr.set_grad_flat(g[t - 1][i] + sum(peers))
                lr.apply_update()
        if t < total:
            g.append([])
            for lr in learners:
                lr.compute_grad()
                g[t].append(lr.get_grad_flat())
    for i in range(4):
        assert torch.allclose(nodes[i].learner.get_flat(), learners[i].get_flat(), rtol=1e-5, atol=1e-6)

    cfg = parse_config({**AKO, "algorithm": {"name": "ako", "P": 2},
                        "scenario": {"stragglers": {"nodes": [1], "slowdown": 4}}})
    nodes, recorder = run_config_world(cfg)
    ev = recorder.events_frame()
    gaps = ev[ev["metric"] == "ssp_gap"]
    steps = cfg.train.epochs * nodes[0].learner.steps_per_epoch
    assert gaps["value"].max() > steps / 2  # a fast worker was more than half the run ahead
    assert all(nodes[i].t == steps for i in range(4))
    # every replica applied every gradient: the fast ones waited only at the end
    starts = {n: g["time_s"].to_numpy() for n, g in gaps.groupby("node")}
    assert starts["0"][steps - 1] < 0.5 * starts["1"][steps - 1]
    assert cfg.algorithm_params.ssp_bound is None


def test_ako_partial_exchange_learns_and_sends_fewer_bytes(tmp_path):
    full = run(tmp_path / "p1", **{**AKO, "algorithm": {"name": "ako", "P": 1}})
    part = run(tmp_path / "p4", **{**AKO, "algorithm": {"name": "ako", "P": 4}})
    b = lambda r: metric(r, "bytes_sent_total").sum()  # noqa: E731
    assert b(part) < 0.4 * b(full)
    for r in (full, part):
        avg = r.epochs[r.epochs["node"] == "avg"]
        assert r.status == "finished" and avg["test_acc"].iloc[-1] > 0.7


def test_a_crashed_worker_does_not_keep_the_async_server_waiting(tmp_path):
    """A worker that crashes never says done: the server counts it gone after worker_timeout
    seconds of silence and finishes (this was a deadlock in the reference matrix)."""
    res = run(tmp_path, algorithm={"name": "ps_async", "worker_timeout": "0.5s"},
              scenario={"crashes": [{"node": 3, "at": 0.1}]})
    assert res.status == "finished", res.status
    assert metric(res, "worker_timeouts", node=0).sum() == 1
    srv = res.epochs[res.epochs["node"] == "0"]
    assert srv["epoch"].max() == 2 and srv["test_acc"].iloc[-1] > 0.6


# -- parameter-server shards ---------------------------------------------------------------------
@pytest.mark.parametrize("method, quantize", [("none", False), ("adacomp", False), ("adacomp_chen", False),
                                              ("adacomp_chen", True), ("topk", False)])
def test_a_payload_split_by_shard_decompresses_to_each_slice(method, quantize):
    torch.manual_seed(3)
    layers = [Layer("a", 0, 700, "fc"), Layer("b", 700, 760, "conv"), Layer("c", 760, 1000, "fc")]
    params = CompressionParams(compression=method, adacomp_quantize=quantize, k_fraction=0.05)
    payload, _ = compress(torch.randn(1000), torch.randn(1000) * 0.1, layers, params)
    ranges = shard_ranges(1000, 3)
    assert ranges == [(0, 333), (333, 666), (666, 1000)]
    whole = decompress(payload, 1000)
    parts = split_payload(payload, ranges)
    for (a, b), part in zip(ranges, parts):
        assert torch.equal(decompress(part, b - a), whole[a:b])
    if method != "none":  # each entry goes to exactly one shard
        assert sum(len(p["idx"]) for p in parts) == len(payload["idx"]) > 0
        assert all(p["idx"].dtype == torch.int32 for p in parts)


def sharded(k, workers=8, **algo):
    return {"nodes": workers + k, "topology": {"kind": "star", "hubs": k}, "algorithm": {"shards": k, **algo}}


def test_sharded_ps_sync_takes_exactly_the_single_server_step():
    """Three shards, each stepping its slice with its own momentum buffer, together take the
    step one server would: x <- SGD-momentum(x, batch-weighted mean of the workers' gradients)."""
    cfg = parse_config({**BASE, **sharded(3, workers=4, name="ps_sync"),
                        "train": {**BASE["train"], "momentum": 0.9}})
    nodes, _ = run_config_world(cfg)
    central = torch.cat([nodes[j].shard.x() for j in range(3)])
    sizes = [nodes[j].shard.numel for j in range(3)]
    assert sum(sizes) == nodes[0].learner.num_params and max(sizes) - min(sizes) <= 1

    ref = build_nodes(cfg).nodes  # same init, shards and batch order
    server, workers = ref[0].learner, [ref[i].learner for i in range(3, 7)]
    rounds = cfg.train.epochs * ref[0].ctx.steps_per_epoch
    for _ in range(rounds):
        x = server.get_flat()
        grads = []
        for w in workers:
            w.set_flat(x)
            w.compute_grad()
            grads.append(w.get_grad_flat())
        server.set_grad_flat(torch.stack(grads).mean(0))  # equal batches: the weighted mean is the mean
        server.apply_update()
    assert torch.allclose(central, server.get_flat(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(central, ref[1].learner.get_flat())  # it did train


def test_shards_split_the_server_load_and_the_supervisor_sees_the_whole_model(tmp_path):
    """On a 10 Mbit/s network 8 asynchronous workers saturate one server's links; 4 shards each
    carry a quarter of the bytes and the run ends far sooner, with the same number of updates."""
    net = {"latency": "1ms", "bandwidth": "10Mbit/s"}
    one = run(tmp_path / "1", network=net, **sharded(1, name="ps_async"))
    four = run(tmp_path / "4", network=net,  # 9 non-servers: the last one supervises
               **sharded(4, workers=9, name="ps_async", supervisor=True, supervise_every="0.2s"))
    assert one.status == four.status == "finished"
    assert four.sim_time < 0.5 * one.sim_time
    server_bytes = lambda r, s: metric(r, "bytes_sent_total", s)[0]  # noqa: E731  (replies to the workers)
    # a quarter of the parameters each; every message's header (~100 B on a 2.4 KB slice) comes 4 times
    assert 1.0 < sum(server_bytes(four, s) for s in range(4)) / server_bytes(one, 0) < 1.1
    for s in range(4):
        assert server_bytes(four, s) == pytest.approx(server_bytes(one, 0) / 4, rel=0.1)
        assert len(metric(four, "staleness", s)) == len(metric(one, "staleness", 0))  # every push reached every shard
    srv = four.epochs[four.epochs["node"] == "0"]  # shard 0 reports the assembled model
    assert list(srv["epoch"]) == [0, 1, 2] and srv["test_acc"].iloc[-1] > 0.6
    assert metric(four, "sup_test_acc", 12)[-1] > 0.6


def test_sharded_servers_count_per_parameter_staleness_on_their_own_slices(tmp_path):
    """AdaComp's server rule (Hardy-c/AdaComp, PS.py) on 2 shards: each shard counts, for the
    entries of its slice, the updates since the pull that touched them (its own version and
    index history); every push reaches both shards and the run learns as one server does."""
    one = run(tmp_path / "1", algorithm={"name": "ps_async", "compression": "adacomp", "compression_rate": 0.05})
    two = run(tmp_path / "2", **sharded(2, name="ps_async", compression="adacomp", compression_rate=0.05))
    assert one.status == two.status == "finished"
    assert len(metric(two, "staleness", 0)) == len(metric(two, "staleness", 1)) == len(metric(one, "staleness", 0))
    for s in (0, 1):
        ps = metric(two, "param_staleness_mean", s)
        assert len(ps) == 1 and 0 < ps[0] < metric(two, "staleness_mean", s)[0]  # sparse pushes overlap less
    acc = lambda r: r.epochs[r.epochs["node"] == "0"]["test_acc"].iloc[-1]  # noqa: E731
    assert acc(two) > 0.5 and abs(acc(two) - acc(one)) < 0.1


def test_shards_need_as_many_servers_in_the_topology():
    with pytest.raises(ConfigError) as err:
        build_nodes(parse_config({**BASE, "algorithm": {"name": "ps_sync", "shards": 2}}))
    assert str(err.value) == ("algorithm.shards: 2 shards need 2 server nodes (topology: {kind: star, hubs: 2}); "
                              "the topology has 1")


def test_a_slow_network_does_not_make_live_workers_look_crashed(tmp_path):
    """At 1 Mbit/s a step's push and reply queue behind the other 7 workers' on the server's
    links: a live worker is silent for longer than the 1 s worker_timeout. The server's silence
    limit stretches to 4x the gaps it has seen, so no live worker is written off and every
    update of the fast run lands (a crashed worker is still noticed: the test above)."""
    algo = {"name": "ps_async", "worker_timeout": "1s"}
    train = {**BASE["train"], "epochs": 1}
    fast = run(tmp_path / "fast", algorithm=algo, train=train)
    slow = run(tmp_path / "slow", algorithm=algo, train=train, network={"latency": "5ms", "bandwidth": "1Mbit/s"})
    assert slow.status == "finished"
    assert len(metric(slow, "worker_timeouts", node=0)) == 0
    updates = len(metric(slow, "staleness"))
    assert updates == len(metric(fast, "staleness")) > 0
    assert slow.sim_time / (updates / 8) > 1.0  # a worker's step took longer than worker_timeout


def test_a_first_push_slower_than_worker_timeout_does_not_end_the_run(tmp_path):
    """Before any gap is seen, the limit is 4x the time all workers' pushes and replies take at
    the nominal bandwidth: at 100 kbit/s the 8 first pushes (~10 KB each) arrive after ~6 s,
    far past the 1 s worker_timeout, and no worker is written off."""
    res = run(tmp_path, algorithm={"name": "ps_async", "worker_timeout": "1s"},
              network={"latency": "5ms", "bandwidth": "100kbit/s"}, train={**BASE["train"], "epochs": 1})
    assert res.status == "finished" and len(metric(res, "worker_timeouts", node=0)) == 0
    assert res.sim_time > 30
    assert res.epochs[res.epochs["node"] == "0"]["test_acc"].iloc[-1] > 0.3
