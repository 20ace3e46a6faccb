"""FlatLearner: the same numbers as Learner step for step; batched steps equal sequential ones
up to float rounding; parameters held only while needed."""

import numpy as np
import pytest
import torch

from simbench.data import load_dataset
from simbench.learn import Learner, OptimConfig
from simbench.learn.flat import FlatLearner, ModelTemplate, batch_blocker, batched_run, flat_eligible
from simbench.models import build_model

OPTIMS = {
    "plain": OptimConfig(lr=0.1),
    "momentum": OptimConfig(lr=0.1, momentum=0.9, dampening=0.1),
    "nesterov_wd": OptimConfig(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
    "l2_steplr": OptimConfig(lr=0.1, l2_lambda=1e-2, scheduler="StepLR", step_size=3, gamma=0.5),
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def shards(d, sizes):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.y_train))
    out, lo = [], 0
    for n in sizes:
        out.append(order[lo:lo + n])
        lo += n
    return out


def model(d, seed=0):
    return build_model("mlp", d.input_shape, 10, seed=seed, hidden=(32,))


@pytest.mark.parametrize("name", sorted(OPTIMS))
def test_flat_learner_is_learner_bit_for_bit(digits, name):
    optim = OPTIMS[name]
    idx = shards(digits, [200])[0]
    ref = Learner(model(digits), digits.x_train[idx], digits.y_train[idx], batch_size=32, optim=optim, seed=7)
    flat = FlatLearner(ModelTemplate(model(digits)), digits.x_train, digits.y_train, torch.as_tensor(idx),
                       batch_size=32, optim=optim, seed=7)
    for step in range(20):  # 20 steps: past an epoch (7 steps, the last one short) and three StepLR decays
        assert flat.train_step() == ref.train_step(), step
    assert torch.equal(flat.get_flat(), ref.get_flat())
    assert flat.lr == ref.lr and flat.steps_done == ref.steps_done == 20
    assert flat.flops_per_step() == ref.flops_per_step()
    assert flat.evaluate(digits.x_test, digits.y_test) == ref.evaluate(digits.x_test, digits.y_test)


@pytest.mark.parametrize("name", sorted(OPTIMS))
@pytest.mark.parametrize("op", ["train_steps", "compute_grad"])
def test_batched_steps_equal_sequential_ones(digits, name, op):
    """Four learners (uneven shards: their last minibatches differ in size) from different
    starting points, each one run alone and all of them batched: same losses, parameters,
    momentum and schedule up to float rounding."""
    optim = OPTIMS[name]
    template = ModelTemplate(model(digits))
    parts = shards(digits, [70, 70, 75, 90])

    def make():
        return [FlatLearner(template, digits.x_train, digits.y_train, torch.as_tensor(p), batch_size=32,
                            optim=optim, seed=k)
                for k, p in enumerate(parts)]

    alone, together = make(), make()
    for k, (a, b) in enumerate(zip(alone, together)):
        start = torch.randn(template.numel, generator=torch.Generator().manual_seed(k)) * 0.1
        a.set_flat(start)
        b.set_flat(start)
    args = (7,) if op == "train_steps" else ()
    for _ in range(2):  # twice: the second call starts from the momentum buffers of the first
        expected = [getattr(a, op)(*args) for a in alone]
        got = batched_run(together, op, args)
        if op == "compute_grad":
            assert got == pytest.approx(expected, rel=1e-5)
    for a, b in zip(alone, together):
        assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-5)
        assert a.steps_done == b.steps_done and a.lr == b.lr
        if op == "compute_grad":
            assert torch.allclose(a.get_grad_flat(), b.get_grad_flat(), atol=1e-5)
        if optim.momentum and op == "train_steps":
            assert torch.allclose(a._momentum, b._momentum, atol=1e-5)
    if op == "train_steps":  # they did learn: every learner moved
        assert all(not torch.equal(b.get_flat(), torch.randn(template.numel, generator=torch.Generator().manual_seed(k)) * 0.1)
                   for k, b in enumerate(together))


