"""A run never reports a wrong result as a good one: truthful status, confined paths, strict
values, one-line errors, clocks that stop with the run (one story per case of the hostile
and clumsy user's report)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simbench.core.schema import ConfigError
from simbench.experiment.config import load_config, parse_config
from simbench.experiment.run import run_experiment

from conftest import QUIET
from simhelpers import run_cli

TINY = {"name": "st", "seed": 0, "nodes": 4, "topology": {"kind": "ring"},
        "dataset": {"name": "digits", "max_train": 400, "max_test": 100},
        "model": {"name": "mlp", "options": {"hidden": [8]}},
        "train": {"epochs": 2, "batch_size": 16, "eval_samples": 100}, "compute": {"step_time": "10ms"},
        "output": QUIET}

BROKEN = '''
from simbench.algorithms.dsgd import DSGD, DSGDNode


class Node(DSGDNode):
    async def run(self, rt):
        await self.local_step(rt)
        rt.log("about_to_break", 1.0)
        raise ZeroDivisionError("the algorithm divided by zero")


class Broken(DSGD):
    name = "broken"

    @classmethod
    def make_node(cls, ctx):
        return Node(ctx)
'''


def one_line(proc) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-500:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    return err


# -- 1. a crashed run says so --------------------------------------------------------------------
def test_a_run_that_raises_is_failed_with_its_error_last_event_and_traceback(tmp_path):
    (tmp_path / "brokenalgo.py").write_text(BROKEN)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "algorithm": "brokenalgo:Broken"}))
    # a real process: the algorithm's module is imported from the working directory
    proc = subprocess.run([sys.executable, "-m", "simbench", "run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("failed: Broken-ring4-s0-")
    assert "ZeroDivisionError: the algorithm divided by zero (last event: node" in proc.stderr
    run_dir = next((tmp_path / "out" / "st").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"].startswith("ZeroDivisionError: the algorithm")
    assert "about_to_break" in manifest["error"]  # the last event the run recorded
    assert "raise ZeroDivisionError" in (run_dir / "error.txt").read_text()
    assert (run_dir / "events.csv").read_text().count("about_to_break") >= 1  # the rows so far are kept


def test_a_run_cut_by_its_time_limit_says_time_limit(tmp_path):
    res = run_experiment(parse_config({**TINY, "time_limit": 0.05}), tmp_path)
    assert res.status == "time_limit" and res.sim_time == pytest.approx(0.05)
    assert "nodes still running: 0, 1, 2, 3" in res.error
    assert json.loads((res.run_dir / "manifest.json").read_text())["status"] == "time_limit"


def test_a_run_in_which_every_node_crashed_says_all_crashed(tmp_path):
    crashes = [{"node": i, "at": 0.03} for i in range(4)]
    res = run_experiment(parse_config({**TINY, "algorithm": {"name": "dsgd", "swap_timeout": 0.1},
                                       "scenario": {"crashes": crashes}}), tmp_path)
    assert res.status == "all_crashed" and res.sim_time == pytest.approx(0.03)


def test_a_bad_value_is_a_one_line_error_before_anything_runs(tmp_path, write_config):
    path = write_config(TINY)
    err = one_line(run_cli("run", str(path), "--set", "network.jitter=-1ms", "--out", str(tmp_path / "out")))
    assert err == ("simbench: network.jitter: '-1ms' is not allowed; a duration is a finite number of seconds >= 0")
    assert not (tmp_path / "out").exists()


# -- 2. paths stay under --out -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "..", ".", "a/b", "a\\b"])
def test_run_names_are_one_directory_name(name, tmp_path, write_config):
    err = one_line(run_cli("run", str(write_config(TINY)), "--set", f"name={name}", "--out", str(tmp_path / "out")))
    assert err.startswith("simbench: name: ") and "must be one directory name" in err
    assert not any(tmp_path.parent.glob("escape*")) and list(tmp_path.iterdir()) == [tmp_path / "cfg.yaml"]


def test_a_matrix_named_dotdot_is_refused(tmp_path, write_config):
    matrix = write_config({"name": "..", "base": TINY, "axes": {"seed": [0, 1]}}, "m.yaml")
    err = one_line(run_cli("matrix", str(matrix), "--out", str(tmp_path / "out")))
    assert err.startswith("simbench: name: the matrix needs a name that is one directory name")


# -- 3. values that ruin a run -----------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"train": {"lr": float("nan")}}, "train.lr: nan is not allowed; expected a finite number"),
    ({"train": {"lr": float("inf")}}, "train.lr: inf is not allowed; expected a finite number"),
    ({"train": {"momentum": float("nan")}}, "train.momentum: nan is not allowed"),
    ({"algorithm": {"name": "dsgd", "weight": float("inf")}}, "algorithm.weight: inf is not allowed"),
    ({"network": {"latency": ".nan"}}, "network.latency: cannot read '.nan' as a duration"),
    ({"network": {"latency": -0.001}}, "network.latency: -0.001 is not allowed; a duration is a finite number"),
    ({"compute": {"step_time": float("nan")}}, "compute.step_time: nan is not allowed"),
    ({"compute": {"step_time": "-1ms"}}, "compute.step_time: '-1ms' is not allowed"),
    ({"scenario": {"crashes": [{"node": 1, "at": float("nan")}]}}, "scenario.crashes[0].at: nan is not allowed"),
    ({"algorithm": {"name": "dsgd", "swap_timeout": "-1s"}}, "algorithm.swap_timeout: '-1s' is not allowed"),
    ({"algorithm": {"name": "fedavg", "timeout": -2}}, "algorithm.timeout: -2 is not allowed"),
    ({"network": {"uplink": -5}}, "network.uplink: -5.0 must be > 0"),
    ({"scenario": {"crash_rate": 1, "recover_after": -1}}, "scenario.recover_after: -1 is not allowed"),
    ({"time_limit": -3}, "time_limit: -3 is not allowed"),
    ({"train": {"eval_samples": -1}}, "train.eval_samples: -1 must be >= 1"),
    ({"train": {"l2_lambda": -1e9}}, "train.l2_lambda: -1000000000.0 must be >= 0"),
    ({"train": {"batch_size": 10**9}}, "train.batch_size: 1000000000 must be in [1, 1048576]"),
    ({"train": {"nesterov": True}}, "train.nesterov: needs momentum > 0 and dampening 0"),
    ({"scenario": {"recover_after": "1s"}}, "scenario.recover_after: only used with crash_rate > 0"),
    ({"seed": -1}, "seed: -1 must be in [0, 4294967296)"),
    ({"seed": 2**32}, "seed: 4294967296 must be in [0, 4294967296)"),
    ({"nodes": 2**63}, "nodes: 9223372036854775808 is out of range"),
])
def test_values_that_would_ruin_a_run_are_refused(change, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**TINY, **change})
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("options, message", [
    ({"hidden": [0]}, "model.options: hidden: expected a list of layer widths, whole numbers from 1 to 1048576"),
    ({"hidden": [-3]}, "model.options: hidden: expected a list of layer widths"),
])
def test_impossible_model_sizes_are_one_line_errors(options, message, tmp_path):
    with pytest.raises(ConfigError, match=f"^{message}"):
        run_experiment(parse_config({**TINY, "model": {"name": "mlp", "options": options}}), tmp_path)


@pytest.mark.parametrize("text, message", [
    ("", "config {path} is empty (or only comments); it needs a mapping of fields"),
    ("# only a comment\n", "config {path} is empty (or only comments)"),
    ("nodes: 4\nnodes: 5\n", "config {path}: key 'nodes' appears twice (lines 1 and 2); keep one"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     "config {path}: it expands to more than 200000 values (aliases of aliases?)"),
    ("x: " + "[" * 500 + "]" * 500 + "\n", "config {path}"),
])
def test_unsafe_or_empty_yaml_is_one_line(text, message, tmp_path, write_config):
    path = write_config(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(message.format(path=path)) and "\n" not in str(err.value)


def test_topology_show_refuses_what_it_cannot_draw(tmp_path):
    err = one_line(run_cli("topology", "show", "ring", "-n", "0", cwd=tmp_path))
    assert err == "simbench: ring: parameter `n` (nodes) must be an integer >= 2, got 0"
    proc = run_cli("topology", "show", "complete", "-n", "1500", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("simbench: topology show: 1500 nodes and 1124250 edges are too many to draw; at "
                                   "most 1000 nodes and 20000 edges")


# -- 4. files that are not what they should be -------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "matrix", "topology"])
def test_non_utf8_files_and_directories_are_one_line(command, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"nodes: 4\nname: caf\xe9\n")
    args = {"run": ["run"], "matrix": ["matrix"], "topology": ["topology", "show"]}[command]
    err = one_line(run_cli(*args, str(bad)))
    assert "is not UTF-8 text (byte 0xe9 at offset 18)" in err
    err = one_line(run_cli(*args, str(tmp_path)) if command != "topology" else run_cli(*args, str(tmp_path / "d.yaml")))
    assert "is a directory" in err or "not found" in err


def test_a_hosts_file_that_is_not_utf8_is_one_line(tmp_path, write_config):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_bytes(b"nodes:\n  0: \xff\n")
    err = one_line(run_cli("node", str(write_config(TINY)), "--hosts", str(hosts), "--node-id", "0", "--insecure"))
    assert "is not UTF-8 text" in err


def test_invalid_yaml_in_set_is_one_line(write_config):
    err = one_line(run_cli("run", str(write_config(TINY)), "--set", "train={epochs: [1"))
    assert err.startswith("simbench: --set train is not valid YAML")


def test_a_pickled_snapshot_is_not_loaded_and_merge_says_so(tmp_path, write_config):
    import numpy as np
    run_dir = tmp_path / "st" / f"{parse_config(dict(TINY)).run_id()}-real-00000000"
    for k in range(4):
        d = run_dir / "nodes" / str(k)
        (d / "params").mkdir(parents=True)
        (d / "status.json").write_text(json.dumps({"node": k, "status": "finished"}))
        (d / "epochs.csv").write_text("run_id,node,time_s,epoch,test_acc\nx,%d,0,0,0.1\n" % k)
        np.save(d / "params" / "epoch0.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    err = one_line(run_cli("merge", str(run_dir), str(write_config(TINY))))
    assert "merge: " in err and "epoch0.npy is not a parameter snapshot" in err


def test_an_unwritable_output_stops_before_any_compute(tmp_path, write_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = one_line(run_cli("run", str(write_config(TINY)), "--out", str(blocker / "out")))
    assert err.startswith(f"simbench: output: {blocker}/out/st/") and "cannot be written" in err


def test_a_full_disk_stops_before_any_compute(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(ConfigError, match=r"only 1 MiB free on its disk; a run needs at least 20 MiB"):
        run_experiment(parse_config(dict(TINY)), tmp_path)


# -- 5. the clock stops with the run -------------------------------------------------------------------
def test_faults_after_the_end_neither_count_nor_move_the_clock(tmp_path):
    res = run_experiment(parse_config({**TINY, "scenario": {"crash_rate": 1.0}}), tmp_path)
    assert res.status == "finished" and res.sim_time < 1.0  # the run takes a fraction of a second
    assert not (res.events["metric"] == "crash").any()  # every drawn crash lies hours after the end
    res = run_experiment(parse_config({**TINY, "scenario": {"partitions": [{"edges": [[0, 1]], "start": 0.5,
                                                                            "end": 1e9}]}}), tmp_path)
    assert res.status == "finished" and res.sim_time < 1.0


# -- 6. real mode ----------------------------------------------------------------------------------------
def test_launch_refuses_impossible_launches_with_one_line(write_config):
    err = one_line(run_cli("launch", str(write_config(TINY)), "--local", "1", "--insecure"))
    assert err == "simbench launch: topology: ring: parameter `n` (nodes) must be an integer >= 2, got 1"
    err = one_line(run_cli("launch", str(write_config(TINY)), "--local", "2", "--timeout", "-1"))
    assert "--timeout: expected a number of seconds > 0, got '-1'" in err


def test_a_garbage_status_file_merges_as_failed(tmp_path):
    from simbench.experiment.distributed.merge import NodeOutcome, overall_status, read_status
    (tmp_path / "status.json").write_text('{"status": "all good, trust me"}')
    assert read_status(tmp_path / "status.json", 3) == {"node": 3, "status": "unknown"}
    (tmp_path / "status.json").write_text("[1, 2]")
    assert read_status(tmp_path / "status.json", 3)["status"] == "unknown"
    assert overall_status([NodeOutcome(0, 0, "finished"), NodeOutcome(1, None, "unknown")]) == "failed"
    assert overall_status([NodeOutcome(0, 75, "crashed"), NodeOutcome(1, 75, "crashed")]) == "all_crashed"
    assert overall_status([NodeOutcome(0, 76, "deadlock"), NodeOutcome(1, 143, "stopped")]) == "deadlock"
    assert overall_status([NodeOutcome(0, 0, "finished"), NodeOutcome(1, 143, "timeout")]) == "time_limit"


# -- 7. smaller ones --------------------------------------------------------------------------------------
def test_a_second_matrix_on_the_same_directory_stops_at_once(tmp_path):
    from simbench.experiment.matrix import MatrixLock
    root = tmp_path / "m"
    with MatrixLock(root):
        with pytest.raises(ConfigError, match=rf"^matrix: another simbench \(pid {os.getpid()}\) is running the "
                                              rf"matrix in {root}; wait for it, or use another --out$"):
            with MatrixLock(root):
                pass
    with MatrixLock(root):  # released: the next run may take it
        pass


def test_resume_removes_temporary_files_of_an_interrupted_write(tmp_path):
    from simbench.experiment.executors import SerialExecutor
    from simbench.experiment.matrix import parse_matrix, run_matrix
    m = parse_matrix({"name": "m", "base": TINY, "axes": {"seed": [0]}})
    root = tmp_path / "m"
    (root / "runs" / "m" / "x").mkdir(parents=True)
    for junk in (root / ".cells.csv.123.tmp", root / "runs" / "m" / "x" / ".events.csv.9.tmp"):
        junk.write_bytes(b"")
    run_matrix(m, tmp_path, executor=SerialExecutor(), progress=False)
    assert not list(root.rglob("*.tmp"))


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision

    from simbench.data.datasets import DatasetError, load_dataset

    def offline(self, *a, **kw):
        (Path(self.root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
    monkeypatch.setenv("SIMBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="download failed: Error downloading"):
        load_dataset("fashion_mnist", str(tmp_path / "root"), download=True)
    assert not list(tmp_path.rglob("FashionMNIST"))


def test_results_do_not_depend_on_the_number_of_matrix_workers(tmp_path):
    from simbench.experiment.executors import LocalExecutor
    from simbench.experiment.matrix import parse_matrix, run_matrix
    base = {**TINY, "dataset": {"name": "digits", "max_train": 300}}
    spec = {"name": "w", "base": base, "axes": {"seed": [0, 1]}}
    one = run_matrix(parse_matrix(spec), tmp_path / "1", executor=LocalExecutor(1), progress=False)
    run_matrix(parse_matrix(spec), tmp_path / "2", executor=LocalExecutor(2), progress=False)
    for cell in one.cells["cell"].unique():
        a = next((tmp_path / "1" / "w" / "runs" / "w").glob(cell)) / "epochs.csv"
        b = next((tmp_path / "2" / "w" / "runs" / "w").glob(cell)) / "epochs.csv"
        assert a.read_bytes() == b.read_bytes()
