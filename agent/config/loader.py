"""Loads agent.yaml and conf.d/*.yaml beside it into a validated, immutable `Config`
(agent/config/model.py).

The keys and their checks are in agent/config/schema.py; docs/config.md explains them.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor

from agent.config.addresses import parse_host_port
from agent.config.model import Config
from agent.config.schema import schema
from agent.config.secrets import (
    SECRETS,
    check_client_pair,
    inline_secret_warnings,
    resolve_secret,
)
from agent.config.validation import Mark, Marked, Problem, validate_document

DOCUMENT = "-"  # the KEY of a problem that belongs to no key (syntax errors, unreadable files)


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(errors))
        self.errors = errors

MAX_DEPTH = 32  # levels of mappings and lists a config may nest


def load_config(path: Path) -> Config:
    """Reads `path` then conf.d/*.yaml beside it; raises ConfigError listing every error."""
    path = path.absolute()
    problems: list[Problem] = []
    warnings: list[Problem] = []
    conf_d = path.parent / "conf.d"
    overrides = sorted(p for p in conf_d.glob("*.y*ml")
                       if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    warnings += [Problem(Mark(p, 1), DOCUMENT, "ignored: only *.yaml files are read")
                 for p in overrides if p.suffix != ".yaml"]
    files = (path, *(p for p in overrides if p.suffix == ".yaml"))
    documents = [_read_document(file, problems) for file in files]
    readable = [document for document in documents if document is not None]
    if len(readable) < len(documents):  # without that file, the merge would mislead
        raise ConfigError([str(p) for p in _in_reading_order(problems, files)])
    checked = validate_document(functools.reduce(_merge, readable), schema(path.parent))
    problems += checked.problems
    values = checked.values
    warnings += inline_secret_warnings(values, checked.marks)
    for section, name in SECRETS:
        resolve_secret(values, checked.marks, section, name, problems, warnings)
    for section in ("source", "mqtt"):
        check_client_pair(values, checked.marks, section, problems, warnings)
    warnings += _risk_warnings(values, checked.marks)
    if problems:
        raise ConfigError([str(p) for p in _in_reading_order(problems, files)])
    values["warnings"] = tuple(str(w) for w in _in_reading_order(warnings, files))
    values["files"] = files
    return _build(Config, values)


def _in_reading_order(problems: list[Problem], files: tuple[Path, ...]) -> list[Problem]:
    def position(problem: Problem) -> tuple[int, int]:
        file = problem.mark.file
        return (files.index(file) if file in files else len(files), problem.mark.line)
    return sorted(problems, key=position)


def _read_document(file: Path, problems: list[Problem]) -> Marked | None:
    """The file as a Marked tree, or None when it cannot be read as a mapping."""
    mark = Mark(file, 1)
    try:
        content = file.read_text(encoding="utf-8")
    except OSError as error:
        problems.append(Problem(mark, DOCUMENT, f"cannot read: {error.strerror}"))
        return None
    except UnicodeDecodeError as error:
        line = file.read_bytes()[: error.start].count(b"\n") + 1
        problems.append(Problem(Mark(file, line), DOCUMENT, "not UTF-8 text"))
        return None
    try:
        loader = yaml.SafeLoader(content)
        node = loader.get_single_node()
    except yaml.reader.ReaderError as error:
        line = content[: error.position].count("\n") + 1
        message = f"unacceptable character #x{error.character:04x}: {error.reason}"
        problems.append(Problem(Mark(file, line), DOCUMENT, message))
        return None
    except yaml.MarkedYAMLError as error:
        where = error.problem_mark or error.context_mark
        line = where.line + 1 if where else 1
        problems.append(Problem(Mark(file, line), DOCUMENT, str(error.problem or error.context)))
        return None
    except (ValueError, OverflowError) as error:  # PyYAML lets bad escapes ("\Uffffffff") out
        line = loader.get_mark().line + 1
        problems.append(Problem(Mark(file, line), DOCUMENT, f"unreadable YAML: {error}"))
        return None
    except RecursionError:  # thousands of nested brackets: PyYAML's composer recurses
        line = loader.get_mark().line + 1
        problems.append(Problem(Mark(file, line), DOCUMENT, "nested too deeply"))
        return None
    if node is None:
        return Marked({}, mark)
    document = _to_marked(node, loader, file, 1, "", problems)
    loader.dispose()
    if not isinstance(document.value, dict):
        problems.append(Problem(document.mark, DOCUMENT, "expected a mapping of keys at the top"))
        return None
    return document


def _to_marked(node: yaml.Node, constructor: SafeConstructor, file: Path, line: int, key: str,
               problems: list[Problem], depth: int = 0) -> Marked:
    """`line` is where the value's key was written: a block mapping starts one line later."""
    mark = Mark(file, line)
    if depth > MAX_DEPTH:  # no config is this deep; an alias of itself (&a [*a]) is endless
        problems.append(Problem(mark, key or DOCUMENT, f"nested deeper than {MAX_DEPTH} levels"))
        return Marked(None, mark)
    if isinstance(node, yaml.MappingNode):
        items: dict[str, Marked] = {}
        for key_node, value_node in node.value:
            key_mark = Mark(file, key_node.start_mark.line + 1)
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            child_key = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str) or key_node.tag != "tag:yaml.org,2002:str":
                message = f"key {name} is not a string" if name else "a key is not a string"
                problems.append(Problem(key_mark, key or DOCUMENT, message))
            elif name in items:
                message = f"duplicate key (first given on line {items[name].mark.line})"
                problems.append(Problem(key_mark, child_key, message))
            else:
                items[name] = _to_marked(value_node, constructor, file, key_mark.line, child_key,
                                         problems, depth + 1)
        return Marked(items, mark)
    if isinstance(node, yaml.SequenceNode):
        return Marked([_to_marked(item, constructor, file, item.start_mark.line + 1,
                                  f"{key}[{i}]", problems, depth + 1)
                       for i, item in enumerate(node.value)], mark)
    try:
        return Marked(constructor.construct_object(node, deep=True), mark)
    except (yaml.YAMLError, ValueError, OverflowError) as error:  # a date out of range...
        problems.append(Problem(mark, key or DOCUMENT, str(getattr(error, "problem", error))))
        return Marked(None, mark)


def _merge(base: Marked, override: Marked) -> Marked:
    """Mappings merge key by key; anything else (lists too) is replaced by the override."""
    if not (isinstance(base.value, dict) and isinstance(override.value, dict)):
        return override
    merged = dict(base.value)
    for name, value in override.value.items():
        merged[name] = _merge(merged[name], value) if name in merged else value
    return Marked(merged, base.mark)


def _risk_warnings(values: dict[str, typing.Any], marks: dict[str, Mark]) -> list[Problem]:
    """Valid but risky settings; the defaults raise none of them."""
    warnings = []
    source = values["source"] or {}
    if source.get("verify_tls") is False:
        key = "source.verify_tls"
        warnings.append(Problem(marks[key], key, "TLS verification of the source is off"))
    if (source.get("url") or "").startswith("http://") and source.get("token") is not None:
        key = "source.url"
        warnings.append(Problem(marks[key], key, "source.token travels unencrypted over "
                                "http://; anyone on the path can read it (use https://)"))
    mqtt = values["mqtt"] or {}
    plain = [uri for uri in mqtt.get("brokers") or () if (uri or "").startswith("mqtt://")]
    if plain and mqtt.get("password") is not None:
        key = "mqtt.brokers"
        warnings.append(Problem(marks[key], key, f"mqtt.password travels unencrypted to "
                                f"{', '.join(plain)}; anyone on the path can read it "
                                "(use mqtts://)"))
    health = values["health"] or {}
    if health.get("listen") and health.get("token") is None:
        host = parse_host_port(health["listen"]).host
        if not _is_loopback(host):
            key = "health.listen"
            message = f"{host} is reachable from other hosts and health.token is not set"
            warnings.append(Problem(marks[key], key, message))
    return warnings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


T = typing.TypeVar("T")


def _build(cls: type[T], values: dict[str, typing.Any]) -> T:
    """Builds `cls` (a dataclass) from validated values, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    arguments = {}
    for field in fields(cls):  # type: ignore[arg-type]
        value = values[field.name]
        nested = [t for t in (typing.get_args(hints[field.name]) or (hints[field.name],))
                  if isinstance(t, type) and is_dataclass(t)]
        arguments[field.name] = _build(nested[0], value) if nested and value is not None else value
    return cls(**arguments)


# ---- `broadcast-agent validate` -------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate", help="check the merged configuration; exit 2 listing every error")
    parser.set_defaults(func=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))  # ConfigError: the CLI prints it and exits 2
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    extra = len(config.files) - 1
    print(f"config OK: {config.files[0]} + {extra} conf.d file{'s' * (extra != 1)}, "
          f"device {config.device_id}, {len(config.warnings)} warning"
          f"{'s' * (len(config.warnings) != 1)}")
    return 0
