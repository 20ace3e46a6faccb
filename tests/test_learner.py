"""The Learner and the models: training moves accuracy, flat vectors round-trip, FLOPs counted."""

import pytest
import torch

from simbench.data import load_dataset
from simbench.learn import Learner, OptimConfig
from simbench.models import build_model


def digits_learner(**kw):
    d = load_dataset("digits")
    model = build_model("mlp", d.input_shape, 10, seed=0, hidden=(64,))
    return Learner(model, d.x_train, d.y_train, batch_size=32, optim=OptimConfig(lr=0.1, **kw), seed=1), d


def test_mlp_on_digits_learns():
    learner, d = digits_learner()
    before = learner.evaluate(d.x_test, d.y_test)[1]
    for _ in range(5 * learner.steps_per_epoch):  # 5 epochs = 225 steps
        learner.train_step()
    after = learner.evaluate(d.x_test, d.y_test)[1]
    assert before < 0.3 and after > 0.9


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
    assert torch.allclose(a.get_flat(), b.get_flat())


def test_same_seed_same_losses_and_optimizer_knobs():
    a, _ = digits_learner(momentum=0.9, nesterov=True, weight_decay=1e-4)
    b, _ = digits_learner(momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert [a.train_step() for _ in range(5)] == [b.train_step() for _ in range(5)]
    group = a.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)


def test_step_lr_decays():
    learner, _ = digits_learner(scheduler="StepLR", step_size=3, gamma=0.5)
    for _ in range(3):
        learner.train_step()
    assert learner.lr == pytest.approx(0.05)


def test_cnn_size_and_flops():
    model = build_model("cnn", (1, 28, 28), 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 1_199_882  # Keras mnist_cnn.py
    x = torch.zeros(64, 1, 28, 28)
    learner = Learner(model, x, torch.zeros(64, dtype=torch.long), batch_size=32, optim=OptimConfig(), seed=0)
    # hand count, forward MACs x2 for FLOPs: conv1 26*26*32*9, conv2 24*24*64*32*9, fc 9216*128 + 128*10
    fwd = 2 * 32 * (26 * 26 * 32 * 9 + 24 * 24 * 64 * 32 * 9 + 9216 * 128 + 128 * 10)
    flops = learner.flops_per_step()
    assert 2 * fwd < flops < 4 * fwd  # backward costs about twice the forward


def test_resnet_gn_and_model_errors():
    net = build_model("resnet_gn", (1, 28, 28), 10, seed=0, width=8, group_channels=4)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    with pytest.raises(ValueError, match="unknown model 'vgg'; allowed: logistic, mlp, cnn, resnet_gn"):
        build_model("vgg", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="model mlp has no option 'depth'; allowed: hidden, drop_rate"):
        build_model("mlp", (1, 8, 8), 10, depth=3)


def test_same_seed_same_init_without_touching_global_rng():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = build_model("mlp", (1, 8, 8), 10, seed=7)
    b = build_model("mlp", (1, 8, 8), 10, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
