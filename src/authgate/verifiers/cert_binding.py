"""Certificate-bound access tokens (RFC 8705 §3) where TLS ends at a proxy.

The proxy that terminated mutual TLS passes the client's certificate on in a header:
``Client-Cert`` (RFC 9440 §2.2: an RFC 8941 byte sequence, ``:base64(DER):``) or Envoy's
``X-Forwarded-Client-Cert`` (the ``Cert="<URL-encoded PEM>"`` element of the last element
set, the one the closest proxy added). The doors believe these headers only from a trusted
proxy (``web/context.py``) and keep the certificate's thumbprint only: the SHA-256 of its DER
encoding, base64url without padding, as a token's ``cnf["x5t#S256"]`` names it (§3.1).

Parsing is strict: a header that is not exactly one well-formed X.509 certificate is a
:class:`~authgate.errors.BadRequest` leaf naming the header, never an absent certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authgate.errors import (
    CertificateBindingMismatch,
    CertificateRequired,
    ClientCertConflict,
    ClientCertMalformed,
    ForwardedClientCertMalformed,
    TokenMalformed,
)

CLIENT_CERT = "client-cert"
FORWARDED_CLIENT_CERT = "x-forwarded-client-cert"
# RFC 8941 §3.3.5 byte sequence: base64 (with padding) between colons.
_BYTE_SEQUENCE = re.compile(r":([A-Za-z0-9+/]*={0,2}):")
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----\s*"
)


def thumbprint(der: bytes) -> str:
    """The RFC 8705 §3.1 ``x5t#S256`` of a DER certificate (base64url SHA-256, unpadded)."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _certificate(der: bytes) -> bool:
    """Whether ``der`` is exactly one DER X.509 certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.public_bytes(Encoding.DER) == der
    except ValueError:
        return False


def client_cert_der(value: str) -> bytes:
    """The DER certificate of an RFC 9440 ``Client-Cert`` value (an sf-binary)."""
    match = _BYTE_SEQUENCE.fullmatch(value.strip(" \t"))
    if match is None or not match.group(1):
        raise ClientCertMalformed("Client-Cert is not an RFC 8941 byte sequence")
    try:
        der = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise ClientCertMalformed("Client-Cert is not valid base64") from None
    if not _certificate(der):
        raise ClientCertMalformed("Client-Cert is not a DER X.509 certificate")
    return der


def _split(value: str, separator: str) -> list[str]:
    """``value`` split at ``separator`` outside double quotes (``\\`` escapes in quotes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or escaped:
        raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert has an unterminated quote")
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if '"' in value:
        raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert has a stray quote")
    return value


def forwarded_client_cert_der(value: str) -> bytes | None:
    """The DER certificate of the ``Cert`` element of an XFCC value's last element set;
    ``None`` when that set has no ``Cert`` (the proxy forwarded only a hash or a subject)."""
    last = _split(value, ",")[-1].strip(" \t")
    if not last:
        raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert has an empty element set")
    cert: str | None = None
    for element in _split(last, ";"):
        key, sep, raw = element.strip(" \t").partition("=")
        if not sep or not key:
            raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert has an element without =")
        if key.lower() == "cert":
            if cert is not None:
                raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert has two Cert elements")
            cert = _unquote(raw)
        else:
            _unquote(raw)
    if not cert:
        # Absent, or empty: nginx's `Cert="$ssl_client_escaped_cert"` without a certificate.
        return None
    match = _PEM.fullmatch(unquote(cert, errors="strict"))
    if match is None:
        raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert Cert is not a PEM certificate")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ForwardedClientCertMalformed("X-Forwarded-Client-Cert Cert is not base64") from None
    if not _certificate(der):
        raise ForwardedClientCertMalformed(
            "X-Forwarded-Client-Cert Cert is not an X.509 certificate"
        )
    return der


def presented_thumbprint(headers: Mapping[str, str]) -> str | None:
    """The thumbprint of the certificate a trusted proxy forwarded, or ``None``.

    Both headers naming different certificates is refused: which one the TLS peer presented
    would be a guess.
    """
    found: str | None = None
    value = headers.get(CLIENT_CERT)
    if value is not None:
        found = thumbprint(client_cert_der(value))
    value = headers.get(FORWARDED_CLIENT_CERT)
    if value is not None:
        der = forwarded_client_cert_der(value)
        if der is not None:
            other = thumbprint(der)
            if found is not None and found != other:
                raise ClientCertConflict()
            found = other
    return found


def bound_certificate(payload: Mapping[str, Any]) -> str | None:
    """The token's certificate binding, ``cnf["x5t#S256"]`` (RFC 8705 §3.1), or ``None``."""
    cnf = payload.get("cnf")
    if not isinstance(cnf, dict):
        return None  # bound_key (DPoP) refuses a cnf that is not an object
    x5t = cnf.get("x5t#S256")
    if x5t is None:
        return None
    if not isinstance(x5t, str) or _THUMBPRINT.fullmatch(x5t) is None:
        raise TokenMalformed("claim 'cnf.x5t#S256' must be a SHA-256 thumbprint")
    return x5t


def check_certificate(bound: str, presented: str | None) -> None:
    """Accept a certificate-bound token only with its certificate (RFC 8705 §3)."""
    if presented is None:
        raise CertificateRequired()
    if not hmac.compare_digest(bound, presented):
        raise CertificateBindingMismatch()
