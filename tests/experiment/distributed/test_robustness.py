"""Real mode ends every way it can, quickly and truthfully: a deadlocked node, a killed
launcher, SIGTERM mid-run; and launch shows where its nodes are."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from simhelpers import REPO

CFG = {"name": "rb", "seed": 0, "topology": {"kind": "complete"}, "dataset": {"name": "digits"},
       "model": {"name": "mlp", "options": {"hidden": [16]}}, "train": {"epochs": 400, "batch_size": 16,
                                                                        "eval_samples": 50},
       "output": {"plot": False}}
ENV = {**os.environ, "SIMBENCH_PROGRESS_EVERY": "0.5"}


def launch(cfg_path, out, *args, quiet=True):
    return subprocess.Popen([sys.executable, "-m", "simbench", "launch", str(cfg_path), "--out", str(out), "--no-snapshots",
                             *(["--quiet"] if quiet else []), *args], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def progress(out, n):
    infos = []
    for f in out.glob("rb/*/nodes/*/progress.json"):
        try:
            infos.append(json.loads(f.read_text()))
        except ValueError:
            pass
    return infos if len(infos) == n else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def wait_for(fn, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_node_waiting_for_a_crashed_peer_ends_as_deadlock(tmp_path):
    """swap_timeout null: node 0 waits forever for node 1, which crashed. The simulator calls
    that a deadlock; the real run says the same after --no-progress-timeout seconds."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "algorithm": {"name": "dsgd", "swap_timeout": None},
                                   "train": {**CFG["train"], "epochs": 50}, "scenario": {"crashes": [{"node": 1, "at": 0.3}]}}))
    t0 = time.time()
    proc = launch(cfg, tmp_path / "out", "--local", "2", "--no-progress-timeout", "3")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-2000:]
    assert time.time() - t0 < 60
    [run_dir] = (tmp_path / "out" / "rb").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "deadlock", manifest
    assert [n["status"] for n in manifest["nodes"]] == ["deadlock", "crashed"]
    assert "no message and no computation for" in manifest["nodes"][0]["reason"] or manifest["error"]


def test_killing_the_launcher_ends_its_nodes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "algorithm": "dsgd"}))
    proc = launch(cfg, tmp_path / "out", "--local", "2")
    infos = wait_for(lambda: progress(tmp_path / "out", 2))
    pids = [i["pid"] for i in infos]
    assert all(alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(alive(p) for p in pids), timeout=20)


def test_sigterm_ends_a_running_node_within_seconds(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "algorithm": "dsgd"}))
    proc = launch(cfg, tmp_path / "out", "--local", "2")
    infos = wait_for(lambda: progress(tmp_path / "out", 2))
    node = next(i for i in infos if i["node"] == 1)
    sent = time.monotonic()
    os.kill(node["pid"], signal.SIGTERM)
    wait_for(lambda: not alive(node["pid"]), timeout=10)
    assert time.monotonic() - sent < 10
    proc.communicate(timeout=120)  # the launcher stops the other node and merges
    [run_dir] = (tmp_path / "out" / "rb").iterdir()
    status = json.loads((run_dir / "nodes" / "1" / "status.json").read_text())
    assert status["status"] == "interrupted"


def test_launch_shows_where_its_nodes_are(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "algorithm": "dsgd", "train": {**CFG["train"], "epochs": 30}}))
    proc = launch(cfg, tmp_path / "out", "--local", "2", quiet=False)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("simbench launch: t=")]
    # while both run (the last line may come after the first one finished)
    assert any("2 of 2 running, epochs" in line and "messages" in line for line in lines), lines
