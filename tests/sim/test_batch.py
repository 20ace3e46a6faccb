"""Batched execution: the steps of nodes due at one simulated instant run as one call, and a
run computes the same thing as when every step runs on its own.

What must not move: simulated times, bytes, messages and event counts (the cost model
charges each node its own FLOPs whatever runs them), the numbers up to float rounding, and
byte-identical reruns. Where batching cannot apply, the run says why and steps alone.
"""

import json

import pytest
import torch

from conftest import QUIET
from simbench.data import load_dataset
from simbench.experiment.build import build_nodes
from simbench.experiment.config import parse_config
from simbench.experiment.run import run_experiment
from simbench.learn import OptimConfig
from simbench.learn.flat import FlatLearner, ModelTemplate
from simbench.models import build_model
from simbench.sim.batch import Batcher
from simbench.sim.kernel import Kernel

BASE = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [32]}},
        "train": {"batch_size": 16, "lr": 0.1, "epochs": 3, "eval_samples": 200}, "output": QUIET}
CASES = {
    "fedavg": {**BASE, "nodes": 9, "topology": {"kind": "star"},
               "algorithm": {"name": "fedavg", "frac_clients": 0.5, "local_steps": 6}},
    "dsgd": {**BASE, "nodes": 6, "topology": {"kind": "ring"}, "algorithm": "dsgd",
             "train": {**BASE["train"], "momentum": 0.9}},
    "ps_sync": {**BASE, "nodes": 5, "topology": {"kind": "star"}, "algorithm": "ps_sync"},
}


def run(tmp_path, case: str, execution: str, **over):
    cfg = parse_config({**CASES[case], "name": f"{case}_{execution}", "execution": execution, **over})
    res = run_experiment(cfg, tmp_path / execution, progress=False)
    return res, json.loads((res.run_dir / "manifest.json").read_text())["execution"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_and_sequential_runs_agree(tmp_path, case):
    seq, seq_ex = run(tmp_path, case, "sequential")
    bat, bat_ex = run(tmp_path, case, "batched")
    assert seq.status == bat.status == "finished"
    assert seq_ex == {**seq_ex, "used": "sequential", "reason": "execution: sequential", "batched_steps": 0}
    assert bat_ex["used"] == "batched" and bat_ex["reason"] is None
    assert bat_ex["vectorized_steps"] > 0  # steps really ran together
    # the same events at the same simulated times: every byte, message and compute second
    cols = ["time_s", "node", "metric"]
    assert seq.events[cols].equals(bat.events[cols])
    for metric in ("bytes_sent_total", "msgs_sent_total", "compute_s_total"):
        a, b = (r.events.loc[r.events.metric == metric, "value"].to_numpy() for r in (seq, bat))
        assert len(a) and (a == b).all(), metric
    assert seq.sim_time == bat.sim_time
    assert abs(seq.final() - bat.final()) <= 0.01
    assert seq.final() > 0.5  # and they learned (digits: chance is 0.1)


def test_batched_reruns_are_byte_identical(tmp_path):
    a, _ = run(tmp_path / "a", "fedavg", "batched")
    b, _ = run(tmp_path / "b", "fedavg", "batched")
    for name in ("events.csv", "epochs.csv"):
        assert (a.run_dir / name).read_bytes() == (b.run_dir / name).read_bytes()


def test_idle_federated_clients_hold_no_parameters():
    """FedAvg clients keep nothing between rounds: a client's parameter vector exists only
    from the global model's arrival to its update's departure."""
    cfg = parse_config({**CASES["fedavg"], "execution": "batched"})
    built = build_nodes(cfg)
    from simbench.sim.world import SimWorld
    from simbench.metrics.recorder import Recorder
    world = SimWorld(built.graph, built.nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
                     scenario=cfg.scenario, profiles=built.profiles, recorder=Recorder("t", wall_clock=False),
                     seed=built.streams.world, batched=True)
    clients = [built.nodes[i].learner for i, r in built.roles.items() if r == "worker"]
    assert clients and all(isinstance(ln, FlatLearner) for ln in clients)
    assert all(ln._flat is None for ln in clients)  # built without parameters
    held = []
    server = next(n for i, n in built.nodes.items() if built.roles[i] == "server")
    aggregate = server.aggregate

    def watch(updates):  # the moment the server has every update of the round
        held.append(sum(ln._flat is not None for ln in clients))
        return aggregate(updates)

    server.aggregate = watch
    world.run()
    assert held == [0, 0, 0] and all(ln._flat is None for ln in clients)
    assert sum(ln.steps_done for ln in clients) == 3 * 4 * 6  # they did train: 3 rounds, 4 of 8 clients, 6 steps
    assert len({ln.template for ln in clients} | {server.learner.template}) == 1  # one module for the run
    x = clients[0].data_x
    assert all(ln.data_x is x for ln in clients)  # and one copy of the data set


@pytest.mark.parametrize("over, reason", [
    ({"train": {**BASE["train"], "optimizer": "adam"}}, "optimizer adam"),
    ({"model": {"name": "mlp", "options": {"hidden": [32], "drop_rate": 0.5}}}, "dropout"),
])
def test_fallback_is_sequential_and_says_why(tmp_path, over, reason):
    res, ex = run(tmp_path, "fedavg", "batched", **over)
    assert res.status == "finished"
    assert ex["requested"] == "batched" and ex["used"] == "sequential" and reason in ex["reason"]
    assert ex["vectorized_steps"] == 0


def test_a_gan_run_steps_alone(tmp_path):
    cfg = parse_config({"name": "g", "nodes": 1, "topology": {"kind": "complete"},
                        "algorithm": {"name": "gan_single", "latent_dim": 16, "fid_batch": 50, "grid": 4},
                        "dataset": {"name": "digits", "max_train": 256}, "model": {"name": "lsgan", "options": {"width": 8}},
                        "train": {"epochs": 1, "batch_size": 32}, "output": QUIET})
    res = run_experiment(cfg, tmp_path, progress=False)
    ex = json.loads((res.run_dir / "manifest.json").read_text())["execution"]
    assert res.status == "finished" and ex["used"] == "sequential" and "gan" in ex["reason"]


def test_the_cli_names_the_fallback(tmp_path, write_config, capsys):
    from simbench.cli import main
    path = write_config({**CASES["fedavg"], "train": {**BASE["train"], "optimizer": "adam", "epochs": 1}})
    assert main(["run", str(path), "--out", str(tmp_path), "--quiet"]) == 0
    assert "computed step by step: optimizer adam" in capsys.readouterr().out


# -- the Batcher itself ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def learners(d, n=3):
    template = ModelTemplate(build_model("mlp", d.input_shape, 10, seed=0, hidden=(16,)))
    return [FlatLearner(template, d.x_train, d.y_train, torch.arange(40 * k, 40 * k + 40), batch_size=8,
                        optim=OptimConfig(lr=0.1), seed=k) for k in range(n)]


def test_a_learner_looked_at_before_the_instant_ends_steps_first(digits):
    """A put-off step must not be overtaken: reading or changing the learner in the same
    instant runs it at once, as a sequential step would have run."""
    kernel = Kernel()
    batcher = Batcher(kernel)
    alone, deferred = learners(digits), learners(digits)
    jobs = [batcher.prepare(ln.train_step, ()) for ln in deferred]
    for job in jobs:
        batcher.queue(job)
    expected = [ln.train_step() for ln in alone]
    # node 0 reads its parameters, node 1 is given new ones, in the same instant
    assert torch.equal(deferred[0].get_flat(), alone[0].get_flat())
    deferred[1].set_flat(torch.zeros(deferred[1].num_params))
    alone[1].set_flat(torch.zeros(alone[1].num_params))
    batcher.flush()
    assert batcher.alone == 2 and batcher.vectorized == 0  # the third ran by itself too (a group of one)
    assert [j.result() for j in jobs] == pytest.approx(expected)
    for a, b in zip(alone, deferred):
        assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-6)


