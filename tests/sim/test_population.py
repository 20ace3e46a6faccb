"""Populations in the simulator: offline spells stop a node like a crash (but keep its state),
per-node bandwidths, federated servers that sample only online clients, and runs with traces
that are byte-for-byte reproducible."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch

from simbench.core.message import Message
from simbench.core.population import Device, Population, Sessions, TraceTimeline
from simbench.core.scenario import ComputeSpec, Crash, Scenario, node_profiles
from simbench.core.units import to_ticks
from simbench.metrics.recorder import Recorder
from simbench.sim.world import SimWorld

from conftest import QUIET
from simhelpers import events, net


def offline(spells: dict[int, list[tuple[float, float]]], horizon: float = 1e6, **kw) -> Population:
    """A population whose node k is online outside ``spells[k]`` (offline windows [t1, t2))."""
    timelines = {}
    for node, windows in spells.items():
        on, t = [], 0.0
        for t1, t2 in windows:
            if t1 > t:
                on.append((t, t1))
            t = t2
        on.append((t, math.inf))
        timelines[node] = TraceTimeline(Sessions(on))
    return Population(tuple(spells), {}, timelines, horizon=horizon, **kw)


def world(graph, nodes, population=None, scenario=None, **net_kw):
    scenario = scenario or Scenario()
    n = graph.number_of_nodes()
    return SimWorld(graph, nodes, roles={}, network=net(**net_kw), compute=ComputeSpec(), scenario=scenario,
                    profiles=node_profiles(scenario, n, np.random.default_rng(0)),
                    recorder=Recorder("t", wall_clock=False), seed=0, population=population,
                    fresh_node=lambda i: Counter())


class Ticker:
    """Sends a time-stamped tick to ``peer`` every 0.1 s, ``count`` times in all (its state
    survives an offline spell: it goes on where it stopped)."""

    def __init__(self, peer: int, count: int = 40):
        self.peer, self.count, self.sent, self.starts, self.got = peer, count, 0, [], []

    async def run(self, rt):
        self.starts.append(round(rt.now(), 9))
        rt.spawn(self.listen(rt), "listen")
        while self.sent < self.count:
            await rt.send(self.peer, Message("tick", {"t": rt.now()}))
            self.sent += 1
            await rt.sleep(0.1)

    async def listen(self, rt):
        while True:
            m = await rt.recv()
            self.got.append((round(rt.now(), 9), round(m["t"], 9)))


def test_an_offline_node_sends_and_receives_nothing_in_its_window_and_resumes_with_its_state():
    a, b = Ticker(1), Ticker(0)
    w = world(nx.path_graph(2), {0: a, 1: b}, offline({1: [(1.0, 2.0)]}), latency=0.001)
    sent = {}
    for t in (0.999, 1.0, 1.5, 1.999):
        w.kernel.schedule_at(to_ticks(t), lambda t=t: sent.__setitem__(t, w.network.bytes_sent[1]))
    w.run()
    assert sent[1.0] == sent[1.5] == sent[1.999] == sent[0.999]  # nothing leaves node 1 in [1, 2)
    assert not [t for t, _ in b.got if 1.0 <= t < 2.0]            # and nothing reaches it
    assert not [s for _, s in a.got if 1.0 <= s < 2.0]
    assert b.starts == [0.0, 2.0] and b.sent == 40                # back at 2.0, going on from tick 10
    assert [s for _, s in a.got][9:11] == [0.9, 2.0]
    dropped = [(round(t, 3), v) for t, node, v in events(w, "drop_offline") if node == 1]
    assert dropped == [(round(k / 10 + 0.001, 3), 0.0) for k in range(10, 20)]  # node 0's ticks of 1.0 .. 1.9
    assert events(w, "offline") == [(1.0, 1, 1.0)] and events(w, "online") == [(2.0, 1, 1.0)]
    assert events(w, "population_size") == [(0.0, "all", 1.0)]


def test_messages_in_flight_both_ways_are_dropped_when_the_node_goes_offline():
    got = {0: [], 1: []}

    class Big:
        async def run(self, rt):
            rt.spawn(self.keep(rt), "keep")
            if not got[rt.node_id]:  # the first life sends; after the spell it only listens
                for k in range(5):
                    await rt.send(1 - rt.node_id, Message("m", {"k": k}, {"x": torch.zeros(10**6, dtype=torch.uint8)}))
            await rt.sleep(1.0)

        async def keep(self, rt):
            while True:
                m = await rt.recv()
                got[rt.node_id].append((round(rt.now(), 3), m["k"]))

    w = world(nx.path_graph(2), {0: Big(), 1: Big()}, offline({1: [(0.25, 0.5)]}), bandwidth=10e6)
    w.run()
    assert got == {0: [(0.1, 0), (0.2, 1)], 1: [(0.1, 0), (0.2, 1)]}  # the third of each was half-way at 0.25
    assert events(w, "drop_sender_offline") == [(0.25, 0, 1.0)] * 3     # node 1's own, at node 0
    assert events(w, "drop_offline") == [(0.25, 1, 0.0)] * 3            # node 0's, on their way to node 1
    assert w.network.msgs_dropped == 6 and w.network.active_flows == 0


def test_a_crash_within_an_offline_spell_keeps_the_node_down_until_both_are_over():
    b = Ticker(0, count=50)
    w = world(nx.path_graph(2), {0: Listener(), 1: b}, offline({1: [(1.0, 3.0)]}),
              scenario=Scenario(crashes=(Crash(node=1, at=2.0, recover_at=4.0),)))
    w.run()
    assert b.starts == [0.0, 4.0]
    flips = [(t, m) for t, _w, node, m, _v in w.recorder.events if m in ("offline", "crash", "online", "recover")]
    assert flips == [(1.0, "offline"), (2.0, "crash"), (3.0, "online"), (4.0, "recover")]


class Listener:
    async def run(self, rt):
        while await rt.recv(timeout=5.0) is not None:
            pass


class Counter:
    """Counts its steps in ``self.count`` (a fresh one starts from 0 again)."""

    log: list = []

    def __init__(self):
        self.count = 0

    async def run(self, rt):
        while self.count < 10:
            self.count += 1
            Counter.log.append((round(rt.now(), 9), rt.node_id, self.count))
            await rt.sleep(0.1)


@pytest.mark.parametrize("rejoin, after", [("keep", [7, 8, 9, 10]), ("fresh", list(range(1, 11)))])
def test_a_node_comes_back_with_its_state_or_fresh(rejoin, after):
    Counter.log = []
    w = world(nx.path_graph(2), {0: Counter(), 1: Counter()}, offline({1: [(0.55, 1.0)]}, rejoin=rejoin))
    w.run()
    node1 = [(t, c) for t, node, c in Counter.log if node == 1]
    assert [c for t, c in node1 if t < 0.55] == [1, 2, 3, 4, 5, 6]
    assert [c for t, c in node1 if t >= 1.0] == after  # keep: it goes on from the 6 steps it had counted


def test_a_run_whose_nodes_are_all_offline_waits_and_ends_with_its_last_node():
    Counter.log = []
    pop = offline({0: [(0.25, 1.0), (1.5, 2.5)], 1: [(0.35, 1.2), (2.0, 2.2), (3.0, 4.0)]})
    w = world(nx.path_graph(2), {0: Counter(), 1: Counter()}, pop)
    w.run()
    ends = {node: t for t, node, c in Counter.log if c == 10}
    # both offline from 0.35 to 1.0: the run waits; node 0: 3 steps, 5 from 1.0, 2 from 2.5
    assert ends == {0: pytest.approx(2.6), 1: pytest.approx(1.7)}
    assert w.now == pytest.approx(2.7)  # node 0's last sleep; node 1's spell at 3.0 is after the end
    # node 1 had finished by its spell at 2.0: a finished node's spells are not run
    assert [(t, node) for t, node, _ in events(w, "offline")] == [(0.25, 0), (0.35, 1), (1.5, 0)]
    assert len(Counter.log) == 20


def test_per_node_bandwidth_comes_from_the_population():
    got = []

    class One:
        async def run(self, rt):
            if rt.node_id == 1:
                await rt.send(0, Message("m", {}, {"x": torch.zeros(10**6 - 45, dtype=torch.uint8)}))
            else:
                got.append(((await rt.recv()).nbytes, rt.now()))

    pop = Population((1,), {0: Device(None, None, uplink=None, downlink=5e5),
                            1: Device(None, None, uplink=2.5e5, downlink=None)}, {})
    w = world(nx.path_graph(2), {0: One(), 1: One()}, pop, bandwidth=1e9)
    w.run()
    assert got[0][1] == pytest.approx(got[0][0] / 2.5e5)  # node 1's 2 Mbit/s uplink, not the 8 Gbit/s links
    # a device without its own uplink or downlink keeps the run's
    assert w.network.uplink == [1e9, 2.5e5] and w.network.downlink == [5e5, 1e9]


# -- whole runs ------------------------------------------------------------------------------------
def fed_config(tmp_path, selection, rounds=12):
    """FedAvg on 8 digits clients; clients 1-4 and 5-8 take turns being offline every 0.05 s."""
    rows = ["node,start_s,end_s,period_s"]
    for k in range(1, 9):
        start = 0.0 if k <= 4 else 0.05
        rows.append(f"{k},{start},{start + 0.05},0.1")
    (tmp_path / "av.csv").write_text("\n".join(rows) + "\n")
    return {
        "name": "pop", "seed": 0, "nodes": 9, "topology": {"kind": "star"},
        "algorithm": {"name": "fedavg", "frac_clients": 0.5, "rounds": rounds, "timeout": 0.13},
        "dataset": {"name": "digits", "max_train": 600}, "model": {"name": "mlp", "options": {"hidden": [16]}},
        "train": {"batch_size": 16, "eval_samples": 100}, "network": {"latency": "5ms"},
        "compute": {"step_time": "2ms"},  # a round of 5 local steps spans a turn now and then
        "population": {"availability": {"trace": str(tmp_path / "av.csv")}, "mapping": "column",
                       "selection": selection},
        "output": QUIET,
    }


@pytest.mark.parametrize("selection", ["online", "any"])
def test_a_fedavg_server_never_selects_an_offline_client_under_selection_online(tmp_path, monkeypatch, selection):
    """FedScale's clientManager.select_participants samples among getFeasibleClients(now) only."""
    from simbench.algorithms.kit import FederatedServer
    from simbench.experiment.config import parse_config
    from simbench.experiment.run import run_experiment

    picks = []
    plain = FederatedServer.choose

    def choose(self, rt, m):
        chosen = plain(self, rt, m)
        picks.append((rt.now(), chosen))
        return chosen

    monkeypatch.setattr(FederatedServer, "choose", choose)
    cfg = parse_config(fed_config(tmp_path, selection))
    res = run_experiment(cfg, tmp_path / "out")
    assert res.status == "finished" and len(picks) >= 12
    on = lambda c, t: (c <= 4) == ((t % 0.1) < 0.05 - 1e-9)  # noqa: E731 - the trace above
    offline_picks = sum(not on(c, t) for t, chosen in picks for c in chosen)
    if selection == "online":
        assert offline_picks == 0 and all(len(chosen) == 4 for _, chosen in picks)
        ev = res.events
        heard = ev[ev["metric"] == "clients_heard"]["value"]
        assert (heard < 4).any()  # clients that went offline mid-round: their updates were lost
        assert (ev["metric"] == "drop_sender_offline").any() or (ev["metric"] == "drop_offline").any()
        avg = res.epochs[res.epochs["node"] == "avg"]
        assert set(avg["online_frac"].round(6)) <= {0.5, 1.0}
    else:
        assert offline_picks > 0


