"""docs/extending.md works as written: its files, its check and its commands."""

import re
import shlex
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from simhelpers import REPO

DOC = REPO / "docs" / "extending.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def tutorial(tmp_path, monkeypatch):
    """The tutorial's files in a fresh folder (a copy of examples/ beside them), as cwd."""
    for text in blocks("python") + blocks("yaml"):
        first = text.splitlines()[0]
        if first.startswith("# ") and first[2:].strip().endswith((".py", ".yaml")):
            (tmp_path / first[2:].strip()).write_text(text)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def commands() -> list[str]:
    out = []
    for text in blocks("bash"):
        out += [c.strip() for c in text.replace("\\\n", " ").splitlines() if c.strip().startswith("simbench")]
    return out


def simbench(cmd: str, cwd, *extra: str):
    args = shlex.split(cmd)[1:]
    return subprocess.run([sys.executable, "-m", "simbench", *args, *extra], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_the_fedprox_code_is_about_forty_lines():
    code = [b for b in blocks("python") if b.startswith("# fedprox.py")][0]
    assert 30 <= len(code.splitlines()) <= 45


def test_tutorial_check_passes(tutorial):
    from simbench.testing import check_algorithm
    namespace: dict = {}
    exec((tutorial / "test_fedprox.py").read_text(), namespace)
    namespace["test_fedprox_meets_the_contract"](tutorial / "check")
    report = check_algorithm("fedprox:FedProx", {"algorithm": {"mu": 0.0}}, checks=["finishes"], out=tutorial / "mu0")
    fedavg = check_algorithm("fedavg", checks=["finishes"], out=tutorial / "fedavg")
    assert report.details["test_acc"] == fedavg.details["test_acc"]  # mu = 0 is FedAvg, to the last digit


def test_tutorial_commands_run(tutorial):
    run_cmd, matrix_cmd = commands()
    out = simbench(run_cmd, tutorial, "--set", "train.epochs=2", "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("finished: FedProx-star8-")
    matrix, report = matrix_cmd.split(" && ")
    out = simbench(matrix, tutorial, "--set", "train.epochs=2", "--quiet", "--workers", "2")
    assert out.returncode == 0, out.stderr
    out = simbench(report, tutorial)
    assert out.returncode == 0, out.stderr
    cells = pd.read_csv(tutorial / "results" / "fedprox_vs_fedavg" / "cells.csv")
    final = cells[cells.metric == "final_acc"]
    assert sorted(final["algorithm"].unique()) == ["fedavg", "fedprox"] and len(final) == 6
    assert (final["status"] == "finished").all() and (final["value"] > 0.2).all()
    assert "| fedprox |" in (tutorial / "results" / "fedprox_vs_fedavg" / "report.md").read_text()
