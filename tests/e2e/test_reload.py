"""Live reconfiguration: SIGHUP and changed conf.d files, while a program plays.

Each test holds that the reload leaves no 5 ms of silence in what the agent wrote
(Capture.as_written): beside four other workers on two cores the card itself runs dry now
and then (a fresh-clone run found 8.2 ms at a program's start, while the agents of three
other tests logged underruns at the same instants), which says nothing about the reload.
A playout process restarted by it would leave a longer silence, which stays."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from drivers.mixer.curve import volume_to_db
from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support.agentproc import wait_for
from tests.support.media import tone
from tests.support.wavfile import rms_dbfs, silent_runs

RELOAD_GAP_S = 0.005  # the longest silence a reload may leave


def test_valid_change_applies_without_a_gap(tmp_path: Path, source: Source,
                                            agent_factory: AgentFactory) -> None:
    source.add("m-tone", tone(tmp_path / "tone.wav", 1000, 8.0))
    start = whole_second(4)
    doc = source.publish([program("p-1", ["m-tone"], start)])
    agent = agent_factory(audio={"default_volume": 100})
    wait_ready(agent, doc["version"])
    time.sleep(max(0.0, start + 3 - time.time()))
    conf_d = agent.config_path.parent / "conf.d"
    conf_d.mkdir(exist_ok=True)
    (conf_d / "50-volume.yaml").write_text("audio:\n  default_volume: 50\n")
    changed_at = time.time()
    wait_for(lambda: agent.status()["volume"] == 50, 5, what="volume 50 applied")
    capture = capture_until(agent, start + 7.5).as_written()
    assert silent_runs(capture, start + 0.1, 7.3, RELOAD_GAP_S, threshold=32) == [], \
        "the reload left a gap in the audio"
    before = rms_dbfs(capture.segment(start + 1, 1.5))
    after = rms_dbfs(capture.segment(changed_at + 3.0, 1.0))
    expected_drop = volume_to_db(100) - volume_to_db(50)
    assert abs((before - after) - expected_drop) < 1.0
    events = [r for r in source.running.reports() if r["type"] == "play"]
    assert len(events) == 0 or all(e["outcome"] == "completed" for e in events)


def test_invalid_change_is_refused_and_playing_goes_on(tmp_path: Path, source: Source,
                                                       agent_factory: AgentFactory) -> None:
    source.add("m-tone", tone(tmp_path / "tone.wav", 1000, 6.0))
    start = whole_second(4)
    doc = source.publish([program("p-1", ["m-tone"], start)])
    agent = agent_factory()
    wait_ready(agent, doc["version"])
    time.sleep(max(0.0, start + 2 - time.time()))
    conf_d = agent.config_path.parent / "conf.d"
    conf_d.mkdir(exist_ok=True)
    (conf_d / "60-broken.yaml").write_text("audio:\n  default_volum: 50\n")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGHUP)
    faults = wait_for(lambda: {f["code"]: f for f in agent.status()["faults"]}
                      .get("config_invalid"), 5, what="config_invalid")
    assert "default_volum" in faults["message"] and "60-broken.yaml" in faults["message"]
    assert agent.status()["playing"]["program_id"] == "p-1"
    capture = capture_until(agent, start + 5.5).as_written()
    assert silent_runs(capture, start + 0.1, 5.3, RELOAD_GAP_S, threshold=32) == []
    (conf_d / "60-broken.yaml").unlink()
    wait_for(lambda: "config_invalid" not in agent.fault_codes(), 5,
             what="config_invalid cleared once the bad file is gone")
