"""`broadcast-agent doctor [--json]`: the on-site checks a technician runs on a controller.

Each check passes, warns or fails, and says what to do about a failure. The exit code
follows config.md: 0 when no check fails (warnings allowed), 1 when any fails, 2 for a
config that does not validate (the config-free checks, clock and service, still run and
are shown then). Which checks failed is in the report, or in `--json` for scripts.

The checks open the real backends through the drivers' factories, on scratch files where
a backend writes (the wav sink, the simulated amplifier), so a running agent's files are
never touched. A device the running agent holds (the ALSA card, the GPIO line, the
dongle) reports busy: stop the agent first for a full check.

Human output follows the locale (agent/i18n.py); `--json` is English:
`[{"check", "ok", "severity", "detail", "hint"}, ...]`.
"""

from __future__ import annotations

import argparse
import ctypes
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.cli.i18n import translator
from agent.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.config.loader import Config, ConfigError, load_config
from agent.config.schema import BrokerUri

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

Severity = Literal["pass", "warn", "fail"]
SERVICE = "broadcast-agent"
DISK_FAIL_BYTES = 20_000_000
DISK_WARN_BYTES = 200_000_000
RTL_SDR_USB_IDS = {("0bda", "2838"), ("0bda", "2832")}
RTL_TUNERS = {1: "E4000", 2: "FC0012", 3: "FC0013", 4: "FC2580", 5: "R820T", 6: "R828D"}
# What each tuner receives (MHz, librtlsdr's limits; the FC2580 also has a gap at
# 308-438), held against the bands a schedule may ask for (agent/core/schedule.py).
RTL_TUNER_RANGES_MHZ = {"E4000": (52.0, 2200.0), "FC0012": (22.0, 948.0),
                        "FC0013": (22.0, 1100.0), "FC2580": (146.0, 924.0),
                        "R820T": (24.0, 1766.0), "R828D": (24.0, 1766.0)}
RTL_TCP_TIMEOUT_S = 2.0
MQTT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Message:
    """An English template (the gettext msgid) and its parameters."""

    template: str
    params: Mapping[str, object] = field(default_factory=dict)

    def render(self, gettext: Callable[[str], str] = str) -> str:
        params = {name: value.render(gettext) if isinstance(value, Message) else value
                  for name, value in self.params.items()}
        return gettext(self.template).format(**params)


def msg(template: str, **params: object) -> Message:
    return Message(template, params)


@dataclass(frozen=True)
class CheckResult:
    check: str
    severity: Severity
    detail: Message
    hint: Message | None = None

    @property
    def ok(self) -> bool:
        return self.severity != "fail"

    def as_json(self) -> dict[str, object]:
        return {"check": self.check, "ok": self.ok, "severity": self.severity,
                "detail": self.detail.render(),
                "hint": None if self.hint is None else self.hint.render()}


def passed(check: str, detail: Message) -> CheckResult:
    return CheckResult(check, "pass", detail)


def warned(check: str, detail: Message, hint: Message) -> CheckResult:
    return CheckResult(check, "warn", detail, hint)


def failed(check: str, detail: Message, hint: Message) -> CheckResult:
    return CheckResult(check, "fail", detail, hint)


TITLES = {
    "config": msg("Configuration"),
    "audio": msg("Audio output"),
    "mixer": msg("Mixer"),
    "amplifier": msg("Amplifier line"),
    "sdr": msg("FM receiver (SDR)"),
    "source": msg("Source system"),
    "mqtt": msg("MQTT broker"),
    "clock": msg("Clock"),
    "disk": msg("Disk space"),
    "state_dir": msg("State directory"),
    "cache_dir": msg("Cache directory"),
    "service": msg("Service"),
}


# ---- configuration ------------------------------------------------------------------------

