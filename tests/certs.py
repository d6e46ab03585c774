"""Client certificates made in the tests with ``cryptography`` (RFC 8705 tests)."""

from __future__ import annotations

import base64
import datetime
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


def make_cert(name: str = "client") -> bytes:
    """A self-signed client certificate, DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def client_cert(der: bytes) -> str:
    """An RFC 9440 ``Client-Cert`` value."""
    return f":{base64.b64encode(der).decode()}:"


def pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def xfcc(der: bytes, *, by: str = "spiffe://cluster.local/ns/default/sa/app") -> str:
    """One Envoy ``X-Forwarded-Client-Cert`` element set with the URL-encoded PEM."""
    return f'By={by};Hash=abc;Cert="{quote(pem(der), safe="")}";Subject="CN=client,O=a;b"'
