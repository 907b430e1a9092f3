"""The audio chain's checks: the output opens and takes a write, the mixer control exists,
the amplifier line can be driven. A backend that writes (the wav sink, the simulated
amplifier) is opened on scratch files, so a running agent's files are never touched."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from agent.cli.doctor.access import group_hint
from agent.cli.doctor.results import CheckResult, failed, joined, msg, passed
from agent.config.model import Config


def check_audio(cfg: Config) -> list[CheckResult]:
    from drivers.audio import AudioOutputError, open_output
    from drivers.audio.wav import ClockedWavSink

    output = cfg.audio.output
    if cfg.audio.output_kind == "wav":
        # A scratch file beside the configured one: the agent's own file is left alone.
        target = Path(cfg.audio.output_arg)
        scratch = target.with_name(f".{target.name}.doctor-{os.getpid()}.wav")
        spec = f"wav:{scratch}"
        hint = msg("Check that the directory of {path} exists and is writable by the service "
                   "user.", path=target)
    else:
        scratch, spec = None, output
        hint = joined(msg("List the sound cards with `aplay -l` and set audio.output to one "
                           "of them (for example alsa:hw:CARD=Headphones); if the card is busy, "
                           "stop the agent first (`sudo systemctl stop broadcast-agent`)."),
                       group_hint("audio"))
    try:
        device = open_output(spec, cfg.audio.rate)
        device.open()
        try:
            device.write(bytes(device.channels * device.sample_width * cfg.audio.rate // 100),
                         timeout=1.0)
        finally:
            device.close()
    except (AudioOutputError, OSError, ValueError) as error:
        return [failed("audio", msg("cannot open {output}: {error}", output=output,
                                    error=error), hint)]
    finally:
        if scratch is not None:
            for leftover in ClockedWavSink.files_of(scratch):
                leftover.unlink(missing_ok=True)
    return [passed("audio", msg("{output} opens at {rate} Hz", output=output,
                                rate=cfg.audio.rate))]


def check_mixer(cfg: Config) -> list[CheckResult]:
    from drivers.mixer import MixerError, open_mixer

    mixer = cfg.audio.mixer
    if mixer is None:
        return [passed("mixer", msg("software gain (no hardware mixer configured)"))]
    try:
        open_mixer({"card": mixer.card, "control": mixer.control})
    except (MixerError, ValueError) as error:
        hint = joined(msg("`amixer -c {card} scontrols` lists the controls of card {card}; "
                           "set audio.mixer.control to one of them, or audio.mixer to null "
                           "for software gain.", card=mixer.card), group_hint("audio"))
        return [failed("mixer", msg("control {control} on card {card}: {error}",
                                    control=mixer.control, card=mixer.card, error=error), hint)]
    return [passed("mixer", msg("control {control} on card {card} found",
                                control=mixer.control, card=mixer.card))]


def check_amplifier(cfg: Config) -> list[CheckResult]:
    from drivers.amplifier import AmplifierError, open_amplifier

    amplifier = cfg.amplifier
    if amplifier.backend == "none":
        return [passed("amplifier", msg("amplifier control off (backend none)"))]
    if amplifier.backend == "sim":
        try:
            # A scratch state dir: the agent's amplifier-sim.jsonl is left alone.
            with tempfile.TemporaryDirectory(dir=cfg.state_dir, prefix=".doctor-") as scratch:
                open_amplifier("sim", state_dir=Path(scratch), chip=amplifier.gpio.chip,
                               line=amplifier.gpio.line,
                               active_high=amplifier.gpio.active_high).close()
        except (AmplifierError, OSError) as error:
            hint = msg("The simulated amplifier writes into {path}: create it and make it "
                       "writable by the service user.", path=cfg.state_dir)
            return [failed("amplifier", msg("simulated amplifier: {error}", error=error), hint)]
        return [passed("amplifier", msg("simulated amplifier writes to {path}",
                                        path=cfg.state_dir))]
    gpio = amplifier.gpio
    chip = Path(gpio.chip if gpio.chip.startswith("/") else f"/dev/{gpio.chip}")
    if not chip.exists():
        return [failed("amplifier", msg("no GPIO chip {chip}", chip=chip),
                       msg("`gpiodetect` lists the GPIO chips; set amplifier.gpio.chip to one "
                           "of them."))]
    try:
        open_amplifier("gpio", state_dir=cfg.state_dir, chip=gpio.chip, line=gpio.line,
                       active_high=gpio.active_high).close()
    except (AmplifierError, OSError) as error:
        hint = joined(msg("`gpioinfo {chip}` shows who holds line {line}; stop the agent "
                           "first (`sudo systemctl stop broadcast-agent`).",
                           chip=gpio.chip, line=gpio.line), group_hint("gpio"))
        return [failed("amplifier", msg("GPIO {chip} line {line}: {error}", chip=gpio.chip,
                                        line=gpio.line, error=error), hint)]
    return [passed("amplifier", msg("GPIO {chip} line {line} can be driven", chip=gpio.chip,
                                    line=gpio.line))]