def test_runs_with_traces_are_byte_identical(tmp_path):
    from simbench.experiment.config import parse_config
    from simbench.experiment.run import run_experiment

    (tmp_path / "dev.csv").write_text("node,flops_per_s,up_bps,down_bps\n"
                                      + "".join(f"{k},{(k + 1) * 3e9},{(k + 1) * 4e6},{(k + 2) * 4e6}\n" for k in range(9)))
    data = fed_config(tmp_path, "online", rounds=6)
    data.update(nodes=6, topology={"kind": "ring"}, algorithm={"name": "dsgd", "swap_timeout": 0.05},
                train={"epochs": 2, "batch_size": 16, "eval_samples": 100})
    data["population"] = {"devices": {"trace": str(tmp_path / "dev.csv")},
                          "availability": {"online": 0.3, "offline": {"dist": "exponential", "mean": 0.2}},
                          "mapping": "sample"}
    cfg = parse_config(data)
    a = run_experiment(cfg, tmp_path / "a")
    b = run_experiment(cfg, tmp_path / "b")
    assert a.status == b.status == "finished"
    for name in ("events.csv", "epochs.csv"):
        assert (a.run_dir / name).read_bytes() == (b.run_dir / name).read_bytes()
    ev = a.events
    assert (ev["metric"] == "offline").sum() >= 3 and (ev["metric"] == "online").sum() >= 3


