"""Safe reading of the YAML files users hand simbench: configs, matrices, topologies, hosts.

:func:`load_yaml_file` and :func:`load_yaml_text` parse with PyYAML's safe loader and turn
everything that could hang, exhaust memory or mislead into one :class:`ConfigError` line
naming the file (or flag) and what is wrong:

* the path is missing or a directory, the file is larger than ``max_bytes``, or its
  bytes are not UTF-8 text;
* the text is not valid YAML (with its line number);
* a mapping repeats a key (PyYAML would silently keep the last value);
* aliases (``*name``) that would expand to more than :data:`MAX_NODES` nodes (the
  "billion laughs" of YAML), or nesting deeper than :data:`MAX_DEPTH` levels;
* an empty or comment-only file, when a document is required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .schema import ConfigError

MAX_BYTES = 4 * 2**20
"""Largest YAML file read (4 MiB: a config is a few KB, a topology of thousands of nodes a few MB)."""
MAX_NODES = 200_000
"""Most YAML nodes a document may stand for once aliases are expanded."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports an unhashable key
            if key in seen:
                raise ConfigError(f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                  "keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _measure(node: Node) -> None:
    """ConfigError if ``node`` expands to more than MAX_NODES nodes or nests deeper than MAX_DEPTH."""
    sizes: dict[int, int] = {}

    def size(n: Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ConfigError(f"nesting is deeper than {MAX_DEPTH} levels")
        key = id(n)
        if key in sizes:  # an alias: the same node again (counted again, as it would be expanded)
            return sizes[key]
        total = 1
        if isinstance(n, SequenceNode):
            for child in n.value:
                total += size(child, depth + 1)
        elif isinstance(n, MappingNode):
            for k, v in n.value:
                total += size(k, depth + 1) + size(v, depth + 1)
        if total > MAX_NODES:
            raise ConfigError(f"it expands to more than {MAX_NODES} values (aliases of aliases?)")
        sizes[key] = total
        return total

    if not isinstance(node, ScalarNode):
        size(node, 0)


class _Empty(Exception):
    pass


def _empty(what: str, required: bool) -> None:
    if required:
        raise _Empty(what)
    return None


def load_yaml_text(text: str, what: str, *, required: bool = True) -> Any:
    """The document in ``text``; ``what`` names it in errors (``config: FILE``, ``--set x``)."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return _empty(what, required)
        _measure(node)
        return loader.construct_document(node)
    except _Empty:
        raise ConfigError(f"{what} is empty (or only comments); it needs a mapping of fields") from None
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{what}: nesting is deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text_file(path: str | Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of ``path``, or a ConfigError line naming ``what`` and the problem."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{what}: {path} is a directory, not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"{what}: {path} has {size} bytes; the limit is {max_bytes}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what}: file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{what}: {path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{what}: {path} cannot be read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None


def load_yaml_file(path: str | Path, what: str, *, required: bool = True, max_bytes: int = MAX_BYTES) -> Any:
    """The YAML document of ``path`` (see the module docstring)."""
    text = read_text_file(path, what, max_bytes)
    return load_yaml_text(text, f"{what} {path}" if not what.endswith(str(path)) else what, required=required)


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of a ``--set`` flag: the dotted key and the YAML value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: the key must be a dotted field path like train.epochs")
    return key, load_yaml_text(raw, f"--set {key}", required=False)
