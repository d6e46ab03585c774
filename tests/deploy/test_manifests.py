"""``examples/kubernetes/*.yaml``: what the chart renders for ``helm/authgate/ci/*-values.yaml``.

The committed manifests are checked three ways:

* **Drift.** The chart is rendered here with Helm's own Go engine (``helm-python-sdk``
  bundles Helm's SDK as a shared library, so no ``helm`` binary is needed) and compared, as
  data, with the committed files. ``.github/workflows/chart.yml`` does the same with the real
  ``helm template`` and points ``AUTHGATE_HELM_RENDERED`` at its output.
* **Schema.** Every object validates (strict: unknown fields refused) against the
  Kubernetes 1.30 OpenAPI schemas that ship inside ``kubernetes-validate`` (no network).
  The ServiceMonitor is a CRD (Prometheus Operator), absent from those schemas: it is
  skipped there, explicitly, and checked structurally instead.
* **Meaning.** The pod is hardened; the ConfigMap is a config authgate accepts, holding no
  secret, while every secret arrives from a Secret as an ``AUTHGATE_*`` variable that maps to
  a real config key; in sidecar mode the Service reaches authgate only and authgate proxies
  to the app on 127.0.0.1.

Regenerate after a chart change (the same bytes as ``helm template``, up to key order)::

    python -m tests.deploy.test_manifests --write
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.config.loader import SECRET_KEYS, load_settings
from authgate.config.model import PolicySettings, ServerSettings
from authgate.policy.rules import Policy
from authgate.web.drain import EXIT_MARGIN_SECONDS

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "authgate"
EXAMPLES = REPO / "examples" / "kubernetes"
MODES = ("standalone", "sidecar")
RELEASE = "authgate"
NAMESPACE = "authgate"
KUBERNETES_VERSION = "1.30.0"
# Custom resources: not in the Kubernetes schemas, so not validated by kubernetes-validate.
CRD_KINDS = frozenset({"ServiceMonitor"})
# Helm's install order (pkg/release/util/kind_sorter.go), the order `helm template` prints.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]  # fmt: skip
Manifest = dict[str, Any]


def values_file(mode: str) -> Path:
    """The ci values file a mode's example is rendered from."""
    return CHART / "ci" / f"{mode}-values.yaml"


def render(mode: str) -> str:
    """``helm template authgate helm/authgate -n authgate -f <values>``, via Helm's Go SDK."""
    import helm_python

    values = yaml.safe_load(values_file(mode).read_text())
    with helm_python.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    documents: list[tuple[str, str, str]] = []
    for source in sorted(rendered):
        if not source.endswith((".yaml", ".yml")):
            continue  # NOTES.txt, _helpers.tpl
        for part in rendered[source].split("\n---"):
            content = part.strip().removeprefix("---").strip()
            if content:
                kind = str(yaml.safe_load(content)["kind"])
                documents.append((kind, source, content))

    def order(doc: tuple[str, str, str]) -> tuple[int, str]:
        kind = doc[0]
        known = kind in INSTALL_ORDER
        return (INSTALL_ORDER.index(kind) if known else len(INSTALL_ORDER), "" if known else kind)

    documents.sort(key=order)  # stable: template order within a kind, as helm does
    return "".join(f"---\n# Source: {source}\n{content}\n" for _, source, content in documents)


def load(text: str) -> list[Manifest]:
    """The YAML documents of a manifest stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_identity(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    """Manifests keyed by (kind, name); a duplicate is an error."""
    out: dict[tuple[str, str], Manifest] = {}
    for manifest in manifests:
        key = (manifest["kind"], manifest["metadata"]["name"])
        assert key not in out, f"duplicate {key}"
        out[key] = manifest
    return out


def committed(mode: str) -> list[Manifest]:
    """The committed example for a mode."""
    return load((EXAMPLES / f"{mode}.yaml").read_text())


def one(manifests: list[Manifest], kind: str) -> Manifest:
    """The single manifest of ``kind``."""
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def containers(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The Deployment's containers by name."""
    spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


