"""``simbench launch --local N`` end to end, plus the launcher's and node's failure stories.

The end-to-end stories start real node processes on loopback: the quickstart config on
four processes must write the simulated run's file layout with wall-clock ``time_s`` and
the simulator's byte counts (DSGD without a swap timeout sends a fixed set of messages),
and a scheduled crash must end one process while its peer carries on through timeouts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simbench.experiment.distributed.launch import free_port, last_line, supervise
from simbench.experiment.distributed.node_main import EXIT_CRASHED, NodeOptions, run_node
from simbench.real.rendezvous import RendezvousError, from_env, load_hosts
from simhelpers import one_torch_thread

from simhelpers import REPO as ROOT
QUICK = ["--set", "train.epochs=2", "--set", "algorithm.swap_timeout=null", "--set", "output.plot=false"]


def launch(tmp_path: Path, config: Path, *args: str, timeout: float = 80) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "simbench.cli", "launch", str(config), "--out", str(tmp_path / "out"),
                          "--timeout", "60", "--quiet", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return res, time.time() - t0


def test_quickstart_on_four_local_processes_matches_the_simulator(tmp_path):
    from simbench.experiment.config import load_config
    from simbench.experiment.run import run_experiment

    res, elapsed = launch(tmp_path, ROOT / "examples/quickstart.yaml", "--local", "4", *QUICK)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = load_config(ROOT / "examples/quickstart.yaml", [a for a in QUICK if a != "--set"] + ["nodes=4"])
    run_dir = Path(res.stdout.split("results: ")[1].strip())
    assert run_dir.parent == tmp_path / "out" / cfg.name and run_dir.name.startswith(f"{cfg.run_id()}-real-")
    for name in ("events.csv", "epochs.csv", "manifest.json", *(f"nodes/{k}/events.csv" for k in range(4))):
        assert (run_dir / name).exists(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["mode"] == "real" and manifest["status"] == "finished"
    assert [n["status"] for n in manifest["nodes"]] == ["finished"] * 4

    ev = pd.read_csv(run_dir / "events.csv")
    assert list(ev.columns) == ["run_id", "time_s", "wall_s", "node", "metric", "value"]
    assert ev["time_s"].is_monotonic_increasing
    # time_s is wall time since the common start: within the launch, and the run's real length
    assert ev["time_s"].min() >= 0 and ev["time_s"].max() < elapsed
    assert 0 < ev["time_s"].max() <= manifest["real_time_s"] < elapsed

    with one_torch_thread():
        sim = run_experiment(cfg, tmp_path / "sim")
    sim_bytes = sim.events[sim.events["metric"] == "bytes_sent_total"].set_index("node")["value"]
    assert [n["bytes_sent"] for n in manifest["nodes"]] == [int(sim_bytes[str(k)]) for k in range(4)]
    # the real manifest states what the nodes evaluated on, as the simulator's does
    sim_manifest = json.loads((sim.run_dir / "manifest.json").read_text())
    assert manifest["evaluation"] == sim_manifest["evaluation"]
    assert manifest["evaluation"]["test_samples"] > 0
    ep = pd.read_csv(run_dir / "epochs.csv", dtype={"node": str})
    assert list(ep.columns[:10]) == list(sim.epochs.columns[:10])
    assert list(ep["node"]) == list(sim.epochs["node"])  # the avg rows too
    nodes = ep["node"] != "avg"
    # per epoch, the same bytes up to one swap answer (19,310 bytes: the MLP's 4,810 parameters and
    # a header): a node's server task answers a swap whenever it comes, so on real time an answer
    # may fall on either side of an epoch's end
    diffs = [a - b for a, b in zip(ep.loc[nodes, "bytes_sent"], sim.epochs.loc[nodes.values, "bytes_sent"])]
    assert all(abs(d) <= 19310 for d in diffs), diffs


def test_a_scheduled_crash_ends_one_process_and_its_peer_carries_on(tmp_path):
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump({
        "name": "crash", "seed": 0, "topology": {"kind": "complete"},
        "algorithm": {"name": "dsgd", "swap_timeout": 0.02},
        "dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [16]}},
        # four epochs: on a loaded box the crash comes late, yet well before node 0's last round
        "train": {"epochs": 4, "batch_size": 16, "eval_samples": 100},
        "network": {"latency": "5ms"}, "scenario": {"crashes": [{"node": 1, "at": 0.2}]},
        "output": {"plot": False},
    }))
    res, _ = launch(tmp_path, config, "--local", "2", "--no-snapshots")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "node 1: crashed (exit code 75): scheduled crash" in res.stdout
    run_dir = next((tmp_path / "out" / "crash").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [(n["node"], n["status"], n["exit_code"]) for n in manifest["nodes"]] == [(0, "finished", 0), (1, "crashed", EXIT_CRASHED)]
    ev = pd.read_csv(run_dir / "events.csv", dtype={"node": str})
    crash = ev[(ev["metric"] == "crash")]
    assert list(crash["node"]) == ["1"] and 0.2 <= crash["time_s"].iloc[0] < 0.6, crash  # never early; late on a busy box
    # the survivor carried on through timeouts after the crash (a loaded box may also time out a
    # slow-starting peer now and then before it) and still finished its epochs
    # (a swap at each edge's slot, once per round of round_cnt steps, and each round's barrier)
    timeouts = ev[ev["metric"].isin(["params_timeouts", "params_round_timeouts"]) & (ev["node"] == "0")]
    after = timeouts["time_s"] > crash["time_s"].iloc[0]
    assert after.sum() >= 8 and after.sum() > 3 * (~after).sum(), timeouts
    ep = pd.read_csv(run_dir / "epochs.csv", dtype={"node": str})
    assert ep[ep["node"] == "0"]["epoch"].max() == 4 and not (ep[ep["node"] == "1"]["epoch"] == 4).any(), ep


def test_sigterm_stops_every_node_and_keeps_their_rows(tmp_path):
    """SIGTERM to ``launch`` mid-run: every node writes what it recorded and exits, the run
    directory is still merged, and launch exits 130 naming no failed node."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "simbench.cli", "launch", str(ROOT / "examples" / "quickstart.yaml"),
                             "--local", "2", "--out", str(out), "--quiet", "--set", "train.epochs=500",
                             "--set", "output.plot=false"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and len(list(out.glob("quickstart/*/nodes/*/params/epoch2.npy"))) < 2:
        time.sleep(0.2)  # both nodes are two epochs into training (their per-epoch snapshots exist)
    proc.terminate()
    time.sleep(0.5)
    proc.terminate()  # an impatient second signal must not cut the reaping or the merge
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, (stdout, stderr[-2000:])
    run_dir = next((out / "quickstart").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert [n["status"] for n in manifest["nodes"]] == ["interrupted", "interrupted"], manifest["nodes"]
    ep = pd.read_csv(run_dir / "epochs.csv", dtype={"node": str})
    for k in ("0", "1"):
        epochs = ep[ep["node"] == k]["epoch"]
        assert 1 <= epochs.max() < 500, ep  # rows written before the stop, and it did stop early


def test_sigterm_while_waiting_for_peers_stops_the_node_at_once(tmp_path):
    """A node still meeting its peers (node 0 never comes) stops within seconds of SIGTERM,
    not when the rendezvous times out, and says it was interrupted before the start."""
    import datetime
    import os
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, 2, True, timeout=datetime.timedelta(seconds=60), wait_for_workers=False)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "RANK": "1", "WORLD_SIZE": "2",
           "TORCHELASTIC_USE_AGENT_STORE": "True", "SIMBENCH_HOST": "127.0.0.1"}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "simbench.cli", "node", str(ROOT / "examples" / "quickstart.yaml"),
                             "--insecure", "--out", str(out), "--rendezvous-timeout", "90", *QUICK], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    keys = store.num_keys()
    deadline = time.time() + 60
    while store.num_keys() == keys and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # node 1 has published its address: it now waits for node 0's
    assert proc.poll() is None and store.num_keys() > keys, proc.communicate()
    time.sleep(0.5)
    sent = time.monotonic()
    proc.terminate()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10, stderr[-2000:]
    assert proc.returncode == 143, (stdout, stderr[-2000:])
    status = json.loads(next(out.glob("quickstart/*/nodes/1/status.json")).read_text())
    assert status["status"] == "interrupted" and status["error"] == "signal before the start", status


