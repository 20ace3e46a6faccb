"""Defaults that shape an experiment: the defaults table, local_epochs, normalize, and the
data split summary and evaluation record of every run directory."""

import json

import numpy as np
import pytest
import torch

from simbench.cli import main
from simbench.core.schema import ConfigError
from simbench.data import DatasetError, load_dataset
from simbench.experiment.build import build_nodes
from simbench.experiment.config import parse_config
from simbench.experiment.defaults import defaults_markdown, field_docs
from simbench.experiment.config import DatasetSpec
from simbench.experiment.run import run_experiment

from simhelpers import REPO

FEDAVG = {"seed": 0, "nodes": 6, "topology": {"kind": "star"},
          "dataset": {"name": "digits", "partition": "shards", "max_train": 500, "max_test": 100},
          "model": {"name": "mlp", "options": {"hidden": [8]}},
          "train": {"batch_size": 10, "lr": 0.1, "eval_samples": 50},
          "output": {"wall_clock": False, "progress": False, "plot": False}}


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_defaults_table_lists_the_silent_defaults_and_matches_the_docs(capsys):
    text = defaults_markdown()
    for row in ("| `dataset.val_fraction` | `0.0` |", "| `train.eval_samples` | `2000` |",
                "| `dataset.normalize` | `standard` |", "| `dataset.partition` | `iid` |",
                "| `algorithm.local_epochs` | `null` |", "| `algorithm.rounds` | `null` |",
                "| `dataset.shards_per_client` | `2` |"):
        assert row in text
    assert "null = train.epochs" in text and "McMahan et al. 2017" in text
    assert main(["list", "--defaults"]) == 0
    assert capsys.readouterr().out == text
    assert (REPO / "docs" / "defaults.md").read_text() == text, "regenerate: simbench list --defaults > docs/defaults.md"


def test_field_docs_reads_attribute_docstrings():
    docs = field_docs(DatasetSpec)
    assert docs["val_fraction"].startswith("Validation split carved from each node's shard")
    assert "Hsu et al. 2019" in docs["dirichlet"]


def _client_steps(algo: dict, **data) -> tuple[int, int]:
    cfg = parse_config({**FEDAVG, "algorithm": {"name": "fedavg", **algo},
                        "dataset": {**FEDAVG["dataset"], **data}})
    built = build_nodes(cfg)
    client = built.nodes[1]
    return client.local_steps(), client.learner.steps_per_epoch


def test_local_epochs_is_passes_over_the_shard():
    steps, spe = _client_steps({"local_epochs": 3})
    assert spe == 10 and steps == 30  # 500 samples over 5 clients, B = 10: u = E n / B = 3 * 100 / 10
    assert _client_steps({"local_steps": 7})[0] == 7
    assert _client_steps({})[0] == 10  # neither: one pass


def test_local_epochs_and_local_steps_exclude_each_other():
    with pytest.raises(ConfigError, match="^algorithm.local_epochs: set local_epochs .* or local_steps .* not both"):
        parse_config({**FEDAVG, "algorithm": {"name": "fedavg", "local_epochs": 1, "local_steps": 5}})
    with pytest.raises(ConfigError, match="^algorithm.local_epochs: .*not both"):
        parse_config({**FEDAVG, "algorithm": {"name": "flgan", "local_epochs": 1, "local_steps": 5}})


def test_flgan_local_epochs_sets_the_device_steps():
    base = {**FEDAVG, "dataset": {"name": "digits", "partition": "iid", "max_train": 400, "max_test": 100},
            "model": {"name": "lsgan", "options": {"width": 8}}, "train": {"batch_size": 20}}
    cfg = parse_config({**base, "algorithm": {"name": "flgan", "local_epochs": 2, "latent_dim": 8, "grid": 0}})
    built = build_nodes(cfg)
    device = built.nodes[1]
    assert device.learner.steps_per_epoch == 4 and device.local_steps() == 8  # 80 samples, B = 20
    cfg = parse_config({**base, "algorithm": {"name": "flgan", "latent_dim": 8, "grid": 0}})
    assert build_nodes(cfg).nodes[1].local_steps() == 100  # the seed's default


