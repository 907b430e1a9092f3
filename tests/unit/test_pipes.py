"""The pipes a voice's PCM arrives on in the playout process (agent.playout.pipes): peeking
at a file's pipe leaves its bytes in it, so that what the engine scaled ahead and a playout
process that dies did not air is still there for the next one; a relay's pipe is never
peeked at, since its jitter buffer pads with silence what has not arrived yet."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.playout.host import PlayoutHost
from agent.playout.pipes import LivePipeSource, PipeSource, tee
from agent.playout.tally import TallyWriter
from agent.playout.voice import PeekableSource
from drivers.audio.wav import ClockedWavSink


class Pipe:
    """A PipeSource on the read end of a pipe, and its write end."""

    def __init__(self) -> None:
        read_end, self.write_end = os.pipe()
        self.source = PipeSource(read_end)

    def write(self, data: bytes) -> None:
        os.write(self.write_end, data)

    def close_writer(self) -> None:
        if self.write_end >= 0:
            os.close(self.write_end)
            self.write_end = -1


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    opened = Pipe()
    yield opened
    opened.source.close()
    opened.close_writer()


def test_what_is_peeked_at_stays_to_be_read(pipe: Pipe) -> None:
    source = pipe.source
    pipe.write(bytes(range(200)))
    assert source.peek(100) == bytes(range(100))
    assert source.peek(100) == bytes(range(100))
    assert source.read(40) == bytes(range(40))
    assert source.peek(1000) == bytes(range(40, 200))
    assert source.read(1000) == bytes(range(40, 200))
    assert source.peek(100) == b""  # empty for now, the writer still there
    assert not source.finished


def test_a_pipe_whose_writer_is_gone_is_finished_once_read(pipe: Pipe) -> None:
    source = pipe.source
    pipe.write(b"last")
    pipe.close_writer()
    assert source.peek(10) == b"last"
    assert source.read(10) == b"last"
    assert source.peek(10) == b"" and source.read(10) == b""
    assert source.finished


def test_a_closed_pipe_is_neither_peeked_at_nor_read(pipe: Pipe) -> None:
    pipe.write(b"data")
    pipe.source.close()
    assert pipe.source.peek(10) == b"" and pipe.source.read(10) == b""


def test_a_pipe_that_cannot_be_peeked_at_is_still_read(tmp_path: Path) -> None:
    """tee(2) takes pipes only: the bytes of anything else are read as they come."""
    path = tmp_path / "pcm"
    path.write_bytes(b"not a pipe")
    source = PipeSource(os.open(path, os.O_RDONLY))
    try:
        assert source.peek(10) == b""
        assert source.read(100) == b"not a pipe"
    finally:
        source.close()


def test_tee_tells_an_empty_pipe_from_one_at_its_end() -> None:
    source_read, source_write = os.pipe2(os.O_NONBLOCK)
    copy_read, copy_write = os.pipe2(os.O_NONBLOCK)
    try:
        assert tee(source_read, copy_write, 10) == -1
        os.write(source_write, b"abc")
        assert tee(source_read, copy_write, 10) == 3 and os.read(copy_read, 10) == b"abc"
        assert os.read(source_read, 10) == b"abc"
        os.close(source_write)
        assert tee(source_read, copy_write, 10) == 0
        with pytest.raises(OSError, match="tee"):
            tee(copy_write, source_read, 10)  # the wrong ends
    finally:
        for fd in (source_read, copy_read, copy_write):
            os.close(fd)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[PlayoutHost]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield PlayoutHost(ClockedWavSink(tmp_path / "card.wav", 48_000), theirs, -1,
                      TallyWriter(-1))
    ours.close()
    theirs.close()


@pytest.mark.parametrize(("spec", "source_type", "peekable"), [
    ({"id": 1, "gain": 0.5}, PipeSource, True),
    ({"id": 2, "gain": 0.5, "jitter": [19_200, 9_600]}, LivePipeSource, False),
])
def test_only_a_voice_without_a_jitter_buffer_is_peeked_at(
        host: PlayoutHost, spec: dict[str, object], source_type: type, peekable: bool) -> None:
    read_end, write_end = os.pipe()
    try:
        voice = host._voice(spec, read_end)
        assert type(voice.source) is source_type
        assert isinstance(voice.source, PeekableSource) is peekable
        assert (voice.peekable is voice.source) is peekable
        assert voice.tag == spec["id"] and voice.gain == 0.5
    finally:
        os.close(read_end)
        os.close(write_end)
