"""Benchmark matrices: expansion, one-line rejection of bad input, failures, resume, executors."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from simbench.cli import main
from simbench.core.schema import ConfigError
from simbench.experiment.executors import LocalExecutor, SerialExecutor
from simbench.experiment.matrix import METRICS, bytes_at, load_matrix, parse_matrix, run_matrix, summarize

from simhelpers import REPO
BASE = {
    "seed": 0, "nodes": 4, "topology": {"kind": "ring"}, "algorithm": "dsgd",
    "dataset": {"name": "digits", "partition": "iid"},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.1, "eval_samples": 200},
    "network": {"latency": "5ms", "bandwidth": "100Mbit/s"},
    "output": {"wall_clock": False, "plot": False, "progress": False},
}
TINY = {"name": "tiny", "base": BASE, "axes": {"algorithm": ["dsgd", "fedavg"], "topology.kind": ["ring", "star"],
                                              "seed": [0, 1]},
        "exclude": [{"algorithm": "fedavg", "topology.kind": "ring"}], "target_accuracy": 0.5}


def fake_runner(cfg, run_dir, progress=False):
    """Stands in for run_experiment: a run directory and tables shaped like a real run's."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text("{}")
    rate = 0.5 + 0.1 * cfg.seed
    epochs = pd.DataFrame([{"node": "avg", "epoch": e, "time_s": float(e), "test_acc": 1 - math.exp(-rate * e)}
                           for e in range(1, cfg.train.epochs + 1)])
    events = pd.DataFrame([(float(e), 0.0, "0", "bytes_sent", 100.0 * e) for e in range(1, cfg.train.epochs + 1)]
                          + [(float(cfg.train.epochs), 0.0, "0", "bytes_sent_total", 100.0 * cfg.train.epochs),
                             (float(cfg.train.epochs), 0.0, "0", "msgs_sent_total", 7.0)],
                          columns=["time_s", "wall_s", "node", "metric", "value"])
    return SimpleNamespace(status="finished", sim_time=float(cfg.train.epochs), wall_time=0.01, events=events, epochs=epochs)


def failing_on(cell_filter, exc=RuntimeError("the cell broke\nsecond line")):
    def runner(cfg, run_dir, progress=False):
        if cell_filter(cfg):
            raise exc
        return fake_runner(cfg, run_dir, progress)
    return runner


def cell_files(root):
    return sorted(Path(root).glob("runs/*/*/cell.json"))


