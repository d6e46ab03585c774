"""What a platform team expects of a chart, rendered with Helm's Go SDK and checked.

Autoscaling (CPU and memory, ``behavior``, min <= max), a PodDisruptionBudget with one of
its two fields, extra volumes, mounts, ``envFrom`` and containers, pod annotations, an
Ingress and a Gateway API HTTPRoute (both off by default), the sidecar app's own volumes,
``envFrom`` and probes, the image tag defaulting to the chart's appVersion, the ci values
working under any release name, and ``checksum/secrets``. Built-in kinds are validated
against the Kubernetes 1.30 schemas; the HTTPRoute (a CRD) against the vendored Gateway API schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_helm_values import CHART, CI_FILES, coalesce, errors
from tests.deploy.test_manifests import KUBERNETES_VERSION

CHART_YAML = yaml.safe_load((CHART / "Chart.yaml").read_text())
SIDECAR = {"mode": "sidecar", "app": {"image": {"repository": "registry.example/app", "tag": "1"}}}
REDIS = {
    "config": {"stores": {"backend": "redis"}},
    "secrets": {"redisUrl": {"existingSecret": "redis", "key": "url"}},
}


@pytest.fixture(scope="module")
def helm() -> Any:
    """``helm_python`` (Helm's Go SDK), or skip."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")


def render(helm: Any, values: dict[str, Any], *, name: str = "authgate") -> list[dict[str, Any]]:
    """The manifests the chart renders for ``values`` (release ``name``)."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(values, name=name, namespace="authgate")
    docs = []
    for source, text in rendered.items():
        if source.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def kind(manifests: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The single manifest of ``wanted`` kind."""
    (found,) = [m for m in manifests if m["kind"] == wanted]
    return found


def pod(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod spec."""
    spec: dict[str, Any] = kind(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def validate(manifests: list[dict[str, Any]]) -> None:
    """Every built-in object against the Kubernetes schemas (strict); the HTTPRoute against
    the vendored Gateway API CRD schema (tests/deploy/schemas), closed."""
    from tests.deploy.test_k8s_examples import validate as validate_example

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        if manifest["apiVersion"].startswith("gateway.networking"):
            validate_example(manifest)
            continue
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


# --- autoscaling and disruption budget ---------------------------------------------------


def test_hpa_scales_on_cpu_and_memory_with_behavior(helm: Any) -> None:
    """Both resource targets and the behavior block reach the HPA as given."""
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 300}}
    values = coalesce(
        REDIS,
        {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 4,
                "targetMemoryUtilizationPercentage": 80,
                "behavior": behavior,
            }
        },
    )
    manifests = render(helm, values)
    spec = kind(manifests, "HorizontalPodAutoscaler")["spec"]
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in spec["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 80},
    }
    assert spec["behavior"] == behavior
    validate(manifests)


def test_hpa_on_memory_alone(helm: Any) -> None:
    """CPU can be switched off (null), memory alone scales."""
    autoscaling = {
        "enabled": True,
        "targetCPUUtilizationPercentage": None,
        "targetMemoryUtilizationPercentage": 75,
    }
    spec = kind(
        render(helm, coalesce(REDIS, {"autoscaling": autoscaling})), "HorizontalPodAutoscaler"
    )
    assert [m["resource"]["name"] for m in spec["spec"]["metrics"]] == ["memory"]


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ({"minReplicas": 5, "maxReplicas": 3}, r"minReplicas \(5\) is above .*maxReplicas \(3\)"),
        ({"targetCPUUtilizationPercentage": None}, "needs targetCPUUtilizationPercentage or"),
    ],
    ids=["min-above-max", "no-target"],
)
def test_hpa_refuses_impossible_bounds(
    helm: Any, autoscaling: dict[str, Any], message: str
) -> None:
    """min > max, or no metric at all, fails the render with the fix."""
    values = coalesce(REDIS, {"autoscaling": {"enabled": True, **autoscaling}})
    with pytest.raises(helm.HelmError, match=message):
        render(helm, values)


def test_hpa_behavior_is_closed() -> None:
    """A typo in behavior (scaledown) is refused by the schema."""
    found = errors({"autoscaling": {"behavior": {"scaledown": {}}}})
    assert (
        "autoscaling.behavior",
        "Additional properties are not allowed ('scaledown' was unexpected)",
    ) in found


@pytest.mark.parametrize(
    ("budget", "expected"),
    [({}, {"maxUnavailable": 1}), ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
     ({"maxUnavailable": 2}, {"maxUnavailable": 2})],
    ids=["default", "min-percent", "max"],
)  # fmt: skip
def test_pdb_renders_one_field(helm: Any, budget: dict[str, Any], expected: dict[str, Any]) -> None:
    """Exactly the field given (maxUnavailable 1 when neither)."""
    spec = kind(render(helm, {"podDisruptionBudget": budget}), "PodDisruptionBudget")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == expected


def test_pdb_refuses_both_fields(helm: Any) -> None:
    """minAvailable and maxUnavailable together: the schema refuses, and so does the render."""
    both = {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}
    assert any(p == "podDisruptionBudget" for p, _ in errors(both))
    with pytest.raises(helm.HelmValuesError, match="at '/podDisruptionBudget'"):
        render(helm, both)


def test_pdb_refuses_a_malformed_percentage() -> None:
    """A percentage is digits and '%'."""
    found = errors({"podDisruptionBudget": {"minAvailable": "half"}})
    assert any(p == "podDisruptionBudget.minAvailable" for p, _ in found), found


# --- extra volumes, mounts, env and containers -------------------------------------------

EXTRAS: dict[str, Any] = {
    "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
    "envFrom": [{"secretRef": {"name": "more-authgate-env"}}],
    "extraContainers": [{"name": "shipper", "image": "registry.example/shipper:1"}],
    "podAnnotations": {"example.com/team": "platform"},
    "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
    "terminationGracePeriodSeconds": 30,
}


@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_extras_reach_the_pod(helm: Any, mode: str) -> None:
    """extraVolumes, extraVolumeMounts, envFrom, extraContainers, podAnnotations and
    lifecycle render where they belong, in both modes, and validate."""
    values = coalesce(EXTRAS, SIDECAR if mode == "sidecar" else {})
    manifests = render(helm, values)
    spec = pod(manifests)
    containers = {c["name"]: c for c in spec["containers"]}
    authgate = containers["authgate"]
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in spec["volumes"]
    assert EXTRAS["extraVolumeMounts"][0] in authgate["volumeMounts"]
    assert authgate["envFrom"] == EXTRAS["envFrom"]
    assert authgate["lifecycle"] == EXTRAS["lifecycle"]
    assert containers["shipper"] == EXTRAS["extraContainers"][0]
    annotations = kind(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "platform"
    assert {"checksum/config", "checksum/secrets"} <= set(annotations)
    validate(manifests)


def test_sidecar_app_gets_its_volumes_env_from_and_probes(helm: Any) -> None:
    """The app container: volumeMounts of extraVolumes, envFrom, and probes of its own
    (through authgate's port, where something listens on the pod IP)."""
    probe = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 5}
    app = {
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "envFrom": [{"configMapRef": {"name": "app-settings"}}],
        "readinessProbe": probe,
        "livenessProbe": probe,
        "startupProbe": probe,
    }
    values = coalesce(SIDECAR, {"app": app, "extraVolumes": [{"name": "data", "emptyDir": {}}]})
    manifests = render(helm, values)
    container = next(c for c in pod(manifests)["containers"] if c["name"] == "app")
    assert container["volumeMounts"] == app["volumeMounts"]
    assert container["envFrom"] == app["envFrom"]
    for key in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[key] == probe
    validate(manifests)


@pytest.mark.parametrize("probe_kind", ["readinessProbe", "livenessProbe", "startupProbe"])
@pytest.mark.parametrize(
    "handler", [{"httpGet": {"path": "/health", "port": 3000}}, {"tcpSocket": {"port": 3000}}]
)
def test_a_probe_of_the_app_on_its_loopback_port_is_refused(
    helm: Any, probe_kind: str, handler: dict[str, Any]
) -> None:
    """The app listens on 127.0.0.1 while the kubelet probes the pod IP: such a pod never
    becomes Ready, so the render fails and says how to probe instead."""
    values = coalesce(SIDECAR, {"app": {probe_kind: handler}})
    with pytest.raises(
        helm.HelmError,
        match=rf"app\.{probe_kind}\.\w+\.port is app\.port \(3000\).*Probe the app through authgate",
    ):
        render(helm, values)


# --- Ingress and HTTPRoute ------------------------------------------------------------------


def test_ingress_and_route_are_off_by_default(helm: Any) -> None:
    """Neither is rendered unless enabled."""
    kinds = {m["kind"] for m in render(helm, {})}
    assert not kinds & {"Ingress", "HTTPRoute"}


@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_ingress_reaches_the_traffic_service(helm: Any, mode: str) -> None:
    """The Ingress sends to the traffic Service's http port, never the ops port."""
    ingress = {
        "enabled": True,
        "className": "nginx",
        "hosts": [{"host": "orders.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "orders-tls", "hosts": ["orders.example.com"]}],
    }
    values = coalesce({"ingress": ingress}, SIDECAR if mode == "sidecar" else {})
    manifests = render(helm, values)
    spec = kind(manifests, "Ingress")["spec"]
    service = kind(manifests, "Service")
    (path,) = spec["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "http"},
    }
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == ingress["tls"]
    validate(manifests)


@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_http_route_reaches_the_traffic_service(helm: Any, mode: str) -> None:
    """gateway.networking.k8s.io/v1 HTTPRoute: parentRefs and hostnames as given, one rule
    whose backend is the traffic Service's port."""
    route = {
        "enabled": True,
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["orders.example.com"],
    }
    values = coalesce({"httpRoute": route}, SIDECAR if mode == "sidecar" else {})
    manifests = render(helm, values)
    manifest = kind(manifests, "HTTPRoute")
    assert manifest["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = manifest["spec"]
    assert spec["parentRefs"] == route["parentRefs"]
    assert spec["hostnames"] == route["hostnames"]
    service = kind(manifests, "Service")
    (rule,) = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [
        {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}
    ]
    validate(manifests)


def test_route_and_ingress_values_are_closed() -> None:
    """Typos in either are refused by name."""
    found = errors({"ingress": {"clasName": "x"}, "httpRoute": {"parentRef": []}})
    assert ("ingress", "Additional properties are not allowed ('clasName' was unexpected)") in found
    assert (
        "httpRoute",
        "Additional properties are not allowed ('parentRef' was unexpected)",
    ) in found


# --- images, release names, checksums ------------------------------------------------------


def test_image_tag_defaults_to_the_app_version(helm: Any) -> None:
    """No tag given: the chart's appVersion, never latest."""
    (container,) = pod(render(helm, {}))["containers"]
    assert container["image"] == f"ghcr.io/authgate/authgate:{CHART_YAML['appVersion']}"


def test_sidecar_app_image_needs_a_tag_or_digest(helm: Any) -> None:
    """No implicit latest for the app either: a tag or a digest is required."""
    values = {"mode": "sidecar", "app": {"image": {"repository": "registry.example/app"}}}
    assert any(p == "app.image" for p, _ in errors(values)), errors(values)
    digest = "sha256:" + "a" * 64
    pinned = coalesce(values, {"app": {"image": {"digest": digest}}})
    assert errors(pinned) == []
    app = next(c for c in pod(render(helm, pinned))["containers"] if c["name"] == "app")
    assert app["image"] == f"registry.example/app@{digest}"


def _instance_labels(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "app.kubernetes.io/instance":
                yield value
            yield from _instance_labels(value)
    elif isinstance(node, list):
        for item in node:
            yield from _instance_labels(item)


@pytest.mark.parametrize("path", CI_FILES, ids=[p.name for p in CI_FILES])
def test_ci_values_work_under_any_release_name(helm: Any, path: Path) -> None:
    """Rendered as release "payments", every instance label and selector (the topology
    spread constraint's included) names "payments": the ci values hard-code no release."""
    values = yaml.safe_load(path.read_text())
    assert "instance" not in path.read_text()
    manifests = render(helm, values, name="payments")
    assert set(_instance_labels(manifests)) == {"payments"}
    for constraint in pod(manifests).get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == (
            "payments"
        )


def test_secrets_checksum_follows_the_secrets_the_pod_reads(helm: Any) -> None:
    """checksum/secrets changes when the pod reads another Secret (and, at install and
    upgrade, when one of them changes: its resourceVersion is looked up); no Secret's data
    ever enters it, so the render holds no trace of key material."""

    def checksum(values: dict[str, Any]) -> str:
        deployment = kind(render(helm, values), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
        return value

    kek = {"secrets": {"keyEncryptionKey": {"existingSecret": "kek-v1", "key": "k"}}}
    rotated = {"secrets": {"keyEncryptionKey": {"existingSecret": "kek-v2", "key": "k"}}}
    signing = {"signingKeys": {"existingSecret": "signing", "files": ["a.pem"]}}
    sums = {checksum({}), checksum(kek), checksum(rotated), checksum(signing)}
    assert len(sums) == 4
    assert checksum(kek) == checksum(kek)
    template = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in template
    assert ".data" not in template.split('define "authgate.secretsChecksum"')[1].split("end")[0]
