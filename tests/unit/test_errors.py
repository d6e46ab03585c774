"""The one error tree (``authgate.errors``) holds what its docstring promises.

* every class has a snake_case ``reason`` and a 4xx/5xx ``status``;
* a reason is defined by one class per namespace (authgate's, and OAuth's): a subclass that
  keeps its parent's reason is a refinement and keeps its status too;
* a *group* (a class whose subclasses carry their own reasons) is never raised;
* every ``AuthGateError`` is defined in ``errors.py``, and the exception classes defined
  anywhere else are exactly the internal ones listed here, each with where it is caught;
* ``web/problem.py`` decides by class and attribute, never by comparing a reason string.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from authgate import errors
from authgate.errors import AuthGateError, OAuthError
from authgate.web.problem import problem_response

SRC = Path(__file__).resolve().parents[2] / "src" / "authgate"
SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

# Exceptions deliberately kept outside the tree: none is a refusal, and each is caught at
# one place per kind of input (or is an operator fault answered as a logged 500).
INTERNAL = {
    "authgate.crypto.bpc_wire.WireError": "verifiers/bpc.py maps it to invalid_signed_data "
    "or signature_invalid; pairs/records.py to PairRecordError",
    "authgate.crypto.b64url.NotBase64url": "one except per caller: crypto/jws.py "
    "(token_malformed), crypto/bpc_wire.py (WireError)",
    "authgate.crypto.b64url.NotCanonical": "a NotBase64url the same callers name apart "
    "('not canonical base64url')",
    "authgate.crypto.hmac_proof.ProofFormatError": "verifiers/hmac_proof.py maps it to the "
    "one uniform invalid_proof",
    "authgate.strict_json.StrictJSONError": "one except per input: web/body.py "
    "(invalid_request), verifiers/jwt_bearer.py (token_malformed), crypto/bpc_wire.py "
    "(WireError)",
    "authgate.strict_json._Refused": "raised by the shared decoder's hooks, caught in "
    "loads_object and re-raised as StrictJSONError naming the input",
    "authgate.crypto.envelope.EnvelopeError": "one except per sealed record kind: apikeys.py, "
    "pairs/directory.py, tokens/keys.py",
    "authgate.pairs.records.PairRecordError": "pairs/service.py turns a submitted key's into "
    "PairRequestError; verifiers/bpc.py logs a stored one; otherwise a logged 500",
    "authgate.apikeys.ApiKeyUnreadable": "an unreadable stored key: a logged 500",
    "authgate.tokens.keys.KeysUnreadable": "stops start-up or a reload; never a client's",
    "authgate.client.admin.AdminApiError": "the admin API client's view of a refusal (the "
    "server's code and message); admin_cli.py prints it",
    "authgate.admin_cli.UsageError": "a command that cannot run as given: one line, exit 2",
    "authgate.config.model.Problems": "a config validator's problems: config/loader.py turns "
    "them into ConfigError's, one per key",
    "authgate.web.protocol._HeadTimeout": "a head not received in time, as aiohttp's error "
    "handler sees it: web/protocol.py answers RequestTimeout",
    "authgate.web.protocol._NotAPath": "a target that is not a path, as aiohttp's error "
    "handler sees it: web/protocol.py answers InvalidTarget",
}


def tree() -> list[type[AuthGateError]]:
    out: list[type[AuthGateError]] = [AuthGateError]
    for cls in out:
        out.extend(cls.__subclasses__())
    return out


def defining(cls: type[AuthGateError]) -> type[AuthGateError]:
    """The class whose ``reason`` ``cls`` answers with."""
    return next(c for c in cls.__mro__ if "reason" in vars(c))


def groups() -> set[type[AuthGateError]]:
    return {c for c in tree() if any("reason" in vars(sub) for sub in c.__subclasses__())}


def source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("cls", tree(), ids=lambda c: c.__name__)
def test_every_class_has_a_reason_status_and_message(cls: type[AuthGateError]) -> None:
    """snake_case reason, a 4xx/5xx status, a default message, a docstring."""
    assert SNAKE.fullmatch(cls.reason), cls.reason
    assert 400 <= cls.status <= 599
    assert cls.default_message
    assert cls.__doc__


def test_a_reason_is_defined_once_per_namespace() -> None:
    """Two classes share a reason only as a refinement (which keeps the status too)."""
    owners: dict[tuple[bool, str], set[str]] = {}
    for cls in tree():
        owner = defining(cls)
        owners.setdefault((issubclass(cls, OAuthError), cls.reason), set()).add(owner.__name__)
        if owner is not cls:
            assert "status" not in vars(cls), f"{cls.__name__} refines {owner.__name__}"
    shared = {key: names for key, names in owners.items() if len(names) > 1}
    assert not shared


def test_the_groups_are_the_documented_ones() -> None:
    """The classes that are caught, never raised."""
    assert {c.__name__ for c in groups()} == {
        "AuthGateError",
        "BadRequest",
        "Unauthenticated",
        "BPCError",
        "DPoPError",
        "Forbidden",
        "OAuthError",
        "DependencyUnavailable",
        "UpstreamError",
    }


def test_no_group_is_raised() -> None:
    """Code outside errors.py constructs leaves (or refinements) only."""
    names = {c.__name__ for c in groups()}
    found = []
    for path in source_files():
        if path.name == "errors.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in names:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert not found


def test_oauth_statuses_are_pinned() -> None:
    """One status per OAuth leaf, as clients see them (RFC 6749 §5.2, RFC 7009, RFC 7662,
    RFC 9449 §5 and §8)."""
    statuses = {c.reason: c.status for c in tree() if issubclass(c, OAuthError)}
    assert statuses == {
        "oauth_error": 400,
        "invalid_request": 400,
        "invalid_client": 401,
        "invalid_grant": 400,
        "invalid_scope": 400,
        "invalid_target": 400,
        "invalid_dpop_proof": 400,
        "use_dpop_nonce": 400,
        "unsupported_grant_type": 400,
        "unsupported_token_type": 400,
        "unauthorized_client": 403,
        "insufficient_scope": 403,
    }


def test_the_tree_lives_in_errors_py_and_everything_else_is_internal() -> None:
    """Exception classes defined outside errors.py are exactly the documented internal ones."""
    assert all(c.__module__ == "authgate.errors" for c in tree())
    outside = set()
    for path in source_files():
        name = module_name(path)
        if name in {"authgate.errors", "authgate.__main__"}:
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                assert not issubclass(value, AuthGateError), f"{name}.{attr} belongs in errors.py"
                assert value.__doc__, f"{name}.{attr} needs a docstring"
                outside.add(f"{name}.{attr}")
    assert outside == set(INTERNAL)


def test_problem_py_never_compares_a_reason() -> None:
    """Headers follow class and attributes, not a reason string."""
    tree_ = ast.parse((SRC / "web" / "problem.py").read_text())
    compared = [
        node.lineno
        for node in ast.walk(tree_)
        if isinstance(node, ast.Compare)
        and any(
            isinstance(side, ast.Attribute) and side.attr == "reason"
            for side in (node.left, *node.comparators)
        )
    ]
    assert not compared


def test_one_function_per_meaning_of_refusal() -> None:
    """``response_for`` (web) and ``rate_limited`` (policy) are defined once, ``refusal`` not."""
    defined: dict[str, list[str]] = {}
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                defined.setdefault(node.name, []).append(str(path.relative_to(SRC)))
    assert "refusal" not in defined
    assert defined["response_for"] == ["web/problem.py"]
    assert defined["rate_limited"] == ["policy/limits.py"]


def answer(exc: AuthGateError) -> tuple[int, dict[str, object], dict[str, str]]:
    response = problem_response(exc)
    assert response.text is not None
    return response.status, json.loads(response.text), dict(response.headers)


def test_oauth_invalid_client_decides_its_basic_challenge_at_construction() -> None:
    status, body, headers = answer(
        errors.OAuthInvalidClient("malformed Basic credentials", basic_challenge=True)
    )
    assert (status, body) == (
        401,
        {"error": "invalid_client", "error_description": "malformed Basic credentials"},
    )
    assert headers["WWW-Authenticate"] == 'Basic realm="authgate"'
    status, _, headers = answer(errors.OAuthInvalidClient("wrong", basic_challenge=False))
    assert status == 401 and "WWW-Authenticate" not in headers
    status, body, _ = answer(errors.OAuthInsufficientScope("introspection needs scope x"))
    assert (status, body["error"]) == (403, "insufficient_scope")


def test_unauthenticated_challenges_follow_the_class() -> None:
    _, body, headers = answer(errors.MissingCredential())
    assert body["error"] == {"code": "credential_missing", "message": "no credential presented"}
    assert headers["WWW-Authenticate"] == 'Bearer realm="authgate"'
    _, _, headers = answer(errors.TokenExpired())
    assert headers["WWW-Authenticate"] == (
        'Bearer realm="authgate", error="invalid_token", error_description="token has expired"'
    )
    status, body, headers = answer(errors.LoginRefused("wrong username or password"))
    assert (status, body["error"]) == (
        401,
        {"code": "unauthenticated", "message": "wrong username or password"},
    )
    assert headers["WWW-Authenticate"].startswith('Bearer realm="authgate", error="invalid_token"')
    _, _, headers = answer(errors.SecretProofInvalid())
    assert headers["WWW-Authenticate"].startswith('BPC realm="authgate"')


@pytest.mark.parametrize(
    ("exc", "status", "code", "message"),
    [
        (errors.PairRequestError("scope", "must be one of"), 400, "invalid_request", None),
        (
            errors.ApiKeyError("name: must be 1-128 printable characters"),
            400,
            "invalid_request",
            None,
        ),
        (errors.PairNotFound(detail="pair_x"), 404, "not_found", "pair not found"),
        (errors.ApiKeyNotFound(detail="abc"), 404, "not_found", "no such API key"),
        (errors.RotationRefused("wait"), 409, "conflict", "wait"),
        (errors.InternalError(), 500, "internal_error", "internal error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_domain_refusals_answer_with_their_leaf(
    exc: AuthGateError, status: int, code: str, message: str | None
) -> None:
    """The domain refinements answer as the leaf they refine; the detail stays private."""
    got_status, body, _ = answer(exc)
    assert (got_status, body["error"]["code"]) == (status, code)  # type: ignore[index]
    assert body["error"]["message"] == (message or exc.message)  # type: ignore[index]
    assert "pair_x" not in json.dumps(body)
