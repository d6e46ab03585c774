"""authgate: an authentication gateway for BPC signed requests, bearer JWTs and HMAC proofs."""

__version__ = "0.1.0"
