"""The FM demodulator worker (``python -m drivers.sdr.demod_worker <backend> ...``): runs
one demodulating receiver tuned to one station and writes its PCM and level to stdout in
the messages of drivers/sdr/worker.py, until SIGTERM, a receiver failure, or the agent's
exit. The agent starts it per relay (WorkerReceiver), so numpy and scipy live only here."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import BinaryIO, NoReturn

from drivers.registry import backend_class
from drivers.sdr.base import FmReceiver, SdrError, SdrMissing, SdrSettings
from drivers.sdr.worker import MISSING, READY, STALLED, encode, encode_pcm

log = logging.getLogger(__name__)

DEMODULATORS = {
    "rtl_fm": ("drivers.sdr.rtl_fm", "RtlFmReceiver"),
    "rtl_tcp": ("drivers.sdr.rtl_tcp", "RtlTcpReceiver"),
}
READ_TIMEOUT_S = 0.1  # how often the worker notices that the agent is gone


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m drivers.sdr.demod_worker")
    parser.add_argument("backend", choices=sorted(DEMODULATORS))
    parser.add_argument("--frequency-mhz", type=float, required=True)
    parser.add_argument("--rtl-tcp", default="")
    parser.add_argument("--sample-rate", type=int, required=True)
    parser.add_argument("--gain-db", type=float, default=None)
    parser.add_argument("--ppm", type=int, default=0)
    return parser.parse_args(argv)


def relay(receiver: FmReceiver, frequency_mhz: float, out: BinaryIO, parent: int) -> None:
    """Tunes ``receiver`` and writes what it delivers until it fails or ``parent`` exits."""
    try:
        receiver.start(frequency_mhz)
        out.write(encode(READY))
        out.flush()
        while os.getppid() == parent:
            pcm = receiver.read(READ_TIMEOUT_S)
            if pcm:
                out.write(encode_pcm(receiver.signal_dbfs, pcm))
                out.flush()
    except SdrMissing as exc:
        out.write(encode(MISSING, str(exc).encode()))
    except SdrError as exc:
        out.write(encode(STALLED, str(exc).encode()))
    except (BrokenPipeError, SystemExit):
        return  # the agent closed the pipe, or stopped the relay (SIGTERM)
    except Exception as exc:  # a demodulator bug: the agent reports it as a stall
        log.exception("FM receiver failed")
        out.write(encode(STALLED, f"receiver failed: {exc!r}".encode()))
    finally:
        receiver.stop()
    out.flush()


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    cls = backend_class("fm.backend", DEMODULATORS, args.backend, FmReceiver)
    receiver = cls.from_settings(SdrSettings(args.rtl_tcp, args.sample_rate, args.gain_db,
                                             args.ppm))
    relay(receiver, args.frequency_mhz, sys.stdout.buffer, os.getppid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