def matrix_process(path, out):
    """``simbench matrix PATH --out OUT`` as a real process with one worker, for stories that
    signal it; stderr is kept for the failure message."""
    return subprocess.Popen([sys.executable, "-m", "simbench.cli", "matrix", str(path), "--out", str(out),
                             "--workers", "1", "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# -- expansion ---------------------------------------------------------------------------------
def test_product_minus_exclude_in_axis_order():
    m = parse_matrix(TINY)
    assert len(m.cells) == 2 * 2 * 2 - 2
    assert [c.labels for c in m.cells[:3]] == [
        {"algorithm": "dsgd", "topology.kind": "ring", "seed": "0"},
        {"algorithm": "dsgd", "topology.kind": "ring", "seed": "1"},
        {"algorithm": "dsgd", "topology.kind": "star", "seed": "0"},
    ]
    star = m.cells[-1]
    assert star.cfg.algorithm == "fedavg" and star.cfg.topology == {"kind": "star"} and star.cfg.seed == 1
    assert all(c.cfg.name == "tiny" for c in m.cells)
    assert [c.id for c in m.cells] == [c.id for c in parse_matrix(TINY).cells]  # deterministic ids
    assert len({c.id for c in m.cells}) == len(m.cells)


def test_named_values_set_and_exclude_lists():
    spec = {"name": "n", "base": BASE, "set": {"train.epochs": 3},
            "axes": {"algorithm": ["dsgd", "fedavg", "ps_sync"], "topology.kind": ["ring", "torus", "star"],
                     "scenario": {"none": {}, "crash": {"crashes": [{"node": 1, "at": 0.5}]}}},
            "exclude": [{"algorithm": ["fedavg", "ps_sync"], "topology.kind": ["ring", "torus"]}]}
    m = parse_matrix(spec)
    assert len(m.cells) == (3 + 2) * 2
    crash = [c for c in m.cells if c.labels["scenario"] == "crash"]
    assert all(c.cfg.scenario.crashes[0].node == 1 and c.cfg.train.epochs == 3 for c in crash)
    assert {c.labels["topology.kind"] for c in m.cells if c.cfg.algorithm != "dsgd"} == {"star"}


def test_a_bundle_axis_sets_several_paths_together():
    """PS shards need the algorithm's shards, the star's hubs and the node count to move as one."""
    spec = {"name": "b", "base": {**BASE, "nodes": 9, "topology": {"kind": "star"}},
            "axes": {"algorithm": {"sync": {"name": "ps_sync"}, "async": {"name": "ps_async"}},
                     "shards": {str(k): {"set": {"algorithm.shards": k, "topology.hubs": k, "nodes": 8 + k}}
                                for k in (1, 2, 4)}}}
    m = parse_matrix(spec)
    assert [c.labels["shards"] for c in m.cells] == ["1", "2", "4"] * 2
    for c in m.cells:
        k = int(c.labels["shards"])
        assert (c.cfg.algorithm_params.shards, c.cfg.topology["hubs"], c.cfg.nodes) == (k, k, 8 + k)
    assert {c.cfg.algorithm for c in m.cells} == {"ps_sync", "ps_async"}
    assert m.spec()["axes"][1] == {"path": "shards", "labels": ["1", "2", "4"]}


def test_base_file_is_relative_to_the_matrix_and_shipped_matrices_parse(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (tmp_path / "sub" / "m.yaml").write_text(yaml.safe_dump({"base": "../base.yaml", "axes": {"seed": [0, 1, 2]}}, sort_keys=False))
    m = load_matrix(tmp_path / "sub" / "m.yaml", ["train.epochs=1"])
    assert m.name == "m" and len(m.cells) == 3 and m.cells[0].cfg.train.epochs == 1
    for path in sorted((REPO / "benchmarks" / "matrices").glob("*.yaml")):
        assert len(load_matrix(path).cells) > 1, path


@pytest.mark.parametrize("change, needle", [
    ({"axes": {"topolgy.kind": ["ring"]}}, "axes.topolgy.kind: 'topolgy' is not a config field (did you mean 'topology'?)"),
    ({"axes": {"train.epoch": [1, 2]}}, "axes.train.epoch: 'train.epoch' is not a config field (did you mean 'epochs'?)"),
    ({"axes": {"algorithm": ["dsgd", "fedvg"]}}, "cell {algorithm: fedvg}: algorithm: 'fedvg' is not allowed"),
    ({"axes": {"topology.kind": ["ring", "rnig"]}}, "cell {topology.kind: rnig}: topology: unknown topology kind 'rnig'"),
    ({"axes": {"seed": []}}, "axes.seed: empty axis"),
    ({"axes": {}}, "axes: expected a non-empty mapping"),
    ({"axes": {"seed": [0, 1, 0]}}, "axes.seed: value '0' appears twice"),
    ({"axes": {"scenario": {"calm": {}, "quiet": {}}}}, "cell {scenario: quiet}: same config as {scenario: calm}"),
    ({"axes": {"algorithm": ["fedavg"], "topology.kind": ["ring", "star"]}},
     "cell {algorithm: fedavg, topology.kind: ring}: topology: fedavg needs a server"),
    ({"base": {**BASE, "train": {"epochs": 0}}}, "base: train.epochs: 0 must be in [1, 1000000]"),
    ({"base": "missing.yaml"}, "base: file missing.yaml does not exist"),
    ({"exclude": [{"sead": 0}]}, "exclude[0].sead: not an axis (did you mean 'seed'?)"),
    ({"exclude": [{"seed": 7}]}, "exclude[0].seed: '7' is not a value of the axis"),
    ({"exclude": [{"seed": [0, 1]}]}, "exclude: removes every cell of the matrix"),
    ({"sett": {}}, "sett: unknown matrix field (did you mean 'set'?)"),
    ({"set": {"trian.epochs": 2}}, "set.trian.epochs: 'trian' is not a config field (did you mean 'train'?)"),
    ({"target_accuracy": 80}, "target_accuracy: expected a number in (0, 1]"),
    ({"axes": {"size": {"s": {"set": {"nodse": 4}}}}}, "axes.size.s.set.nodse: 'nodse' is not a config field (did you mean 'nodes'?)"),
    ({"axes": {"size": {"s": {"set": {}}}}}, "axes.size.s.set: expected a non-empty mapping of dotted paths"),
    ({"axes": {"size": {"s": {"nodes": 4}}}}, "axes.size: 'size' is not a config field"),
])
def test_bad_input_is_one_line_naming_the_problem(change, needle):
    spec = {"name": "bad", "base": BASE, "axes": {"seed": [0, 1]}, **change}
    with pytest.raises(ConfigError) as info:
        parse_matrix(spec)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_rejects_before_running_with_exit_2(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**TINY, "exclude": []}, sort_keys=False))
    assert main(["matrix", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simbench: cell {algorithm: fedavg, topology.kind: ring, seed: 0}: topology:")
    assert "exclude" in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_dry_run_into_a_closed_pipe_is_quiet(tmp_path):
    """`simbench matrix --dry-run | head -1`: the reader leaves early; no traceback, exit 0."""
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "simbench.cli", "matrix", str(path), "--dry-run"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# -- summaries ---------------------------------------------------------------------------------
def test_bytes_are_interpolated_per_node_and_summed():
    ev = pd.DataFrame([(2.0, 0, "0", "bytes_sent", 200.0), (4.0, 0, "0", "bytes_sent_total", 400.0),
                       (4.0, 0, "1", "bytes_sent_total", 40.0)], columns=["time_s", "wall_s", "node", "metric", "value"])
    assert bytes_at(ev, [0.0, 1.0, 2.0, 3.0, 5.0]) == [0.0, 110.0, 220.0, 330.0, 440.0]


def test_summary_time_to_target_and_failures():
    epochs = pd.DataFrame({"node": ["avg", "0", "avg", "avg"], "epoch": [1, 1, 2, 3], "time_s": [1.0, 1.0, 2.5, 4.0],
                           "test_acc": [0.4, 0.99, 0.85, 0.8]})
    events = pd.DataFrame([(1.5, 0, "2", "crash", 1.0)], columns=["time_s", "wall_s", "node", "metric", "value"])
    s = summarize(events, epochs, target=0.8)
    assert s["metrics"]["final_acc"] == 0.8 and s["metrics"]["best_acc"] == 0.85
    assert s["metrics"]["time_to_target_s"] == 2.5 and s["metrics"]["failures"] == 1.0
    assert s["faults"] == [{"time_s": 1.5, "node": "2", "kind": "crash"}]
    assert math.isnan(summarize(events, epochs, target=0.9)["metrics"]["time_to_target_s"])
    assert math.isnan(s["metrics"]["final_fid"]) and math.isnan(s["metrics"]["best_fid"])  # a classifier


def test_gan_summary_carries_the_global_generators_fid():
    """GAN runs log no accuracy: their curve and metrics come from the avg rows' FID."""
    epochs = pd.DataFrame({"node": ["avg", "3", "avg", "avg"], "epoch": [0, 1, 1, 2], "time_s": [0.0, 1.0, 1.0, 2.0],
                           "test_acc": [math.nan] * 4, "fid": [1839.0, 90.0, 480.0, 530.0]})
    events = pd.DataFrame([(2.0, 0, "0", "bytes_sent_total", 900.0)], columns=["time_s", "wall_s", "node", "metric", "value"])
    s = summarize(events, epochs, target=0.8, quality="fid")
    assert s["metrics"]["final_fid"] == 530.0 and s["metrics"]["best_fid"] == 480.0  # node 3's 90 is not the global model
    assert math.isnan(s["metrics"]["final_acc"]) and math.isnan(s["metrics"]["best_acc"])
    assert s["curve"]["epoch"] == [0, 1, 2] and s["curve"]["fid"] == [1839.0, 480.0, 530.0]
    assert s["curve"]["bytes_sent"][-1] == 900.0


# -- running, failures and resume ---------------------------------------------------------------
def test_failing_cell_is_recorded_and_the_rest_completes(tmp_path):
    m = parse_matrix(TINY)
    runner = failing_on(lambda cfg: cfg.algorithm == "fedavg" and cfg.seed == 1)
    res = run_matrix(m, tmp_path, executor=SerialExecutor(), runner=runner, progress=False)
    assert (res.ran, res.skipped, res.failed) == (6, 0, 1)
    table = pd.read_csv(tmp_path / "tiny" / "cells.csv")
    assert len(table) == len(m.cells) * len(METRICS)
    per_cell = table.drop_duplicates("cell").set_index("cell")
    bad = m.cells[-1].id
    assert per_cell.loc[bad, "status"] == "failed" and per_cell.loc[bad, "error"] == "RuntimeError: the cell broke"
    assert (per_cell.drop(bad)["status"] == "finished").all()
    assert table[(table.cell != bad) & (table.metric == "final_acc")]["value"].notna().all()
    assert json.loads((res.root / "runs" / "tiny" / bad / "cell.json").read_text())["status"] == "failed"
    assert len(pd.read_parquet(tmp_path / "tiny" / "cells.parquet")) == len(table)
    # keep the failure, then redo it once the bug is gone
    again = run_matrix(m, tmp_path, executor=SerialExecutor(), runner=fake_runner, progress=False, retry_failed=False)
    assert (again.ran, again.skipped) == (0, 6)
    fixed = run_matrix(m, tmp_path, executor=SerialExecutor(), runner=fake_runner, progress=False)
    assert (fixed.ran, fixed.skipped, fixed.failed) == (1, 5, 0)
    assert (fixed.cells.drop_duplicates("cell")["status"] == "finished").all()


def test_interrupt_mid_matrix_then_rerun_skips_finished_cells(tmp_path):
    m = parse_matrix(TINY)
    third = m.cells[2].id
    with pytest.raises(KeyboardInterrupt):
        run_matrix(m, tmp_path, executor=SerialExecutor(), progress=False,
                   runner=failing_on(lambda cfg: cfg.run_id() == third, KeyboardInterrupt()))
    done = {p: p.stat().st_mtime_ns for p in cell_files(tmp_path / "tiny")}
    assert len(done) == 2 and len(pd.read_csv(tmp_path / "tiny" / "cells.csv")) == 2 * len(METRICS)
    time.sleep(0.02)
    res = run_matrix(m, tmp_path, executor=SerialExecutor(), runner=fake_runner, progress=False)
    assert (res.ran, res.skipped) == (4, 2)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished cells untouched
    table = pd.read_csv(tmp_path / "tiny" / "cells.csv")
    assert len(table) == len(m.cells) * len(METRICS)
    assert not table.duplicated(["cell", "metric"]).any()


def test_kill_9_mid_matrix_then_rerun_redoes_only_the_partial_cell(tmp_path):
    """Real runs (digits, 2 epochs, 4 nodes) in a worker process; the matrix process is
    SIGKILLed once the first cell is done, and the rerun completes the matrix."""
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    out = tmp_path / "out"
    proc = matrix_process(path, out)
    deadline = time.time() + 60
    while not cell_files(out / "tiny") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in cell_files(out / "tiny")}
    assert 1 <= len(first) < 6, proc.stderr.read().decode()[-2000:]
    time.sleep(0.5)  # the worker dies with its parent (PDEATHSIG): nothing more appears
    assert {p: p.stat().st_mtime_ns for p in cell_files(out / "tiny")} == first
    statuses = {p.parent.name: (json.loads(p.read_text())["status"], json.loads(p.read_text()).get("error"))
                for p in first}
    assert all(s == "finished" for s, _ in statuses.values()), statuses
    res = run_matrix(load_matrix(path), out, executor=SerialExecutor(), progress=False)
    assert res.skipped == len(first) and res.ran == 6 - len(first) and res.failed == 0
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())
    table = pd.read_csv(out / "tiny" / "cells.csv")
    assert len(table) == 6 * len(METRICS) and not table.duplicated(["cell", "metric"]).any()
    assert (table["status"] == "finished").all()
    for cell in table["cell"].unique():
        run_dir = out / "tiny" / "runs" / "tiny" / cell
        assert {"events.csv", "epochs.csv", "manifest.json", "cell.json"} <= {p.name for p in run_dir.iterdir()}
    acc = table[table.metric == "final_acc"]["value"]
    assert (acc > 0.25).all()  # they learned (chance is 0.1; D-SGD swaps once per round of round_cnt steps)


def test_sigterm_mid_cell_records_the_run_as_interrupted_not_running(tmp_path):
    """A matrix stopped with SIGTERM (or Ctrl-C) while a worker is minutes into a cell: the
    worker's run writes its rows and says ``interrupted``; it gets no cell.json (a rerun redoes
    it) and the command exits 130 within the stop's grace period."""
    long = {**BASE, "train": {**BASE["train"], "epochs": 5000}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "long", "base": long, "axes": {"seed": [0]}}, sort_keys=False))
    out = tmp_path / "out"
    proc = matrix_process(path, out)
    manifests = out / "long" / "runs" / "long"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(manifests.glob("*/manifest.json")):
        time.sleep(0.1)  # the manifest says running just before the simulation starts
    time.sleep(1.0)  # a second into 5000 epochs: the run is simulating
    assert proc.poll() is None and list(manifests.glob("*/manifest.json")), proc.stderr.read().decode()[-2000:]
    stopped = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert time.time() - stopped < 15
    (run_dir,) = manifests.iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and "SIGTERM" in manifest["error"]
    assert not (run_dir / "cell.json").exists()
    assert len(pd.read_csv(run_dir / "events.csv")) > 2


def test_dask_local_cluster_gives_the_same_table_as_the_local_pool(tmp_path):
    distributed = pytest.importorskip("distributed")
    from simbench.experiment.executors import DaskExecutor

    m = parse_matrix({**TINY, "axes": {"algorithm": ["dsgd", "fedavg"], "topology.kind": ["star"]}, "exclude": []})
    local = run_matrix(m, tmp_path / "local", executor=LocalExecutor(2), progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = DaskExecutor(cluster.scheduler_address)
        try:
            remote = run_matrix(m, tmp_path / "dask", executor=dask, progress=False)
        finally:
            dask.close()
    a, b = (pd.read_csv(p / "tiny" / "cells.csv") for p in (tmp_path / "local", tmp_path / "dask"))
    assert local.failed == remote.failed == 0 and len(a) == 2 * len(METRICS)
    a, b = (t[t.metric != "wall_time_s"].reset_index(drop=True) for t in (a, b))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
