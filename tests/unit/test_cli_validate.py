"""The real `broadcast-agent validate` command, run as `python -m agent` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VALID = "device_id: d1\nsource:\n  url: http://127.0.0.1:9/api\n"


def run_agent(*args: str, env_config: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "BROADCAST_AGENT_CONFIG"}
    if env_config is not None:
        env["BROADCAST_AGENT_CONFIG"] = env_config
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=60, env=env, check=False)


def write_config(directory: Path, content: str = VALID) -> Path:
    path = directory / "agent.yaml"
    path.write_text(content)
    return path


def test_valid_config_exits_0_with_a_summary(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_agent("validate", "--config", str(config))
    assert result.returncode == 0
    assert result.stdout == f"config OK: {config} + 0 conf.d files, device d1, 0 warnings\n"
    assert result.stderr == ""


def test_invalid_config_exits_2_listing_every_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "source:\n  poll_interval_s: 1\naudio: {rate: fast}\n")
    override = tmp_path / "conf.d/50-amp.yaml"
    override.parent.mkdir()
    override.write_text("amplifier:\n  backend: relay\n")
    result = run_agent("--config", str(config), "validate")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{config}:1: device_id: required key missing",
        f"{config}:1: source.url: required key missing",
        f"{config}:2: source.poll_interval_s: must be at least 5, got 1",
        f"{config}:3: audio.rate: expected an integer, got string 'fast'",
        f"{override}:2: amplifier.backend: must be one of gpio, sim, none, got 'relay'",
    ]


def test_warnings_are_printed_and_the_config_still_passes(tmp_path: Path) -> None:
    config = write_config(tmp_path, VALID + "  token_file: token\n")
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o640)
    result = run_agent("validate", "--config", str(config))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"warning: {config}:3: source.url: source.token travels unencrypted over http://; "
        "anyone on the path can read it (use https://)",
        f"warning: {config}:4: source.token_file: {token} is readable by other users "
        "(mode 0640); chmod 600 it"]
    assert result.stdout.endswith("device d1, 2 warnings\n")


def test_config_path_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_agent("validate", env_config=str(config))
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout


def test_the_option_wins_over_the_environment(tmp_path: Path) -> None:
    good = write_config(tmp_path)
    result = run_agent("validate", "--config", str(good),
                       env_config=str(tmp_path / "absent.yaml"))
    assert result.returncode == 0, result.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    result = run_agent("validate", "--config", str(absent))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{absent}:1: -: cannot read: No such file or directory")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    no_command = run_agent()
    assert no_command.returncode == 2
    assert "required: COMMAND" in no_command.stderr
    unknown = run_agent("frobnicate")
    assert unknown.returncode == 2
    assert "invalid choice: 'frobnicate'" in unknown.stderr
    stray = run_agent("validate", "--no-such-option")
    assert stray.returncode == 2
    assert "unrecognized arguments: --no-such-option" in stray.stderr


def test_version_and_help_exit_0() -> None:
    from importlib.metadata import version as installed_version

    version = run_agent("--version")
    assert version.returncode == 0
    # The version of the installed metadata (setuptools-scm, from the git tag).
    assert version.stdout == f"broadcast-agent {installed_version('broadcast-agent')}\n"
    help_text = run_agent("validate", "--help")
    assert help_text.returncode == 0
    assert "--config PATH" in help_text.stdout


def test_every_command_takes_config_after_its_name() -> None:
    from agent.cli.main import build_parser

    subparsers = build_parser()._subparsers
    assert subparsers is not None
    (action,) = subparsers._group_actions
    assert action.choices is not None
    for command in action.choices:
        result = run_agent(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "--config PATH" in result.stdout, command
