"""A package outside the repository, made here, brings an algorithm and a model: through
entry points and through import paths, into the contract check, `simbench run`,
`simbench matrix` and `simbench list`; bad names are one-line errors."""

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from simbench import registry
from simbench.core.schema import ConfigError
from simbench.experiment.config import parse_config
from simbench.testing import check_algorithm

ALGOS = '''
"""FedAvgM (Hsu et al. 2019): FedAvg whose server steps with momentum on the averaged update."""
from dataclasses import dataclass

from simbench.algorithms.fedavg import FedAvg, FedAvgClient, FedAvgParams, FedAvgServer


@dataclass(frozen=True)
class FedAvgMParams(FedAvgParams):
    beta: float = 0.9


class Server(FedAvgServer):
    velocity = None

    def aggregate(self, updates):
        x = self.learner.get_flat()
        step = x - super().aggregate(updates)
        self.velocity = step if self.velocity is None else self.velocity.mul_(self.params.beta).add_(step)
        return x - self.velocity


class FedAvgM(FedAvg):
    name = "fedavgm"
    Params = FedAvgMParams
    summary = "FedAvgM: FedAvg with server momentum"

    @classmethod
    def make_node(cls, ctx):
        return Server(ctx) if ctx.role == "server" else FedAvgClient(ctx)


NOT_AN_ALGORITHM = 42
'''
MODELS = '''
from torch import nn


def tiny(input_shape, num_classes, width=8):
    """A one-hidden-layer net."""
    n = 1
    for s in input_shape:
        n *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU(), nn.Linear(width, num_classes))
'''
ENTRY_POINTS = """
[simbench.algorithms]
fedavgm = extpkg.algos:FedAvgM

[simbench.models]
tiny = extpkg.models:tiny
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder on sys.path holding the package ``extpkg`` and its installed metadata."""
    root = tmp_path_factory.mktemp("site")
    (root / "extpkg").mkdir()
    (root / "extpkg" / "__init__.py").write_text("")
    (root / "extpkg" / "algos.py").write_text(textwrap.dedent(ALGOS))
    (root / "extpkg" / "models.py").write_text(textwrap.dedent(MODELS))
    info = root / "extpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path.insert(0, str(root))
    registry.clear_cache()
    yield root
    sys.path.remove(str(root))
    registry.clear_cache()


def cli(site, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "simbench", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


BASE = {"nodes": 6, "topology": {"kind": "star"}, "dataset": {"name": "digits", "max_train": 600},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.1},
        "output": {"wall_clock": False, "plot": False, "progress": False}}


def test_entry_points_and_import_paths_resolve_with_their_source(site):
    entry = registry.resolve("algorithms", "fedavgm")
    assert entry.source == "entry point of extpkg" and entry.obj.name == "fedavgm"
    assert registry.resolve("algorithms", "extpkg.algos:FedAvgM").obj is entry.obj
    assert registry.resolve("models", "tiny").source == "entry point of extpkg"
    assert registry.resolve("algorithms", "fedavg").source == "simbench"
    listed = {e.name: e.source for e in registry.catalogue("algorithms")}
    assert listed["fedavgm"] == "entry point of extpkg" and listed["dsgd"] == "simbench"


def test_the_outside_algorithm_and_model_pass_the_contract(site, tmp_path):
    report = check_algorithm("fedavgm", {"model": {"name": "tiny", "options": {"width": 16}}}, out=tmp_path)
    assert report.passed == ["finishes", "deterministic", "crash", "real"]
    assert report.details["test_acc"] > 0.2  # 10 classes: it learns


@pytest.mark.parametrize("bad, message", [
    ("nosuchpkg.mod:Algo", "algorithm: cannot import 'nosuchpkg.mod' for 'nosuchpkg.mod:Algo' (ModuleNotFoundError"),
    ("extpkg.algos:Nope", "algorithm: module 'extpkg.algos' has no 'Nope' (from 'extpkg.algos:Nope')"),
    ("extpkg.algos:NOT_AN_ALGORITHM", "algorithm: 'extpkg.algos:NOT_AN_ALGORITHM' is int 42, not an Algorithm subclass"),
    ("fedavgn", "algorithm: 'fedavgn' is not allowed; allowed: dsgd, fedavg,"),
])
def test_a_bad_algorithm_name_is_one_line(site, bad, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "algorithm": bad})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_bad_model_name_is_one_line(site):
    with pytest.raises(ConfigError, match=r"^model.name: 'extpkg.algos:NOT_AN_ALGORITHM' is int 42, not a model "
                                          r"factory \(a callable\)$"):
        parse_config({**BASE, "algorithm": "fedavg", "model": {"name": "extpkg.algos:NOT_AN_ALGORITHM"}})


def test_list_shows_installed_names_with_their_package(site):
    out = cli(site, "list")
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.splitlines() if x.strip().startswith("fedavgm")][0]
    assert "FedAvgM: FedAvg with server momentum" in line and "[entry point of extpkg]" in line
    assert "tiny (entry point of extpkg)" in out.stdout


def test_run_and_matrix_use_outside_names_next_to_built_in_ones(site, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "name": "ext", "algorithm": {"name": "fedavgm", "beta": 0.5},
                                   "model": {"name": "tiny"}}))
    out = cli(site, "run", str(cfg), "--out", str(tmp_path / "r"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("finished: fedavgm-star6-s0-")
    out = cli(site, "run", str(cfg), "--out", str(tmp_path / "r"), "--quiet",
              "--set", "algorithm.name=extpkg.algos:FedAvgM", "--set", "model.name=extpkg.models:tiny")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("finished: FedAvgM-star6-s0-")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "ext", "base": {**BASE, "model": {"name": "tiny"}},
                                      "axes": {"algorithm": ["fedavg", "fedavgm", "extpkg.algos:FedAvgM"]}}))
    out = cli(site, "matrix", str(matrix), "--out", str(tmp_path / "m"), "--workers", "2", "--quiet")
    assert out.returncode == 0, out.stderr
    cells = pd.read_csv(tmp_path / "m" / "ext" / "cells.csv")
    final = cells[cells.metric == "final_acc"].set_index("algorithm")
    assert (final["status"] == "finished").all() and (final["value"] > 0.2).all()
    # the entry point and the import path name the same class: the same run, to the last digit
    assert final.loc["fedavgm", "value"] == final.loc["extpkg.algos:FedAvgM", "value"]
    assert final.loc["fedavgm", "value"] != final.loc["fedavg", "value"]
