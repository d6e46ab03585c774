"""The Grafana dashboard and the Prometheus alert rules (``deploy/``, and the chart's
PrometheusRule) are valid and name only metrics authgate exports.

* every PromQL expression parses (``promql-parser``, a real PromQL parser);
* every metric an expression names is in ``/metrics`` of a real application;
* the dashboard and the rules files have the structure Grafana and Prometheus read
  (closed JSON schemas below, written from the Prometheus rules-file reference and the
  Prometheus Operator's PrometheusRule CRD);
* ``promtool check rules`` and ``promtool test rules`` (Debian's ``prometheus`` package;
  ``.ci/run`` installs it) accept the rules and their unit tests;
* the chart renders the PrometheusRule only when ``prometheusRule.enabled``, with exactly
  the plain rules file's groups.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import promql_parser
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import TokenFactory, make_settings

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "authgate-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "authgate-rules.yaml"
RULES_TESTS = REPO / "deploy" / "prometheus" / "authgate-rules.test.yaml"
CHART = REPO / "helm" / "authgate"
CHART_RULES = CHART / "files" / "prometheus-rules.yaml"

# Grafana's variables, replaced by what Grafana would substitute before PromQL sees them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".+", "$instance": ".+"}
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
LABEL_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# A Prometheus rules file (prometheus.io/docs/prometheus/latest/configuration/
# alerting_rules/), restricted to alerting rules; the PrometheusRule CRD's spec is the same
# shape. Closed: a misspelt key ("annotation", "labels" under the group) is refused.
RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": DURATION},
                    "rules": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["alert", "expr", "for", "labels", "annotations"],
                            "additionalProperties": False,
                            "properties": {
                                "alert": {"type": "string", "pattern": "^Authgate[A-Za-z]+$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": {"type": "string", "pattern": DURATION},
                                "keep_firing_for": {"type": "string", "pattern": DURATION},
                                "labels": {
                                    **LABEL_MAP,
                                    "required": ["severity"],
                                    "properties": {
                                        "severity": {"enum": ["critical", "warning", "info"]}
                                    },
                                },
                                "annotations": {
                                    **LABEL_MAP,
                                    "required": ["summary", "description"],
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}

_DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
_GRID = {
    "type": "object",
    "required": ["x", "y", "w", "h"],
    "additionalProperties": False,
    "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "h": {"type": "integer", "minimum": 1},
    },
}
# The parts of Grafana's dashboard JSON model (schemaVersion 39) this dashboard uses.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z_]+$"},
                            "type": {"enum": ["datasource", "query", "custom", "interval"]},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": _GRID,
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": {"properties": {"panels": {"type": "array", "maxItems": 0}}},
                "else": {
                    "required": ["datasource", "targets", "description"],
                    "properties": {
                        "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge"]},
                        "datasource": _DATASOURCE,
                        "description": {"type": "string", "minLength": 1},
                        "targets": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["refId", "expr", "datasource"],
                                "properties": {
                                    "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                    "expr": {"type": "string", "minLength": 1},
                                    "datasource": _DATASOURCE,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target and query variable, Grafana's variables
    substituted."""
    queries = []
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<selector>, label) is Grafana's, not PromQL: the selector is.
            match = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert match, variable["query"]
            queries.append((f"${variable['name']}", match.group(1)))
    out = []
    for title, query in queries:
        expr = query
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{title}: unknown Grafana variable in {query}"
        out.append((title, expr))
    return out


