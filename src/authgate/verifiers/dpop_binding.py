"""What the bearer verifier needs of DPoP (RFC 9449 §7.1), apart from the proof checks.

The ``Authorization: DPoP`` credential, a token's binding (``cnf.jkt``), the refusal of a
spent proof, and the Protocols the proof checker (``verifiers/dpop_proof.py``, which uses
the bearer verifier's signature check) satisfies, so the import goes one way only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from authgate.errors import DPoPProofReplayed, TokenMalformed
from authgate.models import RequestContext


@dataclass(frozen=True, slots=True)
class DPoPCredential:
    """``Authorization: DPoP <token>`` and the request's ``DPoP`` proof (``None``: absent)."""

    token: str
    proof: str | None


def dpop_credential(header: str, proof: str | None) -> DPoPCredential | None:
    """The token and proof of an ``Authorization: DPoP`` header; ``None`` for any other
    scheme."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "dpop":
        return None
    token = rest.strip(" ")
    if not token:
        raise TokenMalformed("empty DPoP token")
    return DPoPCredential(token=token, proof=proof)


def bound_key(payload: Mapping[str, Any]) -> str | None:
    """The token's DPoP binding, ``cnf.jkt`` (RFC 9449 §6.1), or ``None``."""
    cnf = payload.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise TokenMalformed("claim 'cnf' must be an object")
    jkt = cnf.get("jkt")
    if jkt is None:
        return None
    if not isinstance(jkt, str) or not 1 <= len(jkt) <= 128 or not jkt.isascii():
        raise TokenMalformed("claim 'cnf.jkt' must be a thumbprint string")
    return jkt


class CheckedProof(Protocol):
    """A DPoP proof that passed its checks (``verifiers.dpop_proof.DPoPProof``)."""

    @property
    def jkt(self) -> str:
        """The RFC 7638 thumbprint of the proof's key."""
        ...

    @property
    def jti(self) -> str:
        """The proof's id, spent once."""
        ...

    @property
    def iat(self) -> int:
        """When the proof was made."""
        ...


class ProofChecks(Protocol):
    """What checks DPoP proofs (``verifiers.dpop_proof.ProofChecker``; a Protocol here so
    that module may use this one's signature check without an import cycle)."""

    @property
    def window_seconds(self) -> int:
        """How far a proof's ``iat`` may be from now."""
        ...

    def check_request(
        self, proof: str, context: RequestContext, *, now: float, access_token: str
    ) -> CheckedProof:
        """The checked proof, or a ``DPoPError`` leaf."""
        ...


async def proof_refused(outcome: str) -> Exception:
    """A proof ``jti`` already spent, or spent before the store's epoch (RFC 9449 §11.1)."""
    return DPoPProofReplayed(detail=f"proof jti {outcome}")