def fake_node(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_launch_reports_which_node_failed_and_why_and_stops_the_others(tmp_path):
    cmds = {0: fake_node("import time; time.sleep(30)"),
            1: fake_node("import sys; print('noise'); print('ValueError: bad shard', file=sys.stderr); sys.exit(3)"),
            2: fake_node("import time; time.sleep(30)")}
    t0 = time.time()
    out = supervise(cmds, {k: None for k in cmds}, tmp_path, quiet=True)
    assert time.time() - t0 < 10
    assert (out[1].status, out[1].exit_code, out[1].reason) == ("failed", 3, "ValueError: bad shard")
    assert [o.status for o in (out[0], out[2])] == ["killed", "killed"]
    assert out[0].reason == "killed by signal 15 (node 1 failed)"


def test_the_timeout_stops_every_node(tmp_path):
    cmds = {k: fake_node("import time; time.sleep(30)") for k in range(2)}
    t0 = time.time()
    out = supervise(cmds, {k: None for k in cmds}, tmp_path, timeout=0.5, quiet=True)
    assert time.time() - t0 < 5 and [o.status for o in out] == ["killed", "killed"]


def test_last_line_skips_torch_store_warnings(tmp_path):
    log = tmp_path / "err"
    log.write_text("Traceback\nRuntimeError: boom\n[W socket.cpp] [c10d] waitForInput: timed out\n\n")
    assert last_line(log) == "RuntimeError: boom"


def write_hosts(tmp_path: Path, hosts: list[str]) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text("nodes:\n" + "".join(f"  {k}: {h}\n" for k, h in enumerate(hosts)))
    return path


def test_a_node_refuses_to_start_without_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIMBENCH_CLUSTER_KEY", raising=False)
    hosts = write_hosts(tmp_path, ["127.0.0.1:5000", "127.0.0.1:5002"])
    assert run_node(NodeOptions(config=str(ROOT / "examples/quickstart.yaml"), hosts=str(hosts), node_id=0)) == 2
    assert capsys.readouterr().err.strip() == (
        "simbench node: no cluster key: give --key-file FILE or set SIMBENCH_CLUSTER_KEY "
        "(or --insecure, allowed only when every host is loopback)")


def test_insecure_is_refused_when_a_host_is_not_loopback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIMBENCH_CLUSTER_KEY", raising=False)
    hosts = write_hosts(tmp_path, ["127.0.0.1:5000", "10.213.9.2:5000"])
    opts = NodeOptions(config=str(ROOT / "examples/quickstart.yaml"), hosts=str(hosts), node_id=0, insecure=True)
    assert run_node(opts) == 2
    assert "--insecure: allowed only when every host is loopback, but 10.213.9.2 is not" in capsys.readouterr().err


def test_hosts_files_are_checked_with_one_line_errors(tmp_path):
    good = write_hosts(tmp_path, ["10.0.0.1:29500", "10.0.0.2:29500"])
    h = load_hosts(good)
    assert str(h.nodes[1]) == "10.0.0.2:29500" and str(h.store) == "10.0.0.1:29501"
    example = load_hosts(ROOT / "examples/hosts.yaml")
    assert list(example.nodes) == list(range(len(example.nodes)))
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("nodes:\n  0: a:1\n  2: b:1\n", "nodes: node 1 is missing; ids must be 0..1"),
        ("nodes:\n  0: nohostport\n", "nodes.0: expected HOST:PORT"),
        ("nodes:\n  0: a:1\n  1: a:1\n", "nodes.1: a:1 is already node 0's address"),
        ("hosts:\n  0: a:1\n", "expected a mapping with 'nodes:"),
        ("nodes: [a:1]\nstorage: b:2\n", "unknown key 'storage'; allowed: nodes, store"),
    ]:
        bad.write_text(text)
        with pytest.raises(RendezvousError, match=message):
            load_hosts(bad)
    with pytest.raises(RendezvousError, match="--hosts: file"):
        load_hosts(tmp_path / "missing.yaml")


def test_torchrun_and_slurm_environments_are_read():
    env = from_env({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400", "RANK": "2", "WORLD_SIZE": "4",
                    "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (str(env.master), env.rank, env.world_size, env.agent_store) == ("10.0.0.1:29400", 2, 4, True)
    slurm = from_env({"MASTER_ADDR": "n1", "MASTER_PORT": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"})
    assert (slurm.rank, slurm.world_size, slurm.agent_store) == (0, 8, False)
    with pytest.raises(RendezvousError, match="no --hosts file and MASTER_ADDR, RANK not set"):
        from_env({"MASTER_PORT": "1", "WORLD_SIZE": "2"})
    with pytest.raises(RendezvousError, match=r"RANK: must be in 0..WORLD_SIZE-1 = 0..1, got 2"):
        from_env({"MASTER_ADDR": "a", "MASTER_PORT": "1", "RANK": "2", "WORLD_SIZE": "2"})


def test_free_ports_are_bindable():
    import socket
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