def check_config(path: Path) -> tuple[Config | None, list[CheckResult]]:
    try:
        cfg = load_config(path)
    except ConfigError as error:
        hint = msg("Fix each line above, then run `broadcast-agent validate --config {path}`.",
                   path=path)
        return None, [failed("config", msg("{error}", error=line), hint)
                      for line in error.errors]
    results = [passed("config", msg("{path} is valid", path=path))]
    hint = msg("See docs/config.md; secrets files should be readable only by the service user.")
    results += [warned("config", msg("{warning}", warning=w), hint) for w in cfg.warnings]
    return cfg, results


# ---- audio, mixer, amplifier --------------------------------------------------------------

def _user_in_group(group: str) -> bool:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return os.geteuid() == 0 or gid in os.getgroups()


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _group_hint(group: str) -> Message | None:
    if _user_in_group(group):
        return None
    return msg("User {user} is not in group {group}: `sudo usermod -aG {group} {user}`, then "
               "log in again.", user=_current_user(), group=group)


def _joined(first: Message, then: Message | None) -> Message:
    return first if then is None else msg("{first} {then}", first=first, then=then)


def check_audio(cfg: Config) -> list[CheckResult]:
    from drivers.audio import AudioOutputError, open_output

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
        hint = _joined(msg("List the sound cards with `aplay -l` and set audio.output to one "
                           "of them (for example alsa:hw:CARD=Headphones); if the card is busy, "
                           "stop the agent first (`sudo systemctl stop broadcast-agent`)."),
                       _group_hint("audio"))
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
            for leftover in (scratch, scratch.with_name(scratch.name + ".json")):
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
        hint = _joined(msg("`amixer -c {card} scontrols` lists the controls of card {card}; "
                           "set audio.mixer.control to one of them, or audio.mixer to null "
                           "for software gain.", card=mixer.card), _group_hint("audio"))
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
        hint = _joined(msg("`gpioinfo {chip}` shows who holds line {line}; stop the agent "
                           "first (`sudo systemctl stop broadcast-agent`).",
                           chip=gpio.chip, line=gpio.line), _group_hint("gpio"))
        return [failed("amplifier", msg("GPIO {chip} line {line}: {error}", chip=gpio.chip,
                                        line=gpio.line, error=error), hint)]
    return [passed("amplifier", msg("GPIO {chip} line {line} can be driven", chip=gpio.chip,
                                    line=gpio.line))]


# ---- SDR -----------------------------------------------------------------------------------

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
                      _joined(msg("The udev rule of the image gives the dongle to group "
                                  "plugdev (firmware-image, 99-rtl-sdr.rules)."),
                              _group_hint("plugdev")))
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


# ---- network -------------------------------------------------------------------------------

TLS_HINT = msg("TLS failed: check source.ca_file (the province's CA) and the clock "
               "(`date`; a certificate is not valid before its start date).")


def check_source(cfg: Config) -> list[CheckResult]:
    import requests  # here, not at the top: this module is imported to build the CLI

    source = cfg.source
    url = f"{source.url}/devices/{cfg.device_id}/schedule"
    headers = {"Authorization": f"Bearer {source.token}"} if source.token else {}
    verify: bool | str = str(source.ca_file) if source.ca_file else source.verify_tls
    cert = (str(source.client_cert), str(source.client_key)) if source.client_cert else None
    try:
        with requests.get(url, headers=headers, verify=verify, cert=cert, timeout=(5, 10),
                          stream=True) as response:
            status = response.status_code
    except requests.exceptions.SSLError as error:
        return [failed("source", msg("{url}: {error}", url=url, error=error), TLS_HINT)]
    except requests.RequestException as error:
        return [failed("source", msg("{url}: {error}", url=url, error=error),
                       msg("Check the network and DNS (`ping`, `resolvectl query`), and "
                           "source.url."))]
    if status in (200, 304):
        return [passed("source", msg("HTTP {status} from {url}", status=status, url=url))]
    hints = {401: msg("The source refused the token: check source.token / source.token_file."),
             403: msg("The source refused the token: check source.token / source.token_file."),
             404: msg("The source does not know device_id {device_id}: ask the province to "
                      "register it.", device_id=cfg.device_id)}
    hint = hints.get(status, msg("The source system answered with an error; try again later "
                                 "and tell the province if it persists."))
    return [failed("source", msg("HTTP {status} from {url}", status=status, url=url), hint)]


