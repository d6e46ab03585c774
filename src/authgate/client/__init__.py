"""authgate SDK: sign BPC requests, build HMAC challenge proofs and DPoP proofs."""

from authgate.client.bpc import BPCSigner, httpx_auth, signed_request
from authgate.client.dpop import DPoPKey
from authgate.client.hmac_proof import fetch_proof_header, proof_header

__all__ = [
    "BPCSigner",
    "DPoPKey",
    "fetch_proof_header",
    "httpx_auth",
    "proof_header",
    "signed_request",
]
