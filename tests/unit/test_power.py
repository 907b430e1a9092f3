"""Mains sense: the backends (drivers/power) and the PowerMonitor's fault logic."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.service.power import PowerMonitor
from drivers.power import open_mains_sensor
from drivers.power.gpio import GpioMainsSensor
from drivers.power.none import NoMainsSensor
from drivers.power.sim import SimMainsSensor
from tests.support.agentproc import wait_for
from tests.support.scripts import write_script


def write_mains(state_dir: Path, document: object) -> None:
    """As a test rig writes it: a new file renamed over the old one."""
    temporary = state_dir / "power-sim.json.tmp"
    temporary.write_text(json.dumps(document), encoding="utf-8")
    os.replace(temporary, state_dir / "power-sim.json")


def sim(tmp_path: Path) -> SimMainsSensor:
    sensor = open_mains_sensor("sim", state_dir=tmp_path, chip="gpiochip0", line=27,
                               active_high=True)
    assert isinstance(sensor, SimMainsSensor)
    return sensor


def test_sim_without_its_file_is_on_mains(tmp_path: Path) -> None:
    sensor = sim(tmp_path)
    assert sensor.mains_present is True
    assert list(tmp_path.iterdir()) == []


def test_sim_follows_each_change_of_its_file(tmp_path: Path) -> None:
    sensor = sim(tmp_path)
    readings = []
    for mains in (False, True, False):
        write_mains(tmp_path, {"mains": mains})
        readings.append(sensor.mains_present)
    (tmp_path / "power-sim.json").unlink()
    readings.append(sensor.mains_present)
    assert readings == [False, True, False, True]


@pytest.mark.parametrize("content", ['{"mains": fal', '{"mains": "no"}', '{"power": 0}', "[]"])
def test_sim_keeps_its_last_reading_when_the_file_is_unusable(tmp_path: Path,
                                                             content: str) -> None:
    sensor = sim(tmp_path)
    write_mains(tmp_path, {"mains": False})
    assert sensor.mains_present is False
    (tmp_path / "power-sim.json").write_text(content, encoding="utf-8")
    assert sensor.mains_present is False
    write_mains(tmp_path, {"mains": True})
    assert sensor.mains_present is True


def test_no_sensor_is_unknown(tmp_path: Path) -> None:
    sensor = open_mains_sensor("none", state_dir=tmp_path, chip="x", line=0, active_high=True)
    assert isinstance(sensor, NoMainsSensor)
    assert sensor.mains_present is None


def test_unknown_backend_lists_the_backends(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'ups'; expected one of gpio, sim, none"):
        open_mains_sensor("ups", state_dir=tmp_path, chip="x", line=0, active_high=True)


# --- gpio, with stand-ins for libgpiod's tools --------------------------------------------

@pytest.fixture
def gpio_tools(tmp_path: Path) -> tuple[Path, Path, Path]:
    """gpioget prints the level in ``level``; gpiomon prints each line appended to
    ``edges`` (as ``gpiomon -F %e`` prints 1 for a rising edge, 0 for a falling one)."""
    level, edges = tmp_path / "level", tmp_path / "edges"
    level.write_text("1\n")
    edges.write_text("")
    gpioget, gpiomon = tmp_path / "gpioget", tmp_path / "gpiomon"
    write_script(gpioget, f"#!/bin/sh\ncat {level}\n")
    write_script(gpiomon, textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, time
        with open({str(edges)!r}) as edges:
            while True:
                line = edges.readline()
                if line:
                    print(line.strip(), flush=True)
                else:
                    time.sleep(0.01)
        """))
    return gpioget, gpiomon, edges


@pytest.mark.parametrize("active_high", [True, False], ids=["active-high", "active-low"])
def test_gpio_reads_the_level_then_follows_edges(gpio_tools: tuple[Path, Path, Path],
                                                  active_high: bool) -> None:
    gpioget, gpiomon, edges = gpio_tools
    sensor = GpioMainsSensor("gpiochip0", 27, active_high, gpioget_path=str(gpioget),
                             gpiomon_path=str(gpiomon))
    try:
        assert sensor.mains_present is active_high  # gpioget: the line is high
        with edges.open("a") as out:
            out.write("0\n")
        assert wait_for(lambda: sensor.mains_present is (not active_high), 5)
        with edges.open("a") as out:
            out.write("1\n")
        assert wait_for(lambda: sensor.mains_present is active_high, 5)
    finally:
        sensor.close()


def test_gpio_that_cannot_be_read_is_unknown_and_retried_later(tmp_path: Path) -> None:
    clock = ManualClock()
    failing = tmp_path / "gpioget"
    write_script(failing, "#!/bin/sh\necho 'gpioget: error reading GPIO values' >&2\nexit 1\n")
    sensor = GpioMainsSensor("gpiochip9", 27, True, gpioget_path=str(failing),
                             gpiomon_path="/nonexistent/gpiomon", retry_s=5.0, clock=clock)
    assert sensor.mains_present is None
    failing.write_text("#!/bin/sh\necho 1\n")
    assert sensor.mains_present is None  # not retried before retry_s
    clock.advance(5.0)
    assert sensor.mains_present is None  # gpioget reads now, but gpiomon cannot run
    sensor.close()


def test_gpio_without_libgpiod_is_unknown(tmp_path: Path) -> None:
    sensor = GpioMainsSensor("gpiochip0", 27, True, gpioget_path="/nonexistent/gpioget")
    assert sensor.mains_present is None
    sensor.close()


# --- the monitor: Status power and fault mains_lost ---------------------------------------

def test_mains_lost_is_raised_on_battery_and_cleared_when_mains_returns(
        tmp_path: Path) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    faults = FaultRegistry(clock.now)
    changes: list[str] = []
    monitor = PowerMonitor(sim(tmp_path), faults, lambda: changes.append(monitor.state))
    before = monitor.state  # a local: mypy would keep monitor.state narrowed past poll()
    assert before == "unknown"
    monitor.poll()
    assert (monitor.state, faults.active()) == ("mains", [])

    write_mains(tmp_path, {"mains": False})
    clock.advance(10.0)
    monitor.poll()
    monitor.poll()  # no change: nothing new
    assert monitor.state == "battery"
    [fault] = faults.active()
    assert (fault.code, fault.severity, fault.since) == ("mains_lost", "warning",
                                                         1_800_000_010.0)

    write_mains(tmp_path, {"mains": True})
    monitor.poll()
    assert (monitor.state, faults.active()) == ("mains", [])
    assert changes == ["mains", "battery", "mains"]


def test_an_unreadable_sensor_is_unknown_and_not_an_outage(tmp_path: Path) -> None:
    faults = FaultRegistry(time.time)
    monitor = PowerMonitor(NoMainsSensor(), faults, lambda: None)
    monitor.poll()
    assert (monitor.state, faults.active()) == ("unknown", [])


def test_the_power_thread_follows_the_sensor_and_stops(tmp_path: Path) -> None:
    faults = FaultRegistry(time.time)
    monitor = PowerMonitor(sim(tmp_path), faults, lambda: None)
    monitor.start()
    try:
        first = monitor.state  # polled once before the thread starts
        assert first == "mains"
        write_mains(tmp_path, {"mains": False})
        assert wait_for(lambda: faults.is_raised("mains_lost"), 5)
        assert monitor.state == "battery"
    finally:
        monitor.stop()
    assert not any(t.name == "power" for t in threading.enumerate())
