"""Populations at their edges: every one-line error word for word (field, file and row named),
the boundaries of the readers (empty, blank and comment lines, ``inf`` where it is allowed, a
value exactly 0, a file exactly at the size limit), FedScale's behaviour dicts read event by
event, timelines stepped across their flips, and how ``resolve`` splits its seed.

Everything that calls simbench runs inside the test functions (mutation testing switches the
code per test, at call time)."""

from __future__ import annotations

import json
import pickle
from functools import partial

import numpy as np
import pytest

from simbench.core import population as popmod
from simbench.core.population import (Device, DrawnTimeline, Population, PopulationSpec, Sessions, Timeline,
                                      TraceTimeline, _merge, _one_source, _table, check_spec, read_availability,
                                      read_devices, read_plain_pickle, resolve)
from simbench.core.scenario import Dist
from simbench.core.schema import ConfigError, from_dict

from simhelpers import error as raised

W = "population.x.trace"
DEV_HEADER = "node,flops_per_s,up_bps,down_bps\n"
AV_HEADER = "node,start_s,end_s\n"
REFUSED = "only plain dicts, lists, strings and numbers are read (nothing is imported or run)"


error = partial(raised, exc=ConfigError)  # every population error is a ConfigError


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def spec(**section):
    return from_dict(PopulationSpec, section, "population")


def population(tmp_path, n=4, holders=None, seed=0, horizon=1e6, **section):
    return resolve(spec(**section), n, holders if holders is not None else range(n),
                   np.random.default_rng(seed), horizon, cwd=tmp_path)


def streams(seed):
    """resolve's four streams (devices, availability, device mapping, availability mapping)."""
    return np.random.SeedSequence(int(np.random.default_rng(seed).integers(2**63))).spawn(4)


# -- files: missing, too large, not text ----------------------------------------------------------
@pytest.mark.parametrize("name, fmt", [("dev.csv", "auto"), ("dev.parquet", "auto"), ("cap", "auto"),
                                       ("cap.json", "fedscale")])
def test_a_missing_trace_file_is_named(tmp_path, name, fmt):
    path = tmp_path / name
    assert error(read_devices, W, path, fmt) == f"{W}: {path}: trace file not found"
    assert error(read_availability, W, path, fmt, None) == f"{W}: {path}: trace file not found"


def test_a_file_exactly_at_the_size_limit_is_read_and_one_byte_more_is_refused(tmp_path, monkeypatch):
    text = DEV_HEADER + "0,1e9,8,8\n"
    monkeypatch.setattr(popmod, "MAX_TRACE_BYTES", len(text))
    path = write(tmp_path, "dev.csv", text)
    assert read_devices(W, path, "auto")["0"] == Device(1e9, None, 1.0, 1.0)
    path.write_text(text + "\n")
    size = len(text) + 1
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: {size} bytes is larger than {len(text)} bytes"
    cap = write(tmp_path, "cap", pickle.dumps({1: {"computation": 1.0, "communication": 1.0}}))
    monkeypatch.setattr(popmod, "MAX_TRACE_BYTES", cap.stat().st_size - 1)
    assert error(read_devices, W, cap, "auto") == \
        f"{W}: {cap}: {cap.stat().st_size} bytes is larger than {cap.stat().st_size - 1} bytes"


def test_a_table_that_is_not_utf8_is_refused_and_a_bom_is_skipped(tmp_path):
    path = write(tmp_path, "av.csv", b"\xff\xfenode,start_s,end_s\n")
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: not UTF-8 text"
    write(tmp_path, "av.csv", b"\xef\xbb\xbf" + (AV_HEADER + "0,0,10\n").encode())
    assert read_availability(W, path, "auto", None) == {"0": Sessions([(0.0, 10.0)], None)}


# -- tables: blank and comment lines, headers, rows ------------------------------------------------
def test_blank_whitespace_and_comment_lines_are_skipped(tmp_path):
    text = "# a comment, with, commas\n  # indented\n" + AV_HEADER + "   \n\n0,0,10\n\t\n  # x,y,z\n1,5,6\n"
    path = write(tmp_path, "av.csv", text)
    assert read_availability(W, path, "auto", None) == {"0": Sessions([(0, 10)], None), "1": Sessions([(5, 6)], None)}


def test_a_row_of_two_fields_with_an_empty_first_is_a_row_not_a_blank_line(tmp_path):
    path = write(tmp_path, "av.csv", AV_HEADER + ",5\n")
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: line 2: 2 fields, the header has 3"


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n\n"])
def test_an_empty_table_names_the_header_it_expects(tmp_path, text):
    path = write(tmp_path, "av.csv", text)
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: empty; expected a header node,start_s,end_s"
    path = write(tmp_path, "dev.csv", text)
    assert error(read_devices, W, path, "auto") == \
        f"{W}: {path}: empty; expected a header node,flops_per_s,up_bps,down_bps"


