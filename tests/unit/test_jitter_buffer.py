"""The PCM jitter buffer of every relay (agent/playout/jitter_buffer.py)."""

from agent.playout.jitter_buffer import PcmJitterBuffer


def test_jitter_buffer_prefill_underrun_and_overflow() -> None:
    buffer = PcmJitterBuffer(capacity_bytes=400, prefill_bytes=160)
    buffer.write(b"\x01" * 120)
    assert buffer.read(40) == bytes(40)  # still filling
    buffer.write(b"\x02" * 40)
    assert buffer.read(100) == b"\x01" * 100
    assert buffer.read(100) == b"\x01" * 20 + b"\x02" * 40 + bytes(40)  # underrun: padded
    buffer.write(b"\x03" * 80)
    assert buffer.read(40) == bytes(40)  # refilling to the prefill level after the underrun
    buffer.write(b"\x04" * 360)  # 440 > capacity: oldest dropped back to the prefill level
    assert buffer.queued_bytes == 160
    assert buffer.read(160) == b"\x04" * 160


def test_a_sender_catching_up_after_an_underrun_does_not_make_the_relay_later() -> None:
    """The sender stalled (the buffer ran dry), then passed on everything it held at once:
    output resumes from the newest prefill's worth, so the relay is as late as before."""
    buffer = PcmJitterBuffer(capacity_bytes=400, prefill_bytes=160)
    buffer.write(b"\x01" * 160)
    assert buffer.read(120) == b"\x01" * 120
    assert buffer.read(80) == b"\x01" * 40 + bytes(40)  # the sender stalls: underrun
    buffer.write(b"\x02" * 120 + b"\x03" * 160)  # its backlog, under the capacity
    assert buffer.read(80) == b"\x03" * 80  # the oldest 120 bytes are dropped
    assert buffer.queued_bytes == 80
    buffer.write(b"\x04" * 40)
    assert buffer.read(160) == b"\x03" * 80 + b"\x04" * 40 + bytes(40)  # no re-trim


def test_the_first_read_starts_from_the_prefill_too() -> None:
    """Audio queued ahead of the relay's start (the feed opens early) beyond the prefill is
    not played: the relay starts no later than the prefill behind its source."""
    buffer = PcmJitterBuffer(capacity_bytes=400, prefill_bytes=160)
    buffer.write(b"\x01" * 100 + b"\x02" * 160)
    assert buffer.read(160) == b"\x02" * 160
    assert buffer.delivered_bytes == 160
