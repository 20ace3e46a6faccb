"""The learners on a GPU: parameters, minibatches, FLOP probes and batched steps stay on the
device they were given (``--device cuda``). Skipped where no CUDA device is; on a CPU-only
machine ``device=None`` and ``cpu`` are the same, so only these tests tell them apart."""

import pytest
import torch

from simbench.learn import Learner, OptimConfig
from simbench.learn import flops as flops_mod
from simbench.learn.flat import FlatLearner, ModelTemplate, batched_run

from learn.test_learner_edges import ConvNet, data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _no_flop_cache(monkeypatch):
    monkeypatch.setenv("SIMBENCH_CACHE_DIR", "off")
    monkeypatch.setattr(flops_mod, "_MEMORY", {})


def test_a_learner_on_the_gpu():
    x, y = data()
    learner = Learner(ConvNet(), x, y, batch_size=4, optim=OptimConfig(lr=0.1), seed=1, device="cuda")
    bx, by = learner.next_batch()
    assert bx.is_cuda and by.is_cuda and learner.get_flat().is_cuda
    learner.train_step()
    assert learner.get_grad_flat().is_cuda and learner.flops_per_step() == 1728.0


def test_flat_learners_on_the_gpu_step_as_on_the_cpu():
    """Data held on the device once, shards as index views: sequential and batched steps on
    the GPU end where the CPU's do (up to float rounding)."""
    x, y = data(40)
    out = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        template = ModelTemplate(ConvNet(), device=device)
        xs, ys = x.to(device), y.to(device)
        group = [FlatLearner(template, xs, ys, torch.arange(lo, lo + n), batch_size=4, optim=OptimConfig(lr=0.1), seed=k)
                 for k, (lo, n) in enumerate([(0, 5), (5, 7), (12, 9)])]
        losses = batched_run(group, "compute_grad", ())
        for ln in group:
            ln.apply_update()
        batched_run(group, "train_steps", (2,))
        bx, _ = group[0].next_batch()
        assert bx.device.type == device and group[0].get_flat().device.type == device
        assert template.flops_per_step((1, 4, 4), 4, torch.float32) == 1728.0
        out[device] = (losses, torch.stack([ln.get_flat().cpu() for ln in group]))
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-4)
    assert torch.allclose(out["cuda"][1], out["cpu"][1], atol=1e-5)