@pytest.mark.parametrize("header", ["node,start_s,end_s,extra", "node,start_s", "node,end_s,period_s,start_s,x"])
def test_unknown_or_missing_availability_columns(tmp_path, header):
    path = write(tmp_path, "av.csv", header + "\n" + ",".join("1" * len(header.split(","))) + "\n")
    assert error(read_availability, W, path, "auto", None) == \
        f"{W}: {path}: columns {header}; expected node,start_s,end_s (optional: period_s)"


@pytest.mark.parametrize("header", ["node,flops_per_s,up_bps", "node,flops_per_s,up_bps,down_bps,period_s"])
def test_unknown_or_missing_device_columns(tmp_path, header):
    path = write(tmp_path, "dev.csv", header + "\n" + ",".join("1" * len(header.split(","))) + "\n")
    assert error(read_devices, W, path, "auto") == \
        f"{W}: {path}: columns {header}; expected node,flops_per_s,up_bps,down_bps"


def test_the_optional_columns_are_listed_with_commas(tmp_path):
    path = write(tmp_path, "t.csv", "a,d\n1,2\n")
    assert error(_table, W, path, ("a",), ("b", "c")) == f"{W}: {path}: columns a,d; expected a (optional: b,c)"
    assert _table(W, write(tmp_path, "u.csv", " c , a \n 3 , 4 \n"), ("a",), ("b", "c")) == \
        [("line 2", {"c": "3", "a": "4"})]


def test_a_header_without_rows(tmp_path):
    path = write(tmp_path, "av.csv", AV_HEADER + "# nothing yet\n")
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: no data rows"
    path = write(tmp_path, "dev.csv", DEV_HEADER)
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: no data rows"


# -- parquet ------------------------------------------------------------------------------------------
def test_an_unreadable_parquet_file_names_the_error_cut_at_200_characters(tmp_path):
    import pandas as pd
    path = write(tmp_path, "b" * 120 + ".parquet", b"not a parquet file")
    try:
        pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - the reader's own message, whatever its kind
        kind, text = type(exc).__name__, str(exc)
    assert len(text) > 200 and kind != "NoneType"
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: cannot read Parquet ({kind}: {text[:200]})"


def test_parquet_rows_are_numbered_from_1(tmp_path):
    import pandas as pd
    path = tmp_path / "dev.parquet"
    pd.DataFrame({"node": [0, 1], "flops_per_s": [1e9, 0.0], "up_bps": [8.0, 8.0],
                  "down_bps": [8.0, 8.0]}).to_parquet(path)
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: row 2: flops_per_s '0.0' must be > 0"
    av = tmp_path / "av.parquet"
    pd.DataFrame({"node": ["a", "b"], "start_s": [0.0, 5.0], "end_s": [10.0, 8.0],
                  "period_s": [float("nan"), 20.0]}).to_parquet(av)
    assert read_availability(W, av, "auto", None) == {"a": Sessions([(0, 10)], None), "b": Sessions([(5, 8)], 20.0)}


# -- device tables -----------------------------------------------------------------------------------
@pytest.mark.parametrize("row, what", [
    (",1e9,8,8", "line 2: node is empty"),
    ("0,0,8,8", "line 2: flops_per_s '0' must be > 0"),
    ("0,-1,8,8", "line 2: flops_per_s '-1' must be > 0"),
    ("0,inf,8,8", "line 2: flops_per_s 'inf' is not allowed; expected a finite number"),
    ("0,fast,8,8", "line 2: flops_per_s 'fast' is not a number"),
    ("0,1e9,0,8", "line 2: up_bps '0' must be > 0"),
    ("0,1e9,-inf,8", "line 2: up_bps '-inf' is not allowed; expected a finite number or inf"),
    ("0,1e9,nan,8", "line 2: up_bps 'nan' is not allowed; expected a finite number or inf"),
    ("0,1e9,x,8", "line 2: up_bps 'x' is not a number"),
    ("0,1e9,8,0", "line 2: down_bps '0' must be > 0"),
    ("0,1e9,8,-inf", "line 2: down_bps '-inf' is not allowed; expected a finite number or inf"),
    ("0,1e9,8,y", "line 2: down_bps 'y' is not a number"),
])
def test_a_bad_device_row_word_for_word(tmp_path, row, what):
    path = write(tmp_path, "dev.csv", DEV_HEADER + row + "\n")
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: {what}"


