"""Typed application state (``web.AppKey``), set up and torn down in ``cleanup_ctx``."""

from __future__ import annotations

from aiohttp import ClientSession, web

from authgate.apikeys import ApiKeyService
from authgate.config.model import Settings
from authgate.crypto.jwks_cache import JWKSCache
from authgate.metrics import Metrics
from authgate.pairs.service import PairService
from authgate.pipeline import Gate
from authgate.stores.base import Stores
from authgate.tokens.issuer import TokenIssuer
from authgate.tokens.keys import KeyManager
from authgate.tokens.revocation import RevocationList
from authgate.tokens.users import UserService
from authgate.verifiers.bpc import BPCVerifier
from authgate.verifiers.hmac_proof import HMACProofVerifier
from authgate.verifiers.jwt_bearer import JWTBearerVerifier
from authgate.web.context import ContextBuilder
from authgate.web.identity import IdentityHeaders
from authgate.web.repeat import RepeatGrants

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
KEY_RING = web.AppKey("key_ring", KeyManager)
STORES = web.AppKey("stores", Stores)
GATE = web.AppKey("gate", Gate)
IDENTITY = web.AppKey("identity", IdentityHeaders)
REQUEST_CONTEXTS = web.AppKey("request_contexts", ContextBuilder)
UPSTREAM_SESSION = web.AppKey("upstream_session", ClientSession)
JWKS_CACHES = web.AppKey("jwks_caches", tuple[JWKSCache, ...])
DRAINING = web.AppKey("draining", list[bool])
PAIRS = web.AppKey("pairs", PairService)
BPC_VERIFIER = web.AppKey("bpc_verifier", BPCVerifier)
HMAC_VERIFIER = web.AppKey("hmac_verifier", HMACProofVerifier)
API_KEYS = web.AppKey("api_keys", ApiKeyService)
REVOCATIONS = web.AppKey("revocations", RevocationList)
ISSUER = web.AppKey("issuer", TokenIssuer)
USERS = web.AppKey("users", UserService)
JWT_VERIFIER = web.AppKey("jwt_verifier", JWTBearerVerifier)
REPEATS = web.AppKey("repeats", RepeatGrants)
