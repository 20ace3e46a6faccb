"""The learners' smaller contracts, checked against numbers worked out by hand: a shard's
own optimizer (a sharded parameter server steps one slice), the layout of the flat vector,
learning-rate setting, FLOP counts, and what may be batched with what.

Each test failed on a mutant that survived the rest of the suite (``benchmarks/mutation.sh
learn``)."""

import pytest
import torch
from torch import nn

from simbench.learn import Learner, OptimConfig
from simbench.learn import flops as flops_mod
from simbench.learn.flat import FlatLearner, ModelTemplate, batch_key, batched_run, flat_eligible


class ConvNet(nn.Module):
    """conv 1->2 (3x3, 18 + 2), then fc 8->3 (24 + 3): 47 parameters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


LAYERS = [("conv.weight", 0, 18, "conv"), ("conv.bias", 18, 20, "conv"), ("fc.weight", 20, 44, "fc"),
          ("fc.bias", 44, 47, "fc")]


def data(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def learners(optim, seed=0):
    """A Learner and a FlatLearner of the same ConvNet, data and seed."""
    x, y = data()
    torch.manual_seed(seed)
    net = ConvNet()
    template = ModelTemplate(ConvNet().requires_grad_(True))
    template.initial.copy_(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    a = Learner(net, x, y, batch_size=4, optim=optim, seed=1)
    b = FlatLearner(template, x, y, torch.arange(len(y)), batch_size=4, optim=optim, seed=1)
    return a, b


@pytest.mark.parametrize("kind", ["Learner", "FlatLearner"])
def test_layer_slices_name_offsets_and_kinds(kind):
    a, b = learners(OptimConfig(lr=0.1))
    learner = a if kind == "Learner" else b
    assert learner.layer_slices() == LAYERS


def test_a_learner_names_an_unnamed_parameter_by_position():
    x, y = data()
    learner = Learner(ConvNet(), x, y, batch_size=4, optim=OptimConfig(), seed=0)
    learner.params.insert(1, nn.Parameter(torch.zeros(2)))  # a tensor no module owns
    learner._sizes.insert(1, 2)
    assert [s[0] for s in learner.layer_slices()] == ["conv.weight", "param1", "conv.bias", "fc.weight", "fc.bias"]
    assert learner.layer_slices()[1] == ("param1", 18, 20, "fc")


@pytest.mark.parametrize("kind", ["Learner", "FlatLearner"])
def test_a_slice_gets_its_own_sgd_with_momentum_and_step_lr(kind):
    """Two updates of flat[5:9] with momentum 0.5 and StepLR(step_size 2, gamma 0.1): the
    first moves it by -lr g1, the second by -lr (0.5 g1 + g2); the rest never moves, and
    the learner's own learning rate and momentum are untouched. After two updates the
    slice's rate is 0.01; another slice starts again at 0.1."""
    optim = OptimConfig(lr=0.1, momentum=0.5, scheduler="StepLR", step_size=2, gamma=0.1)
    a, b = learners(optim)
    learner = a if kind == "Learner" else b
    before = learner.get_flat()
    g1, g2 = torch.arange(4.0) + 1, torch.tensor([2.0, -1.0, 0.5, 4.0])
    learner.apply_update_slice(g1, 5, 9)
    assert torch.allclose(learner.get_flat()[5:9], before[5:9] - 0.1 * g1)
    learner.apply_update_slice(g2, 5, 9)
    want = before[5:9] - 0.1 * g1 - 0.1 * (0.5 * g1 + g2)
    assert torch.allclose(learner.get_flat()[5:9], want, atol=1e-6)
    g3 = torch.ones(4)
    learner.apply_update_slice(g3, 5, 9)  # rate now 0.01: buffer 0.5 (0.5 g1 + g2) + g3
    want = want - 0.01 * (0.5 * (0.5 * g1 + g2) + g3)
    assert torch.allclose(learner.get_flat()[5:9], want, atol=1e-6)
    other = learner.get_flat()[20:22]
    learner.apply_update_slice(torch.ones(2), 20, 22)
    assert torch.allclose(learner.get_flat()[20:22], other - 0.1, atol=1e-6)
    untouched = torch.ones(47, dtype=torch.bool)
    untouched[5:9] = untouched[20:22] = False
    assert torch.equal(learner.get_flat()[untouched], before[untouched])
    assert learner.lr == 0.1