def test_a_device_node_twice_and_infinite_links(tmp_path):
    path = write(tmp_path, "dev.csv", DEV_HEADER + "0,1e9,8,8\n0,2e9,8,8\n")
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: line 3: node 0 appears twice"
    path = write(tmp_path, "dev.csv", DEV_HEADER + "0,1e9,inf,16\n1,2e9,16,inf\n")
    assert read_devices(W, path, "auto") == {"0": Device(1e9, None, float("inf"), 2.0),
                                             "1": Device(2e9, None, 2.0, float("inf"))}


# -- FedScale dicts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry, what", [
    ({"computation": 0, "communication": 5}, "client 1: computation '0' must be > 0"),
    ({"computation": 5, "communication": 0}, "client 1: communication '0' must be > 0"),
    ({"computation": "slow", "communication": 5}, "client 1: computation 'slow' is not a number"),
    ({"computation": 5, "communication": -1}, "client 1: communication '-1' must be > 0"),
    ({"computation": 5}, "client 1: expected {'computation': ms, 'communication': kbps}"),
    ({"communication": 5}, "client 1: expected {'computation': ms, 'communication': kbps}"),
    (5, "client 1: expected {'computation': ms, 'communication': kbps}"),
])
def test_a_bad_fedscale_capacity_entry_word_for_word(tmp_path, entry, what):
    path = write(tmp_path, "cap", pickle.dumps({1: entry}))
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: {what}"


def test_fedscale_kbps_are_1024_over_8_bytes_per_second(tmp_path):
    path = write(tmp_path, "cap.json", json.dumps({"a": {"computation": 20, "communication": 8}}))
    assert read_devices(W, path, "auto") == {"a": Device(None, 20.0, 1024.0, 1024.0)}


@pytest.mark.parametrize("name, content", [
    ("cap", pickle.dumps([1])), ("cap", pickle.dumps({})), ("cap.json", b"[]"), ("cap.json", b"{}"),
    ("cap.json", b'[{"computation": 1, "communication": 1}]'),
])
def test_only_a_non_empty_dict_of_clients_is_read(tmp_path, name, content):
    path = write(tmp_path, name, content)
    assert error(read_devices, W, path, "auto") == f"{W}: {path}: expected a non-empty dict of clients"
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: expected a non-empty dict of clients"


def test_bad_json_and_bad_pickles_are_named(tmp_path):
    path = write(tmp_path, "cap.json", "{")
    assert error(read_devices, W, path, "auto") == \
        f"{W}: {path}: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    path = write(tmp_path, "cap.json", b'{"\xff": 1}')
    assert error(read_devices, W, path, "auto") == \
        f"{W}: {path}: not JSON ('utf-8' codec can't decode byte 0xff in position 2: invalid start byte)"
    import collections
    path = write(tmp_path, "cap", pickle.dumps(collections.OrderedDict()))
    assert error(read_devices, W, path, "auto") == \
        f"{W}: {path}: not a plain FedScale pickle: refers to collections.OrderedDict; {REFUSED}"
    path = write(tmp_path, "behave", pickle.dumps({"a": 1})[:-3])
    assert error(read_availability, W, path, "fedscale", None) == \
        f"{W}: {path}: not a plain FedScale pickle: pickle data was truncated"


def test_persistent_ids_and_classes_are_refused_word_for_word():
    import collections
    import io

    buf = io.BytesIO()
    pickler = pickle.Pickler(buf)
    pickler.persistent_id = lambda obj: "ext" if obj == "outside" else None
    pickler.dump({1: "outside"})
    with pytest.raises(pickle.UnpicklingError) as info:
        read_plain_pickle(buf.getvalue())
    assert str(info.value) == "uses persistent ids; only plain containers are read"
    with pytest.raises(pickle.UnpicklingError) as info:
        read_plain_pickle(pickle.dumps(collections.Counter))
    assert str(info.value) == f"refers to collections.Counter; {REFUSED}"


def test_any_other_extension_is_read_as_fedscale(tmp_path):
    path = write(tmp_path, "cap.CSV.bak", pickle.dumps({3: {"computation": 4, "communication": 8}}))
    assert read_devices(W, path, "auto") == {"3": Device(None, 4.0, 1024.0, 1024.0)}
    path = write(tmp_path, "dev.CSV", DEV_HEADER + "0,1e9,8,8\n")
    assert read_devices(W, path, "auto") == {"0": Device(1e9, None, 1.0, 1.0)}


