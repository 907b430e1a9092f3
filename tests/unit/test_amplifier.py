"""Amplifier power backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.core.clock import ManualClock
from drivers.amplifier import AmplifierError, open_amplifier
from drivers.amplifier.gpio import GpioAmplifier
from drivers.amplifier.none import NoAmplifier
from drivers.amplifier.sim import SimAmplifier
from tests.support.agentproc import wait_for
from tests.support.scripts import write_script


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sim_amplifier_logs_initial_state_and_each_transition(tmp_path: Path) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    amplifier = SimAmplifier(tmp_path, clock)
    clock.advance(1.5)
    amplifier.set_power(True)
    amplifier.set_power(True)  # idempotent: no transition, no line
    assert amplifier.is_on
    clock.advance(2.0)
    amplifier.set_power(False)
    assert read_jsonl(tmp_path / "amplifier-sim.jsonl") == [
        {"at": 1_800_000_000.0, "on": False},
        {"at": 1_800_000_001.5, "on": True},
        {"at": 1_800_000_003.5, "on": False},
    ]


def test_sim_amplifier_appends_a_new_initial_line_per_start_and_rests_on_close(
        tmp_path: Path) -> None:
    first = open_amplifier("sim", state_dir=tmp_path, chip="gpiochip0", line=17, active_high=True)
    first.set_power(True)
    first.close()
    second = open_amplifier("sim", state_dir=tmp_path, chip="gpiochip0", line=17, active_high=True)
    assert not second.is_on
    states = [entry["on"] for entry in read_jsonl(tmp_path / "amplifier-sim.jsonl")]
    assert states == [False, True, False, False]
    assert all(isinstance(entry["at"], float)
               for entry in read_jsonl(tmp_path / "amplifier-sim.jsonl"))


def test_sim_amplifier_in_a_missing_state_dir_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(AmplifierError, match=r"cannot append to .*amplifier-sim\.jsonl"):
        SimAmplifier(tmp_path / "missing")


def test_no_amplifier_tracks_state_only(tmp_path: Path) -> None:
    amplifier = open_amplifier("none", state_dir=tmp_path, chip="x", line=0, active_high=True)
    assert isinstance(amplifier, NoAmplifier)
    assert not amplifier.is_on
    amplifier.set_power(True)
    assert amplifier.is_on
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_lists_the_backends(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'relay'.*gpio, sim, none"):
        open_amplifier("relay", state_dir=tmp_path, chip="x", line=0, active_high=True)


def test_gpio_amplifier_without_the_chip_fails_naming_it(tmp_path: Path) -> None:
    """The real gpioset on this machine, which has no GPIO chip."""
    with pytest.raises(AmplifierError, match=r"gpiochip0 line 17.*No such file or directory"):
        open_amplifier("gpio", state_dir=tmp_path, chip="gpiochip0", line=17, active_high=True)


def test_gpio_amplifier_without_gpioset_says_what_to_install() -> None:
    with pytest.raises(AmplifierError, match="gpiod package"):
        GpioAmplifier("gpiochip0", 17, True, gpioset_path="/nonexistent/gpioset")


@pytest.fixture
def recording_gpioset(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for gpioset: logs its argv, holds until stdin closes, logs the release."""
    log = tmp_path / "gpioset.log"
    script = tmp_path / "gpioset"
    write_script(script, textwrap.dedent(f"""\
        #!/bin/sh
        echo "hold $*" >> {log}
        cat > /dev/null
        echo "release $*" >> {log}
        """))
    return script, log


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_gpio_amplifier_holds_each_level_in_one_child(recording_gpioset: tuple[Path, Path]) -> None:
    script, log = recording_gpioset
    amplifier = GpioAmplifier("gpiochip2", 17, True, gpioset_path=str(script))
    amplifier.set_power(True)
    amplifier.set_power(True)
    assert amplifier.is_on
    amplifier.close()
    assert not amplifier.is_on
    assert log_lines(log) == [
        "hold --mode=wait gpiochip2 17=0",
        "release --mode=wait gpiochip2 17=0",
        "hold --mode=wait gpiochip2 17=1",
        "release --mode=wait gpiochip2 17=1",
        "hold --mode=wait gpiochip2 17=0",
        "release --mode=wait gpiochip2 17=0",
    ]


def test_gpio_amplifier_active_low_inverts_the_level(recording_gpioset: tuple[Path, Path]) -> None:
    script, log = recording_gpioset
    amplifier = GpioAmplifier("gpiochip0", 4, False, gpioset_path=str(script))
    amplifier.set_power(True)
    amplifier.close()
    assert [line for line in log_lines(log) if line.startswith("hold")] == [
        "hold --mode=wait gpiochip0 4=1",
        "hold --mode=wait gpiochip0 4=0",
        "hold --mode=wait gpiochip0 4=1",
    ]


def test_gpio_line_is_released_when_the_agent_is_killed(
        recording_gpioset: tuple[Path, Path]) -> None:
    script, log = recording_gpioset
    agent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import sys, time
            from drivers.amplifier.gpio import GpioAmplifier
            amplifier = GpioAmplifier("gpiochip0", 17, True, gpioset_path={str(script)!r})
            amplifier.set_power(True)
            print("on", flush=True)
            time.sleep(60)
            """)],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline() == b"on\n"
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=5)
    wait_for(lambda: "release --mode=wait gpiochip0 17=1" in log_lines(log), 5,
             what="the orphaned gpioset releasing the line")
