"""Build ``AGProof`` headers from an API key and a server challenge.

::

    header = await fetch_proof_header(session, "https://gw", api_key, "GET", "/api/x?y=1")
    await session.get("https://gw/api/x?y=1", headers={"Authorization": header})

The key never leaves the client: only an HMAC over the request and a one-time challenge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authgate.apikeys import parse_raw_key
from authgate.crypto.bpc_wire import body_hash
from authgate.crypto.hmac_proof import (
    DEFAULT_PREFIX,
    authorization_header,
    proof,
    proof_message,
)

if TYPE_CHECKING:
    import aiohttp


def proof_header(
    challenge: Mapping[str, Any],
    api_key: str,
    method: str,
    target: str,
    *,
    client_pubkey: str = "",
    body: bytes | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The ``Authorization`` value; pass ``body`` only for routes that bind the body."""
    parsed = parse_raw_key(api_key)
    if parsed is None:
        raise ValueError("not an authgate API key (agk_<id>_<secret>)")
    key_id = parsed[0]
    nonce = str(challenge["nonce"])
    issue_ts = int(challenge["issue_ts"])
    message = proof_message(
        method=method,
        target=target,
        nonce=nonce,
        issue_ts=issue_ts,
        key_id=key_id,
        client_pubkey=client_pubkey,
        body_hash=None if body is None else body_hash(body),
        prefix=prefix,
    )
    return authorization_header(
        key_id=key_id,
        nonce=nonce,
        issue_ts=issue_ts,
        sig=str(challenge["sig"]),
        proof_b64=proof(api_key, message),
    )


async def fetch_proof_header(
    session: aiohttp.ClientSession,
    base_url: str,
    api_key: str,
    method: str,
    target: str,
    **kwargs: Any,
) -> str:
    """Fetch a challenge from ``base_url`` and build the header for one request."""
    async with session.get(base_url.rstrip("/") + "/challenge") as resp:
        resp.raise_for_status()
        challenge = await resp.json()
    return proof_header(challenge, api_key, method, target, **kwargs)
