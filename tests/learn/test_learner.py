"""The Learner and the models: training moves accuracy, flat vectors round-trip, FLOPs counted."""

import json

import pytest
import torch

import simbench.learn.flops as flops_mod

from simbench.data import load_dataset
from simbench.learn import Learner, OptimConfig
from simbench.models import build_model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops on a busy 2-core box: one intra-op thread avoids stalls waiting for a
    descheduled OpenMP worker (seen at 100x slower), and results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digits_learner(**kw):
    d = load_dataset("digits")
    model = build_model("mlp", d.input_shape, 10, seed=0, hidden=(64,))
    return Learner(model, d.x_train, d.y_train, batch_size=32, optim=OptimConfig(lr=0.1, **kw), seed=1), d


def test_mlp_on_digits_learns():
    learner, d = digits_learner()
    assert learner.steps_per_epoch == 45  # 1437 training digits / batch 32
    before = learner.evaluate(d.x_test, d.y_test)[1]
    for _ in range(5 * learner.steps_per_epoch):  # 5 epochs = 225 steps; reaches ~0.96
        learner.train_step()
    after = learner.evaluate(d.x_test, d.y_test)[1]
    assert before < 0.3 and after > 0.9
    assert learner.steps_done == 225 and learner.epoch == 5.0


def test_logistic_on_synthetic_improves():
    d = load_dataset("synthetic", seed=0)
    model = build_model("logistic", d.input_shape, d.num_classes, seed=0)
    learner = Learner(model, d.x_train, d.y_train, batch_size=64, optim=OptimConfig(lr=0.1, l2_lambda=1e-3), seed=0)
    loss0, acc0 = learner.evaluate(d.x_test, d.y_test)
    for _ in range(2 * learner.steps_per_epoch):  # 2 epochs = 126 steps
        learner.train_step()
    loss1, acc1 = learner.evaluate(d.x_test, d.y_test)
    assert loss1 < loss0 and acc1 > acc0 + 0.3 and acc1 > 0.8


def test_batches_cover_the_shard_once_per_epoch():
    x = torch.arange(10, dtype=torch.float32).view(10, 1)
    learner = Learner(build_model("logistic", (1,), 2, seed=0), x, torch.zeros(10, dtype=torch.long),
                      batch_size=4, optim=OptimConfig(), seed=0)
    batches = [learner.next_batch()[0].view(-1) for _ in range(learner.steps_per_epoch)]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_flat_round_trip_and_grad_path_equals_train_step():
    a, _ = digits_learner()
    b, _ = digits_learner()
    flat = a.get_flat()
    assert flat.numel() == a.num_params == 8 * 8 * 64 + 64 + 64 * 10 + 10
    b.set_flat(flat * 2)
    assert torch.equal(b.get_flat(), flat * 2)
    b.set_flat(flat)
    a.train_step()
    b.compute_grad()
    g = b.get_grad_flat()
    b.set_grad_flat(g)
    b.apply_update()
    assert torch.equal(a.get_flat(), b.get_flat())
    assert a.steps_done == b.steps_done == 1
    flat.zero_()  # get_flat is a copy
    assert not torch.equal(a.get_flat(), flat)


def test_grads_live_in_one_buffer_and_l2_matches_autograd():
    a, d = digits_learner(l2_lambda=0.01)
    ref = build_model("mlp", d.input_shape, 10, seed=0, hidden=(64,))
    xb, yb = digits_learner()[0].next_batch()  # same seed, so the batch a will draw
    loss = torch.nn.functional.cross_entropy(ref(xb), yb) + 0.005 * sum(p.pow(2).sum() for p in ref.parameters())
    loss.backward()
    a.model.zero_grad()  # drops the .grad tensors; the next step makes fresh ones
    assert a.compute_grad() == pytest.approx(float(loss.detach()), rel=1e-6)
    expected = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
    assert torch.allclose(a.get_grad_flat(), expected, atol=1e-6)
    assert all(p.grad is not None for p in a.model.parameters())
    named = a.named_tensors()
    assert list(named) == [n for n, _ in a.model.named_parameters()] and not named["1.weight"].requires_grad


def test_same_seed_same_losses_and_optimizer_knobs():
    a, _ = digits_learner(momentum=0.9, nesterov=True, weight_decay=1e-4)
    b, _ = digits_learner(momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert [a.train_step() for _ in range(5)] == [b.train_step() for _ in range(5)]
    group = a.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)


def test_step_lr_decays_and_adam_gets_its_knobs():
    learner, _ = digits_learner(scheduler="StepLR", step_size=3, gamma=0.5)
    for _ in range(2):
        learner.train_step()
    assert learner.lr == pytest.approx(0.1)
    learner.train_step()
    assert learner.lr == pytest.approx(0.05)
    learner.set_lr(0.2)
    assert learner.lr == 0.2
    adam, _ = digits_learner(name="adam", betas=(0.8, 0.99), eps=1e-6)
    group = adam.optimizer.param_groups[0]
    assert isinstance(adam.optimizer, torch.optim.Adam) and (group["betas"], group["eps"]) == ((0.8, 0.99), 1e-6)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; allowed: sgd, adam"):
        digits_learner(name="rmsprop")


