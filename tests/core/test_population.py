"""Populations: reading traces (simbench's tables, FedScale's dicts), mapping trace clients to
nodes, availability over time, and the config section's one-line errors."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from simbench.core.population import (Population, PopulationSpec, Sessions, TraceTimeline, read_availability,
                                      read_devices, read_plain_pickle, resolve)
from simbench.core.scenario import ComputeSpec, NodeProfile
from simbench.core.schema import ConfigError, from_dict
from simbench.experiment.config import parse_config


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def population(tmp_path, n=4, holders=None, seed=0, horizon=1e6, **spec):
    """The population a config's ``population: {**spec}`` gives ``n`` nodes (traces in tmp_path)."""
    return resolve(from_dict(PopulationSpec, spec, "population"), n, holders if holders is not None else range(n),
                   np.random.default_rng(seed), horizon, cwd=tmp_path)


# -- malformed rows: one line naming the row -----------------------------------------------------
@pytest.mark.parametrize("rows, needle", [
    ("0,0,10\n1,5,abc\n", "line 3: end_s 'abc' is not a number"),
    ("0,0,10\n1,7,7\n", "line 3: end_s 7 must be later than start_s 7"),
    ("0,-1,10\n", "line 2: start_s '-1' must be >= 0"),
    ("0,0,10\n1,0\n", "line 3: 2 fields, the header has 3"),
    ("0,0,nan\n", "line 2: end_s 'nan' is not allowed"),
    ("0,0,10\n\n,1,2\n", "line 4: node is empty"),
])
def test_a_malformed_availability_row_is_one_line_naming_the_row(tmp_path, rows, needle):
    path = write(tmp_path, "av.csv", "node,start_s,end_s\n" + rows)
    with pytest.raises(ConfigError) as info:
        population(tmp_path, availability={"trace": "av.csv"})
    msg = str(info.value)
    assert msg.startswith(f"population.availability.trace: {path}: ") and needle in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("text, needle", [
    ("node,flops_per_s,up_bps,down_bps\n0,1e9,1e6,1e6\n1,0,1e6,1e6\n", "line 3: flops_per_s '0' must be > 0"),
    ("node,flops_per_s,up_bps,down_bps\n0,1e9,1e6,1e6\n0,2e9,1e6,1e6\n", "line 3: node 0 appears twice"),
    ("node,flops,up_bps,down_bps\n0,1e9,1e6,1e6\n", "columns node,flops,up_bps,down_bps; expected node,flops_per_s"),
    ("node,flops_per_s,up_bps,down_bps\n", "no data rows"),
    ("node,flops_per_s,up_bps,down_bps\n0,1e9,fast,1e6\n", "line 2: up_bps 'fast' is not a number"),
])
def test_a_malformed_device_row_is_one_line_naming_the_row(tmp_path, text, needle):
    write(tmp_path, "dev.csv", text)
    with pytest.raises(ConfigError) as info:
        population(tmp_path, devices={"trace": "dev.csv"})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_period_column_must_agree_on_every_row_of_a_node(tmp_path):
    write(tmp_path, "av.csv", "node,start_s,end_s,period_s\n0,0,10,100\n0,20,30,50\n")
    with pytest.raises(ConfigError, match="line 3: period_s 50 differs from 100 on line 2 for node 0"):
        population(tmp_path, availability={"trace": "av.csv"})
    write(tmp_path, "av.csv", "node,start_s,end_s,period_s\n0,0,120,100\n")
    with pytest.raises(ConfigError, match="line 2: end_s 120 is beyond node 0's period 100"):
        population(tmp_path, availability={"trace": "av.csv"})


def test_simbench_tables_read_from_parquet_too(tmp_path):
    import pandas as pd
    pd.DataFrame({"node": [0, 1], "flops_per_s": [2e9, 8e9], "up_bps": [8e6, 1.6e7],
                  "down_bps": [1.6e7, 8e6]}).to_parquet(tmp_path / "dev.parquet")
    table = read_devices("x", tmp_path / "dev.parquet", "auto")
    assert [(d.flops_per_s, d.uplink, d.downlink) for d in table.values()] == [(2e9, 1e6, 2e6), (8e9, 2e6, 1e6)]