def test_normalize_scales_the_pixels():
    unit, raw, std = (load_dataset("digits", normalize=n).x_train for n in ("unit", "none", "standard"))
    assert float(unit.min()) == 0.0 and float(unit.max()) == 1.0
    assert float(raw.max()) == 16.0 and torch.allclose(raw / 16.0, unit)
    assert abs(float(std.mean())) < 1e-4
    with pytest.raises(DatasetError, match="dataset.normalize: unknown 'z'"):
        load_dataset("digits", normalize="z")
    with pytest.raises(ConfigError, match="dataset.normalize"):
        parse_config({**FEDAVG, "dataset": {"normalize": "minmax"}})


def test_custom_loader_keeps_its_own_scaling():
    def loader(root, *, download=True, seed=0):
        return load_dataset("synthetic")
    with pytest.raises(DatasetError, match="dataset.normalize: unit applies to the built-in data sets"):
        load_dataset("mine", loader=loader, normalize="unit")


@pytest.mark.parametrize("plot", [True, False])
def test_run_directory_has_the_split_summary_and_evaluation_record(tmp_path, plot):
    cfg = parse_config({**FEDAVG, "algorithm": {"name": "fedavg", "rounds": 1},
                        "output": {**FEDAVG["output"], "plot": plot}})
    res = run_experiment(cfg, tmp_path)
    text = (res.run_dir / "data_split.txt").read_text()
    lines = text.splitlines()
    assert "partition shards (shards_per_client 2)" in lines[0] and "val_fraction 0.0" in lines[0]
    rows = [ln.split() for ln in lines[2:-1]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]  # the five clients, not the server
    counts = np.array([[int(v) for v in r[3:]] for r in rows])
    assert (counts.sum(axis=1) == [int(r[1]) for r in rows]).all()
    assert ((counts > 0).sum(axis=1) == [int(r[2]) for r in rows]).all()
    assert counts.sum() == 500 and "distinct class sets" in lines[-1]
    assert (res.run_dir / "data_split.png").exists() == plot
    ev = json.loads((res.run_dir / "manifest.json").read_text())["evaluation"]
    assert ev == {"test_samples": 50, "test_set_size": 100, "train_eval_samples_per_node": 50,
                  "val_fraction": 0.0, "normalize": "standard"}


def test_fedavg_stops_at_the_target_accuracy(tmp_path):
    cfg = parse_config({**FEDAVG, "dataset": {**FEDAVG["dataset"], "partition": "iid"},
                        "algorithm": {"name": "fedavg", "rounds": 50, "stop_accuracy": 0.5}})
    res = run_experiment(cfg, tmp_path)
    server = res.epochs[res.epochs["node"] == "0"]
    acc = server["test_acc"].to_numpy()
    assert acc[-1] >= 0.5 and (acc[:-1] < 0.5).all() and len(acc) < 51


def test_a_flower_partitioner_splits_a_run_and_its_summary_names_it(tmp_path):
    pytest.importorskip("flwr_datasets")
    cfg = parse_config({**FEDAVG, "dataset": {**FEDAVG["dataset"], "partition": "flwr",
                                              "flwr": {"name": "PathologicalPartitioner", "num_classes_per_partition": 2}},
                        "algorithm": {"name": "fedavg", "rounds": 1}})
    res = run_experiment(cfg, tmp_path)
    lines = (res.run_dir / "data_split.txt").read_text().splitlines()
    assert "partition flwr (name PathologicalPartitioner, num_classes_per_partition 2)" in lines[0]
    rows = [ln.split() for ln in lines[2:-1]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"] and all(r[2] == "2" for r in rows)
    assert res.status == "finished"
    with pytest.raises(ConfigError, match="dataset.partition: flwr: name must be one of"):
        run_experiment(parse_config({**FEDAVG, "dataset": {**FEDAVG["dataset"], "partition": "flwr"}}), tmp_path / "x")
