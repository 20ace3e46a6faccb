"""GAN stories: FID sanity, FeGAN's weighting and sampling rules, the four GAN algorithms
end to end on the embedded digits (8×8) with tiny networks, server failover, bad configs."""

import numpy as np
import pytest
import torch

from simbench.algorithms.fegan import BalancedSampler, kl_scores, kl_weights
from simbench.core.schema import ConfigError
from simbench.data.datasets import load_dataset
from simbench.data.partition import class_histogram, partition
from simbench.experiment.config import parse_config
from simbench.workloads.gan import gan_range
from simbench.experiment.run import run_experiment
from simbench.gan.fidnet import load_fid_net
from simbench.gan.metrics import GanEvaluator, class_coverage, classifier_score, frechet_distance
from simhelpers import run_config_world

torch.set_num_threads(1)

GAN = {"latent_dim": 16, "lr": 0.002, "fid_batch": 150, "grid": 16}
BASE = {
    "name": "g", "seed": 0, "nodes": 5, "topology": {"kind": "star"},
    "algorithm": {"name": "fegan", **GAN, "frac_workers": 0.5, "local_steps": 5, "rounds_per_epoch": 2},
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "lsgan", "options": {"width": 16, "bn_eps": 1e-5}},
    "train": {"epochs": 3, "batch_size": 32},
    "network": {"latency": "5ms", "bandwidth": "100Mbit/s"},
    "output": {"wall_clock": False, "plot": False, "progress": False},
}


def run(tmp_path, **changes):
    return run_experiment(parse_config({**BASE, **changes}), tmp_path)


def avg(res):
    return res.epochs[res.epochs["node"] == "avg"].set_index("epoch")


# -- FID and friends -------------------------------------------------------------------------
def test_frechet_distance_closed_form():
    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(1 + 1 + 4 - 2 * 2)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    mu, cov = a.mean(0), np.cov(a, rowvar=False)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-6


def test_fid_of_real_vs_real_is_near_zero_and_of_noise_is_large():
    data = load_dataset("digits")
    x_train, x_test = gan_range(data)
    net = load_fid_net("digits")
    ev = GanEvaluator(x_test[:300], net.features, net)
    real = ev.score(x_train[:300])
    noise = ev.score(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert real.fid < 0.03 * noise.fid
    assert noise.fid > 100
    assert real.coverage == 1.0 and real.class_score > 6  # ten distinct digits, confidently classified
    assert noise.class_score < 3  # far below the real digits' (the global RNG once gave 2.03)


def test_classifier_score_and_coverage_on_hand_built_predictions():
    one_class = np.tile([1.0, 0, 0, 0], (8, 1))
    spread = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    assert classifier_score(one_class) == pytest.approx(1.0)
    assert classifier_score(spread) == pytest.approx(4.0)
    assert class_coverage(one_class) == 0.25 and class_coverage(spread) == 1.0


@pytest.mark.parametrize("name", ["lsgan", "dcgan"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_gan_models_fit_mnist_and_cifar_shapes_and_train_one_step(name, shape):
    from simbench.gan import GANLearner, build_gan
    g, d, loss = build_gan(name, shape, latent_dim=8, seed=0, width=8)
    x = torch.rand(6, *shape) * 2 - 1
    learner = GANLearner(g, d, x, torch.arange(6) % 3, batch_size=3, latent_dim=8, loss=loss, num_classes=3)
    assert learner.sample(4).shape == (4, *shape)
    g0, d0 = learner.get_g(), learner.get_d()
    d_loss, g_loss = learner.train_step()
    assert np.isfinite([d_loss, g_loss]).all()
    assert not torch.equal(g0, learner.get_g()) and not torch.equal(d0, learner.get_d())
    assert learner.get_flat().numel() == learner.num_g + learner.num_d
    assert learner.class_counts().tolist() == [2, 2, 2]


# -- FeGAN's rules -----------------------------------------------------------------------------
COUNTS = np.array([[10, 10, 10, 10],   # uniform
                   [40, 0, 0, 0],      # one class
                   [20, 20, 0, 0]])    # two classes


def test_kl_scores_on_hand_built_distributions():
    uniform = np.array([30, 30, 30, 30])  # q = 1/4 per class, N = 120
    assert kl_scores(COUNTS, uniform) == pytest.approx([0.0, np.log(4) * 40 / 120, np.log(2) * 40 / 120])
    # by default q is the devices' union: (70, 30, 10, 10) / 120
    assert kl_scores(COUNTS)[1] == pytest.approx(np.log(120 / 70) * 40 / 120)


def test_kl_weights_follow_each_scheme():
    e = np.array([0.0, 0.6, 0.2])
    assert kl_weights(e, "exp") == pytest.approx(np.exp(e) / np.exp(e).sum())
    assert kl_weights(e, "linear") == pytest.approx([0.0, 0.75, 0.25])
    assert kl_weights(e, "dirac") == pytest.approx([0.0, 1.0, 0.0])          # only 0.75 >= 0.5 survives
    assert kl_weights([0.3, 0.3, 0.4], "dirac") == pytest.approx([0, 0, 1])  # none reaches 0.5: the arg-max
    # (simbench's rule: the seed's dist-lsgan.py average_models raises a TypeError there)
    assert kl_weights([0.0, 0.0], "linear") == pytest.approx([0.5, 0.5])     # identical distributions: plain mean
    assert kl_weights([0.1, 0.1], "dirac") == pytest.approx([0.5, 0.5])      # 0.5 is kept (>= threshold)
    with pytest.raises(ValueError, match="allowed: exp, linear, dirac"):
        kl_weights(e, "softmax")


def test_balanced_sampling_serves_the_least_represented_class_first():
    counts = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 5], [0, 0, 5]])
    s = BalancedSampler(counts)
    assert s.sample(2) == [0, 1]       # class 0 (all tied), then class 1
    assert s.sample(2) == [2, 0]       # class 2 is now the rarest; then the tie 0/1 goes to class 0
    assert s.taken.tolist() == [10, 5, 5]
    again = BalancedSampler(counts, s.state())  # a backup server resumes from the state
    assert again.sample(2) == s.sample(2)
    assert BalancedSampler(counts).sample(9) == [0, 1, 2, 3]  # at most every device once


