"""authgate SDK: sign BPC requests and build HMAC challenge proofs."""

from authgate.client.bpc import BPCSigner, httpx_auth, signed_request
from authgate.client.hmac_proof import fetch_proof_header, proof_header

__all__ = ["BPCSigner", "fetch_proof_header", "httpx_auth", "proof_header", "signed_request"]
