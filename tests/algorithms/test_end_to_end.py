"""End-to-end stories of the first algorithms on the embedded data, in the simulator."""

import pandas as pd
import pytest

from simbench.experiment.config import parse_config
from simbench.experiment.run import run_experiment

BASE = {
    "name": "t", "seed": 0, "nodes": 8, "topology": {"kind": "ring"}, "algorithm": "dsgd",
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "train": {"epochs": 6, "batch_size": 16, "lr": 0.1, "eval_samples": 400},
    "network": {"latency": "5ms", "bandwidth": "100Mbit/s"},
    "output": {"wall_clock": False, "plot": False, "progress": False},
}


def run(tmp_path, **changes):
    data = {**BASE, **changes}
    return run_experiment(parse_config(data), tmp_path)


def test_dsgd_ring8_learns_and_reaches_consensus(tmp_path):
    # a swap on every edge after every step (round_cnt 1; the seed's default is once per 10 steps)
    res = run(tmp_path, train={**BASE["train"], "same_init": False, "epochs": 10},
              algorithm={"name": "dsgd", "round_cnt": 1})
    ep = res.epochs
    avg = ep[ep["node"] == "avg"].set_index("epoch")
    assert res.status == "finished"
    assert avg["test_acc"].iloc[-1] > 0.75  # chance is 0.10
    nodes = ep[ep["node"] != "avg"]
    assert set(nodes["node"]) == {str(i) for i in range(8)}
    assert nodes.groupby("node")["test_acc"].last().min() > 0.6
    # different initial models are pulled together: the distance after the last epoch is a
    # small fraction of the distance at the start
    assert avg.loc[0, "consensus_distance"] > 1.0
    assert avg["consensus_distance"].iloc[-1] < 0.1 * avg.loc[0, "consensus_distance"]


def test_dsgd_epochs_csv_has_seed_columns(tmp_path):
    res = run(tmp_path, train={**BASE["train"], "epochs": 2})
    cols = list(pd.read_csv(res.run_dir / "epochs.csv").columns)
    assert cols[:10] == ["run_id", "node", "time_s", "epoch", "train_loss", "val_loss", "test_loss",
                         "train_acc", "val_acc", "test_acc"]
    ev = pd.read_csv(res.run_dir / "events.csv")
    assert list(ev.columns) == ["run_id", "time_s", "wall_s", "node", "metric", "value"]
    assert (res.run_dir / "manifest.json").exists()


def test_fedavg_star_learns(tmp_path):
    res = run(tmp_path, topology={"kind": "star"}, algorithm={"name": "fedavg", "frac_clients": 0.5})
    srv = res.epochs[res.epochs["node"] == "0"]
    assert list(srv["epoch"]) == [0, 1, 2, 3, 4, 5, 6]
    assert srv["test_acc"].iloc[-1] > 0.85
    assert srv["test_acc"].iloc[-1] > srv["test_acc"].iloc[0]


def test_ps_sync_learns(tmp_path):
    res = run(tmp_path, topology={"kind": "star"}, algorithm="ps_sync", train={**BASE["train"], "epochs": 3})
    srv = res.epochs[res.epochs["node"] == "0"]
    assert srv["test_acc"].iloc[-1] > 0.8


def test_fedavg_on_ring_is_rejected_with_one_line():
    from simbench.core.schema import ConfigError
    from simbench.experiment.build import build_nodes
    with pytest.raises(ConfigError, match="topology: fedavg needs a server linked to every other node"):
        build_nodes(parse_config({**BASE, "algorithm": "fedavg"}))


def test_two_runs_give_byte_identical_events(tmp_path):
    changes = dict(scenario={"stragglers": {"fraction": 0.25, "slowdown": {"dist": "uniform", "low": 1, "high": 3}}},
                   network={"latency": {"dist": "uniform", "low": "1ms", "high": "9ms"}, "bandwidth": "10Mbit/s", "loss": 0.05},
                   train={**BASE["train"], "epochs": 2})
    a = run(tmp_path / "a", **changes)
    b = run(tmp_path / "b", **changes)
    assert (a.run_dir / "events.csv").read_bytes() == (b.run_dir / "events.csv").read_bytes()
    assert (a.run_dir / "epochs.csv").read_bytes() == (b.run_dir / "epochs.csv").read_bytes()
    ev = pd.read_csv(a.run_dir / "events.csv")
    assert (ev["metric"] == "straggler_slowdown").any() and (ev["metric"] == "drop_lost").any()


def test_crashed_neighbour_does_not_block_dsgd(tmp_path):
    res = run(tmp_path, scenario={"crashes": [{"node": 3, "at": 0.05}]}, train={**BASE["train"], "epochs": 3})
    ep, ev = res.epochs, res.events
    assert res.status == "finished"
    crash = ev[ev["metric"] == "crash"]
    assert list(crash["node"]) == ["3"] and crash["time_s"].iloc[0] == pytest.approx(0.05)
    assert ep[ep["node"] == "3"]["epoch"].max() < 3  # the crashed node stops reporting
    assert ep[ep["node"] == "2"]["epoch"].max() == 3 and ep[ep["node"] == "4"]["epoch"].max() == 3
    assert (ev["metric"] == "params_timeouts").any()