def rule_queries() -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for g in rules()["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (parsing it: a syntax error raises)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name: {expr}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name a real authgate exports at /metrics (store-managed keys, so the
    signing key's age is there; a few decisions, so labelled families have samples)."""
    import asyncio

    async def scrape() -> str:
        tokens = TokenFactory()
        settings = make_settings(
            secrets={"key_encryption_key": base64.b64encode(b"k" * 32).decode()},
            tokens={"rotation_interval_days": 30},
            policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
        )
        app = create_app(settings, stores=MemoryStores())
        async with TestClient(TestServer(app)) as client:
            headers = {"X-Original-URI": "/api/x", "X-Original-Method": "GET"}
            await client.get("/auth", headers=headers)
            await client.get("/auth", headers={**headers, "Authorization": "Bearer a.b.c"})
            await client.get("/auth", headers={**headers, "Authorization": tokens.mint()})
            return await (await client.get("/metrics")).text()

    text = asyncio.run(scrape())
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        # A family with no sample yet still names its series: the exposition's TYPE line.
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_the_dashboard_is_grafana_dashboard_json() -> None:
    """Valid JSON of Grafana's model: unique panel ids, panels inside the 24-column grid."""
    board = dashboard()
    jsonschema.validate(board, DASHBOARD_SCHEMA)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_covers_what_operators_watch() -> None:
    """Decisions by reason, latency, store errors, event bus, lock-outs, key rotation,
    access-log drops: each has a panel that queries it."""
    exprs = "\n".join(e for _, e in dashboard_queries())
    for needle in (
        "sum by (reason) (rate(authgate_decisions_total",
        "histogram_quantile(0.99, sum by (le) (rate(authgate_decision_duration_seconds_bucket",
        "authgate_store_errors_total",
        "authgate_events_live",
        'reason="pair_locked_out"',
        "authgate_signing_key_age_seconds",
        "authgate_access_log_dropped_total",
    ):
        assert needle in exprs


@pytest.mark.parametrize(("where", "expr"), dashboard_queries() + rule_queries())
def test_every_query_parses_and_names_only_exported_metrics(
    where: str, expr: str, exported: set[str]
) -> None:
    """Each PromQL expression parses; each metric it names is in authgate's /metrics."""
    names = metric_names(expr)
    assert names, f"{where}: selects no metric"
    assert names <= exported, f"{where}: not exported: {sorted(names - exported)}"


def test_the_metric_check_can_fail(exported: set[str]) -> None:
    """A misspelt metric is caught, and a syntax error raises (a check of the check)."""
    assert not metric_names("rate(authgate_decision_total[5m])") <= exported
    with pytest.raises(ValueError):
        metric_names("sum(rate(authgate_decisions_total[5m])")


def test_the_rules_file_has_prometheus_structure() -> None:
    """groups / rules / alert, expr, for, labels (severity), annotations; names unique."""
    document = rules()
    jsonschema.validate(document, RULES_SCHEMA)
    alerts = [r["alert"] for _, r in ((g, r) for g in document["groups"] for r in g["rules"])]
    assert len(alerts) == len(set(alerts))
    assert {
        "AuthgateStoreErrors",
        "AuthgateEventBusDown",
        "AuthgatePairLockOuts",
        "AuthgateSigningKeyRotationOverdue",
        "AuthgateAccessLogDropping",
        "AuthgateDecisionLatencyHigh",
        "AuthgateDenialRatioHigh",
    } <= set(alerts)


def test_the_schema_refuses_a_misspelt_key() -> None:
    """The rules schema is closed: ``annotation`` for ``annotations`` is refused."""
    document = rules()
    rule = document["groups"][0]["rules"][0]
    rule["annotation"] = rule.pop("annotations")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, RULES_SCHEMA)


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (.ci/run does)")
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    """``promtool check rules`` and ``promtool test rules`` (which fire the alerts on
    synthetic series: rotation overdue, event bus down, lock-outs) pass."""
    promtool = _promtool()
    for args in (["check", "rules", str(RULES)], ["test", "rules", RULES_TESTS.name]):
        proc = subprocess.run(
            [promtool, *args],
            cwd=RULES.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The promtool check is live: a rule with a bad expression fails it."""
    promtool = _promtool()
    broken = rules()
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(authgate_ready[5m])"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0


def test_the_chart_ships_the_plain_rules_file() -> None:
    """The chart's copy is the plain rules file, byte for byte."""
    assert CHART_RULES.read_bytes() == RULES.read_bytes()


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(values, name="authgate", namespace="authgate")
    return [
        doc
        for source, text in rendered.items()
        if source.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def test_the_prometheus_rule_is_off_by_default_and_renders_the_rules_when_on() -> None:
    """Default values: no PrometheusRule. prometheusRule.enabled: the rules file's groups
    as the spec, the chart's labels plus the ones given."""
    assert [m for m in _render({}) if m["kind"] == "PrometheusRule"] == []
    manifests = _render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}})
    (rule,) = [m for m in manifests if m["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "authgate"
    assert rule["metadata"]["namespace"] == "authgate"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "authgate"
    assert rule["spec"] == rules()
    jsonschema.validate(rule["spec"], RULES_SCHEMA)


def test_values_schema_refuses_an_unknown_prometheus_rule_key() -> None:
    """values.schema.json knows prometheusRule and is closed there."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    values["prometheusRule"]["enable"] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)
