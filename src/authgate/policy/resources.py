"""Protected resources (RFC 9728) and resource indicators (RFC 8707), compiled once.

A rule with a ``resource`` section guards a protected resource: its identifier is the
``aud`` a JWT must carry on that rule (RFC 8707 §2, RFC 9068 §4), the value a client names
in ``resource`` at ``/token``, and the key of the metadata document served at
``/.well-known/oauth-protected-resource`` with the identifier's path appended
(RFC 9728 §3.1). Several rules may name one identifier (one resource, several routes);
the first such rule's section describes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authgate.config.model import ResourceSettings, Rule
from authgate.errors import OAuthInvalidTarget

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_key(identifier: str) -> tuple[str, str]:
    """``(host, path)`` under which the identifier's metadata is found: the lower-cased
    host (with port) and the path appended to :data:`WELL_KNOWN` (``""`` for the root)."""
    parts = urlsplit(identifier)
    path = "" if parts.path in ("", "/") else parts.path
    return parts.netloc.lower(), path


def metadata_url(identifier: str) -> str:
    """The metadata URL of ``identifier`` (RFC 9728 §3.1: the well-known segment goes
    between the host and the path)."""
    parts = urlsplit(identifier)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{metadata_key(identifier)[1]}"


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    """What the gate and the challenges need of a rule's resource."""

    identifier: str
    metadata_url: str

    @classmethod
    def of(cls, settings: ResourceSettings) -> ProtectedResource:
        """The compiled form of a rule's ``resource`` section."""
        return cls(identifier=settings.identifier, metadata_url=metadata_url(settings.identifier))


def resource_documents(
    rules: Iterable[Rule],
    *,
    issuer: str,
    extra: Mapping[str, Any] | None = None,
    dpop_algorithms: Sequence[str] = (),
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every configured resource's RFC 9728 §2 metadata, keyed by :func:`metadata_key`;
    ``extra`` adds members to every document; ``dpop_algorithms`` are listed as
    ``dpop_signing_alg_values_supported`` where the rule takes DPoP (``dpop`` not off)."""
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    for rule in rules:
        section = rule.resource
        if section is None:
            continue
        key = metadata_key(section.identifier)
        if key in documents:
            continue
        scopes = section.scopes_supported
        document: dict[str, Any] = {
            "resource": section.identifier,
            "authorization_servers": list(section.authorization_servers or (issuer,)),
            "scopes_supported": sorted(rule.scopes if scopes is None else scopes),
            "bearer_methods_supported": ["header"],
        }
        if section.resource_name is not None:
            document["resource_name"] = section.resource_name
        if dpop_algorithms and rule.dpop != "off":
            document["dpop_signing_alg_values_supported"] = list(dpop_algorithms)
        document.update(extra or {})
        documents[key] = document
    return documents


def resource_identifiers(rules: Iterable[Rule]) -> frozenset[str]:
    """The identifiers of every configured resource."""
    return frozenset(r.resource.identifier for r in rules if r.resource is not None)


def requested_resource(value: str, served: frozenset[str]) -> str:
    """The ``resource`` parameter of a token request, checked (RFC 8707 §2): an absolute
    URI without a fragment that names a configured resource, else ``invalid_target``."""
    try:
        parts = urlsplit(value)
    except ValueError:  # an unbalanced IPv6 bracket
        parts = urlsplit("")
    if not parts.scheme or not parts.netloc or "#" in value:
        raise OAuthInvalidTarget("resource must be an absolute URI without a fragment")
    if value not in served:
        raise OAuthInvalidTarget("resource is not a protected resource served here")
    return value