# --- drift ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_committed_example_is_what_the_chart_renders(mode: str) -> None:
    """The example equals Helm's rendering of the ci values (as data, then as text)."""
    pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")
    text = render(mode)
    assert by_identity(load(text)) == by_identity(committed(mode)), (
        f"examples/kubernetes/{mode}.yaml is stale: python -m tests.deploy.test_manifests --write"
    )
    assert text == (EXAMPLES / f"{mode}.yaml").read_text()


@pytest.mark.parametrize("mode", MODES)
def test_helm_cli_rendering_matches_when_given(mode: str) -> None:
    """CI's real ``helm template`` output (``$AUTHGATE_HELM_RENDERED/<mode>.yaml``) matches."""
    directory = os.environ.get("AUTHGATE_HELM_RENDERED")
    if not directory:
        pytest.skip("AUTHGATE_HELM_RENDERED not set (chart.yml sets it after helm template)")
    rendered = load((Path(directory) / f"{mode}.yaml").read_text())
    assert by_identity(rendered) == by_identity(committed(mode))
    _validate_all(rendered)


# --- Kubernetes schemas -----------------------------------------------------------------


def _validate_all(manifests: list[Manifest]) -> list[str]:
    import kubernetes_validate  # type: ignore[import-untyped]

    skipped = []
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            skipped.append(manifest["kind"])
            continue
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    return skipped


@pytest.mark.parametrize("mode", MODES)
def test_manifests_validate_against_kubernetes_1_30(mode: str) -> None:
    """Every built-in object is valid for Kubernetes 1.30 (strict); only CRDs are skipped."""
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")
    manifests = committed(mode)
    skipped = _validate_all(manifests)
    expected_crds = ["ServiceMonitor"] if mode == "standalone" else []
    assert skipped == expected_crds


