"""What the agent accepts as text to speak, checked at the door (schedule and commands),
so that nothing the speech engine cannot take ever reaches it."""

from __future__ import annotations

import re
import unicodedata

MAX_SPEECH_CHARS = 2_000  # about three minutes of speech
MAX_TITLE_CHARS = 200
_LANG = re.compile(r"[a-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}")
_ALLOWED_CONTROLS = frozenset("\n\t")


def check_speech_text(text: object) -> str:
    """``text`` if it can be spoken; ValueError saying why not otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if len(text) > MAX_SPEECH_CHARS:
        raise ValueError(f"text has {len(text)} characters, at most {MAX_SPEECH_CHARS}")
    _check_characters("text", text, _ALLOWED_CONTROLS)
    return text


def check_title(title: object) -> str:
    """A program's or media's title, as reports and Status carry it; ValueError otherwise."""
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
        raise ValueError(f"title must be a string of at most {MAX_TITLE_CHARS} characters")
    _check_characters("title", title, frozenset())
    return title


def _check_characters(field: str, value: str, allowed_controls: frozenset[str]) -> None:
    for char in value:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in allowed_controls) or category == "Cs":
            raise ValueError(f"{field} holds the control character U+{ord(char):04X}")


def check_lang(lang: object) -> str:
    """A speech language tag such as ``vi`` or ``en-us``; ValueError otherwise."""
    if not isinstance(lang, str) or not _LANG.fullmatch(lang):
        raise ValueError(f"lang must be a language tag such as 'vi' or 'en-us', got {lang!r}"
                         [:120])
    return lang
