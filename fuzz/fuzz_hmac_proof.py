"""The HMAC proof header (``authgate.crypto.hmac_proof``): ``parse_credentials`` (the part
after ``AGProof ``) and ``check_client_pubkey`` (``X-Client-Pubkey``).

Contract: a :class:`ProofHeader` (or the key) or :class:`ProofFormatError`, nothing else.
Round trip: the parsed header renders back (``authorization_header``) to exactly what was
parsed; the nonce, signature and proof are canonical base64 of 32 bytes.
"""

from __future__ import annotations

import base64

from harness import instrumented, main, text

with instrumented():
    from authgate.crypto.hmac_proof import (
        SCHEME,
        ProofFormatError,
        authorization_header,
        check_client_pubkey,
        parse_credentials,
    )


def _is_b64_of_32(value: str) -> bool:
    return len(base64.b64decode(value, validate=True)) == 32 and value.isascii()


def test_one_input(data: bytes) -> None:
    raw = text(data)
    if raw.startswith("pubkey:"):
        value = raw.removeprefix("pubkey:")
        try:
            key = check_client_pubkey(value)
        except ProofFormatError:
            return
        assert key == value and _is_b64_of_32(key), value
        return
    try:
        header = parse_credentials(raw)
    except ProofFormatError:
        return
    rendered = authorization_header(
        key_id=header.key_id,
        nonce=header.nonce,
        issue_ts=header.issue_ts,
        sig=header.sig,
        proof_b64=header.proof,
    )
    if rendered != f"{SCHEME} {raw}":
        raise AssertionError(f"{raw!r} renders back as {rendered!r}")
    assert all(_is_b64_of_32(v) for v in (header.nonce, header.sig, header.proof)), header
    assert header.issue_ts >= 0, header


if __name__ == "__main__":
    main(test_one_input)
