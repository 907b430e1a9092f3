"""The speech engine never holds up its caller: speak() hands back a stream at once, the
"tts" thread renders (texts about to play before texts rendered ahead), and a text the
engine cannot render ends its stream in ``error`` for the control loop to report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.playout.decoder import Decoded, DecoderPool
from agent.playout.tts import SpokenStream, TtsRenderer
from tests.support.agentproc import wait_for
from tests.support.scripts import write_script

GATED_ENGINE = """#!/bin/sh
# espeak-ng once {gate} exists: a rendering that takes as long as the test wants.
while [ ! -e {gate} ]; do sleep 0.01; done
echo "$@" >> {log}
exec espeak-ng "$@"
"""



def gated_engine(tmp_path: Path) -> tuple[Path, Path, Path]:
    gate, log = tmp_path / "go", tmp_path / "rendered.log"
    engine = tmp_path / "engine.sh"
    write_script(engine, GATED_ENGINE.format(gate=gate, log=log))
    return engine, gate, log


def test_speak_returns_before_the_rendering_and_decodes_once_it_is_done(
        tmp_path: Path, decoder_pool: DecoderPool) -> None:
    engine, gate, _ = gated_engine(tmp_path)
    renderer = TtsRenderer(tmp_path / "tts", "vi", str(engine))
    opened: list[Path] = []

    def open_file(path: Path) -> Decoded:
        opened.append(path)
        return decoder_pool.open(str(path), 0.0, 0)

    spoken = renderer.speak("Xin chào bà con", None, open_file)
    assert isinstance(spoken, SpokenStream)
    assert spoken.state == "starting" and spoken.read(4096) == b"" and not spoken.finished
    assert spoken.silent_for() == 0.0, "a text being rendered is not a hung decoder"
    assert opened == []
    gate.touch()
    wait_for(lambda: spoken.pcm_bytes > 48000 * 4 // 2, 20, what="speech PCM")
    assert len(opened) == 1 and opened[0].exists()
    again = renderer.speak("Xin chào bà con", None, open_file)
    assert not isinstance(again, SpokenStream), "a rendered text is decoded from the cache"
    spoken.close()
    again.close()


def test_a_text_about_to_play_is_rendered_before_texts_queued_ahead(
        tmp_path: Path, decoder_pool: DecoderPool) -> None:
    engine, gate, log = gated_engine(tmp_path)
    renderer = TtsRenderer(tmp_path / "tts", "vi", str(engine))
    renderer.render_ahead("một")  # the tts thread takes it and waits at the gate
    wait_for(lambda: (tmp_path / "tts").exists(), 10, what="the first rendering to begin")
    for text in ("hai", "ba"):
        renderer.render_ahead(text)
    spoken = renderer.speak("khẩn cấp", None, lambda path: decoder_pool.open(str(path), 0.0, 0))
    gate.touch()
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 4, 30,
             what="four renderings")
    order = [line.rsplit("-- ", 1)[1] for line in log.read_text().splitlines()]
    assert order == ["một", "khẩn cấp", "hai", "ba"]
    spoken.close()


def test_a_text_the_engine_cannot_render_ends_its_stream_in_error(tmp_path: Path) -> None:
    renderer = TtsRenderer(tmp_path / "tts", "vi", "espeak-ng")
    spoken = renderer.speak("a\x00b", None, lambda path: pytest.fail("nothing to decode"))
    assert isinstance(spoken, SpokenStream)
    wait_for(lambda: spoken.finished, 10, what="the rendering to fail")
    assert spoken.state == "error" and spoken.render_failed
    assert "espeak-ng failed" in spoken.message and spoken.read(4096) == b""


def test_closing_speech_while_it_renders_closes_its_decoder_when_it_comes(
        tmp_path: Path, decoder_pool: DecoderPool) -> None:
    engine, gate, _ = gated_engine(tmp_path)
    renderer = TtsRenderer(tmp_path / "tts", "vi", str(engine))
    decoders: list[Decoded] = []
    # A decoder that cannot end by itself (its input never comes), nor hand over PCM
    # before it is closed, however late the tts thread closes it on a loaded machine.
    endless = tmp_path / "endless"
    os.mkfifo(endless)

    def open_file(path: Path) -> Decoded:
        assert path.exists()
        decoders.append(decoder_pool.open(str(endless), 0.0, 0))
        return decoders[-1]

    spoken = renderer.speak("đóng", None, open_file)
    spoken.close()
    assert spoken.state == "killed" and spoken.finished
    gate.touch()
    wait_for(lambda: decoders, 20, what="the decoder of the late rendering")
    wait_for(lambda: decoders[0].finished, 10, what="that decoder to be closed")
    assert decoders[0].state == "killed"
