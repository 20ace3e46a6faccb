"""benchmarks/device_check.py: the GPU smoke check covers every registered algorithm and runs."""

import subprocess
import sys

from simhelpers import REPO

SCRIPT = REPO / "benchmarks" / "device_check.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_device_check_runs_each_algorithms_example_and_reports_it():
    out = run("--only", "ps_sync,lipizzaner")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["ps_sync"], ["lipizzaner"])]
    assert [(r[0], r[1]) for r in rows] == [("ps_sync", "finished"), ("lipizzaner", "finished")]
    acc = float(rows[0][-1])
    assert acc > 0.3  # digits, 10 classes: well above chance after two epochs of the tiny example
    assert "2/2 cases finished on cpu" in out.stdout


def test_device_check_lists_every_registered_algorithm():
    from simbench.algorithms import ALGORITHMS
    out = run("--help")
    assert all(name in out.stdout for name in ALGORITHMS)


def test_device_check_unknown_case_is_one_line():
    out = run("--only", "dsgd,sgd")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "unknown case(s) sgd" in out.stderr and "allowed: dsgd" in out.stderr
