"""The fake rtl_tcp server of hil.md: a stand-in for ``rtl_tcp`` + dongle + FM stations.

It speaks the rtl_tcp protocol (12-byte ``RTL0`` header, 5-byte commands) and streams u8 IQ
paced in real time at the sample rate the client asked for. Each station is a carrier
frequency-modulated by one tone with a peak deviation of 75 kHz (the tone is taken as
pre-emphasised with 50 µs, so a 50 µs de-emphasis returns it flat at
``deviation / |1 + j 2π f 50 µs|``), at ``level_dbfs`` (-6 dBFS), placed at its true offset from
the tuned centre; complex Gaussian noise at ``NOISE_DBFS`` everywhere.

Switches, from Python or over the control port (HTTP, ``--control-port``):
  POST /signal?on=0|1   stations off/on (noise stays)
  POST /stall?on=1|0    connections stay open but receive nothing (new ones too)
  POST /disconnect      close every client connection
  GET  /state           JSON: clients, tuned frequency, sample rate, commands received
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt

from drivers.sdr.fm_audio import LEVEL_PER_HZ
from drivers.sdr.rtl_tcp import (
    CMD_FREQUENCY,
    CMD_GAIN,
    CMD_GAIN_MODE,
    CMD_PPM,
    CMD_SAMPLE_RATE,
    COMMAND_SIZE,
    RtlTcpHeader,
    decode_command,
    encode_header,
)

R820T_HEADER = RtlTcpHeader(tuner_type=5, gain_count=29)
DEFAULT_FREQUENCY_HZ = 100_000_000  # rtl_tcp's defaults before the client tunes
DEFAULT_SAMPLE_RATE = 2_048_000
NOISE_DBFS = -45.0
BLOCK_S = 0.02
MAX_LAG_S = 0.5  # behind by more than this (stall, slow client): skip ahead instead of bursting
NOISE_TABLE_SIZE = 1 << 18
DEEMPHASIS_S = 50e-6


@dataclass(frozen=True)
class FakeStation:
    frequency_hz: float
    tone_hz: float
    deviation_hz: float = 75_000.0
    level_dbfs: float = -6.0

    def audio_deviation_hz(self) -> float:
        """Tone amplitude after a 50 µs de-emphasis, in Hz of deviation."""
        return self.deviation_hz / abs(1 + 2j * math.pi * self.tone_hz * DEEMPHASIS_S)


@dataclass
class Tuning:
    frequency_hz: int = DEFAULT_FREQUENCY_HZ
    sample_rate: int = DEFAULT_SAMPLE_RATE
    gain_mode: int = 0
    gain_tenths_db: int = 0
    ppm: int = 0


@dataclass
class _StationPhase:
    carrier: float = 0.0
    tone: float = 0.0


@dataclass
class IqGenerator:
    """u8 IQ for one connection; phases carried so blocks join without seams."""

    stations: list[FakeStation]
    rng: np.random.Generator
    noise: npt.NDArray[np.complex64]
    phases: list[_StationPhase] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.phases = [_StationPhase() for _ in self.stations]

    def block(self, tuning: Tuning, count: int, signal_on: bool) -> bytes:
        start = int(self.rng.integers(0, self.noise.size - count))
        iq = self.noise[start : start + count].copy()
        n = np.arange(count, dtype=np.float64)
        for station, phase in zip(self.stations, self.phases, strict=True):
            offset_hz = station.frequency_hz - tuning.frequency_hz
            carrier_step = 2 * math.pi * offset_hz / tuning.sample_rate
            tone_step = 2 * math.pi * station.tone_hz / tuning.sample_rate
            if signal_on and abs(offset_hz) < tuning.sample_rate / 2:
                # FM: instantaneous frequency offset + deviation*cos(tone) -> phase below.
                beta = station.deviation_hz / station.tone_hz
                angle = phase.carrier + carrier_step * n + beta * np.sin(phase.tone + tone_step * n)
                iq += (10 ** (station.level_dbfs / 20) * np.exp(1j * angle)).astype(np.complex64)
            phase.carrier = (phase.carrier + carrier_step * count) % (2 * math.pi)
            phase.tone = (phase.tone + tone_step * count) % (2 * math.pi)
        floats = iq.view(np.float32) * np.float32(127.5) + np.float32(127.5)
        return bytes(np.clip(np.rint(floats), 0, 255).astype(np.uint8).tobytes())


@dataclass(frozen=True)
class ToneMeasurement:
    amplitude: float  # peak, full scale = 1.0
    snr_db: float  # tone power vs everything else in 100 Hz - 15 kHz


def measure_tone(pcm: bytes, tone_hz: float, rate: int = 48_000) -> ToneMeasurement:
    """What a test asserts about the relayed audio: the tone's level and its SNR (Hann window,
    ±30 Hz around the tone counted as tone), from s16le stereo PCM (left channel)."""
    left = np.frombuffer(pcm, dtype="<i2")[0::2].astype(np.float64) / 32767
    if left.size < rate // 10:
        raise ValueError("need at least 100 ms of audio")
    spectrum = np.abs(np.fft.rfft(left * np.hanning(left.size))) ** 2
    freqs = np.fft.rfftfreq(left.size, 1 / rate)
    tone = np.abs(freqs - tone_hz) <= 30
    rest = (freqs >= 100) & (freqs <= 15_000) & ~tone
    snr = 10 * math.log10(spectrum[tone].sum() / max(spectrum[rest].sum(), 1e-30))
    return ToneMeasurement(float(np.sqrt(2 * np.mean(left**2))), snr)


def expected_amplitude(station: FakeStation) -> float:
    """The demodulated tone's peak level per wbfm's scale (75 kHz -> FULL_DEVIATION_DBFS)."""
    return station.audio_deviation_hz() * LEVEL_PER_HZ


class FakeRtlTcpServer:
    """rtl_tcp stand-in on ``host:port`` (0 = a free port); see the module docstring."""

    def __init__(
        self,
        stations: list[FakeStation],
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int | None = None,
        seed: int | None = None,
    ) -> None:
        self._stations = list(stations)
        self._host = host
        self._requested_port = port
        self._requested_control_port = control_port
        self._rng = np.random.default_rng(seed)
        std = math.sqrt(10 ** (NOISE_DBFS / 10) / 2)
        self._noise = (self._rng.normal(0, std, (NOISE_TABLE_SIZE, 2)).astype(np.float32)
                       .view(np.complex64).ravel())
        self._lock = threading.Lock()
        self._signal_on = True
        self._stalled = False
        self._clients: dict[socket.socket, Tuning] = {}
        self._commands: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._control: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeRtlTcpServer:
        self._listener = socket.create_server((self._host, self._requested_port))
        self._listener.settimeout(0.2)
        self._spawn(self._accept_loop, "fake-rtl-tcp-accept")
        if self._requested_control_port is not None:
            self._control = _control_server(self, self._host, self._requested_control_port)
            self._spawn(self._control.serve_forever, "fake-rtl-tcp-control")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        self.disconnect_clients()
        for thread in self._threads:
            thread.join(timeout=2.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FakeRtlTcpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("server not started")
        return int(self._listener.getsockname()[1])

    @property
    def control_port(self) -> int | None:
        return None if self._control is None else int(self._control.server_address[1])

    # -- switches and observations --------------------------------------------------------

    def drop_signal(self, dropped: bool) -> None:
        with self._lock:
            self._signal_on = not dropped

    def stall(self, stalled: bool) -> None:
        with self._lock:
            self._stalled = stalled

    def disconnect_clients(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            # shutdown wakes the client thread blocked in select/send; it closes the socket.
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    @property
    def commands(self) -> list[tuple[int, int]]:
        """Every (command, parameter) received, in order, across connections."""
        with self._lock:
            return list(self._commands)

    def state(self) -> dict[str, object]:
        with self._lock:
            tunings = list(self._clients.values())
            return {
                "clients": len(tunings),
                "tuned_hz": [t.frequency_hz for t in tunings],
                "sample_rate": [t.sample_rate for t in tunings],
                "signal_on": self._signal_on,
                "stalled": self._stalled,
                "commands": [list(c) for c in self._commands],
            }

    # -- serving ---------------------------------------------------------------------------

    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._clients[client] = Tuning()
            self._spawn(lambda c=client: self._serve(c), "fake-rtl-tcp-client")

    def _serve(self, client: socket.socket) -> None:
        generator = IqGenerator(self._stations, np.random.default_rng(self._rng.integers(1 << 32)),
                                 self._noise)
        pending = b""
        try:
            client.settimeout(2.0)
            client.sendall(encode_header(R820T_HEADER))
            deadline = time.monotonic()
            while not self._stop.is_set():
                wait_s = max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select([client], [], [], wait_s)
                if readable:
                    data = client.recv(4096)
                    if not data:
                        return
                    pending = self._apply_commands(client, pending + data)
                    continue
                with self._lock:
                    tuning = Tuning(**vars(self._clients[client]))
                    stalled, signal_on = self._stalled, self._signal_on
                count = int(tuning.sample_rate * BLOCK_S)
                if not stalled:
                    client.sendall(generator.block(tuning, count, signal_on))
                deadline = max(deadline + BLOCK_S, time.monotonic() - MAX_LAG_S)
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.pop(client, None)
            client.close()

    def _apply_commands(self, client: socket.socket, data: bytes) -> bytes:
        whole = len(data) - len(data) % COMMAND_SIZE
        with self._lock:
            tuning = self._clients[client]
            for offset in range(0, whole, COMMAND_SIZE):
                command, param = decode_command(data[offset : offset + COMMAND_SIZE])
                self._commands.append((command, param))
                if command == CMD_FREQUENCY:
                    tuning.frequency_hz = param
                elif command == CMD_SAMPLE_RATE and param > 0:
                    tuning.sample_rate = param
                elif command == CMD_GAIN_MODE:
                    tuning.gain_mode = param
                elif command == CMD_GAIN:
                    tuning.gain_tenths_db = _signed(param)
                elif command == CMD_PPM:
                    tuning.ppm = _signed(param)
        return data[whole:]


def _signed(param: int) -> int:
    return param - (1 << 32) if param >= 1 << 31 else param


def _control_server(fake: FakeRtlTcpServer, host: str, port: int) -> ThreadingHTTPServer:
    class ControlHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/state":
                self._reply(HTTPStatus.NOT_FOUND, {"error": "unknown path"})
                return
            self._reply(HTTPStatus.OK, fake.state())

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            on = parse_qs(url.query).get("on", [""])[0]
            if url.path == "/disconnect":
                fake.disconnect_clients()
            elif url.path in ("/signal", "/stall") and on in ("0", "1"):
                if url.path == "/signal":
                    fake.drop_signal(on == "0")
                else:
                    fake.stall(on == "1")
            else:
                self._reply(HTTPStatus.BAD_REQUEST,
                            {"error": "use POST /signal?on=0|1, /stall?on=0|1, /disconnect"})
                return
            self._reply(HTTPStatus.OK, fake.state())

        def _reply(self, status: HTTPStatus, body: dict[str, object]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    return ThreadingHTTPServer((host, port), ControlHandler)


def parse_station(text: str) -> FakeStation:
    """``100.0:1000`` -> a station at 100.0 MHz modulated by a 1000 Hz tone."""
    try:
        mhz, tone = text.split(":")
        station = FakeStation(float(mhz) * 1e6, float(tone))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"station must look like 100.0:1000, got {text!r}") from exc
    if station.tone_hz <= 0 or station.frequency_hz <= 0:
        raise argparse.ArgumentTypeError(f"station frequency and tone must be > 0: {text!r}")
    return station


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_rtl_tcp",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234, help="IQ port (0: a free one)")
    parser.add_argument("--station", type=parse_station, action="append", default=[],
                        metavar="MHZ:TONE_HZ", help="a station (repeatable), e.g. 100.0:1000")
    parser.add_argument("--control-port", type=int, default=None,
                        help="HTTP control port (0: a free one); off when omitted")
    args = parser.parse_args(argv)
    server = FakeRtlTcpServer(args.station or [FakeStation(100.0e6, 1000.0)], host=args.host,
                              port=args.port, control_port=args.control_port).start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    print(json.dumps({"port": server.port, "control_port": server.control_port}), flush=True)
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
