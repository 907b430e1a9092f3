"""The agent's own rtl_tcp client: tunes a dongle served by ``rtl_tcp`` and demodulates
wideband FM from its u8 IQ stream (hil.md, SDR)."""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from drivers.sdr.base import FmReceiver, SdrMissing, SdrSettings, SdrStalled

if TYPE_CHECKING:
    from drivers.sdr.wbfm import WbfmDemodulator

HEADER_MAGIC = b"RTL0"
HEADER_SIZE = 12
COMMAND_SIZE = 5
CMD_FREQUENCY = 0x01
CMD_SAMPLE_RATE = 0x02
CMD_GAIN_MODE = 0x03  # 0 automatic, 1 manual
CMD_GAIN = 0x04  # tenths of dB
CMD_PPM = 0x05
GAIN_MODE_AUTO, GAIN_MODE_MANUAL = 0, 1
BLOCK_S = 0.02  # demodulate about this much IQ at a time
SIGNAL_WINDOW_SAMPLES = 8192  # at most this many IQ pairs measured for signal_dbfs ...
SIGNAL_INTERVAL_S = 0.1  # ... this often (the FFT costs as much as demodulating)
SETTLE_S = 0.1  # IQ from before the tuning commands took effect (and tuner settling)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:1234``) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"rtl_tcp address must be host:port, got {address!r}")
    return host, int(port)


@dataclass(frozen=True)
class RtlTcpHeader:
    tuner_type: int
    gain_count: int


def parse_header(data: bytes) -> RtlTcpHeader:
    if len(data) != HEADER_SIZE or not data.startswith(HEADER_MAGIC):
        raise ValueError(f"not an rtl_tcp header: {data[:HEADER_SIZE]!r}")
    tuner_type, gain_count = struct.unpack(">II", data[4:])
    return RtlTcpHeader(tuner_type, gain_count)


def encode_header(header: RtlTcpHeader) -> bytes:
    return HEADER_MAGIC + struct.pack(">II", header.tuner_type, header.gain_count)


def encode_command(command: int, value: int) -> bytes:
    """One rtl_tcp command: u8 command, u32 big-endian parameter (negative ppm as two's
    complement, which rtl_tcp reads back as a signed int)."""
    return struct.pack(">BI", command, value & 0xFFFFFFFF)


def decode_command(data: bytes) -> tuple[int, int]:
    command, param = struct.unpack(">BI", data)
    return int(command), int(param)


def tuning_commands(centre_hz: int, sample_rate: int, gain_db: float | None,
                    ppm: int) -> list[bytes]:
    commands = [encode_command(CMD_SAMPLE_RATE, sample_rate),
                encode_command(CMD_FREQUENCY, centre_hz)]
    if gain_db is None:
        commands.append(encode_command(CMD_GAIN_MODE, GAIN_MODE_AUTO))
    else:
        commands += [encode_command(CMD_GAIN_MODE, GAIN_MODE_MANUAL),
                     encode_command(CMD_GAIN, round(gain_db * 10))]
    commands.append(encode_command(CMD_PPM, ppm))
    return commands


class RtlTcpReceiver(FmReceiver):
    """FM through an rtl_tcp server at ``host:port``. The station is placed at the
    demodulator's offset (off-centre from 560 kS/s up, see wbfm.default_offset_hz)."""

    def __init__(self, host: str, port: int, *, sample_rate: int, gain_db: float | None,
                 ppm: int, connect_timeout_s: float = 2.0) -> None:
        self._address = (host, port)
        self._sample_rate = sample_rate
        self._gain_db = gain_db
        self._ppm = ppm
        self._connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._demodulator: WbfmDemodulator | None = None
        self._odd_byte = b""
        self._discard_until = 0.0
        self._signal_dbfs: float | None = None
        self._unmeasured_samples = 0
        self._measure_every = round(sample_rate * SIGNAL_INTERVAL_S)
        self.header: RtlTcpHeader | None = None
        self.centre_hz: int | None = None

    @classmethod
    def from_settings(cls, settings: SdrSettings) -> Self:
        host, port = parse_address(settings.rtl_tcp_address)
        return cls(host, port, sample_rate=settings.sample_rate, gain_db=settings.gain_db,
                   ppm=settings.ppm)

    def start(self, frequency_mhz: float) -> None:
        # numpy is imported here, by the first relay, not when the daemon builds its tuner.
        from drivers.sdr.wbfm import WbfmDemodulator

        self.stop()
        demodulator = WbfmDemodulator(self._sample_rate)
        centre_hz = round(frequency_mhz * 1e6 - demodulator.offset_hz)
        where = f"rtl_tcp at {self._address[0]}:{self._address[1]}"
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout_s)
        except OSError as exc:
            raise SdrMissing(f"no {where}: {exc}") from exc
        try:
            self.header = parse_header(_recv_exactly(sock, HEADER_SIZE))
            sock.sendall(b"".join(tuning_commands(centre_hz, self._sample_rate, self._gain_db,
                                                  self._ppm)))
        except (OSError, ValueError) as exc:
            sock.close()
            raise SdrMissing(f"{where} did not answer as rtl_tcp: {exc}") from exc
        sock.setblocking(False)
        self._sock = sock
        self._demodulator = demodulator
        self.centre_hz = centre_hz
        self._odd_byte = b""
        self._signal_dbfs = None
        self._discard_until = time.monotonic() + SETTLE_S

    def read(self, timeout: float) -> bytes:
        if self._sock is None or self._demodulator is None:
            raise SdrStalled("receiver not started")
        iq = self._receive(timeout)
        if time.monotonic() < self._discard_until:
            return b""
        iq = self._odd_byte + iq
        whole = len(iq) - len(iq) % 2
        self._odd_byte = iq[whole:]
        if whole == 0:
            return b""
        iq = iq[:whole]
        self._unmeasured_samples += whole // 2
        if self._signal_dbfs is None or self._unmeasured_samples >= self._measure_every:
            self._unmeasured_samples = 0
            self._signal_dbfs = self._demodulator.channel_power_dbfs(
                iq[-2 * SIGNAL_WINDOW_SAMPLES :])
        return self._demodulator.stereo_s16le(iq)

    def _receive(self, timeout: float) -> bytes:
        """Waits up to ``timeout`` for IQ, then gathers up to BLOCK_S of it for at most BLOCK_S."""
        assert self._sock is not None
        wanted = 2 * int(self._sample_rate * BLOCK_S)
        chunks: list[bytes] = []
        received = 0
        wait_s = timeout
        gather_until = None
        while received < wanted:
            readable, _, _ = select.select([self._sock], [], [], max(0.0, wait_s))
            if not readable:
                break
            try:
                chunk = self._sock.recv(wanted - received)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise SdrStalled(f"rtl_tcp connection failed: {exc}") from exc
            if not chunk:
                raise SdrStalled("rtl_tcp closed the connection")
            chunks.append(chunk)
            received += len(chunk)
            if gather_until is None:
                gather_until = time.monotonic() + BLOCK_S
            wait_s = gather_until - time.monotonic()
        return b"".join(chunks)

    @property
    def signal_dbfs(self) -> float | None:
        return self._signal_dbfs

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._demodulator = None


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError(f"connection closed after {len(data)} of {size} header bytes")
        data += chunk
    return data
