"""`broadcast-agent doctor [--json]`: the on-site checks a technician runs on a controller.

Each check passes, warns or fails, and says what to do about a failure. The exit code
follows config.md: 0 when no check fails (warnings allowed), 1 when any fails, 2 for a
config that does not validate (the config-free checks, clock and service, still run and
are shown then). Which checks failed is in the report, or in `--json` for scripts.

The checks open the real backends through the drivers' factories, on scratch files where
a backend writes (the wav sink, the simulated amplifier), so a running agent's files are
never touched. A device the running agent holds (the ALSA card, the GPIO line, the
dongle) reports busy: stop the agent first for a full check.

Human output follows the locale (agent/cli/i18n.py); `--json` is English:
`[{"check", "ok", "severity", "detail", "hint"}, ...]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.doctor.results import CheckResult, Severity, failed, msg, passed, warned
from agent.cli.i18n import translator
from agent.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.config.loader import ConfigError, load_config
from agent.config.model import Config

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


# ---- running and reporting -----------------------------------------------------------------

def run_checks(config_path: Path) -> tuple[bool, list[CheckResult]]:
    """(config valid, every result in order)."""
    # The checks are imported when they run: building the command line imports this module.
    from agent.cli.doctor.audio import check_amplifier, check_audio, check_mixer
    from agent.cli.doctor.machine import check_clock, check_disk, check_service, check_writable
    from agent.cli.doctor.network import check_mqtt, check_source
    from agent.cli.doctor.sdr import check_sdr

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
