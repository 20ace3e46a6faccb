"""Every example config runs as shipped: its header states its run time and a quick check
command, and that command (shrunk further here, for the suite's time) finishes."""

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from simhelpers import MNIST_ROOT, REPO

EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if p.name != "hosts.yaml")
SHRINK = ["--set", "dataset.max_train=1000", "--set", "dataset.max_test=200", "--set", "output.plot=false"]
LIGHTER = {"fegan_mnist": ["--set", "algorithm.rounds_per_epoch=1", "--set", "algorithm.local_steps=5"]}
"""Where SHRINK's smaller data set leaves a long run: FeGAN's devices keep their own non-iid
samples, so its epoch stays two rounds of 30 DCGAN steps on 4 devices (45 s on 2 cores)."""


def quick_command(path) -> list[str]:
    """The header's 'check in under two minutes' command, as arguments after ``simbench``."""
    lines = path.read_text().splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith("# Run time on a 2-core laptop:")]
    assert head, f"{path.name}: the first line must state its run time"
    command = lines[head[0] + 1].lstrip("# ").strip()
    assert command.startswith(f"simbench run examples/{path.name}"), command
    return shlex.split(command)[1:]


def test_every_example_states_its_run_time_and_a_quick_check():
    assert len(EXAMPLES) >= 5
    for path in EXAMPLES:
        assert path.read_text().startswith("# Run time on a 2-core laptop:"), path.name
        quick_command(path)
        text = path.read_text()
        assert "../shared" not in text and "root:" not in yaml.safe_load(text).get("dataset", {}), path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_as_shipped(path, tmp_path):
    data = yaml.safe_load(path.read_text())["dataset"]["name"]
    if data not in ("digits", "synthetic") and not (MNIST_ROOT / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
                                                     .get(data, data) / "raw").is_dir():
        pytest.skip(f"no {data} under {MNIST_ROOT} (set SIMBENCH_DATA)")
    args = quick_command(path) + SHRINK + LIGHTER.get(path.stem, []) + ["--out", str(tmp_path), "--quiet"]
    env = {"SIMBENCH_DATA": str(MNIST_ROOT), "PATH": "/usr/bin:/bin", "SIMBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "simbench", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.match(r"finished: \S+ +simulated", proc.stdout), proc.stdout
