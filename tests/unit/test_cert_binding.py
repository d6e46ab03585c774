"""Client certificates from a trusted proxy's headers (RFC 9440, Envoy XFCC) and the
RFC 8705 §3.1 thumbprint."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from authgate.errors import (
    AuthGateError,
    CertificateBindingMismatch,
    CertificateRequired,
    ClientCertConflict,
    ClientCertMalformed,
    ForwardedClientCertMalformed,
    TokenMalformed,
)
from authgate.verifiers.cert_binding import (
    bound_certificate,
    check_certificate,
    client_cert_der,
    forwarded_client_cert_der,
    presented_thumbprint,
    thumbprint,
)
from authgate.web.context import Doors, TrustedProxies
from tests.certs import client_cert, make_cert, pem, xfcc

DER = make_cert("one")
OTHER = make_cert("two")


def test_thumbprint_is_base64url_sha256_of_the_der() -> None:
    expected = base64.urlsafe_b64encode(hashlib.sha256(DER).digest()).rstrip(b"=").decode()
    assert thumbprint(DER) == expected
    assert len(expected) == 43 and "=" not in expected


def test_client_cert_byte_sequence() -> None:
    assert client_cert_der(client_cert(DER)) == DER
    assert client_cert_der(f"  {client_cert(DER)} ") == DER


@pytest.mark.parametrize(
    "value",
    [
        "",
        base64.b64encode(DER).decode(),  # no colons
        f":{base64.b64encode(DER).decode()}",
        f":{base64.urlsafe_b64encode(DER).decode().replace('=', '')}-_:",  # base64url
        "::",
        ":AAAA:",  # base64, not a certificate
        f":{base64.b64encode(DER + b'x').decode()}:",  # trailing data
        f":{base64.b64encode(DER).decode()}:, :{base64.b64encode(DER).decode()}:",  # two
        f":{base64.b64encode(DER).decode()[:-4]}:",  # truncated
    ],
)
def test_malformed_client_cert_is_refused(value: str) -> None:
    with pytest.raises(ClientCertMalformed) as info:
        client_cert_der(value)
    assert (info.value.status, info.value.reason) == (400, "client_cert_malformed")


def test_xfcc_reads_the_last_element_set() -> None:
    """The closest proxy appends its element set last; earlier ones came from further away."""
    value = f"{xfcc(OTHER)},{xfcc(DER, by='spiffe://x')}"
    assert forwarded_client_cert_der(value) == DER
    # Quoted commas and semicolons inside Subject do not split the sets.
    assert forwarded_client_cert_der(f'{xfcc(DER)},Hash=1;Subject="a,b;c=\\"d\\""') is None


def test_xfcc_unquoted_cert_and_case_of_the_key() -> None:
    from urllib.parse import quote

    assert forwarded_client_cert_der(f"cert={quote(pem(DER), safe='')}") == DER
    # A '+' of the PEM base64 stays '+' (URL decoding, not form decoding).
    assert forwarded_client_cert_der(f'Cert="{quote(pem(DER), safe="+/=")}"') == DER


def test_xfcc_without_cert_has_no_certificate() -> None:
    assert forwarded_client_cert_der("By=spiffe://a;Hash=abc") is None
    # nginx's Cert="$ssl_client_escaped_cert" when the client sent no certificate.
    assert forwarded_client_cert_der('Cert=""') is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"{xfcc(DER)},",  # an empty last set
        'Cert="unterminated',
        "Cert",  # no =
        "=x",
        'Cert=a"b',
        'Cert="not-a-pem"',
        'Cert="-----BEGIN CERTIFICATE-----%0AAAAA%0A-----END CERTIFICATE-----%0A"',
        'Cert="-----BEGIN CERTIFICATE-----%0A!!!!%0A-----END CERTIFICATE-----%0A"',
        f'{xfcc(DER)};Cert="x"',  # two Cert elements
    ],
)
def test_malformed_xfcc_is_refused(value: str) -> None:
    with pytest.raises(ForwardedClientCertMalformed) as info:
        forwarded_client_cert_der(value)
    assert (info.value.status, info.value.reason) == (400, "forwarded_client_cert_malformed")


def test_both_headers_must_agree() -> None:
    same = {"client-cert": client_cert(DER), "x-forwarded-client-cert": xfcc(DER)}
    assert presented_thumbprint(same) == thumbprint(DER)
    with pytest.raises(ClientCertConflict):
        presented_thumbprint(
            {"client-cert": client_cert(DER), "x-forwarded-client-cert": xfcc(OTHER)}
        )
    assert presented_thumbprint({}) is None


def test_token_binding_claim() -> None:
    x5t = thumbprint(DER)
    assert bound_certificate({"cnf": {"x5t#S256": x5t}}) == x5t
    assert bound_certificate({"cnf": {"jkt": "abc"}}) is None
    assert bound_certificate({}) is None
    for bad in (1, "", "a" * 44, x5t[:-1] + "=", [x5t]):
        with pytest.raises(TokenMalformed):
            bound_certificate({"cnf": {"x5t#S256": bad}})


def test_check_certificate() -> None:
    x5t = thumbprint(DER)
    check_certificate(x5t, x5t)
    with pytest.raises(CertificateRequired):
        check_certificate(x5t, None)
    with pytest.raises(CertificateBindingMismatch):
        check_certificate(x5t, thumbprint(OTHER))


def _doors(trusted: str) -> Doors:
    return Doors.build(
        trusted=TrustedProxies([trusted]), max_body_bytes=1024, identity_check=lambda _: None
    )


def _request(peer: str, headers: dict[str, str]) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 4000) if name == "peername" else default
    )
    return make_mocked_request("GET", "/api", headers=headers, transport=transport)


@pytest.mark.parametrize(
    "header",
    [lambda d: {"Client-Cert": client_cert(d)}, lambda d: {"X-Forwarded-Client-Cert": xfcc(d)}],
    ids=["client-cert", "xfcc"],
)
def test_the_sidecar_believes_the_certificate_from_a_trusted_proxy_only(
    header: Callable[[bytes], dict[str, str]],
) -> None:
    headers = {"Host": "app.test", **header(DER)}
    trusted = _doors("10.0.0.0/8").sidecar.context(_request("10.1.2.3", headers), "r")
    assert trusted.client_cert == thumbprint(DER)
    untrusted = _doors("10.0.0.0/8").sidecar.context(_request("192.0.2.9", headers), "r")
    assert untrusted.client_cert is None


def test_a_malformed_header_from_an_untrusted_peer_is_ignored_not_parsed() -> None:
    headers = {"Host": "app.test", "Client-Cert": ":AAAA:"}
    assert (
        _doors("10.0.0.0/8").sidecar.context(_request("192.0.2.9", headers), "r").client_cert
        is None
    )
    with pytest.raises(AuthGateError) as info:
        _doors("10.0.0.0/8").sidecar.context(_request("10.0.0.1", headers), "r")
    assert info.value.reason == "client_cert_malformed"


def test_client_cert_is_single_valued() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict(
        [("Host", "app.test"), ("Client-Cert", client_cert(DER)), ("Client-Cert", client_cert(DER))]
    )
    with pytest.raises(AuthGateError) as info:
        _doors("10.0.0.0/8").sidecar.context(_request("10.0.0.1", headers), "r")  # type: ignore[arg-type]
    assert info.value.reason == "malformed_header"