def test_two_steps_of_one_learner_in_an_instant_run_in_order(digits):
    kernel = Kernel()
    batcher = Batcher(kernel)
    (a,), (b,) = learners(digits, 1), learners(digits, 1)
    first, second = batcher.prepare(b.train_step, ()), batcher.prepare(b.train_step, ())
    batcher.queue(first)
    batcher.queue(second)  # the first runs now, before the second is queued
    batcher.flush()
    assert [first.result(), second.result()] == pytest.approx([a.train_step(), a.train_step()])
    assert b.steps_done == 2


def test_only_learner_steps_are_put_off(digits):
    batcher = Batcher(Kernel())
    (ln,) = learners(digits, 1)
    assert batcher.prepare(ln.train_step, ()) is not None
    assert batcher.prepare(ln.train_steps, (3,)) is not None
    assert batcher.prepare(ln.evaluate, (digits.x_test, digits.y_test)) is None
    assert batcher.prepare(lambda: ln.train_step(), ()) is None
    assert batcher.prepare(print, ()) is None


def test_an_error_in_a_batched_step_reaches_its_node(digits):
    batcher = Batcher(Kernel())
    group = learners(digits, 2)
    for ln in group:
        ln.data_x = ln.data_x[..., :5]  # the wrong input width: the module's matmul fails
    jobs = [batcher.prepare(ln.train_step, ()) for ln in group]
    for job in jobs:
        batcher.queue(job)
    batcher.flush()
    for job in jobs:
        with pytest.raises(RuntimeError):
            job.result()


def test_steps_of_different_lengths_in_one_instant_are_not_batched_together(digits):
    """``train_steps(2)`` and ``train_steps(3)`` due at the same instant share the model but
    not the call: each learner takes its own number of steps (the batch key holds the
    arguments); equal calls are batched."""
    batcher = Batcher(Kernel())
    alone, deferred = learners(digits, 4), learners(digits, 4)
    counts = (2, 3, 2, 3)
    jobs = [batcher.prepare(ln.train_steps, (n,)) for ln, n in zip(deferred, counts)]
    for job in jobs:
        batcher.queue(job)
    batcher.flush()
    for ln, n in zip(alone, counts):
        ln.train_steps(n)
    assert [ln.steps_done for ln in deferred] == [2, 3, 2, 3]
    assert batcher.vectorized == 10 and batcher.alone == 0  # two groups of two
    for a, b in zip(alone, deferred):
        assert torch.allclose(a.get_flat(), b.get_flat(), atol=1e-6)