# -- availability tables ----------------------------------------------------------------------------
def test_an_empty_nan_or_none_period_means_none_and_a_number_overrides_the_specs(tmp_path):
    path = write(tmp_path, "av.csv", "node,start_s,end_s,period_s\n0,0,10,\n1,0,10,nan\n2,0,10,None\n3,0,10,100\n")
    assert read_availability(W, path, "auto", None) == {
        "0": Sessions([(0, 10)], None), "1": Sessions([(0, 10)], None), "2": Sessions([(0, 10)], None),
        "3": Sessions([(0, 10)], 100.0)}
    assert [s.period for s in read_availability(W, path, "auto", 50.0).values()] == [50.0, 50.0, 50.0, 100.0]


@pytest.mark.parametrize("rows, what", [
    ("0,0,10,0\n", "line 2: period_s '0' must be > 0"),
    ("0,0,10,abc\n", "line 2: period_s 'abc' is not a number"),
    ("0,0,10,inf\n", "line 2: period_s 'inf' is not allowed; expected a finite number"),
    ("0,0,10,100\n0,20,30,50\n", "line 3: period_s 50 differs from 100 on line 2 for node 0"),
    ("0,0,120,100\n", "line 2: end_s 120 is beyond node 0's period 100"),
    ("0,nan,10,\n", "line 2: start_s 'nan' is not allowed; expected a finite number"),
    ("0,inf,10,\n", "line 2: start_s 'inf' is not allowed; expected a finite number"),
    ("0,0,nan,\n", "line 2: end_s 'nan' is not allowed; expected a finite number or inf"),
    ("0,0,-inf,\n", "line 2: end_s '-inf' is not allowed; expected a finite number or inf"),
    ("0,5,5,\n", "line 2: end_s 5 must be later than start_s 5"),
    (" ,0,5,\n", "line 2: node is empty"),
])
def test_a_bad_availability_row_word_for_word(tmp_path, rows, what):
    path = write(tmp_path, "av.csv", "node,start_s,end_s,period_s\n" + rows)
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: {what}"


def test_the_specs_period_bounds_the_rows_too(tmp_path):
    path = write(tmp_path, "av.csv", AV_HEADER + "0,0,60\n")
    assert error(read_availability, W, path, "auto", 50.0) == f"{W}: {path}: line 2: end_s 60 is beyond node 0's period 50"
    assert read_availability(W, path, "auto", 60.0) == {"0": Sessions([(0, 60)], 60.0)}


def test_touching_and_overlapping_rows_are_one_session(tmp_path):
    path = write(tmp_path, "av.csv", AV_HEADER + "0,10,20\n0,0,10\n0,30,inf\n1,5,9\n1,0,6\n1,20,25\n")
    assert read_availability(W, path, "auto", None) == {"0": Sessions([(0, 20), (30, float("inf"))], None),
                                                        "1": Sessions([(0, 9), (20, 25)], None)}


def test_merge_joins_touching_and_overlapping_spans():
    assert _merge([]) == []
    assert _merge([(0, 10), (10, 20)]) == [(0, 20)]
    assert _merge([(5, 20), (0, 10)]) == [(0, 20)]
    assert _merge([(0, 30), (5, 10)]) == [(0, 30)]
    assert _merge([(0, 10), (2, 5), (20, 30), (25, 40), (40, 41), (50, 60)]) == [(0, 10), (20, 41), (50, 60)]
    assert _merge([(0, 1), (2, 3)]) == [(0, 1), (2, 3)]


# -- FedScale behaviour, event by event ----------------------------------------------------------------
@pytest.mark.parametrize("active, inactive, spans", [
    ([40], [60], [(40, 60)]),          # first active before any inactive: starts offline
    ([40], [], [(40, 100)]),           # no inactive at all: offline until 40
    ([40], [40], [(40, 100)]),         # an inactive at the first active's instant: starts offline
    ([40], [10], [(0, 10), (40, 100)]),  # first inactive earlier: starts online
    ([], [30], [(0, 30)]),             # only an inactive: online from 0
    ([0], [0], []),                    # on at 0 and off at 0: never online
    ([0.5], [], [(0.5, 100)]),         # an active time under one second still counts
    ([], [10, 20], [(0, 10)]),         # a second inactive while offline changes nothing
    ([0, 30], [], [(0, 100)]),         # a second active while online changes nothing
    ([], [0], []),                     # off at 0: an empty session is dropped
    ([100], [], []),                   # active at finish_time: nothing within the period
    ([150], [20], [(0, 20)]),          # times after finish_time are cut to it
    ([50], [150], [(50, 100)]),
    ([0], [], [(0, 100)]),
    ([], [], []),
])
def test_fedscale_behaviour_event_by_event(tmp_path, active, inactive, spans):
    path = write(tmp_path, "behave.json", json.dumps({"c": {"active": active, "inactive": inactive, "finish_time": 100}}))
    assert read_availability(W, path, "auto", None) == {"c": Sessions(spans, 100.0)}


