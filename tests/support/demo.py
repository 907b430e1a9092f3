"""The demo (``make demo``): the real agent against the bundled source-system simulator and
a local Mosquitto broker, audio into the clocked WAV sink.

Everything is made locally: a Vietnamese announcement by espeak-ng and tones. The first
program starts about 15 s after launch; the demo prints every event the agent publishes,
then what played and where the audio is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import media
from tests.support.agentproc import free_port
from tests.support.simulator import SourceSimulator

TZ = "Asia/Ho_Chi_Minh"
DEVICE = "xa-demo-cum-01"
TOKEN = "demo-token"
ANNOUNCEMENT = ("Kính thưa bà con. Đây là đài truyền thanh xã. Sau đây là bản tin sáng "
                "của xã Phú Lộc.")
TTS_TEXT = "Kính mời bà con đến họp tại nhà văn hoá thôn vào lúc bảy giờ tối nay."




def _tones(path: Path, rate: int = 48000) -> float:
    """A short three-note jingle; returns its duration."""
    notes = []
    for freq in (523.25, 659.25, 783.99, 1046.5):
        t = np.arange(int(rate * 0.5)) / rate
        notes.append(np.sin(2 * np.pi * freq * t) * np.minimum(1, (0.5 - t) * 20) * 12000)
    wave_data = np.concatenate(notes)
    media.write_frames(path, np.repeat(wave_data.astype("<i2")[:, None], 2, axis=1), rate)
    return len(wave_data) / rate


def _media_entry(directory: Path, media_id: str, source: Path, title: str) -> dict[str, Any]:
    import hashlib
    data = source.read_bytes()
    (directory / "media").mkdir(parents=True, exist_ok=True)
    (directory / "media" / media_id).write_bytes(data)
    with wave.open(str(source), "rb") as w:
        duration = w.getnframes() / w.getframerate()
    return {"id": media_id, "url": f"media/{media_id}", "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), "duration_s": round(duration, 3), "title": title,
            "mime": "audio/wav"}


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, ZoneInfo(TZ)).strftime("%H:%M:%S")


def _make_content(out: Path, start: float) -> dict[str, Any]:
    content = out / "source"
    content.mkdir(parents=True)
    speech = out / "announcement.wav"
    media.speech(speech, ANNOUNCEMENT)
    jingle = out / "jingle.wav"
    _tones(jingle)
    entries = [_media_entry(content, "m-ban-tin", speech, "Bản tin sáng"),
               _media_entry(content, "m-nhac-hieu", jingle, "Nhạc hiệu")]
    programs = [
        {"id": "p-ban-tin", "title": "Bản tin sáng", "priority": "scheduled",
         "source": {"type": "media", "items": ["m-nhac-hieu", "m-ban-tin"]},
         "start": _at(start), "chime": True, "volume": 90},
        {"id": "p-thong-bao", "title": "Thông báo họp thôn", "priority": "scheduled",
         "source": {"type": "tts", "text": TTS_TEXT, "lang": "vi"},
         "start": _at(start + 25)},
    ]
    doc = {"version": 1, "device_id": DEVICE, "timezone": TZ, "media": entries,
           "programs": programs}
    (content / "schedule.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1))
    return doc


def _start_broker(out: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = out / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return broker, port
        time.sleep(0.05)
    broker.kill()
    raise SystemExit("mosquitto did not start")


def _watch_events(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-watcher")

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        kind = msg.topic.rsplit("/", 1)[-1]
        if kind == "events":
            what = body.get("record", body)
            detail = what.get("media_id") or what.get("text") or \
                f"{what.get('code', '')} {what.get('message', '')}"
            print(f"  [{kind}] {body['type']:<15} {what.get('program_id', '')} {detail}",
                  flush=True)
        elif kind == "state" and body.get("playing"):
            playing = body["playing"]
            print(f"  [state]  playing {playing['program_id']} ({playing['source']}), "
                  f"amplifier {body['amplifier']}", flush=True)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"tt/devices/{DEVICE}/#", qos=1)
    client.loop_start()
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-out", help="working directory (recreated)")
    parser.add_argument("--seconds", type=float, default=60, help="how long to run the agent")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.time() + 15
    doc = _make_content(out, start)
    sim = SourceSimulator(out / "source", DEVICE, TOKEN).start()
    broker, port = _start_broker(out)
    config = {
        "device_id": DEVICE, "timezone": TZ, "state_dir": str(out / "state"),
        "source": {"url": sim.url + "/", "token": TOKEN, "poll_interval_s": 10},
        "cache": {"dir": str(out / "cache")},
        "mqtt": {"brokers": [f"mqtt://127.0.0.1:{port}"], "heartbeat_s": 30},
        "health": {"listen": f"127.0.0.1:{free_port()}"},
        "audio": {"output": f"wav:{out / 'output.wav'}", "default_volume": 80},
        "amplifier": {"backend": "sim", "warmup_s": 1.0, "idle_off_s": 10},
        "fm": {"backend": "none"},
    }
    (out / "etc").mkdir()
    (out / "etc" / "agent.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    print(f"source simulator: {sim.url}   broker: mqtt://127.0.0.1:{port}")
    for program in doc["programs"]:
        print(f"scheduled {program['start']} {program['id']}: {program['title']}")
    watcher = _watch_events(port)
    log = open(out / "agent.log", "wb")  # noqa: SIM115 - handed to the child
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                              str(out / "etc" / "agent.yaml")], stdout=log, stderr=log)
    try:
        time.sleep(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        agent.terminate()
        agent.wait(20)
        log.close()
        time.sleep(0.5)
        watcher.loop_stop()
        broker.terminate()
        reports = sim.reports()
        sim.stop()
    print("\nWhat played (proof-of-play reports received by the source simulator):")
    for report in sorted((r for r in reports if r["type"] == "play"),
                         key=lambda r: r["started_at"]):
        what = report.get("media_id") or report.get("text", "")[:40]
        print(f"  {report['started_at'][11:23]}  {report['program_id']:<12} {what:<40} "
              f"{report['played_s']:6.2f} s  {report['outcome']}")
    print(f"\nAudio as the sound card received it: {out / 'output.wav'}"
          f"  (play it with: aplay {out / 'output.wav'})")
    print(f"Timing sidecar: {out / 'output.wav.json'}   agent log: {out / 'agent.log'}")
    print(f"Amplifier transitions: {out / 'state' / 'amplifier-sim.jsonl'}")
    return 0 if any(r["type"] == "play" for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
