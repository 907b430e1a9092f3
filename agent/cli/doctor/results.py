"""What a doctor check returns: it passes, warns or fails, with a detail and a hint written
as English templates (the gettext msgids) that agent/cli/i18n.py translates when shown."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Message:
    """An English template (the gettext msgid) and its parameters."""

    template: str
    params: Mapping[str, object] = field(default_factory=dict)

    def render(self, gettext: Callable[[str], str] = str) -> str:
        params = {name: value.render(gettext) if isinstance(value, Message) else value
                  for name, value in self.params.items()}
        return gettext(self.template).format(**params)


def msg(template: str, **params: object) -> Message:
    return Message(template, params)


def joined(first: Message, then: Message | None) -> Message:
    return first if then is None else msg("{first} {then}", first=first, then=then)


@dataclass(frozen=True)
class CheckResult:
    check: str
    severity: Severity
    detail: Message
    hint: Message | None = None

    @property
    def ok(self) -> bool:
        return self.severity != "fail"

    def as_json(self) -> dict[str, object]:
        return {"check": self.check, "ok": self.ok, "severity": self.severity,
                "detail": self.detail.render(),
                "hint": None if self.hint is None else self.hint.render()}


def passed(check: str, detail: Message) -> CheckResult:
    return CheckResult(check, "pass", detail)


def warned(check: str, detail: Message, hint: Message) -> CheckResult:
    return CheckResult(check, "warn", detail, hint)


def failed(check: str, detail: Message, hint: Message) -> CheckResult:
    return CheckResult(check, "fail", detail, hint)