def test_the_specs_period_replaces_finish_time(tmp_path):
    path = write(tmp_path, "behave", pickle.dumps({7: {"active": [10], "inactive": [20], "finish_time": 100}}))
    assert read_availability(W, path, "auto", 250.0) == {"7": Sessions([(10, 20)], 250.0)}


@pytest.mark.parametrize("entry, what", [
    ({"active": [], "inactive": []}, "client 'a': expected {'active': [s], 'inactive': [s], 'finish_time': s}"),
    ({"active": [], "finish_time": 5}, "client 'a': expected {'active': [s], 'inactive': [s], 'finish_time': s}"),
    ([1, 2], "client 'a': expected {'active': [s], 'inactive': [s], 'finish_time': s}"),
    ({"active": [1], "inactive": 5, "finish_time": 9}, "client 'a': active and inactive must be lists of seconds"),
    ({"active": 5, "inactive": [1], "finish_time": 9}, "client 'a': active and inactive must be lists of seconds"),
    ({"active": [], "inactive": [], "finish_time": 0}, "client 'a': finish_time '0' must be > 0"),
    ({"active": [], "inactive": [], "finish_time": "x"}, "client 'a': finish_time 'x' is not a number"),
    ({"active": [-1], "inactive": [], "finish_time": 9}, "client 'a': active[0] '-1' must be >= 0"),
    ({"active": [1, "nan"], "inactive": [], "finish_time": 9},
     "client 'a': active[1] 'nan' is not allowed; expected a finite number"),
    ({"active": [1], "inactive": [2, "x"], "finish_time": 9}, "client 'a': inactive[1] 'x' is not a number"),
])
def test_a_bad_fedscale_behaviour_entry_word_for_word(tmp_path, entry, what):
    path = write(tmp_path, "behave", pickle.dumps({"a": entry}))
    assert error(read_availability, W, path, "auto", None) == f"{W}: {path}: {what}"


# -- the config section -------------------------------------------------------------------------------
@pytest.mark.parametrize("section, message", [
    ({}, "population: give devices, availability or both"),
    ({"availability": {}}, "population.availability: needs one source: trace, profile or distributions"),
    ({"availability": {"trace": "a.csv", "profile": "churn"}},
     "population.availability: give one source, not trace and profile"),
    ({"availability": {"profile": "weekly"}}, "population.availability.profile: 'weekly' is not allowed; allowed: churn"),
    ({"devices": {"trace": "d.csv", "flops_per_s": 1, "uplink": 2}},
     "population.devices: give one source, not trace and flops_per_s, uplink"),
    ({"devices": {"profile": "mobile", "uplink": 2, "downlink": 3}},
     "population.devices: give one source, not profile and uplink, downlink"),
    ({"availability": {"online": 10}}, "population.availability: distributions need both online and offline"),
    ({"availability": {"offline": 10}}, "population.availability: distributions need both online and offline"),
    ({"availability": {"online": 0, "offline": 10}}, "population.availability: online and offline must have a positive mean"),
    ({"availability": {"online": 10, "offline": 0}}, "population.availability: online and offline must have a positive mean"),
    ({"availability": {"trace": "a.csv", "start_online": 0.5}},
     "population.availability.start_online: only used with distributions or a profile"),
    ({"mapping": "column", "devices": {"profile": "mobile"}, "availability": {"profile": "churn"}},
     "population.mapping: column needs a trace file with a node column"),
])
def test_the_section_is_checked_word_for_word(section, message):
    assert error(check_spec, spec(**section)) == message


@pytest.mark.parametrize("section", [
    {"availability": {"profile": "churn"}},
    {"availability": {"profile": "churn", "start_online": 0.5}},
    {"availability": {"online": 1, "offline": 2, "start_online": 0.0}},
    {"availability": {"online": {"dist": "uniform", "low": 0, "high": 2}, "offline": 1e-9}},
    {"devices": {"profile": "mobile"}},
    {"mapping": "column", "availability": {"trace": "a.csv"}},
    {"mapping": "column", "devices": {"trace": "d.csv"}, "availability": {"profile": "churn"}},
])
def test_good_sections_pass(section):
    assert check_spec(spec(**section)) is None


def test_every_allowed_profile_is_listed():
    assert error(_one_source, "w", None, "c", [], {"a": 1, "b": 2}) == "w.profile: 'c' is not allowed; allowed: a, b"
    assert error(_one_source, "w", "t", "a", ["x", "y", "z"], {"a": 1}) == "w: give one source, not trace and profile and x, y, z"
    assert _one_source("w", None, None, ["x"], {}) is None


