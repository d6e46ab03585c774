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
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.config.model import BPCSettings, IdentitySettings
from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.context import CREDENTIAL_HEADERS, Envoy, Nginx, Traefik, header_key
from tests.support import TokenFactory, make_settings

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
    out = []
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
    """(name, namespace, port) of authgate's Service in the standalone rendering."""
    (service,) = [
        doc
        for doc in yaml.safe_load_all(STANDALONE.read_text())
        if doc and doc["kind"] == "Service"
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
    return closed(loaded)


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
    found = unknown_fields(policy, schema(CRD_SCHEMAS[("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy")]))
    assert found == [".spec.extAuth.failopen"]
