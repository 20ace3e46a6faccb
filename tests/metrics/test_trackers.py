"""Trackers get the same rows as events.csv, live, with simulated milliseconds as the step."""

import sys
import types

import pandas as pd
import pytest

from simbench.experiment.config import parse_config
from simbench.experiment.run import run_experiment

from conftest import QUIET

TINY = {"name": "tr", "nodes": 4, "topology": {"kind": "ring"}, "dataset": {"name": "digits", "max_train": 400},
        "model": {"name": "mlp", "options": {"hidden": [8]}}, "train": {"epochs": 2, "eval_samples": 100},
        "compute": {"step_time": "10ms"}}


def test_tensorboard_event_files_hold_the_runs_rows_and_tensorboard_reads_them(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run_experiment(parse_config({**TINY, "output": {**QUIET, "trackers": ["tensorboard"]}}), tmp_path)
    acc = EventAccumulator(str(res.run_dir / "tensorboard"))
    acc.Reload()
    avg = res.epochs[res.epochs["node"] == "avg"]
    points = acc.Scalars("test_acc/avg")
    assert [p.step for p in points] == [round(t * 1000) for t in avg["time_s"]]  # simulated milliseconds
    assert [p.value for p in points] == pytest.approx(list(avg["test_acc"]), abs=1e-6)
    totals = res.events[res.events["metric"] == "bytes_sent_total"]
    assert {f"bytes_sent_total/node{n}" for n in totals["node"]} <= set(acc.Tags()["scalars"])


def test_the_mlflow_tracker_logs_every_row_with_the_config_as_parameters(tmp_path, monkeypatch):
    calls = {"metrics": [], "params": {}}
    fake = types.SimpleNamespace(
        set_tracking_uri=lambda uri: calls.update(uri=uri), set_experiment=lambda name: calls.update(exp=name),
        start_run=lambda run_name: calls.update(run=run_name), end_run=lambda: calls.update(ended=True),
        log_params=lambda p: calls["params"].update(p),
        log_metric=lambda key, value, step: calls["metrics"].append((key, value, step)))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    res = run_experiment(parse_config({**TINY, "output": {**QUIET, "trackers": ["mlflow"]}}), tmp_path)
    assert calls["exp"] == "tr" and calls["run"] == res.run_id and calls["ended"]
    assert calls["uri"] == (tmp_path / "mlruns").resolve().as_uri()
    assert calls["params"]["train.epochs"] == "2" and calls["params"]["algorithm.name"] == "dsgd"
    logged = pd.DataFrame(calls["metrics"], columns=["key", "value", "step"])
    ev = res.events.dropna(subset=["value"])
    assert len(logged) == len(ev)  # every row of events.csv, no more
    acc = logged[logged["key"] == "test_acc/avg"]
    avg = res.epochs[res.epochs["node"] == "avg"]
    assert list(acc["step"]) == [round(t * 1000) for t in avg["time_s"]]


def test_an_unknown_tracker_is_a_one_line_error():
    from simbench.core.schema import ConfigError
    with pytest.raises(ConfigError, match=r"^output.trackers: \('wandb',\) is not allowed; allowed: tensorboard, mlflow$"):
        parse_config({**TINY, "output": {"trackers": ["wandb"]}})
