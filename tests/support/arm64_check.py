"""What `make arm64-check` (firmware-image/arm64-check.sh) checks on the installed package's
output, with the tests' own generator and measures.

  python tests/support/arm64_check.py record-iq OUT.iq   an IQ recording of a fake station
  python tests/support/arm64_check.py demodulate IN.iq   through the installed demodulator
  python tests/support/arm64_check.py tone CAPTURE.wav   test-tone's clocked WAV capture

Run as a file, not with -m: the repository is then put at the *end* of sys.path, so that
``drivers`` (the demodulator) is the one installed in the interpreter's venv (the .deb's,
under qemu in the arm64 chroot), and only ``tests.support`` comes from the checkout. The
module used is printed; each check prints PASS or FAIL lines and exits 1 on a failure.

The recording: 2 s of u8 IQ at 1.024 MS/s, tuned so that a station (a 1 kHz tone at 75 kHz
deviation, -6 dBFS) sits at the demodulator's default offset, a second station 600 kHz
above it, noise at -45 dBFS (tests/support/fake_rtl_tcp.py); its parameters are in
``IN.iq.json``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

SAMPLE_RATE = 1_024_000
SECONDS = 2.0
SETTLE_S = 0.3  # filters and de-emphasis settling, left out of the measure
BLOCK_BYTES = 2 * 32_768  # fed block by block, as rtl_tcp delivers it
STATION_HZ = 100.0e6
TONE_HZ = 1000.0
NEIGHBOUR_HZ = 100.6e6
NEIGHBOUR_TONE_HZ = 3000.0
MIN_SNR_DB = 40.0
MAX_LEVEL_ERROR_DB = 0.5
TEST_TONE_HZ = 440.0


def _result(what: str, ok: bool) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return ok


def record_iq(out: Path) -> int:
    import numpy as np

    from drivers.sdr.wbfm import default_offset_hz
    from tests.support.fake_rtl_tcp import (
        NOISE_DBFS,
        NOISE_TABLE_SIZE,
        FakeStation,
        IqGenerator,
        Tuning,
    )

    stations = [FakeStation(STATION_HZ, TONE_HZ), FakeStation(NEIGHBOUR_HZ, NEIGHBOUR_TONE_HZ)]
    rng = np.random.default_rng(13)
    std = math.sqrt(10 ** (NOISE_DBFS / 10) / 2)
    noise = rng.normal(0, std, (NOISE_TABLE_SIZE, 2)).astype(np.float32).view(np.complex64)
    generator = IqGenerator(stations, rng, noise.ravel())
    offset_hz = default_offset_hz(SAMPLE_RATE)
    tuning = Tuning(frequency_hz=round(STATION_HZ - offset_hz), sample_rate=SAMPLE_RATE)
    block = SAMPLE_RATE // 50
    with out.open("wb") as iq:
        for _ in range(round(SECONDS * 50)):
            iq.write(generator.block(tuning, block, signal_on=True))
    Path(f"{out}.json").write_text(json.dumps({
        "sample_rate": SAMPLE_RATE, "centre_hz": tuning.frequency_hz, "station_hz": STATION_HZ,
        "tone_hz": TONE_HZ, "offset_hz": offset_hz}), encoding="utf-8")
    print(f"{out}: {out.stat().st_size} bytes of u8 IQ, {SECONDS} s at {SAMPLE_RATE} S/s")
    return 0


def demodulate(recording: Path) -> int:
    from drivers.sdr import wbfm
    from drivers.sdr.fm_audio import to_stereo_s16le
    from tests.support.fake_rtl_tcp import FakeStation, expected_amplitude, measure_tone

    meta = json.loads(Path(f"{recording}.json").read_text(encoding="utf-8"))
    print(f"demodulator: {wbfm.__file__}")
    demodulator = wbfm.WbfmDemodulator(meta["sample_rate"],
                                       offset_hz=meta["station_hz"] - meta["centre_hz"])
    pcm = bytearray()
    with recording.open("rb") as iq:
        while block := iq.read(BLOCK_BYTES):
            pcm += to_stereo_s16le(demodulator.process(block))
    settled = round(SETTLE_S * demodulator.audio_rate) * 4
    tone = measure_tone(bytes(pcm[settled:]), meta["tone_hz"], demodulator.audio_rate)
    expected = expected_amplitude(FakeStation(meta["station_hz"], meta["tone_hz"]))
    level_error_db = 20 * math.log10(tone.amplitude / expected)
    seconds = len(pcm) / 4 / demodulator.audio_rate
    print(f"audio: {seconds:.3f} s at {demodulator.audio_rate} Hz; {meta['tone_hz']:.0f} Hz "
          f"tone: SNR {tone.snr_db:.1f} dB, level {level_error_db:+.2f} dB from expected")
    ok = _result(f"{seconds:.3f} s of audio from {SECONDS} s of IQ",
                 abs(seconds - SECONDS) < 0.01)
    ok &= _result(f"tone SNR {tone.snr_db:.1f} dB >= {MIN_SNR_DB}", tone.snr_db >= MIN_SNR_DB)
    ok &= _result(f"tone level within {MAX_LEVEL_ERROR_DB} dB",
                  abs(level_error_db) <= MAX_LEVEL_ERROR_DB)
    return 0 if ok else 1


def check_tone(capture_path: Path) -> int:
    """The capture of ``test-tone --seconds 1.5 --frequency 440`` at volume 100."""
    from tests.support.wavfile import read_capture, rms_dbfs, tone_frequency

    capture = read_capture(capture_path)
    first = capture.first_non_silent(threshold=300)
    if not _result(f"{capture_path}: {capture.frames} frames at {capture.rate} Hz, sound in it",
                   first is not None):
        return 1
    assert first is not None
    segment = capture.samples[first + 2400:first + 2400 + capture.rate]
    frequency = tone_frequency(segment, capture.rate)
    level = rms_dbfs(segment)
    print(f"tone: {frequency:.1f} Hz, RMS {level:.2f} dBFS")
    ok = _result(f"frequency {frequency:.1f} Hz within 5 Hz of {TEST_TONE_HZ:.0f}",
                 abs(frequency - TEST_TONE_HZ) < 5)
    # A -6 dBFS peak sine (RMS -9 dBFS) at volume 100, as tests/unit/test_technician.py.
    ok &= _result(f"RMS {level:.2f} dBFS within -9.5..-8.5", -9.5 < level < -8.5)
    ok &= _result("a full second of it", len(segment) == capture.rate)
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    commands = {"record-iq": record_iq, "demodulate": demodulate, "tone": check_tone}
    if len(argv) != 2 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
