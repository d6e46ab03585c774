"""Redis over TLS for the tests: certificates made here, ``redis-server`` started with TLS only.

:func:`make_pki` writes a CA, a server certificate for ``127.0.0.1`` and ``localhost``
(usable as a client certificate too: cluster nodes and sentinels connect to each other with
it), a client certificate, a certificate for another host name, and a second CA that signed
none of them, all into one directory. :class:`TLSNode` is a :class:`~tests.redis_topology.
RedisNode` that listens with TLS only (``--port 0 --tls-port <port>``); :class:`TLSClusterSet`
is a Cluster of such nodes (``--tls-cluster yes``). Every process is stopped by PID, like
those of :mod:`tests.redis_topology`; the shared Redis on 127.0.0.1:6379 is never touched.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.redis_topology import START_TIMEOUT_SECONDS, ClusterSet, RedisNode, wait_until


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    """Everything :func:`make_pki` wrote."""

    ca: Path
    server: CertPair
    client: CertPair
    other_host: CertPair  # signed by ``ca`` for other.example only
    wrong_ca: Path  # a CA that signed nothing here


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _ca(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _leaf(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )  # fmt: skip
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path = directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, _write_key(directory / f"{name}-key.pem", key))


def make_pki(directory: Path) -> PKI:
    """A CA, server, client and other-host certificates, and an unrelated CA, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = _ca(directory, "test-ca")
    wrong_ca, _, _ = _ca(directory, "wrong-ca")
    return PKI(
        ca=ca,
        server=_leaf(
            directory, "server", ca_cert, ca_key, dns=["localhost"], ips=["127.0.0.1", "::1"]
        ),
        client=_leaf(directory, "authgate-client", ca_cert, ca_key),
        other_host=_leaf(directory, "other-host", ca_cert, ca_key, dns=["other.example"]),
        wrong_ca=wrong_ca,
    )


def tls_args(
    pki: PKI, port: int, *, auth_clients: bool, server: CertPair | None = None
) -> list[str]:
    """``redis-server`` arguments: TLS only on ``port``, signed by the test CA."""
    pair = server or pki.server
    return [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(pair.cert),
        "--tls-key-file", str(pair.key),
        "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "yes" if auth_clients else "no",
    ]  # fmt: skip


class TLSNode(RedisNode):
    """A ``redis-server`` (or sentinel) that accepts TLS connections only.

    The test's own probes (:meth:`ping`, :meth:`client`) present the client certificate
    and, when ``password`` is set, authenticate with it.
    """

    def __init__(
        self,
        directory: Path,
        pki: PKI,
        *,
        auth_clients: bool = False,
        server: CertPair | None = None,
        password: str | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
        sentinel_config: str | None = None,
    ) -> None:
        super().__init__(directory, port=port, sentinel_config=sentinel_config)
        self.pki = pki
        self.password = password
        self.args = tls_args(pki, self.port, auth_clients=auth_clients, server=server)
        self.args += list(args)

    @property
    def url(self) -> str:
        """Its ``rediss://`` URL (no credentials)."""
        return f"rediss://127.0.0.1:{self.port}/0"

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.check_hostname = False  # the probe checks the server is up, not its name
        context.load_cert_chain(str(self.pki.client.cert), str(self.pki.client.key))
        return context

    def ping(self) -> bool:
        """Whether the server answers PING over TLS within half a second (a NOAUTH error
        counts as an answer)."""
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                self._context().wrap_socket(raw) as sock,
            ):
                sock.sendall(b"PING\r\n")
                reply = sock.recv(16)
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def client(self, *, timeout: float = 2.0) -> redis.Redis:
        """A plain synchronous TLS client of this node (close it after use)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            ssl=True,
            ssl_ca_certs=str(self.pki.ca),
            ssl_certfile=str(self.pki.client.cert),
            ssl_keyfile=str(self.pki.client.key),
            ssl_check_hostname=False,
        )


def wait_for_sentinel(sentinel: TLSNode, service: str, master_port: int) -> None:
    """Block until ``sentinel`` names ``master_port`` as the master of ``service``."""

    def knows() -> bool:
        reply: Any = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
        return reply is not None and int(reply[1]) == master_port

    wait_until(knows, timeout=START_TIMEOUT_SECONDS, what="sentinel knows the master")


class TLSClusterSet(ClusterSet):
    """A Cluster of TLS-only nodes (``--tls-cluster yes``: the bus and the announced ports
    are TLS too); masters only unless ``replicas_per_master`` says otherwise."""

    def __init__(
        self, pki: PKI, *, masters: int = 3, replicas_per_master: int = 0, auth_clients: bool = True
    ) -> None:
        super().__init__(masters=masters, replicas_per_master=replicas_per_master)
        self.pki = pki
        plain = self.nodes
        self.nodes = [
            TLSNode(
                self.directory,
                pki,
                port=node.port,
                auth_clients=auth_clients,
                args=[*node.args, "--tls-cluster", "yes", "--tls-replication", "yes"],
            )
            for node in plain
        ]

    def cli_flags(self) -> list[str]:
        """``redis-cli`` over TLS with the test client's certificate."""
        return [
            "--tls",
            "--cacert", str(self.pki.ca),
            "--cert", str(self.pki.client.cert),
            "--key", str(self.pki.client.key),
        ]  # fmt: skip


__all__ = ["PKI", "CertPair", "TLSClusterSet", "TLSNode", "make_pki", "tls_args"]