# -- resolve ------------------------------------------------------------------------------------------
def test_resolve_names_the_device_trace_in_its_errors(tmp_path):
    path = write(tmp_path, "dev.csv", DEV_HEADER + ",1e9,8,8\n")
    assert error(population, tmp_path, devices={"trace": "dev.csv"}) == \
        f"population.devices.trace: {path}: line 2: node is empty"
    path = write(tmp_path, "dev.csv", "node,flops\n0,1\n")
    assert error(population, tmp_path, devices={"trace": "dev.csv"}) == \
        f"population.devices.trace: {path}: columns node,flops; expected node,flops_per_s,up_bps,down_bps"
    path = write(tmp_path, "cap", pickle.dumps({1: {}}))
    assert error(population, tmp_path, devices={"trace": "cap"}) == \
        f"population.devices.trace: {path}: client 1: expected {{'computation': ms, 'communication': kbps}}"


def test_resolve_names_the_availability_trace_in_its_errors(tmp_path):
    path = write(tmp_path, "behave", pickle.dumps({"a": 3}))
    assert error(population, tmp_path, availability={"trace": "behave"}) == \
        f"population.availability.trace: {path}: client 'a': expected {{'active': [s], 'inactive': [s], 'finish_time': s}}"
    path = write(tmp_path, "behave", pickle.dumps([]))
    assert error(population, tmp_path, availability={"trace": "behave"}) == \
        f"population.availability.trace: {path}: expected a non-empty dict of clients"


@pytest.mark.parametrize("part, name, text, what", [
    ("devices", "dev.csv", DEV_HEADER + "a,1e9,8,8\n", "node 'a' is not a node id (mapping: column)"),
    ("devices", "dev.csv", DEV_HEADER + "3,1e9,8,8\n4,1e9,8,8\n", "node 4 does not exist; nodes are 0..3 (mapping: column)"),
    ("devices", "dev.csv", DEV_HEADER + "-1,1e9,8,8\n", "node -1 does not exist; nodes are 0..3 (mapping: column)"),
    ("availability", "av.csv", AV_HEADER + "0,0,5\nx1,0,5\n", "node 'x1' is not a node id (mapping: column)"),
    ("availability", "av.csv", AV_HEADER + "4,0,5\n", "node 4 does not exist; nodes are 0..3 (mapping: column)"),
])
def test_column_mapping_errors_word_for_word(tmp_path, part, name, text, what):
    path = write(tmp_path, name, text)
    assert error(population, tmp_path, n=4, mapping="column", **{part: {"trace": name}}) == \
        f"population.{part}.trace: {path}: {what}"


def test_column_mapping_takes_the_last_node(tmp_path):
    write(tmp_path, "dev.csv", DEV_HEADER + "3,1e9,8,8\n0,2e9,16,16\n")
    pop = population(tmp_path, n=4, mapping="column", devices={"trace": "dev.csv"})
    assert pop.devices == {3: Device(1e9, None, 1.0, 1.0), 0: Device(2e9, None, 2.0, 2.0)}
    assert pop.members == (0, 3)


def test_resolve_splits_its_seed_into_four_streams(tmp_path):
    """Devices draw from the first stream, the availability (one child per node) from the
    second, the mappings from the third and fourth: a part stays the same when another changes."""
    rows = "".join(f"{k},{k},{k + 1}\n" for k in range(6))
    write(tmp_path, "av.csv", AV_HEADER + rows)
    write(tmp_path, "dev.csv", DEV_HEADER + "".join(f"{k},{k + 1}e9,8,8\n" for k in range(6)))
    seed = 12
    pop = population(tmp_path, n=6, seed=seed, mapping="sample", availability={"trace": "av.csv"},
                     devices={"flops_per_s": {"dist": "uniform", "low": 1e9, "high": 2e9}})
    s_dev, _, _, s_map_av = streams(seed)
    order = np.random.default_rng(s_map_av).permutation(6)
    assert [pop.timelines[i].next_flip(0.0 if order[i] == 0 else order[i] - 0.5) for i in range(6)] == \
        [float(order[i] + (1 if order[i] == 0 else 0)) for i in range(6)]
    g = np.random.default_rng(s_dev)
    assert [pop.devices[i].flops_per_s for i in range(6)] == [float(g.uniform(1e9, 2e9)) for _ in range(6)]

    pop = population(tmp_path, n=6, seed=seed, mapping="sample", devices={"trace": "dev.csv"})
    order = np.random.default_rng(streams(seed)[2]).permutation(6)
    assert [pop.devices[i].flops_per_s for i in range(6)] == [(order[i] + 1) * 1e9 for i in range(6)]

    pop = population(tmp_path, n=5, seed=seed, holders=[1, 3], availability={"online": 1, "offline": 2,
                                                                             "start_online": 0.5})
    kids = streams(seed)[1].spawn(5)
    assert [pop.timelines[i].start_online for i in (1, 3)] == \
        [bool(np.random.default_rng(kids[i]).random() < 0.5) for i in (1, 3)]


