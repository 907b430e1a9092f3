"""Check messages against the project's JSON Schemas (docs/schemas/*.schema.json).

End-to-end tests call :func:`validate` on every message the agent emits (Status, Event,
Ack, Report, ...), so a drift between the code and the documented contracts fails a test.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_DIR = DOCS_DIR / "schemas"
_SUFFIX = ".schema.json"
_MAX_REPORTED_ERRORS = 10


class SchemaViolation(AssertionError):
    """A document does not match its schema; the message lists every problem by JSON path."""


def kinds() -> list[str]:
    """Every schema kind, e.g. ``status`` for docs/schemas/status.schema.json."""
    return sorted(p.name.removesuffix(_SUFFIX) for p in SCHEMA_DIR.glob("*" + _SUFFIX))


def schema_uri(kind: str) -> str:
    return (SCHEMA_DIR / (kind + _SUFFIX)).as_uri()


def load_schema(kind: str) -> dict[str, Any]:
    path = SCHEMA_DIR / (kind + _SUFFIX)
    if not path.is_file():
        raise ValueError(f"no schema {kind!r}; known kinds: {', '.join(kinds())}")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@cache
def registry() -> Registry[Any]:
    """Every schema under its file URI, so relative ``$ref``s between files resolve."""
    return Registry().with_resources(
        (schema_uri(kind), Resource.from_contents(load_schema(kind))) for kind in kinds()
    ).crawl()


@cache
def _validator(kind: str) -> Draft202012Validator:
    load_schema(kind)  # a clear error for an unknown kind
    return Draft202012Validator({"$ref": schema_uri(kind)}, registry=registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _describe(error: ValidationError) -> str:
    line = f"at {error.json_path}: {error.message}"
    if error.context:
        cause = best_match(error.context)
        line += f" (closest branch: at {cause.json_path}: {cause.message})"
    return line


def problems(kind: str, obj: Any) -> list[str]:
    """Every way ``obj`` breaks schema ``kind``, one readable line each; empty when valid."""
    errors = sorted(_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.path)))
    return [_describe(e) for e in errors]


def validate(kind: str, obj: Any) -> None:
    """Raise :class:`SchemaViolation` unless ``obj`` is a valid ``kind`` document."""
    found = problems(kind, obj)
    if found:
        shown = "\n  ".join(found[:_MAX_REPORTED_ERRORS])
        more = len(found) - _MAX_REPORTED_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise SchemaViolation(f"{kind} document breaks {kind}{_SUFFIX}:\n  {shown}{tail}\n"
                              f"document: {json.dumps(obj, ensure_ascii=False)[:2000]}")