def test_cnn_size_and_flops(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))  # counted here, not read from a cache
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    model = build_model("cnn", (1, 28, 28), 10, seed=0)
    # Keras mnist_cnn.py: 320 + 18,496 + 1,179,776 + 1,290
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
    x = torch.zeros(64, 1, 28, 28)
    learner = Learner(model, x, torch.zeros(64, dtype=torch.long), batch_size=32, optim=OptimConfig(), seed=0)
    learner.compute_grad()
    grads, rng = learner.get_grad_flat(), torch.random.get_rng_state()
    # Hand count at batch 32, 2 FLOPs per multiply-add: forward MACs are conv1 26*26*32*9,
    # conv2 24*24*64*32*9, fc 9216*128 + 128*10; backward is about twice the forward, so
    # one step is ~3x forward = 3 * 0.760 GFLOP = 2.28 GFLOP.
    fwd = 2 * 32 * (26 * 26 * 32 * 9 + 24 * 24 * 64 * 32 * 9 + 9216 * 128 + 128 * 10)
    hand = 3 * fwd
    flops = learner.flops_per_step()
    assert hand / 2 < flops < 2 * hand
    assert learner.flops_per_step() == flops  # cached
    assert torch.equal(learner.get_grad_flat(), grads) and torch.equal(torch.random.get_rng_state(), rng)


class Wide(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)


class Twice(Wide):  # the same parameters, a different forward: twice the FLOPs
    def forward(self, x):
        return self.fc(x) + self.fc(x)


def test_flop_counts_are_cached_on_disk_by_code_and_shape(tmp_path, monkeypatch):
    """A later process reads the count instead of running FlopCounterMode (whose first use
    imports torch._dynamo, ~2.5 s); another forward or batch size is another entry."""
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    x, y = torch.zeros(64, 8), torch.zeros(64, dtype=torch.long)
    learner = Learner(Wide(), x, y, batch_size=16, optim=OptimConfig(), seed=0)
    counted = learner.flops_per_step()
    assert counted == 2 * (2 * 16 * 8 * 4)  # forward 2*B*in*out, and the same for the weight gradient (x needs none)
    assert len(json.loads((tmp_path / "flops.json").read_text())) == 1

    monkeypatch.setattr(flops_mod, "_MEMORY", {})  # a new process: only the file remains
    monkeypatch.setattr(Learner, "_count_flops", lambda self: pytest.fail("counted again despite the cache"))
    assert Learner(Wide(), x, y, batch_size=16, optim=OptimConfig(), seed=0).flops_per_step() == counted
    monkeypatch.undo()

    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))
    twice = Learner(Twice(), x, y, batch_size=16, optim=OptimConfig(), seed=0).flops_per_step()
    larger = Learner(Wide(), x, y, batch_size=32, optim=OptimConfig(), seed=0).flops_per_step()
    assert twice > counted and larger == 2 * counted
    assert len(json.loads((tmp_path / "flops.json").read_text())) == 3

    monkeypatch.setenv("SIMBENCH_CACHE_DIR", "off")
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    assert flops_mod.cache_path() is None
    assert Learner(Wide(), x, y, batch_size=8, optim=OptimConfig(), seed=0).flops_per_step() == counted / 2
    assert len(json.loads((tmp_path / "flops.json").read_text())) == 3


def test_resnet_gn_and_model_errors():
    net = build_model("resnet_gn", (1, 28, 28), 10, seed=0, width=8, group_channels=4)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    deep = build_model("resnet_gn", (3, 32, 32), 10, seed=0, depth=50, width=8, group_channels=8)
    assert deep(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    errors = [
        (dict(name="vgg"), "unknown model 'vgg'; allowed: logistic, mlp, cnn, cnn_fedavg, resnet_gn"),
        (dict(name="mlp", depth=3), "model mlp has no option 'depth'; allowed: hidden, drop_rate, init$"),
        (dict(name="mlp", init="xavier"), "^init: expected one of torch, tf_tutorial, got 'xavier'$"),
        (dict(name="resnet_gn", depth=34), "depth must be 18 or 50, got 34"),
        (dict(name="cnn", drop_rate=1.5), r"drop_rate must be in \[0, 1\), got 1.5"),
    ]
    for kw, message in errors:
        name = kw.pop("name")
        with pytest.raises(ValueError, match=message) as err:
            build_model(name, (1, 8, 8), 10, **kw)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["mlp", "cnn_fedavg"])
def test_tf_tutorial_init_draws_weights_from_a_normal_cut_at_two_deviations_and_biases_of_0_1(name):
    """TensorFlow's MNIST tutorials of McMahan et al.'s time: weights from a normal of standard
    deviation 0.1 cut at 0.2 (whose deviation is 0.0880), biases 0.1, in every linear and
    convolution layer; the same seed gives the same weights, and PyTorch's stays the default."""
    tf = build_model(name, (1, 28, 28), 10, seed=0, init="tf_tutorial")
    layers = [m for m in tf.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert len(layers) == {"mlp": 2, "cnn_fedavg": 4}[name]
    for m in layers:
        assert m.weight.abs().max() <= 0.2 and torch.all(m.bias == 0.1)
    widest = max(layers, key=lambda m: m.weight.numel())
    assert widest.weight.std().item() == pytest.approx(0.0880, abs=0.001)
    again = build_model(name, (1, 28, 28), 10, seed=0, init="tf_tutorial")
    assert all(torch.equal(p, q) for p, q in zip(tf.parameters(), again.parameters()))
    default = [m for m in build_model(name, (1, 28, 28), 10, seed=0).modules() if isinstance(m, torch.nn.Linear)]
    fan_in = default[0].weight.shape[1]  # PyTorch: uniform within 1/sqrt(fan_in), biases too
    assert default[0].weight.abs().max() <= fan_in ** -0.5 and default[0].bias.abs().max() <= fan_in ** -0.5


def test_same_seed_same_init_without_touching_global_rng():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = build_model("mlp", (1, 8, 8), 10, seed=7)
    b = build_model("mlp", (1, 8, 8), 10, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
