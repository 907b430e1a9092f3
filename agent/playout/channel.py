"""The control channel between the agent and its playout process.

One ``AF_UNIX`` ``SOCK_SEQPACKET`` socket pair: every message is one JSON object in one
packet (the kernel keeps the boundaries), and a message may carry file descriptors with it
(``SCM_RIGHTS``): the read end of each voice's PCM pipe travels with the cue that plays it.

Agent to playout process (``op``):
  ``play``   ``voices`` [{``id``, ``gain``, ``jitter``}], ``at`` (wall time or null: now),
             one pipe per voice: replaces everything queued (engine.PlayoutEngine.play);
             ``jitter`` [capacity, prefill] bytes only for a relay (agent.playout.feed)
  ``append`` ``voice`` {``id``, ``gain``, ``jitter``}, one pipe: gapless after the last
  ``cancel`` ``id``
  ``gain``   ``id``, ``gain``
  ``stop``   close the output and exit

Playout process to agent (``ev``); times are the wall-clock instants at which frames
leave the card, so that both sides agree without sharing a frame numbering:
  ``started`` ``id``, ``at``
  ``ended``   ``id``, ``at`` (one past the last frame), ``cut``, ``counts``: frames
              [played, underrun, relayed, lead] (the last two of a relay's own audio)
  ``output_failed`` ``message``; ``output_recovered``
  ``status``  every STATUS_INTERVAL_S, the heartbeat: ``idle_since`` (wall time or null:
              sounding), ``last_sound``, ``voices`` {id: counts}
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

# The heartbeat. The agent reads the counts of a process that died from its tally
# (agent.playout.tally), not from its last status.
STATUS_INTERVAL_S = 0.25
# The off-air record pipe beside the channel: each record is this header (wall time of
# its first frame, bytes that follow) and whole frames, at most PIPE_BUF bytes in all, so
# that one write is atomic and records never interleave.
RECORD_HEADER = struct.Struct("<dI")
RECORD_MAX_BYTES = 4096
MAX_MESSAGE_BYTES = 64 * 1024
MAX_FDS = 16

Message = dict[str, Any]


class ChannelClosed(ConnectionError):
    """The other side is gone (exited, killed, or closed the channel)."""


def socket_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: Message, fds: list[int] | None = None) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    try:
        if fds:
            socket.send_fds(sock, [data], fds)
        else:
            sock.send(data)
    except OSError as exc:  # EPIPE, ECONNRESET: the peer died
        raise ChannelClosed(str(exc)) from exc


def receive(sock: socket.socket) -> tuple[Message, list[int]]:
    """The next message and the descriptors it carried; raises ChannelClosed at the end
    and socket.timeout when the socket's timeout passes first."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE_BYTES, MAX_FDS)
    except TimeoutError:
        raise
    except OSError as exc:
        raise ChannelClosed(str(exc)) from exc
    if not data:
        raise ChannelClosed("end of the channel")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ChannelClosed(f"not a message: {data[:80]!r}")
    return message, fds
