"""What the agent keeps of the counts the playout process reports for a voice
(agent.playout.feed.VoiceFeed.took): from statuses, ended events, and a dead process's
tally, which may be older than the last status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.playout.feed import VoiceFeed
from agent.playout.sources import BufferSource
from agent.playout.voice import Voice


@pytest.fixture
def feed() -> Iterator[VoiceFeed]:
    voice_feed = VoiceFeed.open(1, Voice("item", BufferSource(b""), 1.0), 48_000)
    yield voice_feed
    voice_feed.close()


def test_counts_from_before_the_last_ones_taken_change_nothing(feed: VoiceFeed) -> None:
    feed.took(9600, 480, 0, 0)  # a status
    feed.took(7200, 480, 0, 0)  # the tally, written 50 ms before the status
    assert (feed.voice.frames_played, feed.voice.underrun_frames) == (9600, 480)


def test_underrun_counted_while_nothing_more_played_is_taken(feed: VoiceFeed) -> None:
    feed.took(9600, 480, 0, 0)
    feed.took(9600, 960, 0, 0)
    assert (feed.voice.frames_played, feed.voice.underrun_frames) == (9600, 960)


def test_a_new_process_counts_on_from_where_the_dead_one_had_got(feed: VoiceFeed) -> None:
    feed.took(9600, 480, 0, 0)
    feed.carry_over()
    feed.took(0, 0, 0, 0)  # the new process's first status, before it played any
    feed.took(4800, 0, 0, 0)
    assert (feed.voice.frames_played, feed.voice.underrun_frames) == (14_400, 480)
