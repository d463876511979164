"""The monitoring component (deploy/components/monitoring, in the prod overlay): scrape targets
that reach every service's `/metrics`, and alert rules and dashboard queries that ask only
for metrics the code exports, with labels those metrics have. Rendered offline."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import services.api.observed  # noqa: F401 (registers its gauges and, importing it, the rest)
from tests.deploy.test_manifests import (
    SERVICES,
    Doc,
    containers,
    needs_kubectl,
    of_kind,
    pod_labels,
    port_number,
    render,
    selects,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "components" / "monitoring" / "dashboard.json"
SELECTOR = re.compile(r"\b([a-z_:][a-z0-9_:]*)(\{([^}]*)\})?")
MATCHER = re.compile(r'([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
KUBERNETES = {"pod", "namespace", "job", "instance"}
"""Labels Prometheus adds to every series it scrapes on Kubernetes."""
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "and",
    "or", "unless", "label_values",
}  # fmt: skip


def exported() -> dict[str, set[str]]:
    """Every series name the code can export, with its label names."""
    names: dict[str, set[str]] = {}
    for collector, series in list(REGISTRY._collector_to_names.items()):
        labels = set(getattr(collector, "_labelnames", ()))
        for name in series:
            names[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return names


def check_query(expr: str, where: str) -> set[str]:
    """Assert every metric `expr` selects is exported, with the labels it matches and groups
    on; return the metric names."""
    known = exported()
    text = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    grouped = {label.strip() for clause in GROUPING.findall(text) for label in clause.split(",")}
    text = GROUPING.sub("", text)
    found: set[str] = set()
    for name, _, matchers in SELECTOR.findall(text):
        if not name.startswith(("threadbus_", "process_")):
            assert name in PROMQL_WORDS, f"{where}: unknown word {name!r} in {expr!r}"
            continue
        assert name in known, f"{where}: {name} is not a metric Threadbus exports"
        found.add(name)
        for label, _ in MATCHER.findall(matchers):
            assert label in known[name] | KUBERNETES, f"{where}: {name} has no label {label!r}"
    assert found, f"{where}: {expr!r} asks for no Threadbus metric"
    labels = set().union(*(known[name] for name in found)) | KUBERNETES
    assert grouped <= labels, f"{where}: grouped by {grouped - labels}, which no metric has"
    return found


def prod() -> tuple[Doc, ...]:
    return render("prod")


@needs_kubectl
def test_prometheus_scrapes_the_api_and_every_worker_where_they_serve_metrics() -> None:
    docs = prod()
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == set(SERVICES)
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    (service,) = of_kind(docs, "Service").values()
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    (pods,) = of_kind(docs, "PodMonitor").values()
    (pod_endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["path"] == "/metrics"
    for name, deployment in deployments.items():
        scraped = selects(pods["spec"]["selector"], pod_labels(deployment))
        assert scraped == (name != "api"), name
        if scraped:
            (container,) = containers(deployment)
            port_number(container, pod_endpoint["port"])  # the container has that port
    assert not of_kind(render("dev"), "PodMonitor")  # dev clusters need no operator


def rules() -> list[Doc]:
    (rule,) = of_kind(prod(), "PrometheusRule").values()
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


@needs_kubectl
def test_alerts_cover_stuck_runs_outbox_age_lag_and_dlq_growth_with_exported_metrics() -> None:
    alerts = rules()
    asked: dict[str, set[str]] = {}
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        assert alert["annotations"]["description"], alert["alert"]
        asked[alert["alert"]] = check_query(alert["expr"], alert["alert"])
        for text in alert["annotations"].values():
            for query in re.findall(r'query "([^"]+)"', text):
                check_query(query, alert["alert"])
    needed = {
        "ThreadbusRunsStuck": "threadbus_run_oldest_age_seconds",
        "ThreadbusRunsNotStarting": "threadbus_run_oldest_age_seconds",
        "ThreadbusOutboxBacklogOld": "threadbus_outbox_oldest_age_seconds",
        "ThreadbusConsumerLag": "threadbus_consumer_lag_records",
        "ThreadbusDeadLetters": "threadbus_dead_letters_total",
    }
    for alert, metric in needed.items():
        assert metric in asked[alert], alert


def test_the_dashboard_asks_only_for_exported_metrics() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    shown: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            shown |= check_query(target["expr"], panel["title"])
    # Every metric of issue 13's list has a panel.
    for metric in ("threadbus_run_transitions_total", "threadbus_run_phase_seconds_bucket",
                   "threadbus_model_request_duration_seconds_bucket",
                   "threadbus_model_tokens_total", "threadbus_model_errors_total",
                   "threadbus_tool_call_duration_seconds_bucket",
                   "threadbus_tool_call_failures_total", "threadbus_outbox_backlog_records",
                   "threadbus_outbox_oldest_age_seconds", "threadbus_consumer_lag_records",
                   "threadbus_dlq_records", "threadbus_active_streams",
                   "threadbus_ingestion_queue_files", "threadbus_sandbox_kernels"):  # fmt: skip
        assert metric in shown, metric


@needs_kubectl
def test_the_dashboard_ships_as_a_configmap_grafana_picks_up() -> None:
    maps = of_kind(prod(), "ConfigMap")
    dashboard = maps["threadbus-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["threadbus.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize("broken", [
    "max(threadbus_runs_totl)", 'max(threadbus_runs{phase="x"})', "max by (group) (threadbus_runs)",
    "maks(threadbus_runs)",
])  # fmt: skip
def test_the_query_check_refuses_unknown_metrics_and_labels(broken: str) -> None:
    check_query("max by (status) (threadbus_runs)", "a good query")
    with pytest.raises(AssertionError):
        check_query(broken, "a broken query")
