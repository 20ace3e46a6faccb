"""Four hosts as Linux network namespaces on a bridge: DSGD on a ring across them.

Each node runs as ``simbench node CONFIG --node-id K --hosts hosts.yaml --key-file KEY``
inside its own namespace at 10.213.77.<K+1>; only those private addresses are used, and
the namespaces are deleted even when the test fails. Links get 20 ms of one-way delay:
from ``tc qdisc netem`` where the kernel has netem (the nodes then run with
``--native-network``), otherwise from the runtime's own link-delay layer (the config's
``network.latency``), which is the same code path the scenario uses.
"""

from __future__ import annotations

import json
import os
import secrets
import sys

import pandas as pd
import pytest
import yaml

from simbench.experiment.distributed import netns
from simhelpers import one_torch_thread

pytestmark = pytest.mark.netns

DELAY = 0.02
CONFIG = {
    "name": "netns", "seed": 0, "topology": {"kind": "ring"},
    "algorithm": {"name": "dsgd", "swap_timeout": None},
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1, "eval_samples": 300},
    "network": {"latency": f"{DELAY * 1000:g}ms", "bandwidth": "inf", "uplink": "inf", "downlink": "inf"},
    "output": {"plot": False, "progress": False},
}


@pytest.fixture(scope="module")
def hosts():
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    with netns.Hosts(4, subnet=77) as h:  # deleted on exit, failures included
        yield h


def test_dsgd_ring_across_four_namespaces_with_20ms_links(hosts, tmp_path):
    from simbench.experiment.config import load_config
    from simbench.experiment.run import run_experiment
    from simbench.experiment.distributed.launch import node_command, overall_status, supervise
    from simbench.experiment.distributed.merge import merge
    from simbench.experiment.distributed.node_main import real_run_dir

    cfg_path = tmp_path / "netns.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    key = tmp_path / "key"
    key.write_text(secrets.token_hex(32))
    hosts_file = hosts.hosts_file(tmp_path / "hosts.yaml")
    native = netns.has_netem()
    if native:
        hosts.delay(DELAY)
    flags = ["--hosts", str(hosts_file), "--key-file", str(key), "--threads", "1", "--no-snapshots"]
    flags += ["--native-network"] if native else []
    cfg = load_config(cfg_path, ["nodes=4"])
    run_dir = real_run_dir(tmp_path / "out", cfg, "0123456789abcdef")
    cmds = {k: [*hosts.exec(k), *node_command(str(cfg_path), [], tmp_path / "out", [*flags, "--node-id", str(k)])]
            for k in range(4)}
    env = {**os.environ, "SIMBENCH_RUN_NONCE": "0123456789abcdef"}  # as the launcher hands it out
    outcomes = supervise(cmds, {k: env for k in range(4)}, run_dir, timeout=45)
    assert [o.status for o in outcomes] == ["finished"] * 4, outcomes
    manifest = merge(run_dir, cfg, outcomes)
    assert manifest["mode"] == "real" and overall_status(outcomes) == "finished"
    assert [n["address"].rsplit(":", 1)[0] for n in manifest["nodes"]] == [hosts.address(k) for k in range(4)]

    with one_torch_thread():
        sim = run_experiment(load_config(cfg_path, ["nodes=4", "output.wall_clock=false"]), tmp_path / "sim")
    sim_bytes = sim.events[sim.events["metric"] == "bytes_sent_total"].set_index("node")["value"]
    assert [n["bytes_sent"] for n in manifest["nodes"]] == [int(sim_bytes[str(k)]) for k in range(4)]

    # every round waits for both neighbours' parameters, which take >= 20 ms to arrive
    rounds = int(sim.events[sim.events["metric"] == "msgs_sent_total"]["value"].iloc[0]) // 2
    ev = pd.read_csv(run_dir / "events.csv")
    finished = ev[ev["metric"] == "bytes_sent_total"]["time_s"]
    assert finished.min() >= rounds * DELAY
    assert finished.max() < rounds * DELAY * 10 + 5
    print(json.dumps({"netem": native, "rounds": rounds, "real_time_s": manifest["real_time_s"],
                      "sim_time_s": sim.sim_time}), file=sys.stderr)
