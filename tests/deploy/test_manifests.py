"""Static checks of docker-compose.yml and the kustomize overlays in deploy/.

The overlays are rendered with `kubectl kustomize` (offline; no cluster needed).
Needs PyYAML (the `test` extra) and, for the Kubernetes tests, kubectl on PATH.
"""

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the deployment files")

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
SERVICES = {
    # kebab-case name -> python module
    "api": "services.api",
    "run-starter": "services.run_starter",
    "run-poller": "services.run_poller",
    "tool-executor": "services.tool_executor",
    "message-archiver": "services.message_archiver",
    "file-indexer": "services.file_indexer",
}

Doc = dict[str, Any]
MONITORING_NAMESPACE = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
}

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not installed; it renders the kustomize overlays",
)


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    """Render deploy/overlays/<overlay> and return its documents."""
    proc = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(workload: Doc) -> list[Doc]:
    return cast(list[Doc], workload["spec"]["template"]["spec"]["containers"])


def port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p.get("name") == port))


# --------------------------------------------------------------------------- kustomize


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_deployment_per_service(overlay: str) -> None:
    deployments = of_kind(render(overlay), "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "threadbus"
        assert labels["app.kubernetes.io/component"] == name
        (container,) = containers(dep)
        assert container["command"] == ["python", "-m", SERVICES[name]]
        env_from = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert env_from == {"threadbus-config", "threadbus-secrets"}
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_on_the_right_port(overlay: str) -> None:
    for name, dep in of_kind(render(overlay), "Deployment").items():
        expected_port = 8000 if name == "api" else 8081
        # The API's pods answer for themselves: the system-wide /readyz (no run-poller
        # consuming) would take every API pod out of the Service at once.
        expected_ready = "/readyz?scope=self" if name == "api" else "/readyz"
        for container in containers(dep):
            live = container.get("livenessProbe", {}).get("httpGet")
            ready = container.get("readinessProbe", {}).get("httpGet")
            assert live, f"{name}/{container['name']} has no HTTP liveness probe"
            assert ready, f"{name}/{container['name']} has no HTTP readiness probe"
            assert live["path"] == "/healthz"
            assert ready["path"] == expected_ready
            assert port_number(container, live["port"]) == expected_port
            assert port_number(container, ready["port"]) == expected_port
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_service_and_pdb(overlay: str) -> None:
    docs = render(overlay)
    service = of_kind(docs, "Service")["api"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    api = of_kind(docs, "Deployment")["api"]
    assert port_number(containers(api)[0], port["targetPort"]) == 8000
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert "api" in of_kind(docs, "PodDisruptionBudget")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tool_executor_scaled_object(overlay: str) -> None:
    docs = render(overlay)
    scaled = of_kind(docs, "ScaledObject")["tool-executor"]
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] == "tool-executor"
    assert "tool-executor" in of_kind(docs, "Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "tool-executor"
    assert trigger["metadata"]["topic"] == "threadbus.tool_calls"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= 8
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > 0
    # KEDA owns the replica count: a fixed one in the Deployment would fight it.
    assert "replicas" not in of_kind(docs, "Deployment")["tool-executor"]["spec"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tool_executor_may_create_user_namespaces(overlay: str) -> None:
    dep = of_kind(render(overlay), "Deployment")["tool-executor"]
    security = containers(dep)[0]["securityContext"]
    assert security["seccompProfile"]["type"] == "Unconfined"
    assert security["appArmorProfile"]["type"] == "Unconfined"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrate_job(overlay: str) -> None:
    job = of_kind(render(overlay), "Job")["migrate"]
    command = " ".join(containers(job)[0]["command"])
    assert "threadbus migrate" in command
    assert "threadbus create-topics" in command
    assert command.index("threadbus migrate") < command.index("threadbus create-topics")
    assert "ttlSecondsAfterFinished" in job["spec"]
    assert "backoffLimit" in job["spec"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_blobs_live_in_the_blob_store_not_on_volumes(overlay: str) -> None:
    docs = render(overlay)
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(docs, kind).items():
            pod = workload["spec"]["template"]["spec"]
            volumes = {v["name"] for v in pod.get("volumes", [])}
            mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
            assert "blobs" not in volumes | mounts, f"{kind} {name} still mounts a blobs volume"
    config = of_kind(docs, "ConfigMap")["threadbus-config"]["data"]
    assert config["THREADBUS_BLOB_STORE"] in {"postgres", "s3"}
    assert "THREADBUS_BLOB_DIR" not in config


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kafka_client_can_get_tls_files_and_sasl_credentials(overlay: str) -> None:
    docs = render(overlay)
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(docs, kind).items():
            pod = workload["spec"]["template"]["spec"]
            [tls] = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
            assert tls["secret"] == {"secretName": "threadbus-kafka-tls", "optional": True}
            for container in pod["containers"]:
                mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
                assert mounts["kafka-tls"]["mountPath"] == "/etc/threadbus/kafka-tls", name
                assert mounts["kafka-tls"]["readOnly"] is True
                sources = {ref.get("secretRef", {}).get("name") for ref in container["envFrom"]}
                assert "threadbus-secrets" in sources, f"{kind} {name}: no SASL credentials"
    config = of_kind(docs, "ConfigMap")["threadbus-config"]["data"]
    assert config["THREADBUS_KAFKA_SECURITY_PROTOCOL"] in {
        "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}  # fmt: skip


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_embedding_threads_match_the_cpu_limit(overlay: str) -> None:
    # The local model starts one OpenMP thread per node core unless told otherwise, and a pod
    # with more busy threads than its CPU limit is throttled.
    deployments = of_kind(render(overlay), "Deployment")
    for name in ("api", "tool-executor", "file-indexer"):
        (container,) = containers(deployments[name])
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        limit = str(container["resources"]["limits"]["cpu"])
        cores = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
        assert float(env["OMP_NUM_THREADS"]) == max(cores, 1), name


@needs_kubectl
def test_overlay_differences() -> None:
    dev, prod = (render(o) for o in OVERLAYS)
    dev_deps, prod_deps = of_kind(dev, "Deployment"), of_kind(prod, "Deployment")
    # tool-executor has no fixed count (KEDA owns it); everything else runs once in dev.
    dev_replicas = {n: d["spec"].get("replicas") for n, d in dev_deps.items()}
    assert dev_replicas == {n: (None if n == "tool-executor" else 1) for n in SERVICES}
    assert prod_deps["api"]["spec"]["replicas"] == 2
    assert prod_deps["run-poller"]["spec"]["replicas"] == 2
    assert prod_deps["file-indexer"]["spec"]["replicas"] == 2
    dev_images = {c["image"] for d in dev_deps.values() for c in containers(d)}
    assert dev_images == {"threadbus:dev"}
    (prod_image,) = {c["image"] for d in prod_deps.values() for c in containers(d)}
    assert ":" in prod_image or "@" in prod_image, "prod image must be pinned"
    assert not prod_image.endswith((":latest", ":dev"))
    # Prod never ships the placeholder Secret; dev keeps the template.
    assert "threadbus-secrets" in of_kind(dev, "Secret")
    assert "threadbus-secrets" not in of_kind(prod, "Secret")


# --------------------------------------------------------------------------- compose


@functools.cache
def compose() -> Doc:
    return cast(Doc, yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def test_compose_follows_the_compose_specification() -> None:
    """docker-compose.yml against the Compose Specification's JSON Schema (vendored:
    compose-spec.json is schema/compose-spec.json of github.com/compose-spec/compose-spec at
    170098ba07d9, Apache License 2.0, compose-spec.LICENSE), as `docker compose config` would
    check it; a misspelt key is refused."""
    import jsonschema

    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [e.message for e in validator.iter_errors(compose())] == []
    misspelt = compose()
    misspelt["services"]["api"]["restart_policy"] = "always"  # `restart` is the key
    assert any("restart_policy" in e.message for e in validator.iter_errors(misspelt))


def test_compose_has_all_services() -> None:
    services = compose()["services"]
    assert set(SERVICES) | {"migrate", "kafka", "postgres"} <= set(services)


def test_compose_services_share_one_image() -> None:
    services = compose()["services"]
    builds = {repr(services[name].get("build")) for name in [*SERVICES, "migrate"]}
    images = {services[name].get("image") for name in [*SERVICES, "migrate"]}
    assert len(builds) == 1
    assert builds != {"None"}
    assert len(images) == 1
    for name, module in SERVICES.items():
        assert services[name]["command"] == ["python", "-m", module]
        migrate_dependency = services[name]["depends_on"]["migrate"]
        assert migrate_dependency["condition"] == "service_completed_successfully"


def test_compose_has_no_blob_volume() -> None:
    document = compose()
    assert "blobs" not in document.get("volumes", {})
    for name, service in document["services"].items():
        assert not any("blobs" in str(v) for v in service.get("volumes", [])), name
        assert "THREADBUS_BLOB_DIR" not in service.get("environment", {}), name
    assert document["services"]["api"]["environment"]["THREADBUS_BLOB_STORE"]


def test_compose_migrate_and_infrastructure() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert "threadbus migrate && threadbus create-topics" in " ".join(migrate["command"])
    assert {n: c["condition"] for n, c in migrate["depends_on"].items()} == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
    }
    assert services["kafka"]["image"] == "apache/kafka:3.9.0"
    kafka_env = services["kafka"]["environment"]
    assert str(kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "healthcheck" in services["kafka"]
    assert "healthcheck" in services["postgres"]
    security_opt = set(services["tool-executor"]["security_opt"])
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= security_opt
    env = services["api"]["environment"]
    assert env["THREADBUS_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert {"OPENAI_API_KEY", "OPENAI_BASE_URL"} <= set(env)


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) matches these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for rule in selector.get("matchExpressions", []):
        key, operator, values = rule["key"], rule["operator"], rule.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def pod_labels(workload: Doc) -> dict[str, str]:
    return cast(dict[str, str], workload["spec"]["template"]["metadata"]["labels"])


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_of_one(overlay: str) -> None:
    docs = render(overlay)
    budgets = of_kind(docs, "PodDisruptionBudget").values()
    for name, deployment in of_kind(docs, "Deployment").items():
        mine = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]
        assert len(mine) == 1, name
        assert mine[0]["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in mine[0]["spec"]  # a 1-replica install can be drained


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_api_port_and_probes_from_the_namespace_or_monitoring(
    overlay: str,
) -> None:
    docs = render(overlay)
    policies = list(of_kind(docs, "NetworkPolicy").values())
    for name, deployment in of_kind(docs, "Deployment").items():
        labels = pod_labels(deployment)
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in mine), name
        assert any(not p["spec"].get("ingress") for p in mine), f"{name}: no default deny"
        rules = [rule for p in mine for rule in p["spec"].get("ingress", [])]
        ports = {port["port"] for rule in rules for port in rule["ports"]}
        (container,) = containers(deployment)
        if name == "api":
            assert ports == {8000}
            assert all("from" not in rule for rule in rules)  # from anywhere: the Service
        else:
            health = port_number(container, "health")
            assert ports == {health}, name
            # This namespace's pods, and (with the monitoring component) Prometheus' namespace.
            allowed = [[{"podSelector": {}}], [MONITORING_NAMESPACE]]
            assert all(rule["from"] in allowed for rule in rules), name
            monitored = [MONITORING_NAMESPACE] in [rule["from"] for rule in rules]
            assert monitored == (overlay == "prod"), name


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_scales_on_cpu(overlay: str) -> None:
    docs = render(overlay)
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if overlay == "prod":
        assert hpa["spec"]["minReplicas"] >= 2  # as many as the prod overlay runs
    (api,) = containers(of_kind(docs, "Deployment")["api"])
    assert api["resources"]["requests"]["cpu"]  # utilization is measured against it