def test_schema_validation_catches_a_bad_field() -> None:
    """The validator is strict: an unknown container field is refused (a check of the check)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = one(committed("standalone"), "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _services(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_monitor_scrapes_metrics_on_the_ops_port_only() -> None:
    """The CRD the schemas cannot check: monitoring.coreos.com/v1, /metrics on port ``ops``
    of a Service of its own; the traffic Service has no metrics port and is not selected."""
    manifests = committed("standalone")
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "ops",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    services = _services(manifests)
    selected = [
        name
        for name, service in services.items()
        if _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ]
    assert selected == [f"{RELEASE}-ops"]
    ops = services[f"{RELEASE}-ops"]
    assert [(p["name"], p["targetPort"]) for p in ops["spec"]["ports"]] == [("ops", "ops")]
    traffic = services[RELEASE]
    assert [(p["name"], p["targetPort"]) for p in traffic["spec"]["ports"]] == [("http", "http")]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


@pytest.mark.parametrize("mode", MODES)
def test_ops_port_is_authgates_ops_listener(mode: str) -> None:
    """Container port ``ops`` is the ConfigMap's server.ops_port, on all interfaces like
    the traffic port (``http``, server.port), and the two differ."""
    manifests = committed(mode)
    ports = {p["name"]: p["containerPort"] for p in containers(manifests)["authgate"]["ports"]}
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    assert ports == {"http": config["server"]["port"], "ops": config["server"]["ops_port"]}
    assert ports["http"] != ports["ops"]
    assert config["server"]["ops_host"] == config["server"]["host"] == "0.0.0.0"


# --- hardening --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_authgate_container_is_hardened(mode: str) -> None:
    """Non-root 10001, read-only root, no capabilities, RuntimeDefault seccomp, /tmp emptyDir."""
    manifests = committed(mode)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    authgate = containers(manifests)["authgate"]
    context = authgate["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in authgate["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    for path, mount in mounts.items():
        if path != "/tmp":
            assert mount.get("readOnly") is True, path


@pytest.mark.parametrize("mode", MODES)
def test_probes_use_healthz_and_readyz(mode: str) -> None:
    """Liveness (and start-up) ask /healthz; readiness asks /readyz, on authgate's ops port."""
    authgate = containers(committed(mode))["authgate"]
    assert authgate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert authgate["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert authgate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert [p["name"] for p in authgate["ports"]] == ["http", "ops"]


def _pod_ip_listeners(manifests: list[Manifest]) -> dict[int, str]:
    """Port -> what answers on the pod IP: authgate's two listeners, from the ConfigMap
    (only when bound to all interfaces). The app binds 127.0.0.1 (the chart's contract, the
    example's LISTEN_ADDRESS), so its port is not among them."""
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    server = config["server"]
    out = {}
    for host_key, port_key, what in (("host", "port", "http"), ("ops_host", "ops_port", "ops")):
        if server[host_key] in ("0.0.0.0", "::"):
            out[int(server[port_key])] = what
    for name, container in containers(manifests).items():
        if name != "authgate":
            for var in container.get("env", []):
                if var["name"] == "LISTEN_ADDRESS":
                    assert var["value"].startswith("127.0.0.1:"), var
    return out


def _probe_port(container: Manifest, probe: Manifest) -> int:
    """The port a probe targets: a number, or a name resolved among the probed container's
    own ports (as the kubelet resolves it)."""
    (handler,) = [probe[h] for h in ("httpGet", "tcpSocket", "grpc") if h in probe]
    port = handler["port"]
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


@pytest.mark.parametrize("mode", MODES)
def test_every_probe_reaches_a_port_listening_on_the_pod_ip(mode: str) -> None:
    """The kubelet probes the pod IP: each probe of each container targets a port a
    container listens on there, so the pod can become Ready. In sidecar mode the app is
    probed through authgate's traffic port, at a path the policy lets in anonymously."""
    manifests = committed(mode)
    listeners = _pod_ip_listeners(manifests)
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    policy = Policy.from_settings(PolicySettings.model_validate(config.get("policy", {})))
    probed = []
    for name, container in containers(manifests).items():
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind not in container:
                continue
            probe = container[kind]
            port = _probe_port(container, probe)
            assert port in listeners, f"{name}.{kind} probes port {port}: nothing listens there"
            probed.append((name, kind, listeners[port]))
            if listeners[port] == "http":  # through authgate's policy, as any client
                rule = policy.match("GET", "", probe["httpGet"]["path"])
                assert rule.anonymous, f"{name}.{kind}: rule {rule.id} is not anonymous"
    assert ("authgate", "readinessProbe", "ops") in probed
    if mode == "sidecar":
        assert ("orders", "readinessProbe", "http") in probed


@pytest.mark.parametrize("mode", MODES)
def test_grace_period_outlasts_every_containers_shutdown(mode: str) -> None:
    """From the rendered Deployment and ConfigMap: the grace period exceeds authgate's
    preStop sleep + server.shutdown_delay_seconds + server.drain_timeout_seconds + the exit
    margin (web/drain.py), and every container's preStop sleep."""
    manifests = committed(mode)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    server = ServerSettings.model_validate(config["server"])

    def sleep(container: Manifest) -> float:
        return float(
            container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        )

    by_name = containers(manifests)
    authgate_needs = (
        sleep(by_name["authgate"])
        + server.shutdown_delay_seconds
        + server.drain_timeout_seconds
        + EXIT_MARGIN_SECONDS
    )
    assert grace > authgate_needs
    assert all(grace > sleep(c) for c in by_name.values())
    if mode == "sidecar":
        # The app keeps serving while authgate delays and drains.
        assert sleep(by_name["orders"]) >= server.shutdown_delay_seconds + (
            server.drain_timeout_seconds
        )


@pytest.mark.parametrize("mode", MODES)
def test_signing_keys_are_mounted_0400_and_listed_in_the_config(mode: str) -> None:
    """PEM keys come from a Secret volume (mode 0400), at the paths the config names."""
    manifests = committed(mode)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["defaultMode"] == 0o400
    mount = next(
        m for m in containers(manifests)["authgate"]["volumeMounts"] if m["name"] == volume["name"]
    )
    expected = [f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    assert config["jwt"]["signing_key_files"] == expected


# --- the configuration authgate will load -------------------------------------------------


def _secret_env(manifests: list[Manifest]) -> dict[str, str]:
    """Each ``valueFrom.secretKeyRef`` variable of authgate's container, with a stand-in value."""
    stand_ins = {
        "AUTHGATE_STORES__REDIS__URL": "redis://:pw@redis:6379/0",
        "AUTHGATE_SECRETS__KEY_ENCRYPTION_KEY": "A" * 43 + "=",
        "AUTHGATE_HMAC__CHALLENGE_SECRET": "c" * 40,
        "AUTHGATE_BPC__OPERATOR_TOKEN": "operator-token-" + "x" * 24,
    }
    env = {}
    for var in containers(manifests)["authgate"]["env"]:
        if "valueFrom" in var:
            assert "secretKeyRef" in var["valueFrom"], var
            env[var["name"]] = stand_ins[var["name"]]
        else:
            env[var["name"]] = var["value"]
    return env


@pytest.fixture(params=MODES)
def loaded(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    """(mode, Settings) as authgate would build them in the pod: file 0644 plus env."""
    mode: str = request.param
    manifests = committed(mode)
    path = tmp_path / "authgate.yaml"
    path.write_text(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    path.chmod(0o644)  # a ConfigMap file is world-readable
    return mode, load_settings(path, environ=_secret_env(manifests))


def test_configmap_loads_as_a_world_readable_file(loaded: tuple[str, Any]) -> None:
    """authgate accepts the ConfigMap at mode 0644: so it holds no secret, and is valid."""
    _, settings = loaded
    assert settings.development is False
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 8080
    assert settings.stores.backend == "redis"


def test_configmap_names_no_secret_key() -> None:
    """No key the loader counts as secret appears anywhere in either ConfigMap."""

    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    for mode in MODES:
        config = yaml.safe_load(one(committed(mode), "ConfigMap")["data"]["authgate.yaml"])
        assert not set(keys(config)) & SECRET_KEYS, mode


def test_secrets_arrive_as_env_and_reach_their_keys(loaded: tuple[str, Any]) -> None:
    """Each secret variable lands on the config key it is meant for."""
    mode, settings = loaded
    assert settings.stores.redis.url.get_secret_value().startswith("redis://")
    assert settings.secrets.key_encryption_key is not None
    assert settings.hmac.challenge_secret is not None
    if mode == "standalone":
        assert settings.bpc.operator_token is not None


@pytest.mark.parametrize("mode", MODES)
def test_config_file_is_mounted_where_authgate_is_told_to_read_it(mode: str) -> None:
    """``serve --config /etc/authgate/authgate.yaml`` and the ConfigMap mounted there."""
    manifests = committed(mode)
    authgate = containers(manifests)["authgate"]
    assert authgate["args"] == ["serve", "--config", "/etc/authgate/authgate.yaml"]
    mount = next(m for m in authgate["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/authgate/authgate.yaml"
    assert mount["subPath"] == "authgate.yaml"


# --- sidecar wiring -----------------------------------------------------------------------


def test_sidecar_service_reaches_authgate_only() -> None:
    """The Service targets authgate's named port; the app's port is unnamed and unexposed."""
    manifests = committed("sidecar")
    service = one(manifests, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    by_name = containers(manifests)
    assert set(by_name) == {"authgate", "orders"}
    assert all("name" not in p for p in by_name["orders"]["ports"])
    assert [s["metadata"]["name"] for s in manifests if s["kind"] == "Service"] == [RELEASE]
    policy = one(manifests, "NetworkPolicy")
    ports = [rule["ports"] for rule in policy["spec"]["ingress"]]
    assert ports == [[{"port": "http", "protocol": "TCP"}], [{"port": "ops", "protocol": "TCP"}]]


def test_sidecar_proxies_to_the_app_on_loopback(tmp_path: Path) -> None:
    """proxy.upstream is http://127.0.0.1:<the app container's port>."""
    manifests = committed("sidecar")
    (app_port,) = [p["containerPort"] for p in containers(manifests)["orders"]["ports"]]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["authgate.yaml"])
    assert config["proxy"]["upstream"] == f"http://127.0.0.1:{app_port}"
    authgate_port = containers(manifests)["authgate"]["ports"][0]["containerPort"]
    assert authgate_port != app_port


def test_standalone_scales_on_redis_with_a_budget() -> None:
    """HPA (no fixed replicas), a PDB over the same pods, and shared Redis stores."""
    manifests = committed("standalone")
    deployment = one(manifests, "Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def _write() -> None:
    for mode in MODES:
        path = EXAMPLES / f"{mode}.yaml"
        path.write_text(render(mode))
        path.chmod(path.stat().st_mode & ~stat.S_IWOTH)
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.deploy.test_manifests --write")
    _write()