def check_mqtt(cfg: Config) -> list[CheckResult]:
    if not cfg.mqtt.brokers:
        return [passed("mqtt", msg("MQTT off (no brokers configured)"))]
    return [_check_broker(cfg, broker) for broker in cfg.mqtt.broker_uris]


def _check_broker(cfg: Config, broker: BrokerUri) -> CheckResult:
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    name = f"{broker.scheme}://{broker.host}:{broker.port}"
    settings = cfg.mqtt
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"{cfg.device_id}-doctor-{os.getpid()}")
    client.connect_timeout = MQTT_TIMEOUT_S
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if broker.scheme == "mqtts":
        client.tls_set(ca_certs=None if settings.ca_file is None else str(settings.ca_file),
                       certfile=None if settings.client_cert is None
                       else str(settings.client_cert),
                       keyfile=None if settings.client_key is None else str(settings.client_key))
    outcome: list[ReasonCode] = []
    client.on_connect = lambda _client, _userdata, _flags, reason, _props: outcome.append(reason)
    try:
        client.connect(broker.host, broker.port, keepalive=10)
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while not outcome and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except ssl.SSLError as error:
        return failed("mqtt", msg("{broker}: {error}", broker=name, error=error),
                      msg("TLS failed: check mqtt.ca_file and the clock (`date`)."))
    except OSError as error:
        return failed("mqtt", msg("{broker}: {error}", broker=name, error=error),
                      msg("Check the network, the broker address and that port {port} is "
                          "open.", port=broker.port))
    finally:
        client.disconnect()
    if not outcome:
        return failed("mqtt", msg("{broker}: no CONNACK within {seconds} s", broker=name,
                                  seconds=MQTT_TIMEOUT_S),
                      msg("Something answers on that port but is not an MQTT broker."))
    if outcome[0].is_failure:
        return failed("mqtt", msg("{broker} refused the connection: {reason}", broker=name,
                                  reason=outcome[0]),
                      msg("Check mqtt.username and mqtt.password / mqtt.password_file."))
    return passed("mqtt", msg("{broker} accepted the connection", broker=name))


# ---- the machine ---------------------------------------------------------------------------

