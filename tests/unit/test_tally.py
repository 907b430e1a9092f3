"""The counts of the voice on air in shared memory (agent.playout.tally), which the agent
reads once a playout process is gone; and the engine's call after each period that fills
them in."""

from __future__ import annotations

import mmap
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.playout.engine import MIN_SLEEP_S, PlayoutEngine
from agent.playout.sources import BufferSource
from agent.playout.tally import SIZE, SLOTS, Tally, TallyWriter
from agent.playout.voice import EngineEvent, Voice, VoiceEnded
from drivers.audio.wav import ClockedWavSink

RATE = 48_000
PERIOD = 480
BUFFER = 1200  # the card's shallow buffer
DEEP_S = 0.100  # the card's lead while the voice plays steady


@pytest.fixture
def tally() -> Iterator[Tally]:
    shared = Tally()
    yield shared
    shared.close()


def test_the_last_counts_written_for_each_voice_are_read(tally: Tally) -> None:
    writer = TallyWriter(tally.fd)
    writer.write(7, (480, 0, 0, 0))
    writer.write(7, (960, 12, 0, 0))
    writer.write(8, (480, 0, 300, 40))
    assert tally.counts() == {7: (960, 12, 0, 0), 8: (480, 0, 300, 40)}


def test_nothing_written_reads_as_no_counts(tally: Tally) -> None:
    assert tally.counts() == {}


def test_a_slot_cut_off_in_its_writing_is_not_read(tally: Tally) -> None:
    writer = TallyWriter(tally.fd)
    writer.write(7, (480, 0, 0, 0))
    writer.write(8, (480, 0, 0, 0))
    # Killed while writing voice 8's next counts: the first sequence number and the id
    # written, the rest still the last whole write's.
    with mmap.mmap(tally.fd, SIZE) as shared:
        struct.pack_into("<2q", shared, 7 * 8, 3, 8)
    assert tally.counts() == {7: (480, 0, 0, 0)}


def test_after_as_many_voices_as_slots_the_oldest_slot_is_taken_again(tally: Tally) -> None:
    writer = TallyWriter(tally.fd)
    for voice_id in range(1, SLOTS + 2):
        writer.write(voice_id, (voice_id * PERIOD, 0, 0, 0))
    counts = tally.counts()
    assert 1 not in counts and len(counts) == SLOTS
    assert counts[SLOTS + 1] == ((SLOTS + 1) * PERIOD, 0, 0, 0)


def test_a_voice_on_air_again_after_another_is_read_at_its_latest(tally: Tally) -> None:
    writer = TallyWriter(tally.fd)
    writer.write(7, (480, 0, 0, 0))
    writer.write(8, (480, 0, 0, 0))
    writer.write(7, (960, 0, 0, 0))
    assert tally.counts()[7] == (960, 0, 0, 0)


def test_a_writer_nobody_reads_takes_the_counts_all_the_same() -> None:
    TallyWriter(-1).write(7, (480, 0, 0, 0))


@pytest.mark.parametrize("every", [1, 3])
def test_the_engine_hands_over_the_voice_on_air_after_every_few_periods(
        tmp_path: Path, every: int) -> None:
    """With what the card has played of it: a voice's frames count once the playhead has
    passed them (agent.playout.aired), so a playout process that dies has told no more
    than was heard."""
    frames = RATE // 5 + 100  # 20 whole periods, then a short one in which it ends
    pcm = np.zeros((frames, 2), dtype="<i2").tobytes()
    seen: list[tuple[Voice, int, int]] = []  # the voice, its count, what the card played
    ended = threading.Event()
    card = ClockedWavSink(tmp_path / "card.wav", RATE)

    def on_period(voice: Voice) -> None:
        assert voice.first_frame is not None
        seen.append((voice, voice.frames_played, card.playhead() - voice.first_frame))

    def on_event(event: EngineEvent) -> None:
        if isinstance(event, VoiceEnded):
            ended.set()
    engine = PlayoutEngine(card, on_event, buffer_s=BUFFER / RATE, period_s=PERIOD / RATE,
                           on_period=on_period, on_period_every=every, deep_buffer_s=DEEP_S)
    engine.start()
    try:
        voice = Voice("tone", BufferSource(pcm), 1.0)
        engine.play([voice])
        assert ended.wait(10)
    finally:
        engine.stop()
    assert {v for v, _, _ in seen} == {voice}
    assert len(seen) >= 20 // every - 2
    counts = [played for _, played, _ in seen]
    assert counts == sorted(counts) and counts[-1] > 0
    # The general path (the voice's fade-in, its end) counts what it reads: up to the
    # card's shallow buffer ahead, plus the MIN_SLEEP_S early the engine may render a
    # period, plus the frame the virtual card drains ahead of its playhead. The steady
    # periods between, kept DEEP_S ahead, count only once played.
    ahead_at_most = BUFFER + round(RATE * MIN_SLEEP_S) + 1
    assert all(played <= heard + ahead_at_most for _, played, heard in seen)
    assert voice.frames_played == frames
