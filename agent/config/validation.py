"""Checking a merged agent.yaml document against a schema.

A document arrives as a tree of `Marked` values that remember the file and line each value
was written on, so every problem can be reported like a compiler would, and the walker
keeps going after a problem so that one run lists every error. A schema is built of `Key`,
`ListKey` and `Section` (agent/config/schema.py); the checks of a key's value are in
agent/config/checks.py and raise `Invalid`.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Mark:
    file: Path
    line: int


@dataclass(frozen=True)
class Problem:
    mark: Mark
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.mark.file}:{self.mark.line}: {self.key}: {self.message}"


@dataclass(frozen=True)
class Marked:
    """A YAML value (a dict of Marked, a list of Marked, or a scalar) and where it was written."""

    value: object
    mark: Mark


class Invalid(ValueError):
    """Raised by a check; the message says what is wrong with the value."""


Check = Callable[[object], object]


class _Required(enum.Enum):
    REQUIRED = enum.auto()


REQUIRED = _Required.REQUIRED


@dataclass(frozen=True)
class Key:
    check: Check
    default: object = REQUIRED


@dataclass(frozen=True)
class ListKey:
    """A list whose items each pass `item`; the default is the empty list."""

    item: Check


@dataclass(frozen=True)
class Section:
    keys: Mapping[str, Key | ListKey | Section]
    nullable: bool = False  # null (the default) or a mapping with these keys


@dataclass
class Validated:
    values: dict[str, object]
    homes: dict[str, list[str]]  # key name -> the dotted paths of every section that has it
    marks: dict[str, Mark] = field(default_factory=dict)  # dotted key -> where it was written
    problems: list[Problem] = field(default_factory=list)


def describe(value: object) -> str:
    """How a parsed YAML value reads in an error message: `string '60'`, `null`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}"


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def validate_document(doc: Marked, schema: Section) -> Validated:
    result = Validated(values={}, homes={})
    _index_homes(schema, "", result.homes)
    result.values = _walk_section(doc, schema, "", result)
    return result


def _index_homes(section: Section, prefix: str, homes: dict[str, list[str]]) -> None:
    for name, spec in section.keys.items():
        homes.setdefault(name, []).append(prefix)
        if isinstance(spec, Section):
            _index_homes(spec, _join(prefix, name), homes)


def _unknown_key_message(name: str, section: Section, homes: dict[str, list[str]]) -> str:
    """Suggests a near miss in the same section, else the section(s) where the key belongs."""
    suggestion = did_you_mean(name, list(section.keys))
    if not suggestion and name in homes:
        places = " or ".join(f"'{_join(home, name)}'" if home else f"top-level '{name}'"
                             for home in homes[name])
        suggestion = f"; did you mean {places}?"
    return "unknown key" + suggestion


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk_section(node: Marked, section: Section, prefix: str, out: Validated) -> dict[str, object]:
    assert isinstance(node.value, dict)
    given: dict[str, Marked] = node.value
    for name, child in given.items():
        if name not in section.keys:
            message = _unknown_key_message(name, section, out.homes)
            out.problems.append(Problem(child.mark, _join(prefix, name), message))
    values: dict[str, object] = {}
    for name, spec in section.keys.items():
        key = _join(prefix, name)
        written = given.get(name)
        if written is not None:
            out.marks[key] = written.mark
            values[name] = _walk_value(written, spec, key, out)
        elif isinstance(spec, Key) and spec.default is REQUIRED:
            out.problems.append(Problem(node.mark, key, "required key missing"))
        elif isinstance(spec, Key):
            values[name] = spec.default
        elif isinstance(spec, ListKey):
            values[name] = ()
        elif spec.nullable:
            values[name] = None
        else:
            values[name] = _walk_section(Marked({}, node.mark), spec, key, out)
    return values


def _walk_value(node: Marked, spec: Key | ListKey | Section, key: str, out: Validated) -> object:
    if isinstance(spec, Section):
        if node.value is None and spec.nullable:
            return None
        if not isinstance(node.value, dict):
            return _fail(node, key, f"expected a mapping, got {describe(plain(node))}", out)
        return _walk_section(node, spec, key, out)
    if isinstance(spec, ListKey):
        if not isinstance(node.value, list):
            return _fail(node, key, f"expected a list, got {describe(plain(node))}", out)
        items = tuple(_check(item, spec.item, f"{key}[{i}]", out)
                      for i, item in enumerate(node.value))
        for i, item in enumerate(items):
            if item is not None and item in items[:i]:
                _fail(node.value[i], f"{key}[{i}]", f"repeats {key}[{items.index(item)}]", out)
        return items
    return _check(node, spec.check, key, out)


def _check(node: Marked, check: Check, key: str, out: Validated) -> object:
    try:
        return check(plain(node))
    except Invalid as problem:
        return _fail(node, key, str(problem), out)


def _fail(node: Marked, key: str, message: str, out: Validated) -> object:
    """Records the problem; the value becomes None (never used: the config is refused)."""
    out.problems.append(Problem(node.mark, key, message))
    return None


def plain(node: Marked) -> object:
    if isinstance(node.value, dict):
        return {name: plain(child) for name, child in node.value.items()}
    if isinstance(node.value, list):
        return [plain(item) for item in node.value]
    return node.value
