"""Mains sense with the real agent (hil.md, `power.backend: sim`): `power-sim.json` going
false raises `mains_lost` within 1 s and Status `power` says `battery`; true clears it."""

from __future__ import annotations

import requests

from tests.conftest import AgentFactory, Source
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.filesystems import write_json_atomically
from tests.support.schemas import validate

PROMISED_S = 1.0  # issue 12: mains_lost within 1 s of the line going false


def set_mains(agent: AgentProcess, mains: bool) -> None:
    write_json_atomically(agent.state_dir / "power-sim.json", {"mains": mains})


def power_and_mains_lost(agent: AgentProcess) -> tuple[str, str | None]:
    """Status ``power``, and the severity of ``mains_lost`` (None when not raised)."""
    status = agent.status()
    validate("status", status)
    severities = {f["code"]: f.get("severity") for f in status["faults"]}
    return status["power"], severities.get("mains_lost")


def test_mains_lost_follows_the_simulated_mains_line(source: Source,
                                                     agent_factory: AgentFactory) -> None:
    source.publish([])
    agent = agent_factory(power={"backend": "sim"})
    assert not (agent.state_dir / "power-sim.json").exists()
    assert power_and_mains_lost(agent) == ("mains", None)  # no file: mains present

    set_mains(agent, False)
    wait_for(lambda: power_and_mains_lost(agent) == ("battery", "warning"), PROMISED_S, 0.05,
             "mains_lost and power battery")
    healthz = requests.get(agent.health_url + "/healthz", timeout=5)
    assert healthz.status_code == 200  # a warning: the agent keeps broadcasting

    set_mains(agent, True)
    wait_for(lambda: power_and_mains_lost(agent) == ("mains", None), PROMISED_S, 0.05,
             "mains_lost cleared and power mains")


def test_without_a_sensor_power_is_unknown(source: Source,
                                           agent_factory: AgentFactory) -> None:
    source.publish([])
    agent = agent_factory()  # power.backend defaults to none
    set_mains(agent, False)  # no sim backend reads it
    assert power_and_mains_lost(agent) == ("unknown", None)