def test_a_slice_update_takes_the_gradient_given_not_the_models():
    a, b = learners(OptimConfig(lr=1.0))
    for learner in (a, b):
        learner.compute_grad()  # a model gradient exists
        before = learner.get_flat()
        learner.apply_update_slice(torch.full((3,), 2.0), 0, 3)
        assert torch.allclose(learner.get_flat()[:3], before[:3] - 2.0)


@pytest.mark.parametrize("kind", ["Learner", "FlatLearner"])
def test_set_lr_is_used_by_the_next_step(kind):
    a, b = learners(OptimConfig(lr=0.1))
    learner = a if kind == "Learner" else b
    learner.set_lr(0.5)
    assert learner.lr == 0.5
    before = learner.get_flat()
    learner.compute_grad()
    grad = learner.get_grad_flat()
    learner.apply_update()
    assert torch.allclose(learner.get_flat(), before - 0.5 * grad, atol=1e-6)


def test_set_lr_sets_every_parameter_group():
    x, y = data()
    learner = Learner(ConvNet(), x, y, batch_size=4, optim=OptimConfig(lr=0.1), seed=0)
    learner.optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.3})
    learner.set_lr(0.02)
    assert [g["lr"] for g in learner.optimizer.param_groups] == [0.02, 0.02]


@pytest.mark.parametrize("kind", ["Learner", "FlatLearner"])
def test_train_steps_is_that_many_train_steps(kind):
    (a1, b1), (a2, b2) = learners(OptimConfig(lr=0.1)), learners(OptimConfig(lr=0.1))
    one, other = (a1, a2) if kind == "Learner" else (b1, b2)
    one.train_steps(3)
    for _ in range(3):
        other.train_step()
    assert torch.equal(one.get_flat(), other.get_flat())
    assert not torch.equal(one.get_flat(), learners(OptimConfig(lr=0.1))[0].get_flat())


def test_named_tensors_of_both_learners_agree():
    a, b = learners(OptimConfig(lr=0.1))
    na, nb = a.named_tensors(), b.named_tensors()
    assert list(na) == list(nb) == [n for n, *_ in LAYERS]
    assert all(torch.equal(na[n], nb[n]) for n in na)
    assert nb["fc.weight"].shape == (3, 8)
    b.flat_params()[20] = 7.0  # views of the live vector
    assert b.named_tensors()["fc.weight"][0, 0] == 7.0


def test_gradient_before_any_step_is_zero():
    a, b = learners(OptimConfig(lr=0.1))
    assert torch.equal(b.get_grad_flat(), torch.zeros(47))
    for p in a.params:
        p.grad = None
    assert torch.equal(a.get_grad_flat(), torch.zeros(47))


def test_set_flat_on_an_idle_learner_allocates_and_copies():
    _, b = learners(OptimConfig(lr=0.1))
    b.idle()
    assert b._flat is None
    b.set_flat(torch.arange(47.0))
    assert torch.equal(b.get_flat(), torch.arange(47.0)) and b.get_flat().dtype == torch.float32


def test_flat_eligibility_reasons():
    x = nn.Linear(2, 2)
    assert flat_eligible(x, OptimConfig(name="adam")) == "optimizer adam (FlatLearner does SGD)"
    assert flat_eligible(x, OptimConfig(scheduler="CosineAnnealingLR")) == "scheduler CosineAnnealingLR"
    assert flat_eligible(x, OptimConfig(scheduler="StepLR")) is None
    assert flat_eligible(nn.BatchNorm1d(2), OptimConfig()) == "the model has buffers (per-node running statistics)"
    assert flat_eligible(x, OptimConfig()) is None


def test_flops_of_a_template_and_a_learner_are_the_hand_count(tmp_path, monkeypatch):
    """ConvNet at batch 4: forward 2*4*(2*2*2*9 + 8*3) = 768 FLOPs; backward computes the
    conv's weight gradient (2*4*72 = 576; the input needs none) and the fc layer's weight and
    input gradients (2 * 2*4*24 = 384): 1728 in all, the same for both learners."""
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", "off")
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    a, b = learners(OptimConfig(lr=0.1))
    assert a.flops_per_step() == 1728.0
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    assert b.flops_per_step() == 1728.0
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    assert b.template.flops_per_step((1, 4, 4), 8, torch.float32) == 3456.0


def test_counting_flops_leaves_the_models_and_the_global_random_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", "off")
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    a, b = learners(OptimConfig(lr=0.1))
    state = torch.random.get_rng_state()
    fa, fb = a.get_flat(), b.get_flat()
    a.flops_per_step()
    b.flops_per_step()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.get_flat(), fa) and torch.equal(b.get_flat(), fb)
    assert all(p.grad is None or not p.grad.any() for p in b.template.module.parameters())


