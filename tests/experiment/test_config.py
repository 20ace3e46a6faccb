"""Config validation: every mistake is one line naming the field, exit code 2, no traceback."""

import subprocess
import sys

import pytest
import yaml

from simbench.cli import main
from simbench.core.schema import ConfigError
from simbench.experiment.config import load_config, parse_config

from simhelpers import REPO

QUICKSTART = REPO / "examples" / "quickstart.yaml"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_quickstart_parses_with_seed_defaults():
    cfg = load_config(QUICKSTART)
    assert cfg.algorithm == "dsgd" and cfg.nodes == 8 and cfg.topology == {"kind": "ring"}
    assert cfg.algorithm_params.swap_timeout == 1.0  # seed 003's DSGD default
    assert cfg.network.latency.value == pytest.approx(0.005)
    assert cfg.network.bandwidth == pytest.approx(100e6 / 8)


def test_algorithm_as_mapping_and_overrides():
    cfg = parse_config({"algorithm": {"name": "fedavg", "frac_clients": 0.5}, "topology": {"kind": "star"}})
    assert cfg.algorithm == "fedavg" and cfg.algorithm_params.frac_clients == 0.5
    cfg = load_config(QUICKSTART, ["algorithm=ps_sync", "topology.kind=star", "train.epochs=2"])
    assert cfg.algorithm == "ps_sync" and cfg.train.epochs == 2 and cfg.topology["kind"] == "star"


def test_run_id_is_deterministic_and_ignores_output():
    a = load_config(QUICKSTART)
    b = load_config(QUICKSTART, ["output.dir=/elsewhere"])
    c = load_config(QUICKSTART, ["seed=1"])
    assert a.run_id() == b.run_id() != c.run_id()


@pytest.mark.parametrize("text, needle", [
    ("trian: {epochs: 3}", "trian: unknown field in config (did you mean 'train'?)"),
    ("algorithm: dsdg", "algorithm: 'dsdg' is not allowed; allowed: dsgd, fedavg, ps_sync"),
    ("train: {epochs: many}", "train.epochs: expected an integer, got 'many'"),
    ("train: {lr: -1}", "train.lr: -1.0 must be > 0"),
    ("network: {bandwidth: 10 parsecs}", "network.bandwidth:"),
    ("network: {loss: 1.5}", "network.loss: 1.5 must be a probability in [0, 1]"),
    ("algorithm: {name: dsgd, wieght: 2}", "algorithm.wieght: unknown field in algorithm (did you mean 'weight'?)"),
    ("scenario: {crashes: [{node: 99, at: 1}]}", "scenario.crashes[0].node: node 99 does not exist"),
    ("dataset: {name: imagenet}", "dataset.name: 'imagenet' is not allowed; allowed: digits"),
])
def test_config_errors_name_the_field(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    path = write(tmp_path, yaml.safe_dump({"algorithm": "nope"}))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simbench: algorithm: 'nope' is not allowed; allowed: dsgd")
    assert len(err.splitlines()) == 1


def test_cli_subprocess_misspelt_field_no_traceback(tmp_path):
    path = write(tmp_path, "nodes: 4\nmodle: {name: mlp}\n")
    proc = subprocess.run([sys.executable, "-m", "simbench", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "simbench: modle: unknown field in config (did you mean 'model'?); allowed: name, seed, nodes, topology, "
        "algorithm, dataset, model, train, network, compute, scenario, population, device, execution, time_limit, "
        "output"
    )


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^config .*c.yaml is not valid YAML at line 3: "):
        load_config(write(tmp_path, "nodes: 4\ntrain: {epochs: [\n"))


def test_help_lists_algorithms_topologies_with_their_parameters_datasets_and_knobs(capsys):
    from simbench.algorithms import ALGORITHMS
    from simbench.topology import BUILDERS

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in ALGORITHMS:
        assert f"\n  {name} " in out
    topo = next(line for line in out.splitlines() if line.startswith("topologies:"))
    assert all(kind in topo for kind in BUILDERS)
    assert "star (hubs)" in topo and "torus (rows, cols)" in topo and "erdos_renyi (p)" in topo
    for word in ("mnist", "fashion_mnist", "digits", "stragglers", "weak_workers", "crashes", "partitions", "loss"):
        assert word in out