# MNIST's training-set class counts (the seed's dist-lsgan.py hard-codes them for q)
MNIST_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_fegan_partition_follows_the_seed_rule_on_a_hand_checked_case():
    """datasets.py get_train_set (iid=0): rank r gets min(10, floor(200 r / K) + 1) classes,
    caps U{1..r^2} per class (above magic_num: ceil((r+1) magic / (K+1))), the first
    cap samples of each class; the nodes' sets overlap."""
    labels = np.repeat(np.arange(10), 50)  # class l is indices 50 l .. 50 l + 49
    parts = partition(labels, 4, "fegan", np.random.default_rng(0), magic_num=5)
    hist = class_histogram(parts, labels, 10)
    assert hist[0].tolist() == [1] * 10                      # r = 1: cap U{1..1} of all 10 classes
    assert parts[0].tolist() == list(range(0, 500, 50))      # ... the first sample of each
    assert hist[1].max() <= 4 and (hist[1] >= 1).all()       # r = 2: U{1..4}
    assert set(hist[2]) <= {1, 2, 3, 4, 5}                   # r = 3: U{1..9}, > 5 becomes ceil(4·5/5) = 4
    assert set(hist[3]) <= {1, 2, 3, 4, 5}                   # r = 4: U{1..16}, > 5 becomes ceil(5·5/5) = 5
    assert set(parts[0]) <= set(parts[3])                    # overlapping prefixes, not a partition
    many = partition(np.repeat(np.arange(10), 2000), 400, "fegan", np.random.default_rng(1))
    classes = [len(np.unique(p // 2000)) for p in many]
    assert classes[:3] == [1, 2, 2] and classes[45:] == [10] * 355  # floor(200 r / 400) + 1, at most 10


def test_on_the_fegan_split_kl_weights_differ_between_devices():
    """The point of FeGAN (dist-lsgan.py average_models with the entropies): on its non-iid
    split the devices' KL scores, hence their linear and dirac weights, differ by orders of
    magnitude (exp stays near uniform: e_k <= 0.02). On a k_classes split capped like the
    earlier evidence's (3 classes per device, at most 60 each) every device holds 180 images
    of 3 classes and the scores stay within a factor of ~2 (the earlier evidence's strided
    deal gave two values 6% apart): every scheme is close to the plain average."""
    labels = np.repeat(np.arange(10), MNIST_COUNTS)
    hist = class_histogram(partition(labels, 16, "fegan", np.random.default_rng(0)), labels, 10)
    scores = kl_scores(hist)
    linear, exp = kl_weights(scores, "linear"), kl_weights(scores, "exp")
    assert len(np.unique(np.round(scores, 12))) == 16
    assert linear.max() / linear.min() > 100 and np.ptp(exp) > 1e-3
    assert kl_weights(scores[[0, 3, 15]], "dirac").tolist() == [0.0, 0.0, 1.0]  # 0.02 of 0.0226: kept alone
    from simbench.data.partition import cap_per_class
    small = np.repeat(np.arange(10), 480)  # the 4800-image subset
    capped = class_histogram(cap_per_class(partition(small, 16, "k_classes", np.random.default_rng(0), k=3),
                                           small, 60), small, 10)
    assert (capped.sum(axis=1) == 180).all() and ((capped > 0).sum(axis=1) == 3).all()
    flat = kl_scores(capped)
    assert flat.max() / flat.min() < 2.5
    assert kl_weights(flat, "linear").max() / kl_weights(flat, "linear").min() < 2.5
    assert np.ptp(kl_weights(flat, "exp")) < 5e-3


def test_weak_devices_of_the_federated_gans_run_half_the_local_steps(tmp_path):
    """dist-dcgan.py: a weak rank trains int(E/2) local steps per round (same batch, same
    weight) — scenario.weak_workers' ``auto`` mode for flgan and fegan; ``slow`` is the
    speed-and-batch model of every other algorithm."""
    cfg = {**BASE, "algorithm": {**BASE["algorithm"], "frac_workers": 1.0}, "train": {**BASE["train"], "epochs": 1}}
    nodes, _ = run_config_world(parse_config({**cfg, "scenario": {"weak_workers": {"nodes": [1]}}}))
    assert [nodes[i].learner.steps_done for i in (1, 2, 3, 4)] == [2 * 2, 5 * 2, 5 * 2, 5 * 2]  # 2 rounds, E = 5
    assert nodes[1].learner.batch_size == 32
    nodes, _ = run_config_world(parse_config({**cfg, "scenario": {"weak_workers": {"nodes": [1], "mode": "slow"}}}))
    assert nodes[1].learner.steps_done == 10 and nodes[1].learner.batch_size == 16
    with pytest.raises(ConfigError, match=r"scenario.weak_workers.mode: mdgan has no weak workers of mode "
                                          r"'half_steps'; allowed: auto, slow"):
        run(tmp_path, algorithm={"name": "mdgan", **GAN}, scenario={"weak_workers": {"nodes": [1], "mode": "half_steps"}})


def test_mdgan_workers_take_the_seeds_12_discriminator_steps_per_round():
    """md-gan.py: L = 12 local discriminator steps per round (hard-coded)."""
    cfg = parse_config({**BASE, "nodes": 4, "algorithm": {"name": "mdgan", **GAN}, "train": {**BASE["train"], "epochs": 1}})
    nodes, _ = run_config_world(cfg)
    rounds = nodes[0].rounds_per_epoch()
    assert rounds == -(-nodes[0].ctx.steps_per_epoch // 12)
    assert [nodes[i].learner.steps_done for i in (1, 2, 3)] == [12 * rounds] * 3


# -- end to end --------------------------------------------------------------------------------
def test_fegan_with_4_devices_lowers_fid_and_writes_grids(tmp_path):
    res = run(tmp_path, output={**BASE["output"], "plot": True})  # grids are written with or without plots
    a = avg(res)
    assert res.status == "finished"
    assert list(a.index) == [0, 1, 2, 3]
    assert a["fid"].iloc[-1] < a["fid"].iloc[0]
    assert a["bytes_total"].is_monotonic_increasing
    grid = res.run_dir / "samples" / "epoch_0003.png"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (res.run_dir / "fid.png").exists()
    srv = res.epochs[res.epochs["node"] == "0"]
    assert {"fid", "class_score", "coverage", "d_loss", "g_loss"} <= set(srv.columns)


def test_crashed_server_with_two_servers_does_not_stop_fegan(tmp_path):
    res = run(tmp_path, nodes=7, topology={"kind": "complete"},
              algorithm={**BASE["algorithm"], "num_servers": 2, "failover": "0.3s", "weight_scheme": "linear"},
              scenario={"crashes": [{"node": 0, "at": 0.15}]})
    ev, ep = res.events, res.epochs
    assert res.status == "finished"
    assert list(ev[ev["metric"] == "takeover"]["node"]) == ["1"]
    assert ep[ep["node"] == "0"]["epoch"].max() < 3            # the primary died early
    assert ep[ep["node"] == "1"]["epoch"].max() == 3           # the backup finished the run
    assert list(avg(res).index) == [0, 1, 2, 3]


def test_gan_single_flgan_and_mdgan_run(tmp_path):
    single = run(tmp_path, algorithm={"name": "gan_single", **GAN}, train={**BASE["train"], "epochs": 1})
    assert single.status == "finished" and list(avg(single).index) == [0, 1]
    assert set(single.epochs["node"]) == {"0", "avg"}  # the other four nodes idle
    fl = run(tmp_path, algorithm={"name": "flgan", **GAN, "frac_workers": 0.5, "local_steps": 5, "rounds_per_epoch": 2},
             train={**BASE["train"], "epochs": 1})
    assert fl.status == "finished" and list(avg(fl).index) == [0, 1]
    md = run(tmp_path, nodes=4, algorithm={"name": "mdgan", **GAN, "swap_epochs": 1}, train={**BASE["train"], "epochs": 2})
    ev = md.events
    assert md.status == "finished" and list(avg(md).index) == [0, 1, 2]
    assert ev[ev["metric"] == "swaps"]["value"].eq(3).all() and len(ev[ev["metric"] == "swaps"]) == 2


@pytest.mark.parametrize("changes, message", [
    ({"model": {"name": "mlp"}}, "model.name: fegan trains a GAN; use one of lsgan, dcgan"),
    ({"algorithm": {"name": "fegan", "weight_scheme": "softmax"}}, "algorithm.weight_scheme: 'softmax' is not allowed; allowed: exp, linear, dirac"),
    ({"algorithm": {"name": "fegan", "frac_workers": 0}}, "algorithm.frac_workers: 0.0 must be in (0, 1]"),
    ({"algorithm": {"name": "fegan", "num_servers": 2}}, "topology: fegan needs server node 1 linked to every other node"),
    ({"model": {"name": "lsgan", "options": {"depth": 3}}}, "model.options: GAN model lsgan has no option 'depth'; allowed: width, bn_eps"),
    ({"algorithm": {"name": "fegan", "fid_batch": 10000}}, "algorithm.fid_batch: 10000 exceeds the 360 test images"),
])
def test_bad_gan_configs_give_one_line_errors(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        run(tmp_path, **changes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_inception_fid_without_cached_weights_is_a_one_line_error(tmp_path):
    from pathlib import Path
    if any(Path(torch.hub.get_dir(), "checkpoints").glob("inception_v3*")):
        pytest.skip("Inception-v3 weights are cached here")
    with pytest.raises(ConfigError, match="algorithm.fid: inception needs torchvision's Inception-v3 weights") as err:
        run(tmp_path, algorithm={**BASE["algorithm"], "fid": "inception"})
    assert "\n" not in str(err.value)


def test_train_fid_net_command(tmp_path, capsys):
    from simbench.cli import main
    out = tmp_path / "fid.pt"
    assert main(["train-fid-net", "digits", "--epochs", "1", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert load_fid_net("digits", out).features(torch.zeros(2, 1, 8, 8)).shape == (2, 64)


def test_the_run_command_reports_fid_for_a_gan_run(tmp_path, capsys):
    """`simbench run` on a GAN config ends with the generator's FID (it once crashed looking
    for the classifiers' test accuracy after the run had finished)."""
    import yaml

    from simbench.cli import main
    cfg = {**BASE, "algorithm": {"name": "gan_single", **GAN}, "nodes": 1, "topology": {"kind": "complete"},
           "train": {**BASE["train"], "epochs": 1}, "output": {"dir": str(tmp_path), "plot": False, "progress": False}}
    path = tmp_path / "gan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "finished:" in out and "generator FID" in out, out
