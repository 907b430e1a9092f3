"""The shipped config/agent.yaml, as a provisioned controller has it or as a test box must
change it: what the footprint is measured with (bench/bench_footprint.py) and what the
command line is checked against (tests/unit/test_cli_imports.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.agentproc import free_port

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config" / "agent.yaml"
SECRET_FILES = ("source.token", "mqtt.password")
CA_FILE = "province-ca.pem"


def provisioned_copy(folder: Path) -> Path:
    """config/agent.yaml in ``folder`` with the files provisioning puts beside it (secrets
    mode 0600, the province CA); returns the config's path."""
    config = folder / "agent.yaml"
    config.write_text(SHIPPED_CONFIG.read_text())
    for name in SECRET_FILES:
        (folder / name).write_text("secret\n")
        (folder / name).chmod(0o600)
    (folder / CA_FILE).write_text("-----BEGIN CERTIFICATE-----\n")
    return config


def test_box_config(tmp: Path, device_id: str, source_url: str, source_token: str,
                    fm: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped config with only what a test box must change: its folders under ``tmp``,
    the device id and the source simulator, MQTT off, the health port free, the clocked
    WAV sink for the sound card, the simulated amplifier for the GPIO relay, the clock
    trusted; ``fm`` replaces keys of the shipped ``fm`` section (None: FM as shipped)."""
    cfg: dict[str, Any] = yaml.safe_load(SHIPPED_CONFIG.read_text())
    cfg["device_id"] = device_id
    cfg["state_dir"] = str(tmp / "state")
    cfg["cache"] = {**cfg.get("cache", {}), "dir": str(tmp / "cache")}
    source = {k: v for k, v in cfg["source"].items() if k != "token_file"}
    cfg["source"] = {**source, "url": source_url, "token": source_token}
    cfg["mqtt"] = {"brokers": []}
    cfg["health"] = {**cfg["health"], "listen": f"127.0.0.1:{free_port()}"}
    cfg["audio"] = {**cfg["audio"], "output": f"wav:{tmp / 'out.wav'}"}
    cfg["amplifier"] = {k: v for k, v in cfg["amplifier"].items() if k != "gpio"}
    cfg["amplifier"]["backend"] = "sim"
    cfg["recording"] = {**cfg["recording"], "dir": str(tmp / "recordings")}
    cfg["clock"] = {"trusted_by": ["always"]}
    cfg["fm"] = {**cfg["fm"], **(fm or {})}
    return cfg