def test_batched_run_in_chunks(digits, monkeypatch):
    """Groups larger than a chunk run chunk by chunk with the same result."""
    import simbench.learn.flat as flat_mod
    template = ModelTemplate(model(digits))
    parts = shards(digits, [40] * 5)

    def make():
        return [FlatLearner(template, digits.x_train, digits.y_train, torch.as_tensor(p), batch_size=16,
                            optim=OPTIMS["momentum"], seed=k) for k, p in enumerate(parts)]

    whole, chunked = make(), make()
    batched_run(whole, "train_steps", (4,))
    monkeypatch.setattr(flat_mod, "CHUNK_BYTES", template.numel * 4 * 2)  # two learners per chunk
    batched_run(chunked, "train_steps", (4,))
    for a, b in zip(whole, chunked):
        assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-6)


def test_idle_frees_parameters_and_they_come_back_from_set_flat(digits):
    template = ModelTemplate(model(digits))
    ln = FlatLearner(template, digits.x_train, digits.y_train, torch.arange(64), batch_size=32,
                     optim=OPTIMS["plain"], seed=0)
    assert ln._flat is None  # nothing until it is needed
    ln.set_flat(template.initial * 2)
    ln.train_step()
    ln.idle()
    assert ln._flat is None and ln._grad is None
    ln.set_flat(template.initial)
    assert torch.equal(ln.get_flat(), template.initial)


def test_lazy_initial_parameters_are_built_only_when_read(digits):
    template = ModelTemplate(model(digits))
    built = []

    def init():
        built.append(1)
        return template.initial + 1

    ln = FlatLearner(template, digits.x_train, digits.y_train, torch.arange(64), batch_size=32,
                     optim=OPTIMS["plain"], seed=0, init=init)
    ln.set_flat(template.initial)  # a federated client: given its parameters first
    ln.train_step()
    assert built == []
    other = FlatLearner(template, digits.x_train, digits.y_train, torch.arange(64), batch_size=32,
                        optim=OPTIMS["plain"], seed=0, init=init)
    assert torch.equal(other.get_flat(), template.initial + 1) and built == [1]


def test_what_cannot_be_flat_or_batched(digits):
    net = model(digits)
    assert flat_eligible(net, OPTIMS["plain"]) is None
    assert "adam" in flat_eligible(net, OptimConfig(name="adam"))
    assert "buffers" in flat_eligible(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)),
                                      OPTIMS["plain"])
    assert batch_blocker(net) is None
    assert "dropout" in batch_blocker(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)))
    assert batch_blocker(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.0))) is None


def test_threads_compute_at_once_on_their_own_copy_of_the_module():
    """The nodes of an in-process real run compute in threads while the main thread
    evaluates: a thread's first step, taken while the shared module is mid-call with a
    learner's parameters swapped in, still trains (and leaves the evaluation's numbers alone)."""
    import threading

    torch.manual_seed(0)
    seen = {}

    class Hook(torch.nn.Module):
        def forward(self, h):
            if not seen:  # once: another thread steps while this call is under way
                seen["started"] = True
                worker = threading.Thread(target=lambda: seen.update(grad=template.grad_and_loss(flat, x, y)))
                worker.start()
                worker.join()
            return h

    template = ModelTemplate(torch.nn.Sequential(torch.nn.Linear(4, 3), Hook()))
    flat = template.initial.clone()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, acc = template.evaluate(flat, x, y)
    grad, step_loss = seen["grad"]
    expected, expected_loss = ModelTemplate(torch.nn.Sequential(torch.nn.Linear(4, 3))).grad_and_loss(flat, x, y)
    assert torch.equal(grad, expected) and grad.abs().sum() > 0
    assert float(step_loss) == pytest.approx(float(expected_loss)) and loss == pytest.approx(float(expected_loss))
