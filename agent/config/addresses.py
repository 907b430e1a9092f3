"""The network addresses agent.yaml names: `HOST:PORT` and MQTT broker URIs, parsed."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple
from urllib.parse import urlsplit


class HostPort(NamedTuple):
    host: str
    port: int


def parse_host_port(value: str) -> HostPort:
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return HostPort(host, int(port))


class BrokerUri(NamedTuple):
    scheme: str  # "mqtt" or "mqtts" (TLS)
    host: str
    port: int


def parse_broker_uri(value: str) -> BrokerUri:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.username \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(value)
    port = parts.port  # raises ValueError when out of range
    return BrokerUri(parts.scheme, parts.hostname, port or (8883 if parts.scheme == "mqtts"
                                                            else 1883))