# -- FedScale's formats ------------------------------------------------------------------------------
def test_fedscale_capacity_is_read_in_fedscales_units(tmp_path):
    """fedscale/cloud/internal/client_metadata.py: computation is ms per sample (forward),
    communication kbps, and a model of B bytes moves in B * 8 / 1024 / kbps seconds."""
    (tmp_path / "cap").write_bytes(pickle.dumps({1: {"computation": 153.0, "communication": 2209.61},
                                                 2: {"computation": 20, "communication": 100}}))
    table = read_devices("x", tmp_path / "cap", "auto")
    dev = table["1"]
    assert dev.ms_per_sample == 153.0 and dev.flops_per_s is None
    size = 800_000  # bytes
    assert size / dev.uplink == pytest.approx(size * 8 / 1024 / 2209.61)
    assert size / table["2"].downlink == pytest.approx(size * 8 / 1024 / 100)


def test_a_fedscale_latency_charges_fedscales_step_time_whatever_the_model():
    """FedScale's get_completion_time: 3 * batch * ms / 1000 seconds per local step. The node's
    speed becomes F * 1000 / ms FLOP/s with F its model's forward FLOPs per sample (a step's
    FLOPs / (3 batch)), so a step of the run's model takes FedScale's time: 3 * 20 * 153 / 1000
    = 9.18 s here, on a config device of 25 GFLOP/s."""
    from simbench.core.population import Device
    from simbench.experiment.build import population_speeds

    pop = Population((1,), {1: Device(None, 153.0, 1.0, 1.0)}, {})
    learner = SimpleNamespace(batch_size=20, flops_per_step=lambda: 3 * 20 * 4.0e5)
    cfg = SimpleNamespace(compute=ComputeSpec(device="laptop-cpu"))
    profiles = population_speeds(cfg, pop, [NodeProfile(), NodeProfile(speed=0.5)],
                                 {1: SimpleNamespace(learner=learner)})
    seconds_per_step = learner.flops_per_step() / (cfg.compute.speed * profiles[1].speed)
    assert seconds_per_step == pytest.approx(2 * 9.18)  # x2: the node was already a half-speed (weak) node
    assert profiles[0] == NodeProfile()


def test_fedscale_behaviour_is_read_as_the_epfl_simulator_reads_it(tmp_path):
    """sacs-epfl/decentralized-learning-simulator, simulation.py set_fedscale_trace_for_client:
    active times start sessions, inactive times end them, a client whose first inactive comes
    before its first active starts online, and the trace repeats every finish_time."""
    trace = {"a": {"active": [0, 50], "inactive": [20, 70], "finish_time": 100, "duration": 1, "model": "x"},
             "b": {"active": [40], "inactive": [10, 60], "finish_time": 100}}   # online at 0, off at 10
    (tmp_path / "behave").write_bytes(pickle.dumps(trace))
    sessions = read_availability("x", tmp_path / "behave", "auto", None)
    assert sessions["a"].spans == [(0, 20), (50, 70)] and sessions["a"].period == 100
    assert sessions["b"].spans == [(0, 10), (40, 60)]
    a = TraceTimeline(sessions["a"])
    assert [a.online(t) for t in (0, 19.9, 20, 49.9, 50, 69.9, 70, 100, 119.9, 120, 150)] == \
        [True, True, False, False, True, True, False, True, True, False, True]


def test_availability_is_looked_up_not_walked_like_fedscales_cursor():
    """fedscale/cloud/internal/client_metadata.py is_active advances its session cursor by one
    per call, so a first question at t = 45 (third session) says offline. simbench answers from
    the instant alone: online."""
    spans = [(0, 10), (20, 30), (40, 50)]
    tl = TraceTimeline(Sessions(spans, 100))
    assert tl.online(45) is True

    cursor = {"i": 0}  # FedScale's rule, for the record

    def fedscale_is_active(t):
        norm = t % 100
        if norm > spans[cursor["i"]][1]:
            cursor["i"] += 1
        cursor["i"] %= len(spans)
        return spans[cursor["i"]][0] <= norm <= spans[cursor["i"]][1]
    assert fedscale_is_active(45) is False


