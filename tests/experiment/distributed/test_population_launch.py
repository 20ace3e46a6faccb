"""A population's availability trace in real-network mode: ``simbench launch --local 4`` takes a
node offline and back at the trace's instants, as the simulator does with the same config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from simhelpers import REPO, one_torch_thread


def test_the_trace_takes_a_real_node_offline_and_back(tmp_path):
    from simbench.experiment.config import load_config
    from simbench.experiment.run import run_experiment

    (tmp_path / "av.csv").write_text("node,start_s,end_s\n1,0,0.5\n1,1.5,inf\n")
    config = tmp_path / "pop.yaml"
    config.write_text(yaml.safe_dump({
        "name": "pop", "seed": 0, "nodes": 4, "topology": {"kind": "complete"},
        "algorithm": {"name": "dsgd", "swap_timeout": 0.05, "round_cnt": 1},  # a swap every step: the run outlasts the trace
        "dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [16]}},
        "train": {"epochs": 6, "batch_size": 16, "eval_samples": 100}, "network": {"latency": "5ms"},
        "population": {"availability": {"trace": str(tmp_path / "av.csv")}, "mapping": "column"},
        "output": {"plot": False, "wall_clock": False},
    }))
    res = subprocess.run([sys.executable, "-m", "simbench.cli", "launch", str(config), "--local", "4",
                          "--out", str(tmp_path / "out"), "--timeout", "90", "--quiet", "--no-snapshots"],
                         capture_output=True, text=True, timeout=150, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = Path(res.stdout.split("results: ")[1].strip())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [n["status"] for n in manifest["nodes"]] == ["finished"] * 4
    ev = pd.read_csv(run_dir / "events.csv", dtype={"node": str})
    flips = ev[ev["metric"].isin(["offline", "online"])]
    assert list(zip(flips["node"], flips["metric"])) == [("1", "offline"), ("1", "online")]
    t_off, t_on = flips["time_s"].tolist()
    assert 0.5 <= t_off < 1.0 and 1.5 <= t_on < 2.0, flips  # never early; up to 0.5 s late on a busy box
    node1 = ev[(ev["node"] == "1") & (ev["time_s"] > t_off) & (ev["time_s"] < t_on)]
    assert set(node1["metric"]) == {"drop_offline"}  # asleep: it only drops what arrives
    assert len(node1) >= 6 and set(node1["value"]) == {0.0, 2.0, 3.0}
    timeouts = ev[(ev["metric"] == "params_timeouts") & (ev["node"] != "1")]
    assert ((timeouts["time_s"] > t_off) & (timeouts["time_s"] < t_on + 0.1)).sum() >= 6  # peers time out on it
    ep = pd.read_csv(run_dir / "epochs.csv", dtype={"node": str})
    assert ep.groupby("node")["epoch"].max().to_dict() == {"0": 6, "1": 6, "2": 6, "3": 6}

    cfg = load_config(config)  # the simulator follows the same trace at the same instants
    with one_torch_thread():
        sim = run_experiment(cfg, tmp_path / "sim")
    sim_flips = sim.events[sim.events["metric"].isin(["offline", "online"])]
    assert list(zip(sim_flips["node"], sim_flips["metric"], sim_flips["time_s"])) == \
        [("1", "offline", 0.5), ("1", "online", 1.5)]