def test_flop_cache_file_holds_the_count(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    a, _ = learners(OptimConfig(lr=0.1))
    a.flops_per_step()
    stored = json.loads((tmp_path / "flops.json").read_text())
    assert list(stored.values()) == [1728.0]
    assert (tmp_path / "flops.json").read_text().startswith("{\n")  # one entry per line, sorted keys


def test_batch_keys_group_what_can_run_as_one_call():
    x, y = data()
    template = ModelTemplate(ConvNet())
    one, two = (FlatLearner(template, x, y, torch.arange(6) + 6 * i, batch_size=4, optim=OptimConfig(), seed=i)
                for i in range(2))
    key = batch_key(one, "train_step", ())
    assert key is not None and key == batch_key(two, "train_step", ())
    assert batch_key(one, "train_steps", (2,)) != batch_key(one, "train_steps", (3,))
    assert batch_key(one, "compute_grad", ()) != key
    assert batch_key(one, "evaluate", ()) is None  # not a batched op
    other_data = FlatLearner(template, x.clone(), y, torch.arange(6), batch_size=4, optim=OptimConfig(), seed=0)
    assert batch_key(other_data, "train_step", ()) != key
    other_model = FlatLearner(ModelTemplate(ConvNet()), x, y, torch.arange(6), batch_size=4, optim=OptimConfig(), seed=0)
    assert batch_key(other_model, "train_step", ()) != key
    learner = Learner(ConvNet(), x, y, batch_size=4, optim=OptimConfig(), seed=0)
    assert batch_key(learner, "train_step", ()) is None
    dropout = ModelTemplate(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)))
    assert batch_key(FlatLearner(dropout, x, y, torch.arange(6), batch_size=4, optim=OptimConfig(), seed=0),
                     "train_step", ()) is None


def _flat_learners(optim, n=3, sizes=(5, 7, 9), dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 1, 4, 4, generator=g, dtype=dtype), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    template = ModelTemplate(ConvNet().to(dtype))
    out, lo = [], 0
    for k in range(n):
        out.append(FlatLearner(template, x, y, torch.arange(lo, lo + sizes[k]), batch_size=4, optim=optim, seed=k))
        lo += sizes[k]
    return out


def test_batched_steps_with_a_learning_rate_per_learner_and_mixed_momentum_buffers():
    """Learners at different rates, one of which already has a momentum buffer, batched:
    each row steps with its own rate, and only rows without a buffer start it as their first
    gradient."""
    from simbench.learn.flat import batched_run

    optim = OptimConfig(lr=0.1, momentum=0.9, dampening=0.2)
    alone, together = _flat_learners(optim), _flat_learners(optim)
    for group in (alone, together):
        for ln, lr in zip(group, (0.05, 0.1, 0.3)):
            ln.set_lr(lr)
        group[1].train_step()  # learner 1 has a buffer, 0 and 2 not
    for ln in alone:
        ln.train_steps(3)
    batched_run(together, "train_steps", (3,))
    for a, b in zip(alone, together):
        assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-6)
        assert torch.allclose(a._momentum, b._momentum, atol=1e-6)
        assert a.steps_done == b.steps_done


def test_batched_gradients_leave_the_momentum_buffers_alone():
    from simbench.learn.flat import batched_run

    optim = OptimConfig(lr=0.1, momentum=0.9, dampening=0.2)
    alone, together = _flat_learners(optim), _flat_learners(optim)
    expected = [ln.compute_grad() for ln in alone]
    assert batched_run(together, "compute_grad", ()) == pytest.approx(expected, rel=1e-6)
    assert all(ln._momentum is None for ln in together)
    for a, b in zip(alone, together):
        a.apply_update()
        b.apply_update()
        assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-6)


def test_a_batch_of_one_learner():
    from simbench.learn.flat import batched_run

    (a,), (b,) = _flat_learners(OptimConfig(lr=0.1), n=1), _flat_learners(OptimConfig(lr=0.1), n=1)
    loss = a.train_step()
    assert batched_run([b], "train_step", ()) == pytest.approx([loss], rel=1e-6)
    assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-6)