def test_pickles_that_refer_to_any_class_or_function_are_refused(tmp_path):
    called = []

    class Evil:
        def __reduce__(self):
            return (called.append, ("ran",))

    payload = pickle.dumps({1: {"computation": 1.0, "communication": Evil()}})
    with pytest.raises(pickle.UnpicklingError, match="only plain dicts"):
        read_plain_pickle(payload)
    (tmp_path / "cap").write_bytes(payload)
    with pytest.raises(ConfigError, match="not a plain FedScale pickle: refers to builtins.getattr|not a plain"):
        read_devices("population.devices.trace", tmp_path / "cap", "fedscale")
    assert called == []
    assert read_plain_pickle(pickle.dumps({1: [1, 2.5, "x", None, True, (3,)]})) == {1: [1, 2.5, "x", None, True, (3,)]}


def test_fedscale_dicts_as_json_are_read_too(tmp_path):
    write(tmp_path, "cap.json", '{"7": {"computation": 50, "communication": 1000}}')
    assert read_devices("x", tmp_path / "cap.json", "auto")["7"].ms_per_sample == 50


# -- availability over time -------------------------------------------------------------------------
def test_sessions_are_half_open_and_repeat_with_their_period():
    tl = TraceTimeline(Sessions([(10, 20), (30, 40)], 50))
    assert [tl.online(t) for t in (0, 10, 19.999, 20, 30, 40, 60, 70, 80, 90)] == \
        [False, True, True, False, True, False, True, False, True, False]
    flips, t = [], 0.0
    for _ in range(6):
        t = tl.next_flip(t)
        flips.append(t)
    assert flips == [10, 20, 30, 40, 60, 70]


def test_a_session_across_the_wrap_is_one_session():
    tl = TraceTimeline(Sessions([(0, 10), (40, 50)], 50))   # online 40..60 across the period's end
    assert tl.next_flip(35) == 40 and tl.next_flip(40) == 60 and tl.online(55) and not tl.online(60)


def test_every_node_is_online_from_the_horizon_on(tmp_path):
    write(tmp_path, "av.csv", "node,start_s,end_s\n0,0,10\n1,5,6\n")
    pop = population(tmp_path, n=2, horizon=100.0, availability={"trace": "av.csv"}, mapping="column")
    assert not pop.online(0, 50) and pop.next_change(0, 10) == 100.0 and pop.online(0, 100.0)
    assert pop.next_change(1, 6) == 100.0 and pop.next_change(0, 100.0) is None
    assert (pop.online_fraction(7), pop.online_fraction(5.5), pop.online_fraction(50)) == (0.5, 1.0, 0.0)


# -- mapping -----------------------------------------------------------------------------------------
def test_index_mapping_gives_the_kth_member_the_kth_client_modulo(tmp_path):
    write(tmp_path, "dev.csv", "node,flops_per_s,up_bps,down_bps\na,1e9,8,8\nb,2e9,8,8\nc,3e9,8,8\n")
    pop = population(tmp_path, n=6, holders=[1, 2, 3, 4, 5], devices={"trace": "dev.csv"})
    assert {i: d.flops_per_s for i, d in pop.devices.items()} == {1: 1e9, 2: 2e9, 3: 3e9, 4: 1e9, 5: 2e9}
    assert pop.members == (1, 2, 3, 4, 5)  # the server (node 0) keeps the config's values


def test_sample_mapping_draws_with_the_seed_without_replacement_while_it_can(tmp_path):
    rows = "".join(f"{k},{k + 1}e9,8,8\n" for k in range(10))
    write(tmp_path, "dev.csv", "node,flops_per_s,up_bps,down_bps\n" + rows)
    draw = lambda seed, n: [d.flops_per_s for _, d in sorted(population(  # noqa: E731
        tmp_path, n=n, seed=seed, devices={"trace": "dev.csv"}, mapping="sample").devices.items())]
    a, b, c = draw(0, 6), draw(0, 6), draw(1, 6)
    assert a == b != c and len(set(a)) == 6
    assert sorted(draw(0, 20)) == sorted([(k + 1) * 1e9 for k in range(10)] * 2)  # every client twice


