"""The network checks: the source system answers the device's schedule request, and each
MQTT broker accepts the agent's credentials."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from agent.cli.doctor.results import CheckResult, failed, msg, passed
from agent.config.addresses import BrokerUri
from agent.config.model import Config

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

MQTT_TIMEOUT_S = 5.0

TLS_HINT = msg("TLS failed: check source.ca_file (the province's CA) and the clock "
               "(`date`; a certificate is not valid before its start date).")


def check_source(cfg: Config) -> list[CheckResult]:
    import requests  # here, not at the top: imported only when this check runs

    source = cfg.source
    url = f"{source.url}/devices/{cfg.device_id}/schedule"
    headers = {"Authorization": f"Bearer {source.token}"} if source.token else {}
    verify: bool | str = str(source.ca_file) if source.ca_file else source.verify_tls
    cert = (str(source.client_cert), str(source.client_key)) if source.client_cert else None
    try:
        with requests.get(url, headers=headers, verify=verify, cert=cert, timeout=(5, 10),
                          stream=True) as response:
            status = response.status_code
    except requests.exceptions.SSLError as error:
        return [failed("source", msg("{url}: {error}", url=url, error=error), TLS_HINT)]
    except requests.RequestException as error:
        return [failed("source", msg("{url}: {error}", url=url, error=error),
                       msg("Check the network and DNS (`ping`, `resolvectl query`), and "
                           "source.url."))]
    if status in (200, 304):
        return [passed("source", msg("HTTP {status} from {url}", status=status, url=url))]
    hints = {401: msg("The source refused the token: check source.token / source.token_file."),
             403: msg("The source refused the token: check source.token / source.token_file."),
             404: msg("The source does not know device_id {device_id}: ask the province to "
                      "register it.", device_id=cfg.device_id)}
    hint = hints.get(status, msg("The source system answered with an error; try again later "
                                 "and tell the province if it persists."))
    return [failed("source", msg("HTTP {status} from {url}", status=status, url=url), hint)]


def check_mqtt(cfg: Config) -> list[CheckResult]:
    if not cfg.mqtt.brokers:
        return [passed("mqtt", msg("MQTT off (no brokers configured)"))]
    return [_check_broker(cfg, broker) for broker in cfg.mqtt.broker_uris]


def _check_broker(cfg: Config, broker: BrokerUri) -> CheckResult:
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    name = f"{broker.scheme}://{broker.host}:{broker.port}"
    settings = cfg.mqtt
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"{cfg.device_id}-doctor-{os.getpid()}")
    client.connect_timeout = MQTT_TIMEOUT_S
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if broker.scheme == "mqtts":
        client.tls_set(ca_certs=None if settings.ca_file is None else str(settings.ca_file),
                       certfile=None if settings.client_cert is None
                       else str(settings.client_cert),
                       keyfile=None if settings.client_key is None else str(settings.client_key))
    outcome: list[ReasonCode] = []
    client.on_connect = lambda _client, _userdata, _flags, reason, _props: outcome.append(reason)
    try:
        client.connect(broker.host, broker.port, keepalive=10)
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while not outcome and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except ssl.SSLError as error:
        return failed("mqtt", msg("{broker}: {error}", broker=name, error=error),
                      msg("TLS failed: check mqtt.ca_file and the clock (`date`)."))
    except OSError as error:
        return failed("mqtt", msg("{broker}: {error}", broker=name, error=error),
                      msg("Check the network, the broker address and that port {port} is "
                          "open.", port=broker.port))
    finally:
        client.disconnect()
    if not outcome:
        return failed("mqtt", msg("{broker}: no CONNACK within {seconds} s", broker=name,
                                  seconds=MQTT_TIMEOUT_S),
                      msg("Something answers on that port but is not an MQTT broker."))
    if outcome[0].is_failure:
        return failed("mqtt", msg("{broker} refused the connection: {reason}", broker=name,
                                  reason=outcome[0]),
                      msg("Check mqtt.username and mqtt.password / mqtt.password_file."))
    return passed("mqtt", msg("{broker} accepted the connection", broker=name))
