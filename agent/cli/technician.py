"""The technician's commands: ``status``, ``schedule``, ``cache`` and ``test-tone``.

``status`` asks the running daemon (its health endpoint); ``schedule`` and ``cache`` read
the state the daemon keeps on disk, so they work while it is stopped too; ``test-tone``
drives the real chain (sound card, mixer, amplifier) and so needs the daemon stopped.
Output is for people, in Vietnamese or English by locale; ``--json`` is for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.i18n import translator
from agent.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.config.loader import ConfigError, load_config
from agent.config.model import Config
from agent.core.clock import SystemClock
from agent.core.faults import FaultRegistry
from agent.state.store import STATE_DB, StateStore

if TYPE_CHECKING:
    from agent.core.schedule_parser import ParsedSchedule

_ = translator().gettext
# requests, numpy (the engine) and the drivers are imported by the commands that use them:
# this module is imported to build the command line.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = subparsers.add_parser("status", help=_("what plays, what is next, faults"))
    status.add_argument("--json", action="store_true", help=_("machine-readable output"))
    status.set_defaults(func=status_command)
    schedule = subparsers.add_parser("schedule", help=_("the next programs, in local time"))
    schedule.add_argument("--days", type=int, default=2, help=_("how many days ahead"))
    schedule.add_argument("--json", action="store_true", help=_("machine-readable output"))
    schedule.set_defaults(func=schedule_command)
    cache = subparsers.add_parser("cache", help=_("list, verify or prune cached media"))
    cache.add_argument("action", choices=("list", "verify", "prune"))
    cache.add_argument("--json", action="store_true", help=_("machine-readable output"))
    cache.set_defaults(func=cache_command)
    tone_cmd = subparsers.add_parser("test-tone",
                                     help=_("a tone through the real chain, amplifier included"))
    tone_cmd.add_argument("--seconds", type=float, default=3.0)
    tone_cmd.add_argument("--frequency", type=float, default=1000.0)
    tone_cmd.add_argument("--volume", type=int, default=None,
                          help=_("0-100; default: audio.default_volume"))
    tone_cmd.set_defaults(func=test_tone_command)


# --- status ------------------------------------------------------------------------------
def fetch_status(cfg: Config) -> dict[str, Any]:
    import requests

    headers = {} if cfg.health.token is None else {"Authorization": f"Bearer {cfg.health.token}"}
    host = "127.0.0.1" if cfg.health.host in ("0.0.0.0", "::", "") else cfg.health.host
    reply = requests.get(f"http://{host}:{cfg.health.port}/status", headers=headers, timeout=5)
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    return result


def _print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=1))


def status_command(args: argparse.Namespace) -> int:
    """With ``--json`` the output is JSON whatever happens: the Status, or
    ``{"online": false, "error": ...}`` when the daemon does not answer (exit 1) or the
    config does not load (exit 2)."""
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        if not args.json:
            raise
        _print_json({"online": False, "error": "; ".join(exc.errors)})
        return EXIT_USAGE
    import requests

    try:
        status = fetch_status(cfg)
    except requests.RequestException as exc:
        if args.json:
            _print_json({"device_id": cfg.device_id, "online": False,
                         "error": f"the agent is not answering on {cfg.health.listen}: {exc}"})
            return EXIT_FAILURE
        print(_("The agent is not answering on {listen}: {error}").format(
            listen=cfg.health.listen, error=exc), file=sys.stderr)
        print(_("Hint: systemctl status broadcast-agent; journalctl -u broadcast-agent -n 50"),
              file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        _print_json(status)
    else:
        print(format_status(status))
    return EXIT_OK


def _clock(stamp: str | None) -> str:
    return "-" if not stamp else stamp[11:19]


def format_status(status: dict[str, Any]) -> str:
    lines = [_("Device {device}: agent {version}, up {uptime}").format(
        device=status["device_id"], version=status["agent_version"],
        uptime=_duration(status["uptime_s"]))]
    playing = status.get("playing")
    if playing:
        what = playing.get("media_id") or playing.get("url") or playing.get("frequency_mhz") \
            or playing.get("text", "")
        lines.append(_("Now playing: {program} \"{title}\" ({source} {what}, {priority}) "
                       "since {since}").format(
            program=playing["program_id"], title=playing.get("title", ""),
            source=playing["source"], what=what, priority=playing["priority"],
            since=_clock(playing.get("started_at"))))
    else:
        lines.append(_("Now playing: nothing"))
    lines.append(_("Volume: {volume}   Amplifier: {amplifier}").format(
        volume=status["volume"], amplifier=status["amplifier"]))
    upcoming = status.get("next") or []
    lines.append(_("Next programs:") if upcoming else _("Next programs: none today"))
    for entry in upcoming:
        lines.append(f"  {entry['start'][:10]} {_clock(entry['start'])}  {entry['program_id']}"
                     f"  {entry['title']} ({entry['priority']})")
    faults = status.get("faults") or []
    lines.append(_("Faults:") if faults else _("Faults: none"))
    for fault in faults:
        lines.append(f"  {fault['code']} ({fault.get('severity', '?')}) "
                     f"{_clock(fault['since'])}: {fault['message']}")
    src = status["source"]
    lines.append(_("Source: {reachable}, last sync {sync}, schedule version {version}").format(
        reachable=_("reachable") if src["reachable"] else _("unreachable"),
        sync=_clock(src["last_sync_at"]), version=src["schedule_version"]))
    cache = status["cache"]
    lines.append(_("Cache: {items} files, {mb:.1f} MB, {missing} missing, {free:.1f} GB free")
                 .format(items=cache["items"], mb=cache["bytes"] / 1e6,
                         missing=cache["missing"], free=cache["free_bytes"] / 1e9))
    lines.append(_("MQTT: {state}").format(
        state=_("connected") if status["mqtt"]["connected"] else _("not connected")))
    if status.get("fm"):
        lines.append(_("FM: {mhz} MHz, signal {dbfs} dBFS").format(
            mhz=status["fm"]["frequency_mhz"], dbfs=status["fm"]["signal_dbfs"]))
    return "\n".join(lines)


def _duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


# --- schedule ----------------------------------------------------------------------------
def _applied_schedule(cfg: Config, store: StateStore) -> ParsedSchedule | None:
    from agent.core.schedule_parser import parse_schedule

    doc = store.get("schedule.doc")
    return None if doc is None else parse_schedule(doc, cfg.timezone)


def schedule_command(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config))
    store = StateStore(cfg.state_dir / STATE_DB)
    try:
        parsed = _applied_schedule(cfg, store)
    finally:
        store.close()
    if parsed is None:
        print(_("No schedule has been received yet."), file=sys.stderr)
        return 1
    schedule = parsed.schedule
    now = time.time()
    rows: list[dict[str, Any]] = []
    for occ in schedule.occurrences(now, now + args.days * 86400):
        if occ.nominal_end is not None and occ.nominal_end < now:
            continue
        local = datetime.fromtimestamp(occ.start, schedule.timezone)
        rows.append({"start": local.isoformat(timespec="seconds"),
                     "program_id": occ.program.id, "title": occ.program.title,
                     "priority": occ.program.priority, "source": occ.program.source.type,
                     "duration_s": occ.program.duration_s})
    if args.json:
        _print_json({"version": schedule.version, "programs": rows})
        return 0
    print(_("Schedule version {version} ({tz}):").format(version=schedule.version,
                                                         tz=schedule.timezone.key))
    for row in rows:
        print(f"  {row['start'][:10]} {row['start'][11:19]}  {row['program_id']:<14} "
              f"{row['title']} ({row['source']}, {row['priority']})")
    if not rows:
        print(_("  nothing in the next {days} days").format(days=args.days))
    return 0


# --- cache -------------------------------------------------------------------------------
def cache_command(args: argparse.Namespace) -> int:
    from agent.source.cache import MediaCache

    cfg = load_config(Path(args.config))
    store = StateStore(cfg.state_dir / STATE_DB)
    clock = SystemClock()
    cache = MediaCache(store, cfg.cache.dir, cfg.cache.max_bytes, clock,
                       FaultRegistry(clock.now))
    try:
        if args.action == "verify":
            problems = cache.verify()
            result: dict[str, Any] = {"problems": problems}
            text = problems if problems else [_("Every cached file matches its hash.")]
        elif args.action == "prune":
            parsed = _applied_schedule(cfg, store)
            if parsed is not None:
                cache.set_referenced(parsed.schedule.media.values())
            evicted = cache.evict()
            result = {"evicted": evicted}
            text = [_("Removed {n} files no program needs.").format(n=len(evicted))]
        else:
            entries = cache.entries()
            result = {"entries": [vars(e) for e in entries]}
            text = [f"  {e.sha256[:16]}  {e.size:>12}" for e in entries] or [_("Cache is empty.")]
        stats = cache.stats()
    finally:
        store.close()
    if args.json:
        result["stats"] = vars(stats)
        print(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    else:
        print("\n".join(text))
        print(_("{items} files, {mb:.1f} MB, {free:.1f} GB free").format(
            items=stats.items, mb=stats.bytes / 1e6, free=stats.free_bytes / 1e9))
    return 1 if args.action == "verify" and result["problems"] else 0


# --- test tone ---------------------------------------------------------------------------
def test_tone_command(args: argparse.Namespace) -> int:
    import requests

    from agent.playout.engine import PlayoutEngine
    from agent.playout.sources import BufferSource, tone
    from agent.playout.voice import EngineEvent, Voice, VoiceEnded
    from drivers.amplifier import open_amplifier
    from drivers.audio import open_output
    from drivers.mixer import open_mixer
    from drivers.mixer.curve import volume_to_gain

    cfg = load_config(Path(args.config))
    try:
        fetch_status(cfg)
    except requests.RequestException:
        pass
    else:
        print(_("The agent is running and owns the sound card; stop it first: "
                "systemctl stop broadcast-agent"), file=sys.stderr)
        return 1
    volume = cfg.audio.default_volume if args.volume is None else args.volume
    mixer_cfg = None if cfg.audio.mixer is None else {"card": cfg.audio.mixer.card,
                                                      "control": cfg.audio.mixer.control}
    mixer = open_mixer(mixer_cfg)
    mixer.set_volume(volume)
    amplifier = open_amplifier(cfg.amplifier.backend, state_dir=cfg.state_dir,
                               chip=cfg.amplifier.gpio.chip, line=cfg.amplifier.gpio.line,
                               active_high=cfg.amplifier.gpio.active_high)
    ended = threading.Event()

    def on_event(event: EngineEvent) -> None:
        if isinstance(event, VoiceEnded):
            ended.set()

    engine = PlayoutEngine(open_output(cfg.audio.output, cfg.audio.rate), on_event)
    gain = volume_to_gain(volume) if not mixer.hardware else 1.0
    print(_("Amplifier on, warming up {s} s ...").format(s=cfg.amplifier.warmup_s))
    amplifier.set_power(True)
    try:
        engine.start()
        time.sleep(cfg.amplifier.warmup_s)
        print(_("Playing {hz:.0f} Hz for {s} s at volume {v} on {out}").format(
            hz=args.frequency, s=args.seconds, v=volume, out=cfg.audio.output))
        pcm = tone(cfg.audio.rate, args.seconds, args.frequency)
        engine.play([Voice("test-tone", BufferSource(pcm), gain)])
        ended.wait(args.seconds + 5)
        time.sleep(0.2)
    finally:
        engine.stop()
        amplifier.set_power(False)
        amplifier.close()
    print(_("Done. No sound? Check the speaker wiring, the amplifier relay, "
            "and run: broadcast-agent doctor"))
    return 0

