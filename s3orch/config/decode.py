"""Typed decoding of the YAML node tree into the model's frozen dataclasses.

Decoding works on the YAML node tree, not on PyYAML's Python objects, because the drop-in files
expect each scalar decoded by the type of its target field: ``access_key_id: 0123`` stays the
string "0123", ``min_version: 1.2`` the string "1.2", and ``token: no`` the string "no".  Every
problem is collected (``Decoder.issues``), none stops the decoding.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from s3orch.config.model import ConfigIssue
from s3orch.config.units import parse_duration, parse_size

T = TypeVar("T")

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TRUE = frozenset({"true", "yes", "y", "on"})
_FALSE = frozenset({"false", "no", "n", "off"})


class _Missing:
    """Marker: the key was absent or unusable, so the dataclass default applies."""


_MISSING = _Missing()

@dataclass(frozen=True)
class _Spec:
    """What the decoder needs to know about one dataclass field."""

    name: str
    type: Any
    metadata: Mapping[str, Any]


_SPEC_CACHE: dict[type[Any], dict[str, _Spec]] = {}


def _specs(cls: type[Any]) -> dict[str, _Spec]:
    """YAML key (and alias) -> field spec for a model dataclass."""
    cached = _SPEC_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    specs: dict[str, _Spec] = {}
    for fld in dataclasses.fields(cls):
        if not fld.init or not fld.metadata.get("yaml", True):
            continue
        spec = _Spec(fld.name, hints[fld.name], fld.metadata)
        specs[fld.name] = spec
        for alias in fld.metadata.get("aliases", ()):
            specs[alias] = spec
    _SPEC_CACHE[cls] = specs
    return specs


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return "unknown key"


class Decoder:
    """Turns YAML nodes into model dataclasses, collecting issues instead of stopping at the first."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.lines: dict[str, int] = {}

    def error(self, path: str, message: str, node: Node | None = None) -> None:
        line = _line(node) if node is not None else self.lines.get(path)
        self.issues.append(ConfigIssue(path or "config", message, line))

    def pairs(self, node: MappingNode, path: str) -> list[tuple[Node, Node]]:
        """The mapping's key/value nodes with YAML merge keys (``<<: *anchor``) applied."""
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                sources = (
                    value_node.value
                    if isinstance(value_node, SequenceNode)
                    else [value_node]
                )
                for source in sources:
                    if isinstance(source, MappingNode):
                        merged.extend(self.pairs(source, path))
                    else:
                        self.error(_join(path, "<<"), "can only merge mappings", source)
            else:
                explicit.append((key_node, value_node))
        taken = {k.value for k, _ in explicit if isinstance(k, ScalarNode)}
        result: list[tuple[Node, Node]] = []
        for key_node, value_node in merged:
            if isinstance(key_node, ScalarNode) and key_node.value not in taken:
                taken.add(key_node.value)
                result.append((key_node, value_node))
        return result + explicit

    def dataclass(self, cls: type[T], node: Node, path: str) -> T:
        """Decode a mapping into ``cls``; absent and unusable keys keep their defaults."""
        if not isinstance(node, MappingNode):
            self.error(path, "must be a mapping", node)
            return cls()
        specs = _specs(typing.cast("type[Any]", cls))
        canonical = sorted({spec.name for spec in specs.values()})
        kwargs: dict[str, Any] = {}
        seen: dict[str, tuple[str, int]] = {}
        for key_node, value_node in self.pairs(node, path):
            if not isinstance(key_node, ScalarNode):
                self.error(path, "keys must be strings", key_node)
                continue
            key = str(key_node.value)
            key_path = _join(path, key)
            spec = specs.get(key)
            if spec is None:
                self.error(key_path, _unknown_key_message(key, canonical), key_node)
                continue
            if spec.name in seen:
                first_key, first_line = seen[spec.name]
                if first_key == key:
                    message = f"duplicate key (first set on line {first_line})"
                else:
                    message = (
                        f"'{key}' and '{first_key}' are the same key; set only one"
                    )
                self.error(key_path, message, key_node)
                continue
            seen[spec.name] = (key, _line(key_node))
            self.lines.setdefault(key_path, _line(key_node))
            self.lines.setdefault(_join(path, spec.name), _line(key_node))
            if _is_null(value_node):
                continue
            value = self.value(spec, value_node, key_path)
            if not isinstance(value, _Missing):
                kwargs[spec.name] = value
        return cls(**kwargs)

    def value(self, spec: _Spec, node: Node, path: str) -> Any:
        """Decode one field's value by its declared type and check its bounds."""
        tp = spec.type
        if typing.get_origin(tp) in (types.UnionType, typing.Union):
            tp = next(arg for arg in typing.get_args(tp) if arg is not type(None))
        meta = spec.metadata
        if dataclasses.is_dataclass(tp):
            return self.dataclass(typing.cast(type[Any], tp), node, path)
        if meta.get("kind") == "str_map":
            return self.str_map(node, path)
        if typing.get_origin(tp) is tuple:
            return self.sequence(typing.get_args(tp)[0], node, path)
        value = self.scalar(tp, meta.get("kind"), node, path)
        if isinstance(value, _Missing):
            return value
        if tp is str:
            if value == "" and meta.get("empty_default"):
                return _MISSING
            return value
        if tp is not bool:
            self.check_bounds(value, meta, node, path)
        return value

    def check_bounds(
        self, value: float, meta: Mapping[str, Any], node: Node, path: str
    ) -> None:
        """Report out-of-range numbers but keep them, so later rules see what was written."""
        minimum = meta.get("min")
        if meta.get("positive") and value <= 0:
            self.error(path, "must be > 0", node)
        elif minimum is not None and value < minimum:
            self.error(path, f"must be >= {minimum:g}", node)

    def sequence(self, element: Any, node: Node, path: str) -> Any:
        if not isinstance(node, SequenceNode):
            self.error(path, "must be a list", node)
            return _MISSING
        items: list[Any] = []
        for index, item in enumerate(node.value):
            item_path = f"{path}[{index}]"
            self.lines.setdefault(item_path, _line(item))
            if dataclasses.is_dataclass(element):
                items.append(
                    self.dataclass(typing.cast(type[Any], element), item, item_path)
                )
            else:
                value = self.scalar(element, None, item, item_path)
                if not isinstance(value, _Missing):
                    items.append(value)
        return tuple(items)

    def str_map(self, node: Node, path: str) -> Any:
        """A mapping of strings to strings (lifecycle tags), kept in file order."""
        if not isinstance(node, MappingNode):
            self.error(path, "must be a mapping of strings", node)
            return _MISSING
        pairs: dict[str, str] = {}
        for key_node, value_node in self.pairs(node, path):
            if not isinstance(key_node, ScalarNode):
                self.error(path, "keys must be strings", key_node)
                continue
            key = str(key_node.value)
            value = self.scalar(str, None, value_node, _join(path, key))
            if key in pairs:
                self.error(_join(path, key), "duplicate key", key_node)
            elif not isinstance(value, _Missing):
                pairs[key] = str(value)
        return tuple(pairs.items())

    def scalar(self, tp: Any, kind: str | None, node: Node, path: str) -> Any:
        """Decode a scalar as str, bool, int (or size) or float (or duration)."""
        expected = {
            str: "a string",
            bool: "true or false",
            int: "an integer",
            float: "a number",
        }
        if kind == "size":
            expected[int] = "a size"
        if kind == "duration":
            expected[float] = "a duration"
        if not isinstance(node, ScalarNode) or _is_null(node):
            self.error(path, f"must be {expected.get(tp, 'a scalar')}", node)
            return _MISSING
        text = str(node.value)
        try:
            if tp is str:
                return text
            if tp is bool:
                return _parse_bool(text)
            if tp is int:
                return parse_size(text) if kind == "size" else _parse_int(text)
            if tp is float:
                return (
                    parse_duration(text) if kind == "duration" else _parse_float(text)
                )
        except ValueError as exc:
            self.error(path, str(exc), node)
            return _MISSING
        raise TypeError(f"unsupported config field type {tp!r} at {path}")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {text!r}")


def _parse_int(text: str) -> int:
    cleaned = text.strip().replace("_", "")
    try:
        return int(cleaned, 10)
    except ValueError:
        pass
    try:
        return int(cleaned, 0)
    except ValueError:
        pass
    try:
        number = float(cleaned)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number == int(number):
        return int(number)
    raise ValueError(f"must be an integer, got {text!r}")


def _parse_float(text: str) -> float:
    try:
        number = float(text.strip().replace("_", ""))
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"must be a number, got {text!r}")
    return number
