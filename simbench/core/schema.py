"""Build frozen dataclasses from plain dicts (parsed YAML) with one-line errors.

``from_dict(Cls, data, "scenario.stragglers")`` checks every key against the
dataclass's fields, converts values by the field's annotation (int, float, bool, str,
tuples, nested dataclasses, ``Optional``) and raises :class:`ConfigError` whose message
names the dotted path of the field and what is allowed. Fields may declare
``metadata={"choices": (...)}`` or ``metadata={"parse": fn}`` (e.g. a unit parser),
and ``metadata={"check": (fn, "must be > 0")}``. Every number must be finite (NaN and
infinities ruin a run silently), except ``+inf`` in a field that declares
``metadata={"inf": True}`` (an unlimited bandwidth); integers lie within +-2**63.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line naming the field."""


def one_line(text: object) -> str:
    """``text`` on one printable line: control characters (a newline in a file name a user
    wrote) are shown escaped, as Python writes them in a string."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def suggest(key: str, allowed) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``allowed`` to ``key``, or an empty string."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def convert(value: Any, tp: Any, path: str, field: dataclasses.Field | None = None) -> Any:
    """Convert ``value`` to annotation ``tp`` or raise ConfigError naming ``path``."""
    meta = field.metadata if field is not None else {}
    if "parse" in meta and value is not None:
        try:
            value = meta["parse"](value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    else:
        value = _convert_type(value, tp, path)
    _check_finite(value, path, meta)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{path}: {value!r} is not allowed; allowed: {', '.join(map(str, choices))}{suggest(str(value), map(str, choices))}"
        )
    check = meta.get("check")
    if check is not None and value is not None and not check[0](value):
        raise ConfigError(f"{path}: {value!r} {check[1]}")
    return value


# -- reusable field checks: metadata={"check": at_least(1)} ------------------------------------
def at_least(lo: float) -> tuple:
    """A ``check`` for values >= ``lo``."""
    return (lambda x: x >= lo, f"must be >= {lo}")


def above(lo: float) -> tuple:
    """A ``check`` for values > ``lo``."""
    return (lambda x: x > lo, f"must be > {lo}")


def within(lo: float, hi: float, *, open_hi: bool = False) -> tuple:
    """A ``check`` for values in [lo, hi] (or [lo, hi) with ``open_hi``)."""
    if open_hi:
        return (lambda x: lo <= x < hi, f"must be in [{lo}, {hi})")
    return (lambda x: lo <= x <= hi, f"must be in [{lo}, {hi}]")


def path_component(name: str) -> bool:
    """Whether ``name`` can be one directory name: no separators, not '.' or '..', no control characters."""
    return (bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")
            and all(c.isprintable() for c in name) and len(name) <= 200)


def _check_finite(value: Any, path: str, meta: Mapping) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value) and not (value == math.inf and meta.get("inf")):
        allowed = "a finite number or inf" if meta.get("inf") else "a finite number"
        raise ConfigError(f"{path}: {value!r} is not allowed; expected {allowed}")
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        raise ConfigError(f"{path}: {value} is out of range")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{path}[{i}]", {})


def _convert_type(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        given = [a for a in args if a is not type(None)]
        if len(given) == 1:  # Optional[X]: X's own error names the field that is wrong
            return _convert_type(value, given[0], path)
        for arg in given:
            try:
                return _convert_type(value, arg, path)
            except ConfigError:
                pass
        allowed = " or ".join(_type_name(a) for a in given)
        raise ConfigError(f"{path}: expected {allowed}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert_type(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert_type(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Mapping[str, Any] | None, path: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``, validating keys and values."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)
              if f.init and not f.name.startswith("_") and not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            where = path or "config"
            raise ConfigError(
                f"{prefix}{key}: unknown field in {where}{suggest(str(key), fields)}; allowed: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{prefix}{name}", f)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required field is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON/YAML-able values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj
