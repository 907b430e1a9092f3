"""Text to speak and titles are checked at the door: whatever passes can be handed to the
speech engine and carried in reports; whatever does not is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.schedule_parser import parse_schedule
from agent.core.text import MAX_SPEECH_CHARS, check_lang, check_speech_text, check_title
from agent.mqtt.commands import BadArgs, validate_args
from agent.playout.tts import TtsError, TtsRenderer

HOSTILE = ["", "   ", "a\x00b", "bell\x07", "\ud800 lone surrogate", "x" * (MAX_SPEECH_CHARS + 1),
           "esc \x1b[31m red"]


@given(st.text(max_size=300))
def test_accepted_text_is_passable_to_a_process(text: str) -> None:
    try:
        accepted = check_speech_text(text)
    except ValueError:
        return
    encoded = accepted.encode("utf-8")
    assert b"\x00" not in encoded and accepted.strip()


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        check_speech_text(text)


def test_multi_line_vietnamese_is_accepted() -> None:
    text = "Kính mời bà con\nđến họp tổ dân phố.\tXin cảm ơn."
    assert check_speech_text(text) == text


@pytest.mark.parametrize("lang", ["vi", "en", "en-us", "zh_yue"])
def test_language_tags(lang: str) -> None:
    assert check_lang(lang) == lang


@pytest.mark.parametrize("lang", ["", "vi; rm -rf /", "-v", "x" * 40, 7])
def test_bad_language_tags(lang: object) -> None:
    with pytest.raises(ValueError):
        check_lang(lang)


@pytest.mark.parametrize("title", ["t\x00", "x" * 201, 5])
def test_bad_titles(title: object) -> None:
    with pytest.raises(ValueError):
        check_title(title)


@pytest.mark.parametrize("text", HOSTILE)
def test_an_emergency_with_hostile_text_is_bad_args(text: str) -> None:
    with pytest.raises(BadArgs):
        validate_args("emergency", {"text": text})


def test_a_hostile_tts_program_is_skipped_and_the_rest_applied() -> None:
    doc = {"version": 1, "device_id": "d", "timezone": "Asia/Ho_Chi_Minh", "media": [],
           "programs": [
               {"id": "bad", "source": {"type": "tts", "text": "a\x00b"}, "start": "06:00:00"},
               {"id": "lang", "source": {"type": "tts", "text": "ok", "lang": "vi -x"},
                "start": "06:00:00"},
               {"id": "title", "title": "\x1b[2J", "source": {"type": "tts", "text": "ok"},
                "start": "06:00:00"},
               {"id": "good", "source": {"type": "tts", "text": "Xin chào"},
                "start": "07:00:00"}]}
    parsed = parse_schedule(doc, "Asia/Ho_Chi_Minh")
    assert [p.id for p in parsed.schedule.programs] == ["good"]
    assert sorted(program_id for program_id, _ in parsed.problems) == ["bad", "lang", "title"]


def test_the_renderer_turns_what_the_engine_cannot_take_into_tts_error(tmp_path: Path) -> None:
    renderer = TtsRenderer(tmp_path, "vi", "espeak-ng")
    with pytest.raises(TtsError):
        renderer.render("a\x00b")
