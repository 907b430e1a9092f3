"""SourceClient over real TLS: private CA, client certificate, verification switched off."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import TypedDict, Unpack

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from urllib3.exceptions import InsecureRequestWarning

from agent.source.client import SourceClient, SourceError, SourceSettings
from tests.support.simulator import SourceSimulator
from tests.support.source_sim import DEVICE, TOKEN, schedule_doc, write_schedule


def _issue(name: str, issuer_key: ec.EllipticCurvePrivateKey | None,
           issuer: x509.Name | None, *, ca: bool, tmp: Path
           ) -> tuple[ec.EllipticCurvePrivateKey, x509.Name, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer or subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False), critical=True)
    else:
        assert issuer_key is not None
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_file, key_file = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key, subject, cert_file, key_file


class Pki(TypedDict):
    """The CA's certificate; the server's and the client's (certificate, key) files."""

    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]


class TlsOptions(TypedDict, total=False):
    """The TLS fields of SourceSettings."""

    verify_tls: bool
    ca_file: Path | None
    client_cert: Path | None
    client_key: Path | None


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key, ca_name, ca_cert, _ = _issue("ca", None, None, ca=True, tmp=tmp_path)
    _, _, server_cert, server_key = _issue("server", ca_key, ca_name, ca=False, tmp=tmp_path)
    _, _, client_cert, client_key = _issue("client", ca_key, ca_name, ca=False, tmp=tmp_path)
    return {"ca": ca_cert, "server": (server_cert, server_key),
            "client": (client_cert, client_key)}


def tls_sim(tmp_path: Path, pki: Pki, *, require_client_cert: bool) -> SourceSimulator:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["server"])
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki["ca"])
    write_schedule(tmp_path, schedule_doc(9, DEVICE, []))
    return SourceSimulator(tmp_path, DEVICE, TOKEN, tls_context=ctx).start()


def fetch(sim: SourceSimulator, **settings: Unpack[TlsOptions]) -> int:
    client = SourceClient(SourceSettings(url=sim.url, device_id=DEVICE, token=TOKEN,
                                         connect_timeout_s=2, read_timeout_s=2, **settings))
    try:
        return int(client.fetch_schedule(None).document["version"])
    finally:
        client.close()


def test_private_ca(tmp_path: Path, pki: Pki) -> None:
    sim = tls_sim(tmp_path, pki, require_client_cert=False)
    try:
        assert sim.url.startswith("https://")
        assert fetch(sim, ca_file=pki["ca"]) == 9
        with pytest.raises(SourceError) as err:
            fetch(sim)  # the system trust store does not know the private CA
        assert err.value.code == "source_unreachable"
        assert "certificate" in err.value.message.lower()
        with pytest.warns(InsecureRequestWarning):
            assert fetch(sim, verify_tls=False) == 9
    finally:
        sim.stop()


def test_client_certificate(tmp_path: Path, pki: Pki) -> None:
    sim = tls_sim(tmp_path, pki, require_client_cert=True)
    try:
        client_cert, client_key = pki["client"]
        assert fetch(sim, ca_file=pki["ca"], client_cert=client_cert,
                     client_key=client_key) == 9
        with pytest.raises(SourceError) as err:
            fetch(sim, ca_file=pki["ca"])
        assert err.value.code == "source_unreachable"
    finally:
        sim.stop()
