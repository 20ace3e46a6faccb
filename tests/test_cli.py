"""The command line as a newcomer meets it: one thread, runs never overwritten, progress,
comparison, version, help, one-line flag errors."""

import json
import re
import subprocess
import sys

import pandas as pd
import yaml

from simbench.cli import main

from conftest import QUIET
from simhelpers import run_cli

TINY = {"name": "cli", "nodes": 4, "topology": {"kind": "ring"}, "dataset": {"name": "digits", "max_train": 400},
        "model": {"name": "mlp", "options": {"hidden": [8]}}, "train": {"epochs": 2, "eval_samples": 100},
        "compute": {"step_time": "10ms"}, "output": QUIET}


def cli(*args, **kw):
    """``simbench ARGS`` as a real process: for what only one shows (torch's thread count, exits)."""
    return subprocess.run([sys.executable, "-m", "simbench", *args], capture_output=True, text=True, timeout=300, **kw)


def manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def test_a_run_uses_one_torch_thread_unless_told(tmp_path, write_config):
    cfg = write_config(TINY)
    assert cli("run", str(cfg), "--out", str(tmp_path / "a"), "--quiet").returncode == 0
    assert cli("run", str(cfg), "--out", str(tmp_path / "b"), "--quiet", "--threads", "2").returncode == 0
    [a] = (tmp_path / "a" / "cli").iterdir()
    [b] = (tmp_path / "b" / "cli").iterdir()
    assert manifest(a)["versions"]["torch_threads"] == 1 and manifest(b)["versions"]["torch_threads"] == 2
    assert (a / "events.csv").read_bytes() == (b / "events.csv").read_bytes()  # the same numbers either way


def test_a_second_run_of_a_config_never_overwrites_the_first(tmp_path, write_config, capsys):
    cfg = write_config(TINY)
    for _ in range(3):
        assert main(["run", str(cfg), "--out", str(tmp_path), "--quiet"]) == 0
    dirs = sorted(p.name for p in (tmp_path / "cli").iterdir())
    base = dirs[0]
    assert dirs == [base, f"{base}-2", f"{base}-3"]
    out = capsys.readouterr().out
    assert f"results: {tmp_path / 'cli' / base}-3" in out
    (tmp_path / "cli" / base / "marker").write_text("old")
    assert main(["run", str(cfg), "--out", str(tmp_path), "--quiet", "--force"]) == 0
    assert not (tmp_path / "cli" / base / "marker").exists() and len(list((tmp_path / "cli").iterdir())) == 3


def test_the_progress_bar_moves_within_an_epoch(tmp_path, write_config):
    """One long epoch (4 nodes, 360 steps each, a single epoch): the bar's note shows
    simulated time and messages before the epoch ends."""
    data = {**TINY, "dataset": {"name": "digits"}, "train": {"epochs": 1, "batch_size": 1, "eval_samples": 50},
            "output": {**QUIET, "progress": True}}
    proc = run_cli("run", str(write_config(data)), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = [re.search(r"(\d+)/8 .*sim ([0-9.]+)s, (\d+) msgs, (\d+) steps", f) for f in proc.stderr.splitlines()]
    within = [m for m in frames if m and m.group(1) == "4" and int(m.group(3)) > 0]  # after epoch 0, before epoch 1
    assert within and float(within[0].group(2)) > 0, proc.stderr[-3000:]  # simulated time moved on screen meanwhile


def test_compare_shows_two_runs_side_by_side(tmp_path, write_config, capsys):
    cfg = write_config(TINY)
    main(["run", str(cfg), "--out", str(tmp_path), "--quiet"])
    main(["run", str(cfg), "--out", str(tmp_path), "--quiet", "--set", "topology.kind=star", "--set", "algorithm=fedavg"])
    a, b = sorted((tmp_path / "cli").iterdir())
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--plot", str(tmp_path / "cmp.pdf")]) == 0
    text = capsys.readouterr().out
    assert "  algorithm.name: 'dsgd' -> 'fedavg'" in text and "  topology.kind: 'ring' -> 'star'" in text
    fa = pd.read_csv(a / "epochs.csv").query("node == 'avg'")["test_acc"].iloc[-1]
    assert re.search(rf"final test_acc +{fa:.4g} ", text)
    assert (tmp_path / "cmp.pdf").read_bytes()[:4] == b"%PDF"
    assert main(["compare", str(a), str(tmp_path)]) == 2
    assert "compare: " in capsys.readouterr().err


def test_version_and_a_bad_flag(capsys):
    import simbench
    proc = cli("--version")
    assert proc.stdout.strip() == f"simbench {simbench.__version__}"
    proc = cli("run", "x.yaml", "--threads", "0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "simbench run: argument --threads: expected a whole number >= 1, got '0' (see simbench run --help)"]


def test_report_figures_as_pdf_and_the_wide_table(tmp_path, write_config):
    matrix = write_config({"name": "m", "base": TINY, "axes": {"algorithm": ["dsgd", "gossip"], "seed": [0, 1]}}, "m.yaml")
    assert run_cli("matrix", str(matrix), "--out", str(tmp_path), "--quiet", "--report").returncode == 0
    assert run_cli("report", str(tmp_path / "m"), "--figures", "pdf").returncode == 0
    assert (tmp_path / "m" / "acc_vs_time.pdf").read_bytes()[:4] == b"%PDF"
    wide = pd.read_csv(tmp_path / "m" / "cells_wide.csv")
    assert len(wide) == 4 and {"final_acc", "bytes_sent", "status", "algorithm", "seed"} <= set(wide.columns)
    for name in ("cells", "cells_wide"):  # the same types in CSV and Parquet
        csv, parquet = pd.read_csv(tmp_path / "m" / f"{name}.csv"), pd.read_parquet(tmp_path / "m" / f"{name}.parquet")
        assert str(csv["seed"].dtype).lower().startswith("int") and str(parquet["seed"].dtype).lower().startswith("int")
        assert pd.api.types.is_string_dtype(csv["algorithm"]) and pd.api.types.is_string_dtype(parquet["algorithm"])


def test_a_hosts_file_whose_store_port_is_a_nodes_port_is_one_line(tmp_path, write_config):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"nodes": {0: "127.0.0.1:29500", 1: "127.0.0.1:29501"}}))
    proc = run_cli("node", str(write_config(TINY)), "--hosts", str(hosts), "--node-id", "0", "--insecure")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"simbench node: {hosts}: store (default: node 0's port + 1 = 127.0.0.1:29501) is "
                                   "node 1's address; give `store: HOST:PORT` on a free port")


def test_a_port_in_use_is_one_line(tmp_path, write_config):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        hosts = tmp_path / "hosts.yaml"
        hosts.write_text(yaml.safe_dump({"store": f"127.0.0.1:{port + 7}", "nodes": {0: f"127.0.0.1:{port}"}}))
        data = {**TINY, "nodes": 1, "topology": {"kind": "complete"}, "algorithm": "gan_single"}
        proc = run_cli("node", str(write_config({**TINY, "algorithm": "dsgd"})), "--hosts", str(hosts), "--node-id", "0",
                   "--insecure", "--set", "topology.kind=complete")
    assert data and proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert f"cannot bind node 0 to 127.0.0.1:{port}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
