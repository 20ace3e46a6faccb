"""The edges of ``simbench.core.scenario``: distribution specs and their exact errors, sampling,
the scenario's node checks, weak-worker modes and the random crash schedule (exact values
drawn from a twin random stream)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simbench.core.schema import ConfigError, from_dict
from simbench.core.scenario import (DIST_KINDS, Crash, Dist, NetworkSpec, Partition, Scenario, Stragglers, WeakWorkers,
                                    check_nodes, crash_schedule, dist_parser, resolve_weak_mode)
from simbench.core.units import parse_duration

from simhelpers import error


def seconds(spec):
    # the parser is built inside each test (not once at import) so that mutation testing,
    # which switches mutants per test, sees the factory run
    return dist_parser(parse_duration)(spec)


def factor(spec):
    return dist_parser(float)(spec)


# ------------------------------------------------------------------ Dist.sample and dist_parser


def test_normal_samples_are_the_draw_clipped_at_zero():
    twin = np.random.default_rng(5)
    draws = [float(twin.normal(0.5, 1.0)) for _ in range(40)]
    assert min(draws) < 0 < max(draws) and any(0 < d < 1 for d in draws)  # the clip and the value both matter
    rng = np.random.default_rng(5)
    got = [Dist("normal", mean=0.5, std=1.0).sample(rng) for _ in range(40)]
    assert got == [max(0.0, d) for d in draws]
    assert all(type(g) is float for g in got)
    assert Dist("normal", mean=2.0, std=0.0).sample(np.random.default_rng(0)) == 2.0


def test_other_samples_follow_their_kind():
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    assert Dist("constant", value=4.0).sample(rng) == 4.0
    assert Dist("uniform", low=1.0, high=2.0).sample(rng) == float(twin.uniform(1.0, 2.0))
    assert Dist("lognormal", mean=2.0, sigma=0.5).sample(rng) == 2.0 * math.exp(twin.normal(0.0, 0.5))
    assert Dist("exponential", mean=3.0).sample(rng) == float(twin.exponential(3.0))
    assert Dist("lognormal", mean=2.0, sigma=0.5).expected == pytest.approx(2.0 * math.exp(0.125))
    assert Dist("uniform", low=1.0, high=4.0).expected == 2.5


def test_a_dist_passes_through_unchanged():
    d = Dist("uniform", low=1.0, high=2.0)
    assert seconds(d) is d and factor(d) is d


@pytest.mark.parametrize("spec, dist", [
    ("5ms", Dist("constant", value=0.005)), (0, Dist("constant", value=0.0)), (2, Dist("constant", value=2.0)),
    ({"dist": "uniform", "low": "250ms", "high": "0.5s"}, Dist("uniform", low=0.25, high=0.5)),
    ({"kind": "normal", "mean": "10ms", "std": "2ms"}, Dist("normal", mean=0.01, std=0.002)),
    ({"dist": "lognormal", "mean": "1s", "sigma": "0.5"}, Dist("lognormal", mean=1.0, sigma=0.5)),
    ({"dist": "exponential", "mean": "1min"}, Dist("exponential", mean=60.0)),
    ({"dist": "constant", "value": "2h"}, Dist("constant", value=7200.0)),
    ({"dist": "uniform", "low": "3ms", "high": "3ms"}, Dist("uniform", low=0.003, high=0.003)),
])
def test_duration_specs(spec, dist):
    assert seconds(spec) == dist


def test_sigma_is_a_plain_number_not_a_duration():
    assert seconds({"dist": "lognormal", "mean": "1s", "sigma": 2}) == Dist("lognormal", mean=1.0, sigma=2.0)
    with pytest.raises(ValueError, match=r"^could not convert string to float: '2s'$"):
        seconds({"dist": "lognormal", "mean": "1s", "sigma": "2s"})


@pytest.mark.parametrize("spec, message", [
    (-1, "-1 is not allowed; expected a finite number >= 0 or a distribution mapping"),
    (math.inf, "inf is not allowed; expected a finite number >= 0 or a distribution mapping"),
    ("inf", "'inf' is not allowed; expected a finite number >= 0 or a distribution mapping"),
    (math.nan, "nan is not allowed; expected a finite number >= 0 or a distribution mapping"),
    ({"dist": "gamma"}, "dist must be one of constant, uniform, normal, lognormal, exponential, got 'gamma'"),
    ({"low": 1}, "dist must be one of constant, uniform, normal, lognormal, exponential, got None"),
    ({"dist": "uniform", "low": 1, "high": 2, "mean": 1}, "unknown key 'mean' for a uniform distribution; allowed: low, high"),
    ({"dist": "normal", "mean": 1, "std": 1, "value": 1}, "unknown key 'value' for a normal distribution; allowed: mean, std"),
    ({"dist": "uniform", "low": 1}, "a uniform distribution needs high"),
    ({"dist": "normal"}, "a normal distribution needs mean, std"),
    ({"dist": "constant"}, "a constant distribution needs value"),
    ({"dist": "uniform", "low": -1, "high": 2}, "low of a uniform distribution must be a finite number >= 0, got -1.0"),
    ({"dist": "exponential", "mean": math.inf}, "mean of a exponential distribution must be a finite number >= 0, got inf"),
    ({"dist": "lognormal", "mean": 1, "sigma": -0.5},
     "sigma of a lognormal distribution must be a finite number >= 0, got -0.5"),
    ({"dist": "uniform", "low": 3, "high": 2}, "uniform distribution has low > high"),
])
def test_factor_spec_errors(spec, message):
    assert error(factor, spec) == message


def test_parser_does_not_change_the_callers_mapping():
    spec = {"dist": "uniform", "low": 1, "high": 2}
    assert factor(spec) == Dist("uniform", low=1.0, high=2.0)
    assert spec == {"dist": "uniform", "low": 1, "high": 2}
    assert DIST_KINDS == ("constant", "uniform", "normal", "lognormal", "exponential")


def test_dist_errors_name_the_config_field():
    assert error(from_dict, NetworkSpec, {"latency": {"dist": "uniform", "low": "9ms", "high": "1ms"}}, "network",
                 exc=ConfigError) == "network.latency: uniform distribution has low > high"
    assert error(from_dict, Scenario, {"stragglers": {"slowdown": -2}}, "scenario", exc=ConfigError) == \
        "scenario.stragglers.slowdown: -2 is not allowed; expected a finite number >= 0 or a distribution mapping"


# ------------------------------------------------------------------ check_nodes


def test_check_nodes_names_the_first_missing_node():
    check_nodes(Scenario(stragglers=Stragglers(nodes=(0, 3))), 4)
    assert error(check_nodes, Scenario(stragglers=Stragglers(nodes=(0, 4))), 4, exc=ConfigError) == \
        "scenario.stragglers.nodes: node 4 does not exist; nodes are 0..3"
    assert error(check_nodes, Scenario(weak_workers=WeakWorkers(nodes=(-1,))), 4, exc=ConfigError) == \
        "scenario.weak_workers.nodes: node -1 does not exist; nodes are 0..3"
    assert error(check_nodes, Scenario(crashes=(Crash(0, 1.0), Crash(5, 1.0))), 5, exc=ConfigError) == \
        "scenario.crashes[1].node: node 5 does not exist; nodes are 0..4"
    assert error(check_nodes, Scenario(partitions=(Partition(((0, 1),), 0.0, 1.0), Partition(((1, 2),), 0.0, 1.0))),
                 2, exc=ConfigError) == "scenario.partitions[1].edges: node 2 does not exist; nodes are 0..1"


def test_recover_after_needs_a_crash_rate():
    assert error(check_nodes, Scenario(recover_after=5.0), 3, exc=ConfigError) == \
        "scenario.recover_after: only used with crash_rate > 0 (explicit crashes take recover_at)"
    check_nodes(Scenario(recover_after=5.0, crash_rate=0.1), 3)
    check_nodes(Scenario(crash_rate=0.1), 3)


def test_recovery_must_come_after_the_crash():
    check_nodes(Scenario(crashes=(Crash(0, 2.0, recover_at=2.5), Crash(1, 2.0))), 2)
    assert error(check_nodes, Scenario(crashes=(Crash(0, 1.0, 3.0), Crash(1, 2.0, recover_at=2.0))), 2,
                 exc=ConfigError) == "scenario.crashes[1].recover_at: must be later than at=2.0"
    assert error(check_nodes, Scenario(crashes=(Crash(0, 2.0, recover_at=1.5),)), 2, exc=ConfigError) == \
        "scenario.crashes[0].recover_at: must be later than at=2.0"


def test_partitions_must_end_after_they_start():
    check_nodes(Scenario(partitions=(Partition(((0, 1),), 1.0, 1.5),)), 2)
    assert error(check_nodes, Scenario(partitions=(Partition(((0, 1),), 0.0, 1.0), Partition(((0, 1),), 1.5, 1.5))),
                 2, exc=ConfigError) == "scenario.partitions[1].end: must be later than start=1.5"
    assert error(check_nodes, Scenario(partitions=(Partition(((0, 1),), 2.0, 1.0),)), 2, exc=ConfigError) == \
        "scenario.partitions[0].end: must be later than start=2.0"


# ------------------------------------------------------------------ resolve_weak_mode


def test_weak_mode_resolution():
    assert resolve_weak_mode(Scenario(), "fegan", ("half_steps", "slow")) == "half_steps"
    assert resolve_weak_mode(Scenario(weak_workers=WeakWorkers(mode="slow")), "fegan", ("half_steps", "slow")) == "slow"
    assert error(resolve_weak_mode, Scenario(weak_workers=WeakWorkers(mode="half_steps")), "dsgd", ("slow",),
                 exc=ConfigError) == ("scenario.weak_workers.mode: dsgd has no weak workers of mode 'half_steps'; "
                                      "allowed: auto, slow")
    assert error(resolve_weak_mode, Scenario(weak_workers=WeakWorkers(mode="slow")), "x", ("half_steps", "other"),
                 exc=ConfigError) == ("scenario.weak_workers.mode: x has no weak workers of mode 'slow'; "
                                      "allowed: auto, half_steps, other")


# ------------------------------------------------------------------ crash_schedule


def test_no_crash_rate_keeps_the_explicit_crashes_sorted_and_draws_nothing():
    rng = np.random.default_rng(1)
    explicit = (Crash(2, 5.0), Crash(1, 5.0), Crash(0, 9.0, 10.0))
    assert crash_schedule(Scenario(crashes=explicit), 3, 100.0, rng) == [Crash(1, 5.0), Crash(2, 5.0), Crash(0, 9.0, 10.0)]
    assert rng.random() == np.random.default_rng(1).random()  # the stream was not touched


def test_random_crashes_at_the_rate_per_node_hour():
    twin = np.random.default_rng(7)
    times = [float(twin.exponential(3600.0 / 2.0)) for _ in range(6)]  # 2 crashes per node-hour
    horizon = sorted(times)[3]  # the crash drawn exactly at the horizon is not kept (t < horizon)
    kept = sorted((t, node) for node, t in enumerate(times) if t < horizon)
    assert len(kept) == 3
    got = crash_schedule(Scenario(crash_rate=2.0, crashes=(Crash(5, 0.0),)), 6, horizon, np.random.default_rng(7))
    assert got == [Crash(5, 0.0)] + [Crash(node=node, at=t, recover_at=None) for t, node in kept]
    with_recovery = crash_schedule(Scenario(crash_rate=2.0, recover_after=30.0), 6, horizon, np.random.default_rng(7))
    assert with_recovery == [Crash(node=node, at=t, recover_at=t + 30.0) for t, node in kept]
    assert all(type(c.at) is float for c in got)


def test_a_distribution_parameter_of_zero_is_allowed():
    from simbench.core.scenario import Dist, dist_parser
    from simbench.core.units import parse_duration

    parse = dist_parser(parse_duration)
    assert parse({"dist": "uniform", "low": 0, "high": "1ms"}) == Dist("uniform", low=0.0, high=0.001)
    assert parse({"dist": "exponential", "mean": "0s"}) == Dist("exponential", mean=0.0)
