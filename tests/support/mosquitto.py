"""A real Mosquitto broker for tests: plain and TLS listeners on free loopback ports,
a private CA, passwords and an ACL like a province would deploy, and a paho test client.

    broker = Mosquitto.start(tmp_path, devices={"dev-a": ["g1"]})
    broker.stop(); broker.restart(); broker.kill()
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import queue
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.agentproc import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
PREFIX = "tt"
CENTRAL_USER = "central"
# Large enough for the 10 MB too_large test payload.
MESSAGE_SIZE_LIMIT = 16 * 1024 * 1024



def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for localhost/127.0.0.1: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test province CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(san, critical=False)
              .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "server.pem", "server.key"))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, server_key)
    return ca_path, cert_path, key_path


def _acl(devices: dict[str, list[str]]) -> str:
    lines = [f"user {CENTRAL_USER}", "topic readwrite #", ""]
    for device, groups in devices.items():
        base = f"{PREFIX}/devices/{device}"
        lines += [f"user {device}",
                  *(f"topic write {base}/{leaf}" for leaf in ("state", "events", "acks")),
                  f"topic read {base}/commands",
                  *(f"topic read {PREFIX}/groups/{g}/commands" for g in groups), ""]
    return "\n".join(lines)


@dataclass
class Mosquitto:
    directory: Path
    host: str
    port: int
    tls_port: int
    ca_file: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, directory: Path, devices: dict[str, list[str]]) -> Mosquitto:
        """``devices`` maps each device user (= device id) to its groups."""
        directory.mkdir(parents=True, exist_ok=True)
        ca, cert, key = make_ca_and_server_cert(directory)
        passwords = {name: uuid.uuid4().hex for name in [CENTRAL_USER, *devices]}
        password_file = directory / "passwd"
        password_file.touch(mode=0o600)
        for name, password in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(password_file), name, password],
                           check=True, capture_output=True)
        (directory / "acl").write_text(_acl(devices))
        broker = cls(directory, "127.0.0.1", free_port(), free_port(), ca, passwords)
        (directory / "mosquitto.conf").write_text("\n".join([
            "per_listener_settings false",
            "user root" if os.geteuid() == 0 else "",
            "allow_anonymous false",
            f"password_file {password_file}",
            f"acl_file {directory / 'acl'}",
            # Sessions and retained messages survive stop()/restart() like a real broker's.
            "persistence true",
            f"persistence_location {directory}/",
            "autosave_interval 0",
            # Mosquitto's default, as docs/mqtt.md recommends: it bounds how much of a
            # flood a good command waits behind (tests/e2e/test_flood.py).
            "max_queued_messages 1000",
            f"max_packet_size {MESSAGE_SIZE_LIMIT}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            f"listener {broker.port} 127.0.0.1",
            f"listener {broker.tls_port} 127.0.0.1",
            f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", ""]))
        broker.restart()
        return broker

    @property
    def uri(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_uri(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    def restart(self) -> None:
        """(Re)start on the same ports; returns once both listeners accept connections."""
        self.stop()
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
            stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        for port in (self.port, self.tls_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError("mosquitto exited: "
                                       + (self.directory / "mosquitto.log").read_text())
                try:
                    socket.create_connection((self.host, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def client(self, user: str = CENTRAL_USER, tls: bool = False,
               protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
               session_id: str | None = None) -> TestClient:
        """``session_id``: a persistent session that outlives broker restarts."""
        return TestClient(self, user, tls, protocol, session_id)

    @contextmanager
    def central(self, *topics: str, session_id: str | None = None) -> Iterator[TestClient]:
        """A connected central-server client subscribed to ``topics``."""
        client = self.client(session_id=session_id)
        try:
            client.connect()
            for topic in topics:
                client.subscribe(topic)
            yield client
        finally:
            client.close()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class TestClient:
    """A blocking paho client: connect, subscribe (waits for SUBACK), publish, collect."""

    __test__ = False  # not a pytest test class

    def __init__(self, broker: Mosquitto, user: str, tls: bool,
                 protocol: MQTTProtocolVersion, session_id: str | None) -> None:
        self.broker = broker
        self.messages: queue.Queue[Received] = queue.Queue()
        persistent = session_id is not None and protocol != MQTTProtocolVersion.MQTTv5
        self._client = paho.Client(CallbackAPIVersion.VERSION2,
                                   client_id=session_id or f"test-{uuid.uuid4().hex[:8]}",
                                   protocol=protocol, clean_session=False if persistent else None)
        self._client.reconnect_delay_set(1, 1)
        self._client.username_pw_set(user, broker.passwords.get(user, "wrong"))
        if tls:
            self._client.tls_set(ca_certs=str(broker.ca_file))
        self._tls = tls
        self._client.on_message = lambda _c, _u, m: self.messages.put(
            Received(m.topic, bytes(m.payload), bool(m.retain)))

    def connect(self) -> None:
        self._client.connect(self.broker.host if not self._tls else "localhost",
                             self.broker.tls_port if self._tls else self.broker.port)
        self._client.loop_start()
        deadline = time.monotonic() + 10
        while not self._client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("test client could not connect")
            time.sleep(0.02)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        acked = queue.Queue[int]()
        self._client.on_subscribe = lambda _c, _u, mid, _rc, _p: acked.put(mid)
        _, mid = self._client.subscribe(topic, qos)
        while acked.get(timeout=10) != mid:
            pass

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> paho.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=10)
        return info

    def publish_many(self, topic: str, payloads: list[bytes], timeout: float = 120.0) -> None:
        """Publish all ``payloads`` (QoS 1) without waiting between them; return once the
        broker has acknowledged the last."""
        infos = [self._client.publish(topic, payload, qos=1) for payload in payloads]
        if infos:
            infos[-1].wait_for_publish(timeout=timeout)

    def expect(self, topic: str, timeout: float = 10.0,
               predicate: Any = None) -> Received:
        """The next message on ``topic`` (matching ``predicate(json)``), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message on {topic} within {timeout} s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message.topic == topic and (predicate is None or predicate(message.json())):
                return message

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