class Unused(nn.Module):
    """A parameter the loss never reaches (2, first in the flat vector: a module's own
    parameters come before its children's), then fc 4->3 (15)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.spare = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(x)


def test_a_parameter_the_loss_does_not_reach_has_a_zero_gradient():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    torch.manual_seed(0)
    a = Learner(Unused(), x, y, batch_size=4, optim=OptimConfig(lr=0.1, l2_lambda=0.5), seed=0)
    b = FlatLearner(ModelTemplate(Unused()), x, y, torch.arange(8), batch_size=4, optim=OptimConfig(lr=0.1), seed=0)
    a.compute_grad()
    b.compute_grad()
    assert [n for n, *_ in b.layer_slices()] == ["spare", "fc.weight", "fc.bias"]
    assert torch.equal(a.get_grad_flat()[:2], 0.5 * torch.ones(2))  # only the L2 term: lam * w
    assert torch.equal(b.get_grad_flat()[:2], torch.zeros(2))
    assert b.get_grad_flat()[2:].abs().sum() > 0


def test_a_learner_trains_in_training_mode_whatever_mode_it_was_left_in():
    x, y = data()
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3))
    learner = Learner(net, x, y, batch_size=4, optim=OptimConfig(), seed=0)
    net.eval()
    learner.compute_grad()
    assert net.training


@pytest.mark.parametrize("value", ["", "off", "OFF", " Off ", "0", "none", "None"])
def test_flop_cache_can_be_turned_off(monkeypatch, value):
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", value)
    assert flops_mod.cache_path() is None


def test_flop_cache_location(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path / "mine"))
    assert flops_mod.cache_path() == tmp_path / "mine" / "flops.json"
    monkeypatch.delenv("SIMBENCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert flops_mod.cache_path() == tmp_path / "xdg" / "simbench" / "flops.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert flops_mod.cache_path() == Path(tmp_path / "home" / ".cache" / "simbench" / "flops.json")


def test_flop_cache_keys_hold_the_parameter_shapes(monkeypatch, tmp_path):
    """Two models of one class and code but other widths are two entries, not one."""
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    x, y = torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    narrow = Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), x, y, batch_size=4, optim=OptimConfig(), seed=0)
    wide = Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 6)), x, y, batch_size=4, optim=OptimConfig(), seed=0)
    assert narrow.flops_per_step() == 2 * (2 * 4 * 16 * 3)  # forward, and the weight gradient (x needs none)
    monkeypatch.setattr(flops_mod, "_MEMORY", {})  # a new process: the file only
    assert wide.flops_per_step() == 2 * (2 * 4 * 16 * 6)


def test_a_flop_cache_that_is_not_a_mapping_is_replaced(monkeypatch, tmp_path):
    import json

    (tmp_path / "flops.json").write_text("[1, 2]")
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    a, _ = learners(OptimConfig())
    assert a.flops_per_step() == 1728.0
    assert list(json.loads((tmp_path / "flops.json").read_text()).values()) == [1728.0]


def test_a_model_whose_code_cannot_be_read_is_counted_but_not_cached_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    scope = {"nn": nn}
    exec("class Typed(nn.Module):\n def __init__(self):\n  super().__init__()\n  self.fc = nn.Linear(16, 3)\n"
         " def forward(self, x):\n  return self.fc(x.flatten(1))\n", scope)
    x, y = torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    learner = Learner(scope["Typed"](), x, y, batch_size=4, optim=OptimConfig(), seed=0)
    assert learner.flops_per_step() == 2 * (2 * 4 * 16 * 3)
    assert not (tmp_path / "flops.json").exists()


def test_batch_size_one_is_the_smallest():
    x, y = data()
    for make in (lambda b: Learner(ConvNet(), x, y, batch_size=b, optim=OptimConfig(), seed=0),
                 lambda b: FlatLearner(ModelTemplate(ConvNet()), x, y, torch.arange(12), batch_size=b,
                                       optim=OptimConfig(), seed=0)):
        assert len(make(1).next_batch()[1]) == 1
        with pytest.raises(ValueError) as err:
            make(0)
        assert str(err.value) == "batch_size must be >= 1, got 0"


@pytest.mark.parametrize("seed", [5, 126, 2**63 + 5, 2**64 + 5])
def test_both_learners_draw_the_same_batches_for_any_seed(seed):
    x = torch.arange(12.0).view(12, 1, 1, 1).expand(12, 1, 4, 4).contiguous()
    y = torch.zeros(12, dtype=torch.long)
    a = Learner(ConvNet(), x, y, batch_size=5, optim=OptimConfig(), seed=seed)
    b = FlatLearner(ModelTemplate(ConvNet()), x, y, torch.arange(12), batch_size=5, optim=OptimConfig(), seed=seed)
    order_a = [a.next_batch()[0][:, 0, 0, 0].tolist() for _ in range(6)]
    assert order_a == [b.next_batch()[0][:, 0, 0, 0].tolist() for _ in range(6)]
    other = Learner(ConvNet(), x, y, batch_size=5, optim=OptimConfig(), seed=seed % 126 + 1)
    assert order_a != [other.next_batch()[0][:, 0, 0, 0].tolist() for _ in range(6)]


def test_step_lr_every_second_update_on_both_learners():
    optim = OptimConfig(lr=1.0, scheduler="StepLR", step_size=2, gamma=0.5)
    a, b = learners(optim)
    rates = []
    for _ in range(5):
        a.train_step()
        b.train_step()
        rates.append((a.lr, b.lr))
    assert rates == [(1.0, 1.0), (0.5, 0.5), (0.5, 0.5), (0.25, 0.25), (0.25, 0.25)]


def test_flops_of_a_one_sample_shard_are_those_of_a_batch_of_one(monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", "off")
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    x, y = data()
    template = ModelTemplate(ConvNet())
    one = FlatLearner(template, x, y, torch.arange(1), batch_size=4, optim=OptimConfig(), seed=0)
    assert one.flops_per_step() == 1728.0 / 4


def test_reading_the_next_batch_runs_a_put_off_step_first():
    from simbench.sim.batch import Batcher
    from simbench.sim.kernel import Kernel

    (alone,), (deferred,) = _flat_learners(OptimConfig(lr=0.1), n=1), _flat_learners(OptimConfig(lr=0.1), n=1)
    batcher = Batcher(Kernel())
    batcher.queue(batcher.prepare(deferred.train_step, ()))
    alone.train_step()
    assert torch.equal(deferred.next_indices(), alone.next_indices())
    assert deferred.steps_done == 1


def test_a_template_of_a_module_without_parameters():
    template = ModelTemplate(nn.Flatten())
    assert template.numel == 0 and template.initial.shape == (0,) and template.layers == []


def _double(learner_kind, monkeypatch):
    """A float64 ConvNet on float64 data, as a Learner or a FlatLearner."""
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", "off")
    monkeypatch.setattr(flops_mod, "_MEMORY", {})
    x, y = data()
    x = x.double()
    torch.manual_seed(0)
    if learner_kind == "Learner":
        return Learner(ConvNet().double(), x, y, batch_size=4, optim=OptimConfig(lr=0.1), seed=1)
    return FlatLearner(ModelTemplate(ConvNet().double()), x, y, torch.arange(len(y)), batch_size=4,
                       optim=OptimConfig(lr=0.1), seed=1)


@pytest.mark.parametrize("kind", ["Learner", "FlatLearner"])
def test_a_double_precision_model_keeps_its_precision(kind, monkeypatch):
    """Flat vector, gradient and FLOP count of a float64 model are float64 (a float32 buffer
    would round every step; a float32 probe batch would not run through the model)."""
    learner = _double(kind, monkeypatch)
    before = learner.get_flat()
    assert before.dtype == torch.float64
    learner.train_step()
    assert learner.get_flat().dtype == torch.float64 and learner.get_grad_flat().dtype == torch.float64
    step = before - 0.1 * learner.get_grad_flat()
    assert (learner.get_flat() - step).abs().max() < 1e-15  # float32 rounding is ~1e-8
    assert learner.flops_per_step() == 1728.0


def test_a_flat_learner_takes_a_double_precision_vector():
    template = ModelTemplate(ConvNet().double())
    x, y = data()
    learner = FlatLearner(template, x.double(), y, torch.arange(4), batch_size=4, optim=OptimConfig(), seed=0)
    learner.idle()
    value = torch.full((47,), 1 / 3, dtype=torch.float64)
    learner.set_flat(value)
    assert learner.get_flat().dtype == torch.float64 and torch.equal(learner.get_flat(), value)


def test_adam_gets_the_configured_rate_and_weight_decay():
    x, y = data()
    learner = Learner(ConvNet(), x, y, batch_size=4, seed=0,
                      optim=OptimConfig(name="adam", lr=0.3, weight_decay=0.25, betas=(0.5, 0.6), eps=1e-3))
    (group,) = learner.optimizer.param_groups
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (0.3, 0.25, (0.5, 0.6), 1e-3)


def test_learner_input_errors_name_what_is_wrong():
    x, y = data()
    with pytest.raises(ValueError) as err:
        Learner(ConvNet(), x, y[:5], batch_size=4, optim=OptimConfig(), seed=0)
    assert str(err.value) == "x and y differ in length: 12 vs 5"
    with pytest.raises(ValueError) as err:
        Learner(ConvNet(), x, y, batch_size=4, optim=OptimConfig(scheduler="cosine"), seed=0)
    assert str(err.value) == "unknown scheduler 'cosine'; allowed: none, StepLR"
    with pytest.raises(ValueError) as err:
        Learner(nn.Flatten(), x, y, batch_size=4, optim=OptimConfig(), seed=0)
    assert str(err.value) == "the model (Flatten) has no trainable parameters"


def test_a_learner_records_its_device():
    x, y = data()
    assert Learner(ConvNet(), x, y, batch_size=4, optim=OptimConfig(), seed=0).device == torch.device("cpu")


def test_the_parameters_of_a_bare_convolution_are_conv_layers():
    """A model that is itself a convolution: its parameters are named ``weight``/``bias`` and
    have the conv kind (AdaComp bins them as convolutions)."""
    x, y = torch.zeros(4, 1, 3, 3), torch.zeros(4, dtype=torch.long)
    want = [("weight", 0, 18, "conv"), ("bias", 18, 20, "conv")]
    assert Learner(nn.Conv2d(1, 2, 3), x, y, batch_size=2, optim=OptimConfig(), seed=0).layer_slices() == want
    template = ModelTemplate(nn.Conv2d(1, 2, 3))
    assert template.layers == want
    assert FlatLearner(template, x, y, torch.arange(4), batch_size=2, optim=OptimConfig(), seed=0).layer_slices() == want


def test_each_thread_runs_its_own_copy_of_the_template_module():
    """``functional_call`` swaps parameters in and out of the module it runs, so the thread
    that built the template runs the template's module and every other thread one deep copy
    of its own, made once."""
    import threading

    template = ModelTemplate(ConvNet())
    assert template._module() is template.module
    seen = []
    thread = threading.Thread(target=lambda: seen.extend([template._module(), template._module()]))
    thread.start()
    thread.join()
    first, second = seen
    assert first is second and first is not template.module
    for source in (template.module, template._pristine):
        assert all(a is not b for a, b in zip(first.parameters(), source.parameters()))


def test_batched_train_steps_return_what_the_learners_own_calls_return():
    learners = _flat_learners(OptimConfig(lr=0.1))
    assert [ln.train_steps(1) for ln in _flat_learners(OptimConfig(lr=0.1))] == [None] * 3
    assert batched_run(learners, "train_steps", (2,)) == [None] * 3


def test_batched_double_precision_steps_match_the_learners_own_to_the_last_bits():
    """float64 learners of unequal shards (5, 7 and 9 samples at batch 4: minibatches of
    different sizes in one step) at different rates: the batched losses and parameters carry
    float64 all the way (a float32 loss or rate would be off by ~1e-8)."""
    optim = OptimConfig(lr=0.1)
    alone, together = _flat_learners(optim, dtype=torch.float64), _flat_learners(optim, dtype=torch.float64)
    for group in (alone, together):
        for ln, lr in zip(group, (0.05, 0.1, 0.3)):
            ln.set_lr(lr)
    for _ in range(2):  # the second step draws batches of 1, 3 and 1: sizes differ
        expected = [ln.compute_grad() for ln in alone]
        got = batched_run(together, "compute_grad", ())
        assert all(abs(a - b) < 1e-12 for a, b in zip(expected, got)), (expected, got)
        for a, b in zip(alone, together):
            a.apply_update()
            b.apply_update()
    for ln in alone:
        ln.train_steps(2)
    batched_run(together, "train_steps", (2,))
    for a, b in zip(alone, together):
        assert (a.get_flat() - b.get_flat()).abs().max() < 1e-12


def test_a_learner_of_a_single_parameter_tensor():
    x, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    learner = Learner(nn.Linear(4, 3, bias=False).double(), x.double(), y, batch_size=3, optim=OptimConfig(), seed=0)
    assert learner.num_params == 12 and learner.get_flat().dtype == torch.float64
    learner.train_step()
    assert learner.get_grad_flat().abs().sum() > 0


def test_dropout_keeps_a_model_out_of_batched_steps():
    from simbench.learn.flat import batch_blocker

    x = nn.Linear(2, 2)
    assert batch_blocker(nn.Sequential(x, nn.Dropout(0.5))) == \
        "the model has dropout (its random masks would be drawn in another order)"
    assert batch_blocker(nn.Sequential(x, nn.Dropout(0.0))) is None
