"""OAuth 2.0 endpoints: ``POST /token`` (RFC 6749), ``/revoke`` (RFC 7009), ``/introspect``
(RFC 7662) and authorization-server metadata (RFC 8414).

Clients are API keys: ``client_id`` is the key id and ``client_secret`` the key (the whole
``agk_...`` string, or its secret part), by HTTP Basic or in the form, never both.
Parameters may not repeat (RFC 6749 §3.2); bodies are form-encoded and bounded. Errors
are RFC 6749 §5.2 bodies, and nothing is minted on any error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from authgate.apikeys import ApiKey
from authgate.errors import (
    AuthGateError,
    DPoPError,
    OAuthInsufficientScope,
    OAuthInvalidClient,
    OAuthInvalidGrant,
    OAuthInvalidRequest,
    OAuthInvalidScope,
    OAuthUnauthorizedClient,
    OAuthUnsupportedGrantType,
    OAuthUnsupportedTokenType,
)
from authgate.models import CredentialType, RequestContext
from authgate.outbound import read_bounded
from authgate.policy.limits import rate_limited
from authgate.policy.resources import requested_resource
from authgate.policy.rules import EXCHANGE_RULE
from authgate.tokens.issuer import introspection, scopes_from
from authgate.verifiers.dpop_proof import normalize_htu, request_url
from authgate.web.callers import caller, own_context
from authgate.web.problem import Routes
from authgate.web.state import SERVICES, SETTINGS, STORES
from authgate.web.token_exchange import GRANT as TOKEN_EXCHANGE_GRANT
from authgate.web.token_exchange import exchange

MAX_FORM_BYTES = 16_384
BPC_GRANT = "urn:authgate:grant-type:bpc"
GRANTS = ("client_credentials", "refresh_token", "password", BPC_GRANT, TOKEN_EXCHANGE_GRANT)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def read_form(request: web.Request, raw: bytes | None = None) -> dict[str, str]:
    """The form parameters; refuses other content types, oversize bodies and repeats."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthInvalidRequest("Content-Type must be application/x-www-form-urlencoded")
    if raw is None:
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise OAuthInvalidRequest("request body too large")
        raw = await read_bounded(request.content, MAX_FORM_BYTES)
    if len(raw) > MAX_FORM_BYTES:
        raise OAuthInvalidRequest("request body too large")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise OAuthInvalidRequest("request body is not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthInvalidRequest(f"parameter {name!r} appears more than once")
        form[name] = value
    return form


def _basic(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise OAuthInvalidClient("malformed Basic credentials", basic_challenge=True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthInvalidClient("malformed Basic credentials", basic_challenge=True)
    return unquote(client_id), unquote(secret)


async def authenticate_client(
    request: web.Request, form: dict[str, str], *, required: bool
) -> ApiKey | None:
    """The calling client (an API key), ``None`` when none was presented and none is required."""
    basic = _basic(request)
    in_form = "client_id" in form or "client_secret" in form
    if basic is not None and in_form:
        raise OAuthInvalidRequest("use HTTP Basic or form credentials, not both")
    if basic is None and not in_form:
        if required:
            raise OAuthInvalidClient("client authentication required", basic_challenge=True)
        return None
    client_id, secret = (
        basic if basic is not None else (form.get("client_id", ""), form.get("client_secret", ""))
    )
    raw = secret if secret.startswith("agk_") else f"agk_{client_id}_{secret}"
    key = await request.app[SERVICES].api_keys.authenticate(raw)
    if key is None or key.key_id != client_id:
        raise OAuthInvalidClient(
            "unknown client or wrong secret", basic_challenge=basic is not None
        )
    return key


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=_NO_STORE)


async def proof_key(request: web.Request, context: RequestContext | None) -> str | None:
    """The key (RFC 7638 thumbprint) of the request's DPoP proof, checked and its ``jti``
    spent (RFC 9449 §5); ``None`` without a proof, or with DPoP off (the header is then
    ignored and a bearer token issued, as §5 asks of servers without DPoP).

    ``htu`` may name the token endpoint as this request reached it (the sidecar door's
    reconstruction) or as the metadata advertises it (``jwt.issuer`` + ``/token``).
    """
    proofs = request.app[SERVICES].token_proofs
    if proofs is None or "DPoP" not in request.headers:
        return None
    context = context or own_context(request)  # refuses a repeated DPoP header
    urls = {request_url(context.scheme, context.host, context.path)}
    # An issuer that is not a URL advertises no token endpoint URL to match.
    with contextlib.suppress(DPoPError):
        urls.add(normalize_htu(request.app[SETTINGS].jwt.issuer.rstrip("/") + "/token"))
    return await proofs.key_of(
        context.headers.get("dpop", ""), method=context.method, urls=urls - {""}
    )


# RFC 8705 §3.4's client metadata name, as a /token parameter: "true" asks for a token
# bound to the client certificate the trusted proxy forwards.
CERTIFICATE_BOUND = "tls_client_certificate_bound_access_tokens"


def certificate_key(
    request: web.Request, form: dict[str, str], context: RequestContext | None
) -> str | None:
    """The ``x5t#S256`` to bind the access token to (RFC 8705 §3), or ``None``.

    The certificate is the one a trusted proxy forwards (``Client-Cert`` or
    ``X-Forwarded-Client-Cert``, read by the sidecar door): from any other peer there is
    none, so asking for a binding then is refused rather than answered with a bearer token.
    """
    mode = request.app[SETTINGS].tokens.certificate_binding
    asked = form.get(CERTIFICATE_BOUND)
    if asked not in (None, "true", "false"):
        raise OAuthInvalidRequest(f"{CERTIFICATE_BOUND} must be true or false")
    if mode == "off" or (mode == "requested" and asked != "true"):
        if asked == "true":
            raise OAuthInvalidRequest("certificate-bound tokens are not issued here")
        return None
    headers = request.headers
    cert = None
    if "Client-Cert" in headers or "X-Forwarded-Client-Cert" in headers:
        cert = (context or own_context(request)).client_cert
    if cert is None and asked == "true":
        raise OAuthInvalidRequest(
            f"{CERTIFICATE_BOUND} needs a client certificate forwarded by a trusted proxy"
        )
    return cert


async def token(request: web.Request) -> web.Response:
    """``POST /token``."""
    app = request.app
    settings = app[SETTINGS]
    issuer = app[SERVICES].issuer
    bpc_context = None
    raw_body: bytes | None = None
    if "X-BPC-Pair-ID" in request.headers:
        # The BPC exchange grant: the signed body hash covers the form, so read it once.
        bpc_context = own_context(request)
        if bpc_context.read_body is not None:
            raw_body = await bpc_context.read_body()
    form = await read_form(request, raw_body)
    grant = form.get("grant_type")
    if not grant:
        raise OAuthInvalidRequest("grant_type is required")
    if grant not in GRANTS or (grant == "password" and not settings.tokens.password_grant):
        raise OAuthUnsupportedGrantType(f"grant_type {grant!r} is not supported here")
    if grant == TOKEN_EXCHANGE_GRANT:
        key = await authenticate_client(request, form, required=True)
        assert key is not None
        # Like every grant: a DPoP proof or a requested certificate binding binds the
        # exchanged token (the subject token itself may not be bound: token_exchange.py).
        x5t = certificate_key(request, form, None)
        jkt = await proof_key(request, None)
        return _json(await exchange(request, form, key, jkt=jkt, x5t=x5t))
    requested = scopes_from(form.get("scope"))
    audience = form.get("audience") or None
    resource = form.get("resource")
    if resource is not None:
        # RFC 8707 §2: the token's audience is the protected resource the client names.
        if audience is not None:
            raise OAuthInvalidRequest("give resource or audience, not both")
        audience = requested_resource(resource, issuer.resources)
    if audience is not None:
        issuer.audience(audience)  # refused before any grant is spent (a refresh token)
    x5t = certificate_key(request, form, bpc_context)
    jkt = await proof_key(request, bpc_context)

    if grant == "client_credentials":
        key = await authenticate_client(request, form, required=True)
        assert key is not None
        if requested is not None and not requested <= key.scopes:
            raise OAuthInvalidScope("requested scope exceeds the client's")
        issued = await issuer.issue(
            subject=f"apikey:{key.key_id}",
            scopes=key.scopes if requested is None else requested,
            audience=audience,
            extra={"client_id": key.key_id},
            minted_by=f"client_credentials:{key.key_id}",
            jkt=jkt,
            x5t=x5t,
        )
    elif grant == "refresh_token":
        client = await authenticate_client(request, form, required=False)
        refresh = form.get("refresh_token")
        if not refresh:
            raise OAuthInvalidRequest("refresh_token is required")
        issued = await issuer.redeem_refresh(
            refresh,
            scopes=requested,
            client_id=client.key_id if client else None,
            audience=audience,
            jkt=jkt,
            x5t=x5t,
        )
    elif grant == "password":
        username, password = form.get("username"), form.get("password")
        if not username or not password:
            raise OAuthInvalidRequest("username and password are required")
        await charge_password_attempt(request)
        user = await app[SERVICES].users.authenticate(username, password)
        if user is None:
            raise OAuthInvalidGrant("wrong username or password")
        if requested is not None and not requested <= user.scopes:
            raise OAuthInvalidScope("requested scope exceeds the user's")
        issued = await issuer.issue(
            subject=f"user:{user.username}",
            scopes=user.scopes if requested is None else requested,
            audience=audience,
            refresh=True,
            extra={"role": user.role} if user.role else None,
            minted_by=f"password:{user.username}",
            jkt=jkt,
            x5t=x5t,
            refresh_jkt=jkt,  # a public client: its refresh token is bound too
        )
    else:
        if bpc_context is None:
            raise OAuthInvalidRequest("the BPC grant needs a BPC-signed request")
        if "x-bpc-pair-id" not in bpc_context.headers:
            raise OAuthInvalidRequest("the BPC grant needs a BPC-signed request")
        try:
            principal = await caller(request, EXCHANGE_RULE, bpc_context)
        except AuthGateError as exc:
            raise OAuthInvalidGrant(f"BPC signature refused: {exc.reason}") from None
        if principal.credential_type is not CredentialType.BPC:  # pragma: no cover
            raise OAuthInvalidGrant("not a BPC principal")
        if requested is not None and not requested <= principal.scopes:
            raise OAuthInvalidScope("requested scope exceeds the pair's")
        issued = await issuer.issue(
            subject=principal.subject,
            scopes=principal.scopes if requested is None else requested,
            audience=audience,
            ttl_seconds=settings.tokens.bpc_exchange_ttl_seconds,
            extra={
                "pair_id": principal.credential_id,
                "cnf": {"bpc": principal.claims.get("fingerprint")},
            },
            minted_by=f"bpc:{principal.credential_id}",
            jkt=jkt,
            x5t=x5t,
        )
    return _json(issued.response())


async def _claims_of(
    request: web.Request, token_value: str, hint: str | None
) -> dict[str, Any] | None:
    issuer = request.app[SERVICES].issuer
    kinds = ["refresh", "access"] if hint == "refresh_token" else ["access", "refresh"]
    for kind in kinds:
        try:
            return await issuer.decode(token_value, kind=kind)
        except AuthGateError:
            continue
    return None


def _is_admin(request: web.Request, key: ApiKey) -> bool:
    return request.app[SETTINGS].tokens.admin_scope in key.scopes


async def revoke(request: web.Request) -> web.Response:
    """``POST /revoke`` (RFC 7009): a client revokes its own tokens; admins any."""
    form = await read_form(request)
    key = await authenticate_client(request, form, required=True)
    assert key is not None
    value = form.get("token")
    if not value:
        raise OAuthInvalidRequest("token is required")
    hint = form.get("token_type_hint")
    if hint not in (None, "access_token", "refresh_token"):
        raise OAuthUnsupportedTokenType(f"token_type_hint {hint!r} is not supported")
    claims = await _claims_of(request, value, hint)
    if claims is None:
        return _json({})  # RFC 7009 §2.2: an invalid token is not an error
    if claims.get("client_id") != key.key_id and not _is_admin(request, key):
        raise OAuthUnauthorizedClient("the token was not issued to this client")
    await request.app[SERVICES].issuer.revoke_claims(claims)
    return _json({})


async def introspect(request: web.Request) -> web.Response:
    """``POST /introspect`` (RFC 7662), for clients holding the introspection scope."""
    form = await read_form(request)
    key = await authenticate_client(request, form, required=True)
    assert key is not None
    scopes = request.app[SETTINGS].tokens
    if not ({scopes.introspect_scope, scopes.admin_scope} & key.scopes):
        raise OAuthInsufficientScope(f"introspection needs scope {scopes.introspect_scope}")
    value = form.get("token")
    if not value:
        raise OAuthInvalidRequest("token is required")
    claims = await _claims_of(request, value, form.get("token_type_hint"))
    if claims is None or await request.app[SERVICES].issuer.is_revoked(claims):
        return _json({"active": False})
    return _json(introspection(claims))


def _metadata(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    base = settings.jwt.issuer.rstrip("/")
    grants = ["client_credentials", "refresh_token", BPC_GRANT, TOKEN_EXCHANGE_GRANT]
    if settings.tokens.password_grant:
        grants.append("password")
    auth_methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": settings.jwt.issuer,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "revocation_endpoint": f"{base}/revoke",
        "introspection_endpoint": f"{base}/introspect",
        "grant_types_supported": grants,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": sorted(settings.jwt.algorithms),
        **(
            {"dpop_signing_alg_values_supported": list(settings.jwt.dpop.algorithms)}
            if settings.jwt.dpop.enabled
            else {}
        ),
        # RFC 8705 §3.3: certificate-bound access tokens are issued here.
        **(
            {"tls_client_certificate_bound_access_tokens": True}
            if settings.tokens.certificate_binding != "off"
            else {}
        ),
    }


async def authorization_server_metadata(request: web.Request) -> web.Response:
    """RFC 8414 metadata."""
    return web.json_response(_metadata(request), headers={"Cache-Control": "public, max-age=3600"})


async def openid_configuration(request: web.Request) -> web.Response:
    """The subset of OpenID discovery that applies (no authorization endpoint, no id tokens)."""
    body = _metadata(request)
    body["subject_types_supported"] = ["public"]
    body["id_token_signing_alg_values_supported"] = sorted(
        {k.alg for k in request.app[SERVICES].keys.keys}
    )
    return web.json_response(body, headers={"Cache-Control": "public, max-age=3600"})


async def charge_password_attempt(request: web.Request) -> None:
    """Spend one of the client address's password attempts, or refuse with 429.

    Every attempt counts, right or wrong, before the argon2 verification: it bounds both
    guessing and the CPU an address can make authgate spend (``/token`` and pico ``/login``
    share the budget, ``tokens.password_attempts_per_minute``).
    """
    app = request.app
    client_ip = own_context(request).client_ip
    budget = app[SETTINGS].tokens.password_attempts_per_minute
    result = await app[STORES].rate_limits.hit(
        f"password:{client_ip}", limit=budget, period_ms=60_000
    )
    if not result.allowed:
        raise rate_limited(result, "too many password attempts from this address", period_ms=60_000)


def add_routes(routes: Routes) -> None:
    """Register the OAuth endpoints."""
    routes.post("/token", token)
    routes.post("/revoke", revoke)
    routes.post("/introspect", introspect)
    routes.get("/.well-known/oauth-authorization-server", authorization_server_metadata)
    routes.get("/.well-known/openid-configuration", openid_configuration)