def test_offline_clients_do_not_come_back_once_the_server_has_finished(tmp_path):
    """Client 1 is offline from 0 s to 1000 s: never chosen, it is not waited for after the
    last round either (its return at 1000 s is after the end)."""
    from simbench.experiment.config import parse_config
    from simbench.experiment.run import run_experiment

    data = fed_config(tmp_path, "online", rounds=3)
    (tmp_path / "av.csv").write_text("node,start_s,end_s\n1,1000,inf\n")
    cfg = parse_config(data)
    res = run_experiment(cfg, tmp_path / "out")
    assert res.status == "finished" and res.sim_time < 5
    ev = res.events
    assert list(ev[ev["metric"].isin(("offline", "online"))][["node", "metric"]].itertuples(index=False)) == \
        [("1", "offline")]


def test_the_run_plot_shows_the_clients_online(tmp_path):
    from simbench.experiment.config import parse_config
    from simbench.experiment.run import run_experiment
    from simbench.report.plots import online_counts

    data = fed_config(tmp_path, "online", rounds=4)
    data["output"] = {**QUIET, "plot": True}
    res = run_experiment(parse_config(data), tmp_path / "out")
    counts = online_counts(res.events)
    assert counts["online"].iloc[0] == 4 and set(counts["online"]) <= {4.0, 8.0}
    assert (res.run_dir / "test_acc.png").stat().st_size > 10_000


def test_the_population_example_runs_with_the_shipped_traces(tmp_path, monkeypatch):
    from simbench.experiment.config import load_config
    from simbench.experiment.run import run_experiment
    from simhelpers import REPO

    monkeypatch.chdir(REPO)  # the example's trace paths are relative to the repository root
    cfg = load_config(REPO / "examples" / "population.yaml", ["algorithm.rounds=3", "output.plot=false",
                                                             "output.progress=false", "output.wall_clock=false"])
    res = run_experiment(cfg, tmp_path)
    ev = res.events
    assert res.status == "finished" and ev[ev["metric"] == "population_size"]["value"].tolist() == [20.0]
    compute = ev[(ev["metric"] == "compute_s_total") & (ev["value"] > 0)]["value"]
    assert compute.nunique() == len(compute) > 3  # every client its own trace device speed
