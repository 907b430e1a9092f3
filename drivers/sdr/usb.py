"""Re-enumerating an RTL-SDR dongle (the software equivalent of unplugging it): the FM
tuner's last resort against a stalled dongle under the ``rtl_fm`` backend. Kept apart from
the receivers so that the agent can hold it without importing a demodulator."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

RTL2832U_VENDOR = "0bda"
RTL2832U_PRODUCTS = frozenset({"2832", "2838"})


def reset_rtl_usb(devices_dir: Path = Path("/sys/bus/usb/devices")) -> list[str]:
    """Re-enumerates every RTL2832U dongle by toggling its sysfs ``authorized`` flag (the
    software equivalent of unplugging it). Returns the devices reset; devices that cannot be
    reset (no permission, no sysfs) are skipped with a log line."""
    reset: list[str] = []
    for device in sorted(devices_dir.glob("*")):
        try:
            vendor = (device / "idVendor").read_text().strip()
            product = (device / "idProduct").read_text().strip()
        except OSError:
            continue
        if vendor != RTL2832U_VENDOR or product not in RTL2832U_PRODUCTS:
            continue
        try:
            (device / "authorized").write_text("0")
            (device / "authorized").write_text("1")
        except OSError as exc:
            log.warning("cannot reset USB device %s: %s", device.name, exc)
            continue
        reset.append(device.name)
    return reset
