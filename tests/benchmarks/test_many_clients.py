"""benchmarks/many_clients.py: both sides run the same FedAvg and the script reports them."""

import json
import subprocess
import sys

import pytest

from simhelpers import MNIST_ROOT, REPO

SCRIPT = REPO / "benchmarks" / "many_clients.py"
needs_mnist = pytest.mark.skipif(not (MNIST_ROOT / "MNIST").is_dir(), reason="MNIST archives not available")


@needs_mnist
def test_simbench_and_the_plain_loop_train_the_same_fedavg(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--clients", "16", "--rounds", "2", "--data-root",
                          str(MNIST_ROOT), "--json", str(tmp_path / "rows.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["side"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    plain, sim = rows["plain"], rows["simbench"]
    assert sim["status"] == "finished" and sim["execution"]["used"] == "batched"
    assert sim["execution"]["vectorized_steps"] == 2 * 16 * 5  # every client step ran batched
    for row in (plain, sim):
        assert 0 < row["startup_s"] < row["wall_s"] and row["peak_rss_mb"] > 100
        assert row["final_acc"] > 0.5  # 2 rounds of 16 x 5 steps from scratch: both learned
    assert abs(plain["final_acc"] - sim["final_acc"]) < 0.15  # the same work (batch orders differ)
    assert "simbench / plain loop: training" in out.stdout


def test_without_mnist_it_says_what_to_set(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--data-root", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "SIMBENCH_DATA" in out.stderr