def test_start_online_is_a_strict_chance(tmp_path):
    """A node starts online when its draw is below start_online: exactly at it, it does not."""
    n, seed = 3, 5
    draws = [np.random.default_rng(k).random() for k in streams(seed)[1].spawn(n)]
    pop = population(tmp_path, n=n, seed=seed, availability={"online": 1, "offline": 2, "start_online": draws[0]})
    assert pop.timelines[0].start_online is False
    pop = population(tmp_path, n=n, seed=seed, availability={"online": 1, "offline": 2,
                                                             "start_online": float(np.nextafter(draws[0], 1))})
    assert pop.timelines[0].start_online is True


def test_start_online_overrides_the_means_and_profiles_draw(tmp_path):
    on = population(tmp_path, n=20, availability={"online": 10, "offline": 30, "start_online": 1.0})
    assert all(on.online(i, 0.0) for i in range(20)) and on.timelines[0].next_flip(0.0) == 10.0
    off = population(tmp_path, n=20, availability={"online": 10, "offline": 30, "start_online": 0.0})
    assert not any(off.online(i, 0.0) for i in range(20)) and off.timelines[0].next_flip(0.0) == 30.0
    churn = population(tmp_path, n=3, availability={"profile": "churn"})
    assert sorted(churn.timelines) == [0, 1, 2]
    assert all(isinstance(t, DrawnTimeline) and t._on == Dist("exponential", mean=120.0) for t in churn.timelines.values())


def test_drawn_devices_are_at_least_1_and_a_part_left_out_stays_none(tmp_path):
    pop = population(tmp_path, n=2, devices={"flops_per_s": 1.5, "uplink": 1.5, "downlink": 1.5})
    assert pop.devices == {0: Device(1.5, None, 1.5, 1.5), 1: Device(1.5, None, 1.5, 1.5)}
    pop = population(tmp_path, n=1, devices={"flops_per_s": 0, "uplink": 0, "downlink": 0.5})
    assert pop.devices == {0: Device(1.0, None, 1.0, 1.0)}
    assert population(tmp_path, n=1, devices={"flops_per_s": 3e9}).devices == {0: Device(3e9, None, None, None)}
    assert population(tmp_path, n=1, devices={"downlink": 5e5}).devices == {0: Device(None, None, None, 5e5)}
    assert population(tmp_path, n=1, devices={"uplink": 7e5}).devices == {0: Device(None, None, 7e5, None)}


def test_resolve_passes_selection_rejoin_period_and_fedscale_flops(tmp_path):
    write(tmp_path, "av.csv", AV_HEADER + "0,0,10\n")
    pop = population(tmp_path, n=2, horizon=500.0, selection="any", rejoin="fresh",
                     devices={"flops_per_s": 1e9, "fedscale_flops_per_sample": 5e8},
                     availability={"trace": "av.csv", "period": 50})
    assert (pop.selection, pop.rejoin, pop.horizon, pop.fedscale_flops_per_sample) == ("any", "fresh", 500.0, 5e8)
    assert [pop.timelines[i].period for i in (0, 1)] == [50.0, 50.0]
    assert pop.online(1, 55.0) and not pop.online(1, 45.0)
    assert population(tmp_path, n=2, availability={"trace": "av.csv"}).fedscale_flops_per_sample is None


# -- timelines ----------------------------------------------------------------------------------------
def test_a_plain_timeline_never_flips():
    tl = Timeline(True)
    assert tl.online(5.0) and tl.online(5.0) and tl.online(1e9) and tl.next_flip(0.0) is None
    tl = Timeline(False)
    assert tl.next_flip(3.0) is None and not tl.online(3.0) and not tl.online(0.0)


def test_a_drawn_timeline_alternates_its_two_lengths():
    tl = DrawnTimeline(Dist("constant", value=10.0), Dist("constant", value=30.0), True, np.random.default_rng(0))
    assert [tl.online(t) for t in (0, 9.9, 10, 39.9, 40, 49.9, 50, 80)] == [True, True, False, False, True, True,
                                                                               False, True]
    assert [tl.next_flip(t) for t in (0, 10, 45, 50, 79.5)] == [10.0, 40.0, 50.0, 80.0, 80.0]
    tl = DrawnTimeline(Dist("constant", value=10.0), Dist("constant", value=30.0), False, np.random.default_rng(0))
    assert [tl.next_flip(t) for t in (0, 30, 40)] == [30.0, 40.0, 70.0]


