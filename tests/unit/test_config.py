"""load_config on real files: conf.d merging, every kind of error with its file and line,
secrets, relative paths, defaults, and the shipped config files."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import textwrap
import typing
from pathlib import Path

import pytest
import yaml

from agent.config.addresses import BrokerUri, HostPort
from agent.config.loader import ConfigError, load_config
from agent.config.model import (
    AmplifierConfig,
    AudioConfig,
    CacheConfig,
    ClockConfig,
    Config,
    FmConfig,
    GpioConfig,
    HealthConfig,
    LineInConfig,
    MqttConfig,
    PowerConfig,
    RecordingConfig,
    SourceConfig,
    TtsConfig,
    UpdateConfig,
)
from agent.config.schema import schema
from agent.config.validation import Section
from tests.support.agentproc import REPO

MINIMAL = "device_id: d1\nsource:\n  url: http://127.0.0.1:9/api\n"


def write(path: Path, content: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(content))
    path.chmod(mode)
    return path


def with_minimal(extra: str) -> str:
    """The minimal valid config, then `extra` (dedented) from line 4 on."""
    return MINIMAL + textwrap.dedent(extra)


def errors_of(main: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    return caught.value.errors


def test_defaults_are_those_of_the_contract(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL)
    assert load_config(main) == Config(
        device_id="d1", groups=(), timezone="Asia/Ho_Chi_Minh",
        state_dir=Path("/var/lib/broadcast-agent"), late_start_grace_s=120, log_level="INFO",
        source=SourceConfig(
            url="http://127.0.0.1:9/api", token=None, poll_interval_s=60, max_backoff_s=600,
            verify_tls=True, ca_file=None, client_cert=None, client_key=None, public_key=None,
            read_timeout_s=30, max_schedule_bytes=4_194_304, request_deadline_s=120,
            media_deadline_s=600),
        cache=CacheConfig(dir=Path("/var/cache/broadcast-agent"), max_bytes=2_000_000_000,
                          min_free_bytes=33_554_432),
        mqtt=MqttConfig(
            brokers=(), username=None, password=None, ca_file=None, client_cert=None,
            client_key=None, topic_prefix="tt", heartbeat_s=60, keepalive_s=30,
            command_public_key=None, max_command_age_s=300, max_clock_skew_s=120,
            clock_wait_s=60, outbox_max=10_000,
            max_payload_bytes=65_536, protocol="3.1.1"),
        health=HealthConfig(listen="127.0.0.1:8787", token=None, max_connections=8,
                            request_timeout_s=5),
        audio=AudioConfig(
            output="alsa:default", rate=48_000, mixer=None, default_volume=70,
            emergency_volume=100, chime=None, dead_air_s=5, dead_air_dbfs=-50,
            decoder_hang_s=3, stream_caching_ms=300),
        amplifier=AmplifierConfig(
            backend="gpio", gpio=GpioConfig(chip="gpiochip0", line=17, active_high=True),
            warmup_s=2.0, idle_off_s=300),
        fm=FmConfig(backend="rtl_fm", rtl_tcp="127.0.0.1:1234", gain_db=None, ppm=0,
                    squelch_dbfs=-30, sample_rate=240_000),
        clock=ClockConfig(trusted_by=("ntp", "rtc", "source"), backend="system"),
        tts=TtsConfig(engine="espeak-ng", voice="vi"),
        line_in=LineInConfig(input=None, vox=False, threshold_dbfs=-30, on_after_s=0.5,
                             off_after_s=10, priority="live", chime=False),
        recording=RecordingConfig(enabled=True, dir=Path("/var/lib/broadcast-agent/recordings"),
                                  max_bytes=1_000_000_000, max_days=14, segment_s=60),
        power=PowerConfig(backend="none",
                          gpio=GpioConfig(chip="gpiochip0", line=27, active_high=True)),
        update=UpdateConfig(commit_after_s=300, window="01:00-04:00", max_bytes=200_000_000),
        warnings=(), files=(main,))


def test_conf_d_files_merge_on_top_in_name_order(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", with_minimal("""\
        groups: [a, b]
        audio: {output: alsa:hw:1, default_volume: 50, mixer: {card: 1, control: Speaker}}
        """))
    later = write(tmp_path / "conf.d/20-later.yaml", "audio: {default_volume: 60}\n")
    earlier = write(tmp_path / "conf.d/10-earlier.yaml", """\
        groups: [c]
        audio: {default_volume: 55, emergency_volume: 90, mixer: null}
        """)
    write(tmp_path / "conf.d/.10-earlier.yaml.swp.yaml", "this: [is not read\n")
    write(tmp_path / "conf.d/notes.txt", "not yaml: [\n")
    config = load_config(main)
    assert config.audio.default_volume == 60
    assert config.audio.emergency_volume == 90
    assert config.audio.output == "alsa:hw:1"  # kept: mappings merge key by key
    assert config.audio.mixer is None  # null replaces a mapping
    assert config.groups == ("c",)  # lists are replaced, not appended
    assert config.files == (main, earlier, later)


def test_yml_file_in_conf_d_is_ignored_with_a_warning(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL)
    yml = write(tmp_path / "conf.d/50-volume.yml", "audio: {default_volume: 10}\n")
    config = load_config(main)
    assert config.audio.default_volume == 70
    assert config.warnings == (f"{yml}:1: -: ignored: only *.yaml files are read",)


def test_empty_files_are_empty_mappings(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", "")
    write(tmp_path / "conf.d/00-empty.yaml", "# nothing here\n")
    assert errors_of(main) == [f"{main}:1: device_id: required key missing",
                               f"{main}:1: source.url: required key missing"]


def test_small_values_for_tests_are_accepted(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", with_minimal("""\
          poll_interval_s: 5
          max_backoff_s: 1
        late_start_grace_s: 0
        mqtt: {heartbeat_s: 5, keepalive_s: 5, max_command_age_s: 0}
        amplifier: {warmup_s: 0, idle_off_s: 0.5}
        audio: {default_volume: 0, emergency_volume: 100, dead_air_s: 0}
        """))
    config = load_config(main)
    assert (config.source.poll_interval_s, config.source.max_backoff_s) == (5, 1)
    assert (config.mqtt.heartbeat_s, config.amplifier.idle_off_s) == (5, 0.5)


# Each case: YAML appended to MINIMAL (line 4 onwards), then the expected `LINE: KEY: message`.
BAD_VALUES = [
    ("  pol_interval_s: 60\n",
     "4: source.pol_interval_s: unknown key; did you mean 'poll_interval_s'?"),
    ("default_volume: 80\n",
     "4: default_volume: unknown key; did you mean 'audio.default_volume'?"),
    ("zzz: 1\n", "4: zzz: unknown key"),
    ("  poll_interval_s: '60'\n",
     "4: source.poll_interval_s: expected a number, got string '60'"),
    ("  poll_interval_s: 4\n", "4: source.poll_interval_s: must be at least 5, got 4"),
    ("  max_backoff_s: 0.5\n", "4: source.max_backoff_s: must be at least 1, got 0.5"),
    ("  verify_tls: 'no'\n", "4: source.verify_tls: expected true or false, got string 'no'"),
    ("  public_key: '***'\n", "4: source.public_key: not valid base64"),
    (f"  public_key: {base64.b64encode(bytes(31)).decode()}\n",
     "4: source.public_key: an Ed25519 public key is 32 bytes, this one decodes to 31"),
    ("late_start_grace_s: -1\n", "4: late_start_grace_s: must be at least 0, got -1"),
    ("mqtt: {heartbeat_s: 4}\n", "4: mqtt.heartbeat_s: must be at least 5, got 4"),
    ("mqtt: {keepalive_s: 1}\n", "4: mqtt.keepalive_s: must be at least 5, got 1"),
    ("mqtt: {outbox_max: 99}\n", "4: mqtt.outbox_max: must be at least 100, got 99"),
    ("mqtt: {max_payload_bytes: 1000}\n",
     "4: mqtt.max_payload_bytes: must be at least 1024, got 1000"),
    ("mqtt: {brokers: mqtt://h}\n", "4: mqtt.brokers: expected a list, got string 'mqtt://h'"),
    ("mqtt:\n  brokers:\n    - mqtt://ok\n    - tcp://h:1883\n",
     "7: mqtt.brokers[1]: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], "
     "got 'tcp://h:1883'"),
    ("mqtt: {brokers: ['mqtts://h:99999']}\n",
     "4: mqtt.brokers[0]: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], "
     "got 'mqtts://h:99999'"),
    ("mqtt: {topic_prefix: 'tt/#'}\n",
     "4: mqtt.topic_prefix: 'tt/#' must be '/'-separated names of letters, digits, '.', '_' "
     "or '-', with no wildcard and no leading or trailing '/'"),
    ("groups: [ok, 'a/b']\n",
     "4: groups[1]: 'a/b' must be up to 128 letters, digits, '.', '_' or '-' (no '/', '+', "
     "'#', spaces)"),
    ("groups:\n  - a\n  - b\n  - a\n", "7: groups[2]: repeats groups[0]"),
    ("timezone: Asia/Hanoi_X\n",
     "4: timezone: unknown time zone 'Asia/Hanoi_X' (an IANA name such as Asia/Ho_Chi_Minh)"),
    ("log_level: VERBOSE\n",
     "4: log_level: must be one of DEBUG, INFO, WARNING, ERROR, got 'VERBOSE'"),
    ("health: {listen: '8787'}\n",
     "4: health.listen: expected HOST:PORT (port 1-65535, IPv6 in brackets), got '8787'"),
    ("health: {max_connections: 0}\n",
     "4: health.max_connections: must be between 1 and 256, got 0"),
    ("health: {request_timeout_s: 0.1}\n",
     "4: health.request_timeout_s: must be at least 0.5, got 0.1"),
    ("audio: {output: 'pulse:x'}\n",
     "4: audio.output: expected alsa:<pcm name> or wav:<path>, got 'pulse:x'"),
    ("audio: {output: 'wav:no/such/dir/out.wav'}\n",
     "4: audio.output: directory {dir}/no/such/dir does not exist"),
    ("audio: {default_volume: 101}\n",
     "4: audio.default_volume: must be between 0 and 100, got 101"),
    ("audio: {emergency_volume: true}\n",
     "4: audio.emergency_volume: expected an integer, got boolean true"),
    ("audio: {mixer: 5}\n", "4: audio.mixer: expected a mapping, got integer 5"),
    ("audio:\n  mixer: {card: '0', control: PCM}\n",
     "5: audio.mixer.card: expected an integer, got string '0'"),
    ("audio:\n  mixer: {card: 0}\n", "5: audio.mixer.control: required key missing"),
    ("audio: {chime: sounds/missing.wav}\n",
     "4: audio.chime: no such file: {dir}/sounds/missing.wav"),
    ("audio: {decoder_hang_s: 0.5}\n", "4: audio.decoder_hang_s: must be at least 1, got 0.5"),
    ("audio: {stream_caching_ms: -1}\n",
     "4: audio.stream_caching_ms: must be at least 0, got -1"),
    ("amplifier: {backend: gpoi}\n",
     "4: amplifier.backend: must be one of gpio, sim, none, got 'gpoi'; did you mean 'gpio'?"),
    ("amplifier:\n  gpio:\n    line: seventeen\n",
     "6: amplifier.gpio.line: expected an integer, got string 'seventeen'"),
    ("amplifier: {gpio: {active_high: 'yes'}}\n",
     "4: amplifier.gpio.active_high: expected true or false, got string 'yes'"),
    ("fm: {backend: rtl-fm}\n",
     "4: fm.backend: must be one of rtl_fm, rtl_tcp, none, got 'rtl-fm'; did you mean 'rtl_fm'?"),
    ("fm: {backend: hackrf}\n",
     "4: fm.backend: must be one of rtl_fm, rtl_tcp, none, got 'hackrf'"),
    ("fm: {gain_db: high}\n", "4: fm.gain_db: expected auto or a number of dB, got string 'high'"),
    ("fm: {rtl_tcp: localhost}\n",
     "4: fm.rtl_tcp: expected HOST:PORT (port 1-65535, IPv6 in brackets), got 'localhost'"),
    ("fm: {sample_rate: 2048000.5}\n",
     "4: fm.sample_rate: expected an integer, got number 2048000.5"),
    ("fm: {sample_rate: 500000}\n",
     "4: fm.sample_rate: the RTL2832U cannot sample between 300000 and 900000 S/s, got 500000"),
    ("fm: {sample_rate: 3200001}\n",
     "4: fm.sample_rate: must be between 240000 and 3200000, got 3200001"),
    ("fm: {squelch_dbfs: 3}\n", "4: fm.squelch_dbfs: must be at most 0, got 3"),
    ("tts: {engine: festival}\n", "4: tts.engine: must be one of espeak-ng, got 'festival'"),
    ("tts: {voice: 5}\n",
     "4: tts.voice: expected a non-empty string, got integer 5 (quote it to make it a string)"),
    ("cache: 7\n", "4: cache: expected a mapping, got integer 7"),
    ("device_id: d2\n", "4: device_id: duplicate key (first given on line 1)"),
    ("1: one\n", "4: -: key 1 is not a string"),
]


@pytest.mark.parametrize(("appended", "expected"), BAD_VALUES,
                         ids=[case[1].split(":")[1].strip() for case in BAD_VALUES])
def test_each_bad_value_is_reported_at_its_file_and_line(tmp_path: Path, appended: str,
                                                         expected: str) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL + appended)
    assert errors_of(main) == [f"{main}:{expected.format(dir=tmp_path)}"]


def test_source_url_must_be_http_with_a_host(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", "device_id: d1\nsource: {url: 'ftp://x'}\n")
    assert errors_of(main) == [
        f"{main}:2: source.url: expected an http:// or https:// URL with a host, got 'ftp://x'"]


def test_source_without_url_is_reported_at_the_source_mapping(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", "device_id: d1\n\nsource:\n  token: t\n")
    assert errors_of(main) == [f"{main}:3: source.url: required key missing"]


def test_yaml_syntax_errors_name_the_line_and_no_key(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL)
    broken = write(tmp_path / "conf.d/10-broken.yaml", "audio:\n  default_volume: [80\n")
    (error,) = errors_of(main)
    assert re.fullmatch(rf"{re.escape(str(broken))}:3: -: .+", error), error


def test_a_broken_file_is_reported_alone_without_misleading_merge_errors(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", "device_id: d1\nsource:\n  url: 'http://x\n")
    also_broken = write(tmp_path / "conf.d/10-x.yaml", "audio: {rate: 1}\n- item\n")
    errors = errors_of(main)
    assert [error.split(": -: ")[0] for error in errors] == [f"{main}:4", f"{also_broken}:2"]


def test_bytes_that_are_not_text_are_reported_at_their_line(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL)
    latin1 = tmp_path / "conf.d/10-latin1.yaml"
    latin1.parent.mkdir()
    latin1.write_bytes(b"tts:\n  voice: '\xe9'\n")
    bell = write(tmp_path / "conf.d/20-bell.yaml", "tts:\n  voice: 'vi'\n\n  engine: '\x07'\n")
    assert errors_of(main) == [
        f"{latin1}:2: -: not UTF-8 text",
        f"{bell}:4: -: unacceptable character #x0007: special characters are not allowed",
    ]


def test_a_top_level_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", "- device_id: d1\n")
    assert errors_of(main)[0] == f"{main}:1: -: expected a mapping of keys at the top"


def test_a_missing_main_file_is_an_error(tmp_path: Path) -> None:
    main = tmp_path / "absent.yaml"
    assert errors_of(main)[0] == f"{main}:1: -: cannot read: No such file or directory"


def test_every_error_of_every_file_is_listed_in_reading_order(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", """\
        device_id: d1
        source:
          url: http://127.0.0.1:9/api
          poll_intervall_s: 60
        audio:
          default_volume: 70
        """)
    volume = write(tmp_path / "conf.d/50-volume.yaml", """\
        # technician's override
        audio:
          default_volume: 170
          emergency_volume: loud
        """)
    fm = write(tmp_path / "conf.d/60-fm.yaml", "fm:\n  backend: rtl_tcp\n  rtl_tcp: nowhere\n")
    assert errors_of(main) == [
        f"{main}:4: source.poll_intervall_s: unknown key; did you mean 'poll_interval_s'?",
        f"{volume}:3: audio.default_volume: must be between 0 and 100, got 170",
        f"{volume}:4: audio.emergency_volume: expected an integer, got string 'loud'",
        f"{fm}:3: fm.rtl_tcp: expected HOST:PORT (port 1-65535, IPv6 in brackets), "
        "got 'nowhere'",
    ]


def test_secrets_are_read_from_files_beside_the_main_file(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", f"""\
        device_id: d1
        source: {{url: https://127.0.0.1:9/api, token_file: secrets/source.token}}
        mqtt:
          password_file: {tmp_path}/mqtt.password
        health: {{token_file: health.token}}
        """)
    write(tmp_path / "secrets/source.token", "s3cret-source\n", mode=0o600)
    write(tmp_path / "mqtt.password", "mqtt pass word\r\n", mode=0o400)
    write(tmp_path / "health.token", "h-token", mode=0o600)
    config = load_config(main)
    assert config.source.token == "s3cret-source"
    assert config.mqtt.password == "mqtt pass word"
    assert config.health.token == "h-token"
    assert config.warnings == ()


def test_a_secret_file_readable_by_others_is_a_warning(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL.replace("http:", "https:")
                 + "  token_file: source.token\n")
    secret = write(tmp_path / "source.token", "t\n", mode=0o644)
    config = load_config(main)
    assert config.source.token == "t"
    assert config.warnings == (
        f"{main}:4: source.token_file: {secret} is readable by other users (mode 0644); "
        "chmod 600 it",)


def test_secret_errors(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", with_minimal("""\
          token: inline
          token_file: source.token
        mqtt: {password_file: missing.password}
        health: {token_file: empty.token}
        """))
    write(tmp_path / "source.token", "t", mode=0o600)
    write(tmp_path / "empty.token", "\n", mode=0o600)
    assert errors_of(main) == [
        f"{main}:5: source.token_file: both token and token_file are given; keep one",
        f"{main}:6: mqtt.password_file: cannot read {tmp_path}/missing.password: "
        "No such file or directory",
        f"{main}:7: health.token_file: {tmp_path}/empty.token is empty",
    ]


def test_relative_paths_are_taken_from_the_main_file_directory(tmp_path: Path) -> None:
    main = write(tmp_path / "etc/agent.yaml", with_minimal("""\
          ca_file: pki/ca.pem
        state_dir: state
        cache: {dir: ../var/cache}
        audio: {output: 'wav:out.wav', chime: sounds/chime.wav}
        """))
    write(tmp_path / "etc/conf.d/10-mqtt.yaml",
          "mqtt: {client_cert: pki/me.pem, client_key: pki/me.key}\n")
    for name in ("pki/ca.pem", "pki/me.pem", "pki/me.key", "sounds/chime.wav"):
        write(tmp_path / "etc" / name, "x")
    etc = tmp_path / "etc"
    config = load_config(main)
    assert config.state_dir == etc / "state"
    assert config.cache.dir == etc / "../var/cache"
    assert config.source.ca_file == etc / "pki/ca.pem"
    assert (config.mqtt.client_cert, config.mqtt.client_key) == (etc / "pki/me.pem",
                                                                 etc / "pki/me.key")
    assert config.audio.output == f"wav:{etc}/out.wav"
    assert (config.audio.output_kind, config.audio.output_arg) == ("wav", f"{etc}/out.wav")
    assert config.audio.chime == etc / "sounds/chime.wav"


def test_client_cert_and_key_go_together(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", MINIMAL + "  client_cert: me.pem\n")
    write(tmp_path / "me.pem", "x")
    assert errors_of(main) == [
        f"{main}:4: source.client_cert: client_cert and client_key go together"]


def test_risky_settings_are_warnings(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.yaml", with_minimal("""\
          verify_tls: false
        health: {listen: '0.0.0.0:8787'}
        """))
    assert load_config(main).warnings == (
        f"{main}:4: source.verify_tls: TLS verification of the source is off",
        f"{main}:5: health.listen: 0.0.0.0 is reachable from other hosts and health.token "
        "is not set",
    )


def test_parsed_conveniences(tmp_path: Path) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    main = write(tmp_path / "agent.yaml", with_minimal(f"""\
          public_key: {key}
        mqtt: {{brokers: ['mqtt://a.example', 'mqtts://b.example', 'mqtts://[::1]:18883']}}
        health: {{listen: '[::1]:8080'}}
        fm: {{backend: rtl_tcp, rtl_tcp: '127.0.0.1:40000', gain_db: 19.7}}
        """))
    config = load_config(main)
    assert config.mqtt.broker_uris == (BrokerUri("mqtt", "a.example", 1883),
                                       BrokerUri("mqtts", "b.example", 8883),
                                       BrokerUri("mqtts", "::1", 18883))
    assert (config.health.host, config.health.port) == ("::1", 8080)
    assert config.fm.rtl_tcp_address == HostPort("127.0.0.1", 40000)
    assert config.fm.gain_db == 19.7
    assert config.source.public_key == bytes(range(32))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.device_id = "other"  # type: ignore[misc]


def schema_key_paths(section: Section, prefix: str = "") -> set[str]:
    paths = set()
    for name, spec in section.keys.items():
        path = f"{prefix}{name}"
        paths.add(path)
        if isinstance(spec, Section):
            paths |= schema_key_paths(spec, path + ".")
    return paths


def dataclass_key_paths(cls: type, prefix: str = "") -> set[str]:
    hints = typing.get_type_hints(cls)
    paths = set()
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        paths.add(path)
        for kind in typing.get_args(hints[field.name]) or (hints[field.name],):
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                paths |= dataclass_key_paths(kind, path + ".")
    return paths


SECRET_FILES = {"source.token_file", "mqtt.password_file", "health.token_file"}


def test_config_dataclasses_mirror_the_keys(tmp_path: Path) -> None:
    config_only = {"warnings", "files"}
    assert dataclass_key_paths(Config) == schema_key_paths(schema(tmp_path)) - SECRET_FILES \
        | config_only


def test_shipped_agent_yaml_is_valid_once_its_secrets_are_provisioned(tmp_path: Path) -> None:
    main = tmp_path / "agent.yaml"
    shutil.copy(REPO / "config/agent.yaml", main)
    write(tmp_path / "source.token", "token\n", mode=0o600)
    write(tmp_path / "mqtt.password", "password\n", mode=0o600)
    write(tmp_path / "province-ca.pem", "-----BEGIN CERTIFICATE-----\n")
    config = load_config(main)
    assert config.warnings == ()
    assert (config.audio.output, config.amplifier.backend, config.fm.backend) == (
        "alsa:default", "gpio", "rtl_fm")
    assert config.source.token == "token" and config.mqtt.password == "password"


def test_example_full_is_valid_and_shows_every_key(tmp_path: Path) -> None:
    example = REPO / "config/example-full.yaml"
    config = load_config(example)
    assert [w.split(": ", 1)[1] for w in config.warnings] == [  # it shows the inline forms
        "source.token: a secret written inline; put it in token_file (mode 600) instead",
        "mqtt.password: a secret written inline; put it in password_file (mode 600) instead"]

    def written_paths(mapping: dict[str, object], prefix: str = "") -> set[str]:
        paths = set()
        for name, value in mapping.items():
            paths.add(prefix + name)
            if isinstance(value, dict):
                paths |= written_paths(value, f"{prefix}{name}.")
        return paths

    shown = written_paths(yaml.safe_load(example.read_text()))
    assert shown == schema_key_paths(schema(tmp_path)) - SECRET_FILES



def test_exposed_secrets_are_warnings_naming_them(tmp_path: Path) -> None:
    key = write(tmp_path / "client.key", "-----BEGIN PRIVATE KEY-----\n", mode=0o644)
    write(tmp_path / "client.crt", "-----BEGIN CERTIFICATE-----\n", mode=0o644)
    main = write(tmp_path / "agent.yaml", """\
        device_id: d1
        source: {url: http://127.0.0.1:9/api, token: inline-token}
        mqtt:
          brokers: ["mqtt://127.0.0.1:1883", "mqtts://127.0.0.1:8883"]
          password: pw
          client_cert: client.crt
          client_key: client.key
        """)
    assert load_config(main).warnings == (
        f"{main}:2: source.token: a secret written inline; put it in token_file (mode 600) "
        "instead",
        f"{main}:2: source.url: source.token travels unencrypted over http://; anyone on "
        "the path can read it (use https://)",
        f"{main}:4: mqtt.brokers: mqtt.password travels unencrypted to mqtt://127.0.0.1:1883; "
        "anyone on the path can read it (use mqtts://)",
        f"{main}:5: mqtt.password: a secret written inline; put it in password_file "
        "(mode 600) instead",
        f"{main}:7: mqtt.client_key: {key} is readable by other users (mode 0644); "
        "chmod 600 it")


@pytest.mark.parametrize(("content", "says"), [
    ("groups: &self [*self]\n", "nested deeper than 32 levels"),  # an alias of itself
    ("groups: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
    ("groups: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),  # PyYAML's recursion
], ids=["alias-of-itself", "deep", "deeper-than-python"])
def test_a_config_nested_without_end_is_a_config_error(tmp_path: Path, content: str,
                                                      says: str) -> None:
    errors = errors_of(write(tmp_path / "agent.yaml", with_minimal(content)))
    assert any(says in error for error in errors), errors
