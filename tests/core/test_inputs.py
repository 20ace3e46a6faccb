"""What users type into configs, flags and files: unit parsers, the dataclass schema, YAML
reading, atomic writes. Every test pins exact values or the exact one-line message, so a
mutant that changes a constant, a comparison, a message or an argument is caught."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import pytest

from simbench.core import files, schema, units, yamlio
from simbench.core.files import write_atomic
from simbench.core.schema import (ConfigError, above, at_least, convert, from_dict, one_line, path_component,
                                  suggest, to_dict, within)
from simbench.core.units import parse_bandwidth, parse_duration, parse_size, to_ticks
from simbench.core.yamlio import load_yaml_file, load_yaml_text, parse_override, read_text_file

from simhelpers import error


# ============================================================================= units

DURATION_UNITS = "ns, us, µs, ms, s, sec, min, m, h"
BANDWIDTH_UNITS = "bit/s, bps, kbit/s, kbps, mbit/s, mbps, gbit/s, gbps, b/s, kb/s, mb/s, gb/s, kib/s, mib/s, gib/s"
SIZE_UNITS = "b, kb, mb, gb, kib, mib, gib"


@pytest.mark.parametrize("text, seconds", [
    ("5ms", 0.005), ("1min", 60.0), ("1m", 60.0), ("2 h", 7200.0), ("1e-3 s", 0.001), (".5s", 0.5),
    ("2sec", 2.0), ("3µs", 3e-6), ("4us", 4e-6), ("7ns", 7e-9), ("1.5", 1.5), ("+2s", 2.0), ("1E3ms", 1.0),
    ("  250 ms  ", 0.25), ("0", 0.0), ("3.", 3.0), ("2e+1s", 20.0),
])
def test_duration_strings(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)
    assert type(parse_duration(text)) is float


def test_duration_numbers_are_seconds_as_floats():
    assert parse_duration(2) == 2.0 and type(parse_duration(2)) is float
    assert parse_duration(0.25) == 0.25
    assert parse_duration(0) == 0.0


@pytest.mark.parametrize("value", ["inf", "Infinite", "unlimited", -1, -1e-12, "-1ms", "-0.5 s", math.inf,
                                   float("nan")])
def test_durations_refuse_infinite_nan_and_negative(value):
    assert error(parse_duration, value) == f"{value!r} is not allowed; a duration is a finite number of seconds >= 0"


def test_duration_errors_name_the_units_in_order():
    assert error(parse_duration, "abc") == f"cannot read 'abc' as a duration; use a number with one of: {DURATION_UNITS}"
    assert error(parse_duration, "1x") == f"unknown unit 'x' in '1x' for a duration; allowed: {DURATION_UNITS}"
    assert parse_duration("5 MS") == 0.005  # units are read case-insensitively
    assert error(parse_duration, "") == f"cannot read '' as a duration; use a number with one of: {DURATION_UNITS}"
    assert error(parse_duration, "1 2s") == \
        f"cannot read '1 2s' as a duration; use a number with one of: {DURATION_UNITS}"


@pytest.mark.parametrize("value", [True, False, None, [1], {"s": 1}, b"5ms"])
def test_parsers_refuse_booleans_and_other_types(value):
    assert error(parse_duration, value) == f"expected a duration, got {value!r}"
    assert error(parse_bandwidth, value) == f"expected a bandwidth, got {value!r}"
    assert error(parse_size, value) == f"expected a size, got {value!r}"


@pytest.mark.parametrize("text, bytes_per_s", [
    ("8Mb/s", 1e6), ("8MB/s", 8e6), ("8mb/s", 1e6), ("100Mbps", 12.5e6), ("1Gbit/s", 125e6), ("1 kbit/s", 125.0),
    ("1KiB/s", 1024.0), ("1MiB/s", 2.0**20), ("1GiB/s", 2.0**30), ("8b/s", 1.0), ("8B/s", 8.0), ("1kb/s", 125.0),
    ("1Kb/s", 125.0), ("1KB/s", 1000.0), ("1Gb/s", 125e6), ("1gb/s", 125e6), ("1GB/s", 1e9), ("1 Mb/s", 125e3),
    ("1Mbit/s", 125e3), ("2 bps", 0.25), ("16bit/s", 2.0), ("1kbps", 125.0), ("1gbps", 125e6), ("1.25e8", 1.25e8),
    (".5 GB/s", 5e8), ("-8Mb/s", -1e6),
])
def test_bandwidth_strings_tell_bits_from_bytes(text, bytes_per_s):
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s, rel=1e-12)


@pytest.mark.parametrize("text, bytes_per_s", [
    ("3 MBps", 3e6), ("3 Mbps", 375e3), ("8Bps", 8.0), ("8bps", 1.0), ("1KiBps", 1024.0), ("1Kibps", 128.0),
    ("1Kib/s", 128.0), ("1Mib/s", 2.0**20 / 8), ("2 Gib/s", 2.0**30 / 4), ("1kB/s", 1e3), ("1gBps", 1e9),
])
def test_the_case_of_b_says_bits_or_bytes_in_every_spelling(text, bytes_per_s):
    """``MBps`` is megabytes and ``Kib/s`` kibibits: once read case-blind as ``mbps`` (megabits)
    and ``kib/s`` (kibibytes), silently 8 times off."""
    assert parse_bandwidth(text) == bytes_per_s


@pytest.mark.parametrize("text", ["inf", "INF", " unlimited ", "Infinite"])
def test_bandwidth_and_size_may_be_unlimited(text):
    assert parse_bandwidth(text) == math.inf
    assert parse_size(text) == math.inf


def test_bandwidth_errors_name_the_units_in_order():
    assert error(parse_bandwidth, "1Tb/s") == f"unknown unit 'Tb/s' in '1Tb/s' for a bandwidth; allowed: {BANDWIDTH_UNITS}"
    assert error(parse_bandwidth, "fast") == \
        f"cannot read 'fast' as a bandwidth; use a number with one of: {BANDWIDTH_UNITS}"
    assert parse_bandwidth(5) == 5.0 and type(parse_bandwidth(5)) is float


@pytest.mark.parametrize("text, size", [
    ("4 MiB", 4 * 2**20), ("1kb", 1000), ("1KB", 1000), ("1b", 1), ("1B", 1), ("2GiB", 2 * 2**30), ("1gb", 1e9),
    ("1mb", 1e6), ("1kib", 1024), ("3", 3), ("1.5 KiB", 1536),
])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_size_errors():
    assert error(parse_size, "1 MB/s") == f"unknown unit 'MB/s' in '1 MB/s' for a size; allowed: {SIZE_UNITS}"
    assert error(parse_size, "big") == f"cannot read 'big' as a size; use a number with one of: {SIZE_UNITS}"
    assert parse_size(7) == 7.0 and type(parse_size(7)) is float


@pytest.mark.parametrize("seconds, ticks", [
    (1e-9, 1), (1.5e-9, 2), (1e-10, 1), (1.0000000001, 1_000_000_001), (0.1 + 0.2, 300_000_000),
    (1.0000000000001, 1_000_000_000), (2.0000000005, 2_000_000_001), (-1.0, 0), (-1e-9, 0), (0, 0), (1, 10**9),
    (0.0000000014, 2), (3.0, 3_000_000_000),
])
def test_to_ticks_rounds_up_after_removing_float_noise(seconds, ticks):
    assert to_ticks(seconds) == ticks
    assert type(to_ticks(seconds)) is int


def test_to_ticks_refuses_infinity():
    assert units.SECOND_TICKS == 1_000_000_000
    assert error(to_ticks, math.inf) == "an infinite duration cannot be scheduled"


# ============================================================================= schema


@dataclass(frozen=True)
class Inner:
    a: int = 1
    b: str = "x"


@dataclass(frozen=True)
class Pair:
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo} > hi {self.hi}")


@dataclass(frozen=True)
class Conf:
    count: int = 0
    name: str = "n"
    flag: bool = False
    rate: float = 0.5
    inner: Inner = Inner()
    items: tuple[int, ...] = ()
    pair: tuple[int, str] = (0, "")
    seq: list[float] = field(default_factory=list)
    table: dict = field(default_factory=dict)
    maybe: Optional[int] = None
    either: Union[int, str] = 0
    kind: Literal["a", "b"] = "a"
    anything: Any = None
    _hidden: int = 7


@dataclass(frozen=True)
class Needs:
    must: int
    opt: int = 2


def f(**metadata) -> dataclasses.Field:
    """A dataclass field carrying ``metadata``, as ``convert`` receives it."""
    return field(default=None, metadata=metadata)


@pytest.mark.parametrize("value, tp, expected", [
    (3.0, int, 3), (3, int, 3), (-2**63, int, -2**63), (2**63 - 1, int, 2**63 - 1),
    (0, bool, False), (1, bool, True), (True, bool, True), (1.0, bool, True),
    ("1e-3", float, 0.001), (2, float, 2.0), (" 2.5 ", float, 2.5),
    ("s", str, "s"),
    ([1, "a"], tuple[int, str], (1, "a")), ((1.0, 2.0), tuple[int, ...], (1, 2)), ([], tuple[int, ...], ()),
    ([1.0, 2], list[int], [1, 2]), ((3,), list[float], [3.0]),
    ({"k": 1}, dict, {"k": 1}), ({"k": 1}, dict[str, int], {"k": 1}), ({"k": 1}, Mapping[str, int], {"k": 1}),
    (None, Optional[int], None), (4.0, Optional[int], 4), (3, Union[int, str], 3), ("z", Union[int, str], "z"),
    ("z", int | str, "z"), (None, Optional[Union[int, str]], None),
    ("b", Literal["a", "b"], "b"), ([1, "x"], Any, [1, "x"]),
    (None, Inner, Inner()), ({"a": 5}, Inner, Inner(a=5, b="x")), (Inner(9), Inner, Inner(9)),
    (object, type, object),
])
def test_convert_accepts(value, tp, expected):
    out = convert(value, tp, "p")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, tp, message", [
    (3.5, int, "p: expected an integer, got 3.5"),
    ("3", int, "p: expected an integer, got '3'"),
    (True, int, "p: expected an integer, got True"),
    (None, int, "p: expected an integer, got None"),
    (2, bool, "p: expected true or false, got 2"),
    ("true", bool, "p: expected true or false, got 'true'"),
    ("x", float, "p: expected a number, got 'x'"),
    (True, float, "p: expected a number, got True"),
    (None, float, "p: expected a number, got None"),
    ([1.0], float, "p: expected a number, got [1.0]"),
    (5, str, "p: expected a string, got 5"),
    ([1], tuple[int, str], "p: expected 2 values, got 1"),
    ([1, "a", 2], tuple[int, str], "p: expected 2 values, got 3"),
    (["a", "a"], tuple[int, str], "p[0]: expected an integer, got 'a'"),
    ([1, 2], tuple[int, str], "p[1]: expected a string, got 2"),
    ("ab", tuple[int, ...], "p: expected a list, got 'ab'"),
    (b"ab", list[int], "p: expected a list, got b'ab'"),
    ({"a": 1}, list[int], "p: expected a list, got {'a': 1}"),
    (3, tuple[int, ...], "p: expected a list, got 3"),
    ([1.0, 2.5], list[int], "p[1]: expected an integer, got 2.5"),
    ([1], dict, "p: expected a mapping, got [1]"),
    ("k", dict[str, int], "p: expected a mapping, got 'k'"),
    ("q", Optional[int], "p: expected an integer, got 'q'"),
    (2.5, Union[int, str], "p: expected int or str, got 2.5"),
    (2.5, Union[int, str, None], "p: expected int or str, got 2.5"),
    (None, Union[int, str], "p: expected int or str, got None"),
    ([1], int | str, "p: expected int or str, got [1]"),
    ("c", Literal["a", "b"], "p: 'c' is not allowed; allowed: a, b"),
    ([1, 2], Inner, "p: expected a mapping of a, b, got [1, 2]"),
    ({"a": 1.5}, Inner, "p.a: expected an integer, got 1.5"),
    (2**63, int, "p: 9223372036854775808 is out of range"),
    (-2**63 - 1, int, "p: -9223372036854775809 is out of range"),
    (float(2**63), int, "p: 9223372036854775808 is out of range"),
    (math.nan, float, "p: nan is not allowed; expected a finite number"),
    (math.inf, float, "p: inf is not allowed; expected a finite number"),
    (-math.inf, float, "p: -inf is not allowed; expected a finite number"),
    ("inf", float, "p: inf is not allowed; expected a finite number"),
    ([1.0, math.nan], list[float], "p[1]: nan is not allowed; expected a finite number"),
    ([0, 2**63], tuple[int, ...], "p[1]: 9223372036854775808 is out of range"),
])
def test_convert_refuses_with_the_field_path(value, tp, message):
    assert error(convert, value, tp, "p", exc=ConfigError) == message


def test_out_of_range_integers_anywhere_in_a_list_name_the_element():
    assert error(convert, [[1, 2**63]], list[list[int]], "p", exc=ConfigError) == \
        "p[0][1]: 9223372036854775808 is out of range"
    assert convert([[1, 2**63 - 1]], list[list[int]], "p") == [[1, 2**63 - 1]]


def test_inf_only_where_the_field_declares_it():
    unlimited = f(inf=True)
    assert convert(math.inf, float, "bw", unlimited) == math.inf
    assert convert("inf", float, "bw", unlimited) == math.inf
    assert error(convert, -math.inf, float, "bw", unlimited, exc=ConfigError) == \
        "bw: -inf is not allowed; expected a finite number or inf"
    assert error(convert, math.nan, float, "bw", unlimited, exc=ConfigError) == \
        "bw: nan is not allowed; expected a finite number or inf"
    assert error(convert, math.inf, float, "bw", f(inf=False), exc=ConfigError) == \
        "bw: inf is not allowed; expected a finite number"
    # the list elements of an inf field are not themselves unlimited
    assert error(convert, [math.inf], list[float], "bw", unlimited, exc=ConfigError) == \
        "bw[0]: inf is not allowed; expected a finite number"
    # a parsed value is checked as well
    assert convert("unlimited", float, "bw", f(parse=parse_bandwidth, inf=True)) == math.inf
    assert error(convert, "unlimited", float, "bw", f(parse=parse_bandwidth), exc=ConfigError) == \
        "bw: inf is not allowed; expected a finite number"


def test_booleans_are_not_range_checked_numbers():
    assert convert(True, bool, "p", f(check=(lambda x: x is True, "must be true"))) is True
    assert convert([True, 2**62], list, "p") == [True, 2**62]


def test_choices_with_a_suggestion():
    device = f(choices=("laptop-cpu", "server-cpu", "phone"))
    assert convert("phone", str, "compute.device", device) == "phone"
    assert error(convert, "laptop-gpu", str, "compute.device", device, exc=ConfigError) == \
        "compute.device: 'laptop-gpu' is not allowed; allowed: laptop-cpu, server-cpu, phone (did you mean 'laptop-cpu'?)"
    assert error(convert, "zzz", str, "compute.device", device, exc=ConfigError) == \
        "compute.device: 'zzz' is not allowed; allowed: laptop-cpu, server-cpu, phone"
    assert error(convert, 3, int, "k", f(choices=(1, 2)), exc=ConfigError) == "k: 3 is not allowed; allowed: 1, 2"


def test_parse_errors_become_path_and_message():
    latency = f(parse=parse_duration)
    assert convert("5ms", float, "network.latency", latency) == 0.005
    assert error(convert, "5 parsecs", float, "network.latency", latency, exc=ConfigError) == \
        f"network.latency: unknown unit 'parsecs' in '5 parsecs' for a duration; allowed: {DURATION_UNITS}"

    def typed(value):
        raise TypeError("not a thing")

    assert error(convert, 1, int, "x", f(parse=typed), exc=ConfigError) == "x: not a thing"
    # None skips the parser (an Optional field left empty) and is converted by the annotation
    assert convert(None, Optional[float], "x", latency) is None
    assert error(convert, None, float, "x", latency, exc=ConfigError) == "x: expected a number, got None"


def test_parse_errors_other_than_value_and_type_errors_propagate():
    def broken(value):
        raise KeyError("k")

    with pytest.raises(KeyError):
        convert(1, int, "x", f(parse=broken))


# The checks are built inside the test, not at collection: mutation testing switches mutants
# per test, so a factory must run while the test does.
@pytest.mark.parametrize("make, ok, bad, message", [
    (lambda: at_least(1), [1, 1.0, 2, 1e9], [0.999, 0, -1], "must be >= 1"),
    (lambda: above(0), [1e-300, 1, 5.5], [0, 0.0, -1], "must be > 0"),
    (lambda: within(0, 1), [0, 0.0, 0.5, 1, 1.0], [-1e-9, 1.0000001, 2], "must be in [0, 1]"),
    (lambda: within(0, 1, open_hi=True), [0, 0.5, 0.999999], [1, 1.0, -0.1, 2], "must be in [0, 1)"),
    (lambda: within(2, 5), [2, 5], [1.999, 5.001], "must be in [2, 5]"),
    (lambda: within(2, 5, open_hi=True), [2, 4.999], [5, 1.999], "must be in [2, 5)"),
])
def test_checks_at_their_boundaries(make, ok, bad, message):
    meta = f(check=make())
    for value in ok:
        assert convert(value, float, "p", meta) == value
    for value in bad:
        assert error(convert, value, float, "p", meta, exc=ConfigError) == f"p: {float(value)!r} {message}"


def test_check_message_uses_the_given_bound():
    assert at_least(2.5)[1] == "must be >= 2.5" and above(-3)[1] == "must be > -3"
    assert within(0.5, 2)[1] == "must be in [0.5, 2]" and within(0.5, 2, open_hi=True)[1] == "must be in [0.5, 2)"
    assert convert(None, Optional[float], "p", f(check=above(0))) is None  # no check on an absent value


def test_from_dict_builds_every_kind_of_field():
    data = {"count": 3.0, "name": "m", "flag": 1, "rate": "1e-3", "inner": {"a": 2}, "items": [1, 2.0],
            "pair": [5, "q"], "seq": [1, 2], "table": {"x": [1]}, "maybe": 4, "either": "s", "kind": "b",
            "anything": {"z": None}}
    got = from_dict(Conf, data, "cfg")
    assert got == Conf(count=3, name="m", flag=True, rate=0.001, inner=Inner(a=2, b="x"), items=(1, 2),
                       pair=(5, "q"), seq=[1.0, 2.0], table={"x": [1]}, maybe=4, either="s", kind="b",
                       anything={"z": None})
    assert type(got.count) is int and type(got.seq[0]) is float and type(got.items) is tuple
    assert from_dict(Conf, None) == Conf() and from_dict(Conf, {}) == Conf()
    assert from_dict(Conf, {"inner": None}).inner == Inner()


def test_unknown_keys_name_the_allowed_fields_and_a_suggestion():
    allowed = "count, name, flag, rate, inner, items, pair, seq, table, maybe, either, kind, anything"
    assert error(from_dict, Conf, {"cuont": 1}, "train", exc=ConfigError) == \
        f"train.cuont: unknown field in train (did you mean 'count'?); allowed: {allowed}"
    assert error(from_dict, Conf, {"zzzz": 1}, exc=ConfigError) == f"zzzz: unknown field in config; allowed: {allowed}"
    assert error(from_dict, Conf, {"_hidden": 1}, "c", exc=ConfigError) == \
        f"c._hidden: unknown field in c; allowed: {allowed}"
    assert error(from_dict, Conf, {"inner": {"aa": 1}}, "c", exc=ConfigError) == \
        "c.inner.aa: unknown field in c.inner (did you mean 'a'?); allowed: a, b"
    assert error(from_dict, Conf, {3: 1}, "c", exc=ConfigError) == f"c.3: unknown field in c; allowed: {allowed}"


def test_internal_and_non_init_fields_are_not_settable():
    @dataclass(frozen=True)
    class WithInternal:
        a: int = 0
        b: int = field(default=0, metadata={"internal": True})
        c: int = field(default=0, init=False)

    assert error(from_dict, WithInternal, {"b": 1}, "w", exc=ConfigError) == "w.b: unknown field in w; allowed: a"
    assert error(from_dict, WithInternal, {"c": 1}, "w", exc=ConfigError) == "w.c: unknown field in w; allowed: a"
    assert from_dict(WithInternal, {"a": 4}).a == 4


def test_required_fields():
    assert error(from_dict, Needs, {}, "x", exc=ConfigError) == "x.must: required field is missing"
    assert error(from_dict, Needs, {"opt": 1}, exc=ConfigError) == "must: required field is missing"
    assert from_dict(Needs, {"must": 1}) == Needs(must=1, opt=2)

    @dataclass(frozen=True)
    class Factory:
        xs: list = field(default_factory=lambda: [1])

    assert from_dict(Factory, {}) == Factory(xs=[1])


def test_post_init_errors_become_one_line_naming_the_path():
    assert error(from_dict, Pair, {"lo": 2, "hi": 1}, "range", exc=ConfigError) == "range: lo 2.0 > hi 1.0"
    assert error(from_dict, Pair, {"lo": 2, "hi": 1}, exc=ConfigError) == "Pair: lo 2.0 > hi 1.0"

    @dataclass(frozen=True)
    class Typed:
        a: int = 0

        def __post_init__(self):
            if self.a:
                raise TypeError("a is wrong")

    assert error(from_dict, Typed, {"a": 1}, "t", exc=ConfigError) == "t: a is wrong"

    @dataclass(frozen=True)
    class Raises:
        a: int = 0

        def __post_init__(self):
            raise ConfigError("already one line")

    assert error(from_dict, Raises, {}, "t", exc=ConfigError) == "already one line"


def test_to_dict_gives_plain_values():
    got = to_dict(Conf(items=(1, 2), pair=(3, "z"), table={1: (4, 5), "k": Inner(a=3)}, inner=Inner(b="q")))
    assert got == {"count": 0, "name": "n", "flag": False, "rate": 0.5, "inner": {"a": 1, "b": "q"},
                   "items": [1, 2], "pair": [3, "z"], "seq": [], "table": {"1": [4, 5], "k": {"a": 3, "b": "x"}},
                   "maybe": None, "either": 0, "kind": "a", "anything": None}
    assert "_hidden" not in got
    assert type(got["items"]) is list and list(got["table"]) == ["1", "k"]
    assert to_dict(Inner) is Inner  # a class is not an instance
    assert to_dict([(1,), {2: 3}]) == [[1], {"2": 3}]
    assert to_dict("s") == "s"


def test_one_line_escapes_control_characters():
    assert one_line("a\nb") == "a\\nb"
    assert one_line("a\tb\x00c") == "a\\tb\\x00c"
    assert one_line("plain é ✓") == "plain é ✓"
    assert one_line(12) == "12"


def test_suggest():
    assert suggest("cuont", ["count", "name"]) == " (did you mean 'count'?)"
    assert suggest("zzzz", ["count", "name"]) == ""
    assert suggest("nam", iter(["count", "name"])) == " (did you mean 'name'?)"


@pytest.mark.parametrize("name, ok", [
    ("run-1", True), ("é ✓", True), (".hidden", True), ("...", True), ("a" * 200, True),
    ("", False), (".", False), ("..", False), ("a/b", False), ("a\\b", False), ("a\0b", False), ("a\nb", False),
    ("a\x7fb", False), ("a" * 201, False), ("/", False),
])
def test_path_component(name, ok):
    assert path_component(name) is ok


# ============================================================================= yamlio


def test_yaml_limits():
    assert yamlio.MAX_BYTES == 4 * 2**20 and yamlio.MAX_NODES == 200_000 and yamlio.MAX_DEPTH == 64


def test_duplicate_keys_name_both_lines():
    assert error(load_yaml_text, "a: 1\nb: 2\na: 3\n", "cfg", exc=ConfigError) == \
        "cfg: key 'a' appears twice (lines 1 and 3); keep one"
    assert error(load_yaml_text, "x:\n  k: 1\n\n  k: 2\n", "cfg", exc=ConfigError) == \
        "cfg: key 'k' appears twice (lines 2 and 4); keep one"
    assert error(load_yaml_text, "1: a\n1: b\n", "f", exc=ConfigError) == "f: key 1 appears twice (lines 1 and 2); keep one"
    assert load_yaml_text("a: 1\nb: {a: 2}\n", "cfg") == {"a": 1, "b": {"a": 2}}


def test_unhashable_keys_are_left_to_pyyaml():
    assert error(load_yaml_text, "? [1, 2]\n: 3\n", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 1: found unhashable key"
    # the keys after an unhashable one are still checked for duplicates (which are reported first)
    assert error(load_yaml_text, "? [1, 2]\n: 3\na: 1\na: 2\n", "cfg", exc=ConfigError) == \
        "cfg: key 'a' appears twice (lines 3 and 4); keep one"


def test_invalid_yaml_names_the_line():
    assert error(load_yaml_text, "a: 1\nb: [1\n", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 3: expected ',' or ']', but got '<stream end>'"
    assert error(load_yaml_text, "a: 1\nb: c: d\n", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 2: mapping values are not allowed here"
    assert error(load_yaml_text, "x: !!python/object:os.system y", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 1: could not determine a constructor for the tag " \
        "'tag:yaml.org,2002:python/object:os.system'"
    assert error(load_yaml_text, "a: 1\n---\nb: 2\n", "cfg", exc=ConfigError) == \
        "cfg is not valid YAML at line 2: but found another document"


def test_empty_documents():
    message = "cfg is empty (or only comments); it needs a mapping of fields"
    assert error(load_yaml_text, "", "cfg", exc=ConfigError) == message
    assert error(load_yaml_text, "# only a comment\n\n", "cfg", exc=ConfigError) == message
    assert load_yaml_text("", "cfg", required=False) is None
    assert load_yaml_text("# c\n", "cfg", required=False) is None
    assert load_yaml_text("null", "cfg") is None  # a document that says null is not empty
    assert load_yaml_text("3", "cfg") == 3


def nested_lists(levels: int, leaf: str = "") -> str:
    return "[" * levels + leaf + "]" * levels


def nested_maps(levels: int) -> str:
    return "{a: " * levels + "1" + "}" * levels


def test_nesting_depth_boundary():
    # the root is at depth 0 and MAX_DEPTH = 64 is the deepest node allowed
    assert load_yaml_text(nested_lists(65), "cfg") is not None
    assert load_yaml_text(nested_lists(64, "1"), "cfg") is not None
    too_deep = "cfg: nesting is deeper than 64 levels"
    assert error(load_yaml_text, nested_lists(66), "cfg", exc=ConfigError) == too_deep
    assert error(load_yaml_text, nested_lists(65, "1"), "cfg", exc=ConfigError) == too_deep
    assert load_yaml_text(nested_maps(64), "cfg") is not None
    assert error(load_yaml_text, nested_maps(65), "cfg", exc=ConfigError) == too_deep
    # in a block mapping too, the deepest level (the value) counts
    deep = load_yaml_text("\n".join("  " * i + "k:" for i in range(64)) + " 1\n", "cfg")
    for _ in range(64):
        deep = deep["k"]
    assert deep == 1
    assert error(load_yaml_text, "\n".join("  " * i + "k:" for i in range(65)) + " 1\n", "cfg",
                 exc=ConfigError) == too_deep


def aliased(total: int) -> str:
    """A sequence standing for exactly ``total`` nodes once aliases are expanded: the root, a
    list of 999 scalars (1000 nodes) and 198 aliases of it, then single scalars to make up the rest."""
    body = "[" + ", ".join(["1"] * 999) + "]"
    rest = total - 1 - 1000 * 199
    assert rest >= 0
    return "- &a " + body + "\n" + "- *a\n" * 198 + "- 2\n" * rest


def test_alias_expansion_boundary():
    doc = load_yaml_text(aliased(200_000), "cfg")
    assert len(doc) == 199 + 999 and doc[1] is doc[0] and len(doc[0]) == 999
    assert error(load_yaml_text, aliased(200_001), "cfg", exc=ConfigError) == \
        "cfg: it expands to more than 200000 values (aliases of aliases?)"


def test_billion_laughs_is_refused_quickly():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    assert error(load_yaml_text, "\n".join(lines), "bomb.yaml", exc=ConfigError) == \
        "bomb.yaml: it expands to more than 200000 values (aliases of aliases?)"
    # a few aliases are fine
    assert load_yaml_text("\n".join(lines[:3]), "ok") == {
        "a0": ["lol"] * 10, "a1": [["lol"] * 10] * 10, "a2": [[["lol"] * 10] * 10] * 10}


def test_a_scalar_root_is_not_measured():
    assert load_yaml_text("hello", "cfg") == "hello"
    assert load_yaml_text("[]", "cfg") == []


def test_a_recursion_error_reads_as_too_deep(monkeypatch):
    def boom(node):
        raise RecursionError

    monkeypatch.setattr(yamlio, "_measure", boom)
    assert error(load_yaml_text, "[1]", "cfg", exc=ConfigError) == "cfg: nesting is deeper than 64 levels"


def test_read_text_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: é\n", encoding="utf-8")
    assert read_text_file(good, "config") == "a: é\n"
    assert read_text_file(str(good), "config") == "a: é\n"
    assert error(read_text_file, tmp_path, "config", exc=ConfigError) == f"config: {tmp_path} is a directory, not a file"
    missing = tmp_path / "nope.yaml"
    assert error(read_text_file, missing, "config", exc=ConfigError) == f"config: file {missing} does not exist"


def test_read_text_file_size_boundary(tmp_path):
    path = tmp_path / "ten.txt"
    path.write_bytes(b"0123456789")
    assert read_text_file(path, "t", max_bytes=10) == "0123456789"
    assert error(read_text_file, path, "t", max_bytes=9, exc=ConfigError) == f"t: {path} has 10 bytes; the limit is 9"


def test_read_text_file_default_limit(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (4 * 2**20))
    assert len(read_text_file(path, "t")) == 4 * 2**20
    path.write_bytes(b"#" * (4 * 2**20 + 1))
    assert error(read_text_file, path, "t", exc=ConfigError) == f"t: {path} has 4194305 bytes; the limit is 4194304"
    assert error(load_yaml_file, path, "t", exc=ConfigError) == f"t: {path} has 4194305 bytes; the limit is 4194304"


def test_read_text_file_names_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("a: 1\nb: café".encode("latin-1"))
    assert error(read_text_file, path, "config", exc=ConfigError) == \
        f"config: {path} is not UTF-8 text (byte 0xe9 at offset 11)"
    path.write_bytes(b"\x80")
    assert error(read_text_file, path, "config", exc=ConfigError) == \
        f"config: {path} is not UTF-8 text (byte 0x80 at offset 0)"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_read_text_file_permission_denied(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1\n")
    path.chmod(0)
    try:
        assert error(read_text_file, path, "config", exc=ConfigError) == \
            f"config: {path} cannot be read (permission denied)"
    finally:
        path.chmod(0o600)


def test_read_text_file_permission_denied_message(tmp_path, monkeypatch):
    """The same message without depending on who runs the tests (root reads anything)."""
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1\n")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert error(read_text_file, path, "config", exc=ConfigError) == f"config: {path} cannot be read (permission denied)"


def test_read_text_file_other_os_errors(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    assert error(read_text_file, loop, "config", exc=ConfigError) == \
        f"config: {loop} cannot be read (Too many levels of symbolic links)"
    plain = tmp_path / "plain"
    plain.write_text("x")
    under = plain / "x.yaml"
    assert error(read_text_file, under, "config", exc=ConfigError) == f"config: {under} cannot be read (Not a directory)"


def test_read_text_file_os_error_without_strerror(tmp_path, monkeypatch):
    path = tmp_path / "odd.yaml"
    path.write_text("a: 1\n")

    def odd(self):
        raise OSError("odd failure")

    monkeypatch.setattr(Path, "read_bytes", odd)
    assert error(read_text_file, path, "config", exc=ConfigError) == f"config: {path} cannot be read (odd failure)"


def test_load_yaml_file_names_what_and_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\na: 2\n")
    assert error(load_yaml_file, path, "config", exc=ConfigError) == \
        f"config {path}: key 'a' appears twice (lines 1 and 2); keep one"
    # ``what`` that already ends with the path is not repeated
    assert error(load_yaml_file, path, f"topology {path}", exc=ConfigError) == \
        f"topology {path}: key 'a' appears twice (lines 1 and 2); keep one"
    assert error(load_yaml_file, str(path), f"x {path}", exc=ConfigError) == \
        f"x {path}: key 'a' appears twice (lines 1 and 2); keep one"
    path.write_text("# nothing\n")
    assert error(load_yaml_file, path, "config", exc=ConfigError) == \
        f"config {path} is empty (or only comments); it needs a mapping of fields"
    assert load_yaml_file(path, "config", required=False) is None
    path.write_text("a: [1, 2]\n")
    assert load_yaml_file(path, "config") == {"a": [1, 2]}
    assert error(load_yaml_file, path, "config", max_bytes=9, exc=ConfigError) == \
        f"config: {path} has 10 bytes; the limit is 9"
    assert load_yaml_file(path, "config", max_bytes=10) == {"a": [1, 2]}


@pytest.mark.parametrize("item, expected", [
    ("x=3", ("x", 3)), ("x=", ("x", None)), ("x=a=b", ("x", "a=b")), (" train.epochs = 2", ("train.epochs", 2)),
    ("a.b=[1, 2]", ("a.b", [1, 2])), ("k={p: 1}", ("k", {"p": 1})), ("k=1e-3", ("k", "1e-3")), ("k=0.5", ("k", 0.5)),
    ("k=true", ("k", True)), ("k=#c", ("k", None)),
])
def test_parse_override(item, expected):
    assert parse_override(item) == expected


def test_parse_override_errors():
    assert error(parse_override, "x", exc=ConfigError) == "--set 'x': expected KEY=VALUE, e.g. train.epochs=3"
    key_message = "the key must be a dotted field path like train.epochs"
    assert error(parse_override, "=3", exc=ConfigError) == f"--set '=3': {key_message}"
    assert error(parse_override, " =3", exc=ConfigError) == f"--set ' =3': {key_message}"
    assert error(parse_override, "a..b=3", exc=ConfigError) == f"--set 'a..b=3': {key_message}"
    assert error(parse_override, ".a=3", exc=ConfigError) == f"--set '.a=3': {key_message}"
    assert error(parse_override, "a.=3", exc=ConfigError) == f"--set 'a.=3': {key_message}"
    assert error(parse_override, "a=[1", exc=ConfigError) == \
        "--set a is not valid YAML at line 1: expected ',' or ']', but got '<stream end>'"
    assert error(parse_override, "a={k: 1, k: 2}", exc=ConfigError) == \
        "--set a: key 'k' appears twice (lines 1 and 1); keep one"


# ============================================================================= files


def test_write_atomic_text_bytes_and_callable(tmp_path):
    target = tmp_path / "deep" / "er" / "out.txt"
    assert write_atomic(target, "héllo") == target
    assert target.read_text() == "héllo"
    assert write_atomic(str(target), b"\x00\xff") == target and target.read_bytes() == b"\x00\xff"
    seen = []

    def writer(tmp: Path):
        seen.append(tmp)
        tmp.write_text("via fn")

    write_atomic(target, writer)
    assert target.read_text() == "via fn"
    assert seen == [target.with_name(f".out.txt.{os.getpid()}.tmp")]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_write_atomic_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half(tmp: Path):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device$"):
        write_atomic(target, half)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    def nothing(tmp: Path):
        raise ValueError("before writing")

    with pytest.raises(ValueError, match=r"^before writing$"):
        write_atomic(tmp_path / "new.bin", nothing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_modules_are_the_ones_tested():
    assert files.write_atomic is write_atomic and schema.from_dict is from_dict
    assert re.fullmatch(units._NUM, "-1.5e+3") and not re.fullmatch(units._NUM, "1.2.3")


def test_one_line_keeps_printable_quotes_and_backslashes():
    assert one_line("it's a\\b \"q\"") == "it's a\\b \"q\""
