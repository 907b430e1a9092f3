"""The FM receiver's check: an RTL-SDR dongle the agent can use (rtl_fm), or an rtl_tcp
server whose tuner receives the bands a schedule may ask for."""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from agent.cli.doctor.access import group_hint
from agent.cli.doctor.results import CheckResult, failed, joined, msg, passed, warned
from agent.config.model import Config

RTL_SDR_USB_IDS = {("0bda", "2838"), ("0bda", "2832")}
RTL_TUNERS = {1: "E4000", 2: "FC0012", 3: "FC0013", 4: "FC2580", 5: "R820T", 6: "R828D"}
# What each tuner receives (MHz, librtlsdr's limits; the FC2580 also has a gap at
# 308-438), held against the bands a schedule may ask for (agent/core/schedule.py).
RTL_TUNER_RANGES_MHZ = {"E4000": (52.0, 2200.0), "FC0012": (22.0, 948.0),
                        "FC0013": (22.0, 1100.0), "FC2580": (146.0, 924.0),
                        "R820T": (24.0, 1766.0), "R828D": (24.0, 1766.0)}
RTL_TCP_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class UsbDevice:
    sysfs: Path
    node: Path  # /dev/bus/usb/BBB/DDD


def find_rtl_sdr_dongles(sysfs: Path = Path("/sys/bus/usb/devices")) -> list[UsbDevice]:
    """RTL2832U dongles by USB id, from sysfs (no lsusb needed)."""
    found = []
    for device in sorted(sysfs.glob("*")):
        try:
            ids = ((device / "idVendor").read_text().strip(),
                   (device / "idProduct").read_text().strip())
            bus, number = (int((device / n).read_text()) for n in ("busnum", "devnum"))
        except (OSError, ValueError):
            continue
        if ids in RTL_SDR_USB_IDS:
            found.append(UsbDevice(device, Path(f"/dev/bus/usb/{bus:03d}/{number:03d}")))
    return found


def check_sdr(cfg: Config) -> list[CheckResult]:
    if cfg.fm.backend == "none":
        return [passed("sdr", msg("FM relay off (backend none)"))]
    if cfg.fm.backend == "rtl_tcp":
        return [_check_rtl_tcp(cfg.fm.rtl_tcp)]
    return [_check_rtl_fm()]


def _check_rtl_fm() -> CheckResult:
    dongles = find_rtl_sdr_dongles()
    if not dongles:
        return failed("sdr", msg("no RTL-SDR dongle (USB 0bda:2838 or 0bda:2832) is plugged "
                                 "in"),
                      msg("Plug the dongle in directly (not through an unpowered hub), then "
                          "check `rtl_test -t`."))
    if Path("/sys/module/dvb_usb_rtl28xxu").exists():
        return failed("sdr", msg("the DVB-T kernel driver dvb_usb_rtl28xxu holds the dongle"),
                      msg("Blacklist it: `echo blacklist dvb_usb_rtl28xxu | sudo tee "
                          "/etc/modprobe.d/rtl-sdr-blacklist.conf`, then reboot."))
    node = dongles[0].node
    if not os.access(node, os.R_OK | os.W_OK):
        return failed("sdr", msg("{node} is not accessible", node=node),
                      joined(msg("The udev rule of the image gives the dongle to group "
                                  "plugdev (firmware-image, 99-rtl-sdr.rules)."),
                              group_hint("plugdev")))
    if shutil.which("rtl_fm") is None:
        return failed("sdr", msg("rtl_fm is not installed"),
                      msg("`sudo apt install rtl-sdr`"))
    return passed("sdr", msg("RTL-SDR dongle at {node} (an R820T tuner receives 24–1766 MHz: "
                             "commune band 54–68 MHz and broadcast band 76–108 MHz)",
                             node=node))


def _check_rtl_tcp(address: str) -> CheckResult:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    not_running = msg("Start rtl_tcp (`rtl_tcp -a {host} -p {port}`) or correct fm.rtl_tcp.",
                      host=host, port=port)
    try:
        with socket.create_connection((host, int(port)), timeout=RTL_TCP_TIMEOUT_S) as conn:
            header = _receive(conn, 12, time.monotonic() + RTL_TCP_TIMEOUT_S)
    except OSError as error:
        return failed("sdr", msg("rtl_tcp at {address}: {error}", address=address,
                                 error=error), not_running)
    if len(header) < 12 or header[:4] != b"RTL0":
        return failed("sdr", msg("{address} did not send an rtl_tcp header (RTL0) within "
                                 "{seconds} s", address=address, seconds=RTL_TCP_TIMEOUT_S),
                      msg("Another program answers on that port; check fm.rtl_tcp."))
    number = int.from_bytes(header[4:8], "big")
    tuner = RTL_TUNERS.get(number)
    if tuner is None:
        return passed("sdr", msg("rtl_tcp at {address}, tuner {tuner}", address=address,
                                 tuner=number))
    from agent.core.schedule import FM_BANDS_MHZ

    low, high = RTL_TUNER_RANGES_MHZ[tuner]
    missing = [f"{a:g}–{b:g} MHz" for a, b in FM_BANDS_MHZ if not (low <= a and b <= high)]
    if missing:
        return warned("sdr", msg("rtl_tcp at {address}, tuner {tuner} ({low}–{high} MHz) "
                                 "cannot receive {bands}", address=address, tuner=tuner,
                                 low=f"{low:g}", high=f"{high:g}", bands=", ".join(missing)),
                      msg("Use a dongle with an R820T or R820T2 tuner (24–1766 MHz): it "
                          "receives the commune band 54–68 MHz and the broadcast band "
                          "76–108 MHz."))
    return passed("sdr", msg("rtl_tcp at {address}, tuner {tuner} ({low}–{high} MHz: "
                             "commune band 54–68 MHz and broadcast band 76–108 MHz)",
                             address=address, tuner=tuner, low=f"{low:g}", high=f"{high:g}"))


def _receive(conn: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size and (remaining := deadline - time.monotonic()) > 0:
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(size - len(data))
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data