class _Timex(ctypes.Structure):
    """struct timex of adjtimex(2); only `status` and `maxerror` are read."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long),
                ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
                ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
                ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
                ("tai", ctypes.c_int), ("reserved", ctypes.c_int * 11)]


STA_UNSYNC = 0x0040
MAX_SYNCED_ERROR_US = 16_000_000  # the kernel's "unsynchronised" mark, as timedated reads it


def clock_synchronised() -> bool:
    """What `timedatectl show -p NTPSynchronized` reports, read from the kernel directly
    (adjtimex with modes 0 only reads), so it works without systemd and D-Bus."""
    timex = _Timex()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.adjtimex(ctypes.byref(timex)) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return not timex.status & STA_UNSYNC and timex.maxerror < MAX_SYNCED_ERROR_US


def check_clock() -> list[CheckResult]:
    if clock_synchronised():
        return [passed("clock", msg("synchronised (NTP)"))]
    return [failed("clock", msg("not synchronised: programmes would air at the wrong time and "
                                "TLS may fail"),
                   msg("Check chrony: `chronyc tracking`, `chronyc sources`, "
                       "`systemctl status chrony`; it needs UDP port 123 or an NTP server on "
                       "the network."))]


def check_disk(cfg: Config) -> list[CheckResult]:
    results = []
    for path in dict.fromkeys((cfg.state_dir, cfg.cache.dir)):
        existing = next(p for p in (path, *path.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        detail = msg("{free} MB free for {path}", free=free // 1_000_000, path=path)
        hint = msg("Free some space: `sudo journalctl --vacuum-size=20M`, remove old files; "
                   "lower cache.max_bytes if the card is small.")
        if free < DISK_FAIL_BYTES:
            results.append(failed("disk", detail, hint))
        elif free < DISK_WARN_BYTES:
            results.append(warned("disk", detail, hint))
        else:
            results.append(passed("disk", detail))
    return results


def check_writable(check: str, path: Path) -> list[CheckResult]:
    hint = msg("systemd creates it when the service starts (StateDirectory=/CacheDirectory=); "
               "otherwise `sudo install -d -o broadcast-agent -g broadcast-agent -m 0750 "
               "{path}`.", path=path)
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as error:
        return [failed(check, msg("{path} is not writable: {error}", path=path,
                                  error=error.strerror), hint)]
    return [passed(check, msg("{path} is writable", path=path))]


def check_service() -> list[CheckResult]:
    if not Path("/run/systemd/system").is_dir():
        return [warned("service", msg("this machine does not run systemd as init: the service "
                                      "state cannot be checked"),
                       msg("On a controller, `systemctl status broadcast-agent` shows it."))]
    state = subprocess.run(["systemctl", "is-active", SERVICE], capture_output=True,
                           text=True, timeout=10).stdout.strip()
    if state == "active":
        return [passed("service", msg("broadcast-agent is active"))]
    return [failed("service", msg("broadcast-agent is {state}", state=state or "unknown"),
                   msg("See why: `journalctl -u broadcast-agent -n 50`; start it with "
                       "`sudo systemctl start broadcast-agent`."))]


# ---- running and reporting -----------------------------------------------------------------

def run_checks(config_path: Path) -> tuple[bool, list[CheckResult]]:
    """(config valid, every result in order)."""
    cfg, results = check_config(config_path)
    if cfg is not None:
        for check in (check_audio, check_mixer, check_amplifier, check_sdr, check_source,
                      check_mqtt):
            results += check(cfg)
    results += check_clock()
    if cfg is not None:
        results += check_disk(cfg)
        results += check_writable("state_dir", cfg.state_dir)
        results += check_writable("cache_dir", cfg.cache.dir)
    results += check_service()
    return cfg is not None, results


def exit_code(config_valid: bool, results: list[CheckResult]) -> int:
    if not config_valid:
        return EXIT_USAGE
    return EXIT_FAILURE if any(not r.ok for r in results) else EXIT_OK


MARKS: dict[Severity, str] = {"pass": "[ OK ]", "warn": "[WARN]", "fail": "[FAIL]"}


def render_text(results: list[CheckResult]) -> str:
    gettext = translator().gettext
    lines = []
    for result in results:
        title = TITLES[result.check].render(gettext)
        lines.append(f"{MARKS[result.severity]} {title}: {result.detail.render(gettext)}")
        if result.hint is not None:
            lines.append(f"       → {result.hint.render(gettext)}")
    failures = sum(r.severity == "fail" for r in results)
    warnings = sum(r.severity == "warn" for r in results)
    lines.append(msg("{failures} failed, {warnings} warnings", failures=failures,
                     warnings=warnings).render(gettext))
    return "\n".join(lines) + "\n"


def handle(args: argparse.Namespace) -> int:
    config_valid, results = run_checks(Path(args.config))
    if args.json:
        sys.stdout.write(json.dumps([r.as_json() for r in results], ensure_ascii=False,
                                    indent=2) + "\n")
    else:
        sys.stdout.write(render_text(results))
    return exit_code(config_valid, results)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor", help="on-site checks: audio, mixer, amplifier, SDR, network, clock, disk",
        description="Runs every on-site check and says what to do about each failure. Exit "
                    "code: 0 when no check fails, 1 when any fails, 2 for an invalid config.")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {check, ok, severity, detail, hint}")
    parser.set_defaults(func=handle)
