"""authgate SDK: sign BPC requests (``authgate.client.bpc``)."""

from authgate.client.bpc import BPCSigner, httpx_auth, signed_request

__all__ = ["BPCSigner", "httpx_auth", "signed_request"]