def test_column_mapping_reads_node_ids_and_names_a_bad_one(tmp_path):
    write(tmp_path, "av.csv", "node,start_s,end_s\n2,0,5\n")
    pop = population(tmp_path, n=4, availability={"trace": "av.csv"}, mapping="column")
    assert list(pop.timelines) == [2] and pop.online(0, 99) and not pop.online(2, 6)
    write(tmp_path, "av.csv", "node,start_s,end_s\n2,0,5\n9,0,5\n")
    with pytest.raises(ConfigError, match=r"av.csv: node 9 does not exist; nodes are 0..3 \(mapping: column\)"):
        population(tmp_path, n=4, availability={"trace": "av.csv"}, mapping="column")


def test_distributions_and_profiles_draw_per_node_with_the_seed(tmp_path):
    spec = dict(devices={"profile": "mobile"}, availability={"online": 30.0, "offline": 10.0})
    a, b = population(tmp_path, n=50, **spec), population(tmp_path, n=50, **spec)
    assert [d.flops_per_s for d in a.devices.values()] == [d.flops_per_s for d in b.devices.values()]
    assert len({d.uplink for d in a.devices.values()}) == 50
    assert [a.timelines[i].next_flip(0) for i in range(50)] == [b.timelines[i].next_flip(0) for i in range(50)]
    starts = sum(a.online(i, 0.0) for i in range(50))
    assert 25 <= starts <= 48  # three in four start online on average
    tl = a.timelines[0]
    assert tl.next_flip(0.0) == (30.0 if tl.start_online else 10.0)  # constant lengths


# -- the config section ------------------------------------------------------------------------------
@pytest.mark.parametrize("section, needle", [
    ({}, "population: give devices, availability or both"),
    ({"devices": {}}, "population.devices: needs one source: trace, profile or distributions"),
    ({"devices": {"trace": "x.csv", "profile": "mobile"}}, "population.devices: give one source, not trace and profile"),
    ({"devices": {"profile": "laptop"}}, "population.devices.profile: 'laptop' is not allowed; allowed: mobile"),
    ({"availability": {"online": "1min"}}, "population.availability: distributions need both online and offline"),
    ({"availability": {"online": 0, "offline": 0}}, "online and offline must have a positive mean"),
    ({"selection": "sometimes", "devices": {"profile": "mobile"}}, "population.selection: 'sometimes' is not allowed; allowed: online, any"),
    ({"devices": {"uplink": "fast"}}, "population.devices.uplink: cannot read 'fast' as a bandwidth"),
    ({"mapping": "column", "devices": {"profile": "mobile"}}, "population.mapping: column needs a trace file"),
    ({"devices": {"tarce": "x.csv"}}, "population.devices.tarce: unknown field in population.devices (did you mean 'trace'?)"),
])
def test_the_population_section_is_validated_with_one_line_errors(section, needle):
    with pytest.raises(ConfigError) as info:
        parse_config({"population": section})
    assert needle in str(info.value), str(info.value)


def test_no_population_section_leaves_the_run_id_as_it_was():
    plain = parse_config({})
    assert "population" not in plain.to_dict()
    with_pop = parse_config({"population": {"devices": {"uplink": "6Mbit/s"}}})
    assert with_pop.population.devices.uplink.value == pytest.approx(6e6 / 8)
    assert with_pop.run_id() != plain.run_id()


def test_a_device_part_left_out_keeps_the_configs_value(tmp_path):
    pop = population(tmp_path, n=2, devices={"uplink": 1e6})
    assert [(d.flops_per_s, d.uplink, d.downlink) for d in pop.devices.values()] == [(None, 1e6, None)] * 2
    assert pop.flops_per_s(0, 1e6) is None
