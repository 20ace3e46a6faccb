"""Fuzzing every input simbench reads: configs, matrix files, topology files, hosts files and
wire frames. Whatever comes in, the answer is exit code 2 with one line and no traceback, or
a run whose recorded status is true; nothing is written outside --out; a frame is decoded or
rejected and counted, never raised."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simbench.cli import main
from simbench.experiment.run import STATUSES

from conftest import QUIET

EXAMPLES = int(os.environ.get("SIMBENCH_FUZZ_EXAMPLES", "60"))
"""Examples per input kind (the default keeps the suite within a minute; raise it for a campaign)."""
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

TINY = {"name": "fz", "seed": 0, "nodes": 3, "topology": {"kind": "ring"}, "algorithm": "dsgd",
        "dataset": {"name": "digits", "max_train": 150, "max_test": 50, "val_fraction": 0.0},
        "model": {"name": "logistic"}, "train": {"epochs": 1, "batch_size": 32, "eval_samples": 50},
        "compute": {"step_time": "10ms"}, "output": QUIET}

PATHS = ["name", "seed", "nodes", "topology", "topology.kind", "algorithm", "algorithm.swap_timeout",
         "algorithm.weight", "dataset.name", "dataset.partition", "dataset.alpha", "dataset.val_fraction",
         "dataset.max_train", "model.name", "model.options", "train.epochs", "train.batch_size", "train.lr",
         "train.momentum", "train.nesterov", "network.latency", "network.jitter", "network.bandwidth",
         "network.loss", "compute.step_time", "compute.device", "scenario.crashes", "scenario.stragglers",
         "scenario.crash_rate", "scenario.partitions", "scenario.sleep_factor", "time_limit", "output.dir", "bogus"]
NASTY = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2, 3, 2**63, -2**63, 1e308, -1e-9, math.nan, math.inf, -math.inf,
                     "", ".", "..", "../x", "/abs", "a/b", "5ms", "-5ms", "1Gbit/s", "inf", "nan", "ring", "star",
                     "dsgd", "mlp", "digits", "é\x00", [], [0], [[0, 1]], {}, {"kind": "star"},
                     [{"node": 1, "at": 0.01}], [{"node": 9, "at": 1}], {"fraction": 2}, {"dist": "uniform"},
                     [{"edges": [[0, 1]], "start": 0.0, "end": 1e9}]]),
    st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)


def set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {"name": cur[k]} if k == "algorithm" and isinstance(cur.get(k), str) else {}
        cur = cur[k]
    cur[keys[-1]] = value


def check_outcome(code: int, err: str, out) -> None:
    """Exit 2 with one line, or a run directory under ``out`` whose status is true."""
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        return
    manifests = list(out.rglob("manifest.json"))
    assert code in (0, 1) and len(manifests) == 1, (code, err)
    status = json.loads(manifests[0].read_text())["status"]
    assert status in STATUSES and status != "running"
    assert (status == "finished") == (code == 0)


@SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), NASTY), min_size=1, max_size=3))
def test_config_fuzz_is_one_line_or_a_truthful_run(changes, tmp_path_factory, capsys):
    tmp = tmp_path_factory.mktemp("cfg")
    data = copy.deepcopy(TINY)
    for path, value in changes:
        set_path(data, path, value)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    code = main(["run", str(cfg), "--out", str(tmp / "out"), "--quiet"])
    check_outcome(code, capsys.readouterr().err, tmp / "out")
    assert sorted(p.name for p in tmp.iterdir()) in (["cfg.yaml"], ["cfg.yaml", "out"])  # nothing beside --out


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_raw_bytes_as_a_config_matrix_or_topology_are_one_line(raw, tmp_path_factory, capsys):
    tmp = tmp_path_factory.mktemp("raw")
    path = tmp / "in.yaml"
    path.write_bytes(raw)
    for args in (["run", str(path), "--out", str(tmp / "out"), "--quiet"],
                 ["matrix", str(path), "--out", str(tmp / "out"), "--dry-run"],
                 ["topology", "show", str(path), "-o", str(tmp / "out" / "t.png")]):
        code = main(args)
        err = capsys.readouterr().err
        if code == 2:
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (args[0], err)
        elif args[0] == "run":
            check_outcome(code, err, tmp / "out")


@SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(["name", "base", "set", "axes", "exclude", "target_accuracy",
                                                     "report", "axes.seed", "axes.algorithm", "axes.bogus"]),
                                   NASTY), min_size=1, max_size=3))
def test_matrix_fuzz_is_one_line(changes, tmp_path_factory, capsys):
    tmp = tmp_path_factory.mktemp("mat")
    data = {"name": "m", "base": copy.deepcopy(TINY), "axes": {"seed": [0, 1]}}
    for path, value in changes:
        set_path(data, path, value)
    path = tmp / "m.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    code = main(["matrix", str(path), "--out", str(tmp / "out"), "--dry-run"])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert code == 0 or len(err.strip().splitlines()) == 1


@SETTINGS
@given(nodes=st.one_of(NASTY, st.lists(NASTY, max_size=3), st.dictionaries(st.sampled_from(["id", "role", "speed", 0, 1]),
                                                                            NASTY, max_size=3)),
       edges=st.one_of(NASTY, st.lists(st.one_of(NASTY, st.lists(NASTY, max_size=3)), max_size=4)),
       defaults=st.one_of(st.none(), st.dictionaries(st.sampled_from(["latency", "bandwidth", "x"]), NASTY, max_size=2)))
def test_topology_file_fuzz_is_a_topology_error(nodes, edges, defaults, tmp_path_factory):
    from simbench.topology import TopologyError, load
    path = tmp_path_factory.mktemp("topo") / "t.yaml"
    doc = {"nodes": nodes, "edges": edges}
    if defaults is not None:
        doc["defaults"] = defaults
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        graph = load(path)
    except TopologyError as exc:
        assert "\n" not in str(exc)
    else:
        assert graph.number_of_nodes() >= 1


@SETTINGS
@given(doc=st.one_of(NASTY, st.dictionaries(st.sampled_from(["nodes", "store", "x"]),
                                            st.one_of(NASTY, st.dictionaries(st.one_of(st.integers(-2, 3), st.text(max_size=4), st.none()),
                                                                             NASTY, max_size=3)), max_size=3)))
def test_hosts_file_fuzz_is_a_rendezvous_error(doc, tmp_path_factory):
    from simbench.real.rendezvous import RendezvousError, load_hosts
    path = tmp_path_factory.mktemp("hosts") / "h.yaml"
    try:
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    except yaml.YAMLError:
        return
    try:
        hosts = load_hosts(path)
    except RendezvousError as exc:
        assert "\n" not in str(exc)
    else:
        assert sorted(hosts.nodes) == list(range(len(hosts.nodes)))


@settings(max_examples=5 * EXAMPLES, deadline=None, derandomize=True)
@given(frames=st.lists(st.binary(max_size=120), min_size=0, max_size=4))
def test_wire_frame_fuzz_is_decoded_or_rejected_never_raised(frames):
    from simbench.core.message import Message
    from simbench.real.transport import Transport, run_key
    t = Transport(1, run_key(b"k" * 32, "fuzz", "n"), accept_from={0})
    try:
        out = t.check(frames)
        assert out is None or isinstance(out, Message)
        assert sum(t.rejected.values()) == (out is None)
    finally:
        t.abort()


@settings(max_examples=5 * EXAMPLES, deadline=None, derandomize=True)
@given(body=st.binary(max_size=300))
def test_decoding_random_bytes_raises_only_wire_errors(body):
    from simbench.core.message import WireError, decode
    try:
        decode(b"SBM1" + body)
    except WireError:
        pass


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_runs_stay_under_out(seed, tmp_path, capsys):
    """A name or output.dir aimed outside --out is refused; --out wins over output.dir."""
    data = {**TINY, "name": ["../up", "/abs", "ok"][seed], "output": {**QUIET, "dir": str(tmp_path.parent)}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    if seed < 2:
        assert code == 2 and "name:" in err
    else:
        assert code == 0 and (tmp_path / "out" / "ok").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) in (["cfg.yaml"], ["cfg.yaml", "out"])