def test_a_drawn_timeline_keeps_lengths_under_a_second_and_makes_zero_a_microsecond():
    tl = DrawnTimeline(Dist("constant", value=0.25), Dist("constant", value=0.5), True, np.random.default_rng(0))
    assert tl.online(0.5) is False                   # the first question already looks past the first flip
    assert [tl.online(t) for t in (0.2, 0.25, 0.74, 0.75, 1.0, 1.4)] == [True, False, False, True, False, False]
    assert tl.flips[:4] == [0.25, 0.75, 1.0, 1.5]
    tl = DrawnTimeline(Dist("constant", value=0.0), Dist("constant", value=0.0), True, np.random.default_rng(0))
    assert tl.next_flip(0.0) == 1e-6 and tl.online(0.0)
    tl = DrawnTimeline(Dist("constant", value=0.25), Dist("constant", value=0.5), True, np.random.default_rng(0))
    assert tl.next_flip(0.1) == 0.25


def test_a_trace_timeline_with_a_period_under_a_second():
    tl = TraceTimeline(Sessions([(0, 0.25)], 0.5))
    assert tl.online(10.3) is False
    assert [tl.online(t) for t in (10.1, 10.25, 10.5, 0.0)] == [True, False, True, True]
    assert tl.next_flip(10.3) == 10.5


def test_a_trace_timeline_without_flips():
    never = TraceTimeline(Sessions([], 100.0))
    assert not never.online(5.0) and not never.online(250.0) and never.next_flip(0.0) is None
    always = TraceTimeline(Sessions([(0, 100)], 100.0))
    assert always.online(5.0) and always.online(250.0) and always.next_flip(0.0) is None
    once = TraceTimeline(Sessions([(5, float("inf"))], None))
    assert not once.online(4.0) and once.online(5.0) and once.online(1e12)
    assert once.next_flip(0.0) == 5.0 and once.next_flip(5.0) is None


def test_next_change_at_and_after_the_horizon():
    online_to_horizon = TraceTimeline(Sessions([(0, 100)], None))
    pop = Population((0, 1), {}, {0: online_to_horizon, 1: TraceTimeline(Sessions([(100, 200)], None))}, horizon=100.0)
    assert pop.next_change(0, 50.0) is None          # online, and the flip at the horizon is the horizon's
    assert pop.next_change(1, 50.0) == 100.0         # offline until the horizon brings it online
    assert pop.next_change(0, 100.0) is None and pop.online(1, 100.0)
    pop = Population((0,), {}, {0: TraceTimeline(Sessions([(5, float("inf"))], None))}, horizon=100.0)
    assert pop.next_change(0, 0.0) == 5.0 and pop.next_change(0, 10.0) is None
    pop = Population((0,), {}, {0: TraceTimeline(Sessions([(5, 99.5)], None))}, horizon=100.0)
    assert pop.next_change(0, 10.0) == 99.5 and pop.next_change(0, 99.5) == 100.0


def test_online_fraction_without_timelines_is_1():
    assert Population((), {}, {}).online_fraction(0.0) == 1.0
    assert Population((0,), {0: Device(1.0, None, None, None)}, {}).online_fraction(10.0) == 1.0


def test_a_period_shorter_than_finish_time_cuts_the_sessions_there(tmp_path):
    """A FedScale client's sessions past the spec's period used to stay in its Sessions, so the
    timeline's cycle had instants past the period and its flips were out of order (the node was
    never online). They are cut at the period, as times past finish_time are cut at it."""
    trace = {"a": {"active": [20, 60], "inactive": [30, 80], "finish_time": 100},
             "b": {"active": [0], "inactive": [], "finish_time": 100},
             "c": {"active": [10], "inactive": [], "finish_time": 100}}
    path = write(tmp_path, "behave", pickle.dumps(trace))
    sessions = read_availability(W, path, "auto", 50.0)
    assert sessions["a"] == Sessions([(20, 30)], 50.0) and sessions["b"] == Sessions([(0, 50)], 50.0)
    a = TraceTimeline(sessions["a"])
    assert [a.online(t) for t in (10, 25, 60, 75, 80, 125)] == [False, True, False, True, False, True]
    assert a.flips == sorted(a.flips) and a.next_flip(0.0) == 20.0 and a.next_flip(30.0) == 70.0
    assert TraceTimeline(sessions["b"]).online(75.0)
    assert read_availability(W, path, "auto", 250.0)["c"] == Sessions([(10, 100)], 250.0)  # a longer period cuts nothing
