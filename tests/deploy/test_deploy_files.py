"""docker-compose.yml, deploy/ (k8s, config, Dockerfile) and docs/API.md, checked as documents.

No Docker engine, Compose or Kubernetes API server runs here, so nothing is started or applied:
the files are parsed, and every setting they carry is loaded through the real settings code
(``shared.config.load_settings`` with the same environment the container would get).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from services.executor.registry import validate_backend_config
from services.gateway.app import create_app
from services.gateway.auth import PUBLIC_PATHS
from services.gateway.webhooks import signing
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.bus_memory import MemoryBus
from shared.config import ENV_PREFIX, GatewaySettings, Settings, load_settings
from shared.store_sqlite import SqliteJobStore

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
API_MD = ROOT / "docs" / "API.md"
DEPLOYMENT_MD = ROOT / "docs" / "DEPLOYMENT.md"
SERVICES = ("gateway", "scheduler", "executor", "scorer")
DOTENV = {"RABBITMQ_PASSWORD": "r4bbit", "MONGO_PASSWORD": "m0ngo", "AUTOSCORER_ADMIN_KEY": "k3y"}
POD_NAME = "autoscorer-x-7d9f8c6b5-abcde"


# -- helpers -------------------------------------------------------------------------------------


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every AUTOSCORER__SECTION__KEY name the settings accept (sections walked, leaves kept)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names.add(env)
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= settings_env_names(kind, env + "__")
    return names


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (a missing required one raises)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if value:
            return value
        if op in (":?", "?"):
            raise LookupError(f"{name}: {arg}")
        return arg if op in (":-", "-") else ""

    return _VAR.sub(one, text)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    text = COMPOSE.read_text(encoding="utf-8")
    return yaml.safe_load(interpolate(text, DOTENV if env is None else env))


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        with path.open(encoding="utf-8") as handle:
            docs += [doc for doc in yaml.safe_load_all(handle) if doc]
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == kind}


def deployments() -> dict[str, dict[str, Any]]:
    return of_kind("Deployment")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def configmap_yaml() -> str:
    return of_kind("ConfigMap")["autoscorer-config"]["data"]["config.yaml"]


def documented_secret() -> dict[str, str]:
    """The keys and values of the `kubectl create secret` command in docs/DEPLOYMENT.md."""
    text = DEPLOYMENT_MD.read_text(encoding="utf-8")
    command = r"kubectl -n autoscorer create secret generic autoscorer-secrets.*?\n\n"
    match = re.search(command, text, re.DOTALL)
    assert match, "DEPLOYMENT.md shows how to create the Secret"
    words = shlex.split(match.group(0).replace("\\\n", " "), comments=False)
    pairs = [w.removeprefix("--from-literal=") for w in words if w.startswith("--from-literal=")]
    return dict(pair.split("=", 1) for pair in pairs)


def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTOSCORER"):
            monkeypatch.delenv(name)


def load_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], config: Path) -> Settings:
    clean_environ(monkeypatch)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    return load_settings(config)


def autoscorer_services() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose()["services"].items() if name in SERVICES}


def compose_config_file(service: dict[str, Any], target: str) -> Path:
    configs = compose()["configs"]
    for ref in service["configs"]:
        if ref["target"] == target:
            return ROOT / configs[ref["source"]]["file"]
    raise AssertionError(f"nothing mounted at {target}")


def secret_sample(key: str, documented: dict[str, str]) -> str:
    value = documented[key]
    return value.replace("$(openssl rand -base64 24)", "c2FtcGxlLXNhbXBsZS1zYW1wbGUtc2FtcGxl")


def deployment_env(deployment: dict[str, Any]) -> dict[str, str]:
    documented = documented_secret()
    env: dict[str, str] = {}
    for var in container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = secret_sample(var["valueFrom"]["secretKeyRef"]["key"], documented)
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = POD_NAME
    return env


# -- settings named by compose and Kubernetes exist ------------------------------------------------


def test_the_settings_walk_knows_nested_sections() -> None:
    names = settings_env_names()
    assert "AUTOSCORER__GATEWAY__WEBHOOKS__CALLBACK_SECRET" in names
    assert "AUTOSCORER__EXECUTOR_SERVICE__REPLICA_ID" in names
    assert "AUTOSCORER__GATEWAY__NO_SUCH_KEY" not in names


def test_every_autoscorer_variable_in_compose_and_k8s_is_a_settings_field() -> None:
    used: set[str] = set()
    for service in compose()["services"].values():
        used |= set(service.get("environment", {}))
    for deployment in deployments().values():
        used |= {var["name"] for var in container(deployment).get("env", [])}
    settings_vars = {name for name in used if name.startswith(ENV_PREFIX)}
    assert settings_vars, "the deployment files set settings through AUTOSCORER__ variables"
    assert settings_vars <= settings_env_names(), settings_vars - settings_env_names()
    # a single underscore after the prefix would be silently ignored by the settings
    others = {name for name in used if name.startswith("AUTOSCORER")} - settings_vars
    assert others <= {"AUTOSCORER_CONFIG", "AUTOSCORER_UMASK"}


# -- docker-compose.yml -------------------------------------------------------------------------


def test_compose_refuses_to_start_without_the_secrets() -> None:
    for missing in DOTENV:
        env = {k: v for k, v in DOTENV.items() if k != missing}
        with pytest.raises(LookupError, match=missing):
            compose(env)


def test_compose_runs_the_official_images_and_the_four_services_from_one_dockerfile() -> None:
    services = compose()["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["mongo"]["image"] == "mongo:7"
    assert services["jaeger"]["image"].startswith("jaegertracing/")
    for name in SERVICES:
        spec = services[name]
        assert spec["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
        assert spec["command"] == [name]
    assert len({services[name]["image"] for name in SERVICES}) == 1


@pytest.mark.parametrize("name", SERVICES)
def test_compose_settings_load_for_each_service(monkeypatch, name) -> None:
    service = autoscorer_services()[name]
    env = {k: str(v) for k, v in service["environment"].items()}
    config = compose_config_file(service, env["AUTOSCORER_CONFIG"])
    settings = load_with(monkeypatch, env, config)
    assert (settings.bus.kind, settings.store.kind) == ("rabbitmq", "mongo")
    assert "r4bbit@rabbitmq:5672" in settings.bus.url.get_secret_value()
    assert "m0ngo@mongo:27017" in settings.store.url.get_secret_value()
    backend = settings.executor_service.backend
    validate_backend_config(settings.executor.backends[backend])
    assert backend in settings.scheduler.enabled_backends
    assert settings.otel.otlp_endpoint == "http://jaeger:4318"
    mounts = {m["target"] for m in service["volumes"] if isinstance(m, dict)}
    assert any(settings.gateway.data_root.is_relative_to(m) for m in mounts)
    if name == "gateway":
        assert settings.gateway.host == "0.0.0.0"
        (key,) = settings.gateway.api_keys
        assert (key.key.get_secret_value(), key.role) == ("k3y", "admin")


def test_only_the_executor_mounts_the_docker_socket() -> None:
    def mounts_socket(spec: dict[str, Any]) -> bool:
        for volume in spec.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.endswith("docker.sock"):
                return True
        return False

    services = compose()["services"]
    assert {name for name, spec in services.items() if mounts_socket(spec)} == {"executor"}
    assert all("hostPath" not in str(d) for d in k8s_documents())


def test_only_the_executor_runs_as_root_in_compose() -> None:
    services = autoscorer_services()
    assert services["executor"]["user"].startswith("0:")
    assert all("user" not in spec for name, spec in services.items() if name != "executor")


def test_workspaces_are_bound_at_the_host_path_so_dockerd_finds_them() -> None:
    for name, spec in autoscorer_services().items():
        binds = [v for v in spec["volumes"] if isinstance(v, dict) and v["type"] == "bind"]
        data = [v for v in binds if not v["source"].endswith("docker.sock")]
        assert [(v["source"], v["target"]) for v in data] == [("/srv/autoscorer",) * 2], name
    executor_bind = next(
        v for v in autoscorer_services()["executor"]["volumes"] if v["target"] == "/srv/autoscorer"
    )
    assert executor_bind["bind"]["propagation"] == "rshared"


def test_compose_healthchecks_gate_the_services(monkeypatch) -> None:
    services = compose()["services"]
    for name in ("rabbitmq", "mongo", *SERVICES):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    config = compose_config_file(services["scheduler"], "/etc/autoscorer/config.yaml")
    settings = load_with(monkeypatch, {}, config)
    for name, port in ops_ports(settings).items():  # each asks its own ops (or API) port
        assert port > 0, name
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check, name
    for name in SERVICES:
        needs = services[name]["depends_on"]
        assert needs["rabbitmq"] == {"condition": "service_healthy"}
    for name in ("gateway", "scheduler"):
        assert services[name]["depends_on"]["mongo"] == {"condition": "service_healthy"}


def test_compose_broker_allows_a_delivery_as_long_as_the_longest_run(monkeypatch) -> None:
    service = autoscorer_services()["executor"]
    env = {k: str(v) for k, v in service["environment"].items()}
    settings = load_with(monkeypatch, env, compose_config_file(service, env["AUTOSCORER_CONFIG"]))
    conf = compose()["configs"]["rabbitmq-consumer-timeout"]["content"]
    timeout_ms = int(re.search(r"consumer_timeout\s*=\s*(\d+)", conf).group(1))
    section = settings.executor_service
    assert timeout_ms > (section.max_time_limit_s + section.run_margin_s + 60) * 1000


# -- deploy/k8s ---------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["resources"][0] == "namespace.yaml"


def test_every_object_lives_in_the_autoscorer_namespace() -> None:
    for doc in k8s_documents():
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "autoscorer"
            assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert doc["metadata"]["namespace"] == "autoscorer", doc["metadata"]["name"]


def test_configmap_settings_validate() -> None:
    data = yaml.safe_load(configmap_yaml())
    settings = Settings.model_validate(data)
    backend = settings.executor_service.backend
    config = validate_backend_config(settings.executor.backends[backend])
    assert backend == "kubernetes" and settings.scheduler.enabled_backends == ["kubernetes"]
    assert config.pvc_name in of_kind("PersistentVolumeClaim")
    assert settings.gateway.data_root.is_relative_to(config.workspace_root)
    assert not settings.executor_service.cleanup_on_start  # replicas cannot tell Jobs apart
    secrets = {"url"} & set(data["bus"]) | {"url"} & set(data["store"])
    assert not secrets and "api_keys" not in data["gateway"]


def test_workspace_pvc_is_read_write_many() -> None:
    pvc = of_kind("PersistentVolumeClaim")["autoscorer-workspaces"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("name", sorted(f"autoscorer-{s}" for s in SERVICES))
def test_each_deployment_loads_its_settings(monkeypatch, tmp_path, name) -> None:
    deployment = deployments()[name]
    env = deployment_env(deployment)
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert env["AUTOSCORER_CONFIG"] == mounts["config"] + "/config.yaml"
    config = tmp_path / "config.yaml"
    config.write_text(configmap_yaml(), encoding="utf-8")
    settings = load_with(monkeypatch, env, config)
    assert settings.bus.url.get_secret_value().startswith("amqp://")
    role = container(deployment)["args"][0]
    if role in ("gateway", "scheduler"):
        assert settings.store.url.get_secret_value().startswith("mongodb://")
    if role == "gateway":
        assert {k.role for k in settings.gateway.api_keys} == {"admin", "submitter"}
        assert settings.gateway.webhooks.callback_secret is not None
    if role == "executor":
        assert settings.executor_service.replica_id == POD_NAME
    if role == "scorer":
        assert settings.scorer.replica_id == POD_NAME


def test_every_secret_key_referenced_is_created_by_the_documented_command() -> None:
    referenced = set()
    for deployment in deployments().values():
        for var in container(deployment).get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "autoscorer-secrets"
                referenced.add(ref["key"])
    assert referenced == set(documented_secret())


@pytest.mark.parametrize("name", sorted(f"autoscorer-{s}" for s in SERVICES))
def test_deployments_run_non_root_read_only_without_capabilities(name) -> None:
    pod = deployments()[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    box = container(deployments()[name])
    assert box["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    writable = {m["mountPath"] for m in box["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", "/var/lib/autoscorer"} <= writable  # the image's HOME and working directory
    assert set(box["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(box["resources"]["limits"])


def test_one_image_and_the_service_chosen_by_argument() -> None:
    images = {container(d)["image"] for d in deployments().values()}
    assert len(images) == 1
    assert sorted(container(d)["args"][0] for d in deployments().values()) == sorted(SERVICES)


def test_only_the_executor_gets_the_rbac_service_account() -> None:
    account = next(d for d in of_kind("ServiceAccount").values())
    for name, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        if name == "autoscorer-executor":
            assert pod["serviceAccountName"] == account["metadata"]["name"]
            assert pod["automountServiceAccountToken"] is True
        else:
            assert "serviceAccountName" not in pod
            assert pod["automountServiceAccountToken"] is False


def test_pods_mounting_workspaces_see_them_at_the_backends_workspace_root() -> None:
    config = validate_backend_config(
        yaml.safe_load(configmap_yaml())["executor"]["backends"]["kubernetes"]
    )
    for name in ("autoscorer-gateway", "autoscorer-scorer", "autoscorer-executor"):
        deployment = deployments()[name]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        claim = volumes["workspaces"]["persistentVolumeClaim"]["claimName"]
        assert claim == config.pvc_name
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        assert mounts["workspaces"] == config.workspace_root


def test_pods_that_listen_have_probes_on_routes_that_need_no_key() -> None:
    listening = {n: d for n, d in deployments().items() if container(d).get("ports")}
    assert set(listening) == {f"autoscorer-{name}" for name in SERVICES}
    gateway = container(listening["autoscorer-gateway"])
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz", "/metrics"} <= PUBLIC_PATHS
    port = Settings.model_validate(yaml.safe_load(configmap_yaml())).gateway.port
    assert gateway["ports"] == [{"name": "http", "containerPort": port}]
    service = of_kind("Service")["autoscorer-gateway"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        service["spec"]["selector"]
        == listening["autoscorer-gateway"]["spec"]["selector"]["matchLabels"]
    )


def ops_ports(settings: Settings) -> dict[str, int]:
    """The port each service answers /metrics, /healthz and /readyz on, by these settings."""
    ops = settings.ops_http
    return {
        "gateway": settings.gateway.port,
        "scheduler": ops.scheduler_port,
        "executor": ops.executor_port,
        "scorer": ops.scorer_port,
    }


@pytest.mark.parametrize("name", SERVICES)
def test_every_deployment_is_probed_and_scraped_on_the_port_its_settings_open(name) -> None:
    settings = Settings.model_validate(yaml.safe_load(configmap_yaml()))
    assert settings.ops_http.host == "0.0.0.0"  # probes and scrapes come from outside the pod
    port = ops_ports(settings)[name]
    assert port > 0
    deployment = deployments()[f"autoscorer-{name}"]
    spec = container(deployment)
    [named] = spec["ports"]
    assert named["containerPort"] == port
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert spec[probe]["httpGet"] == {"path": path, "port": named["name"]}, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def test_deployment_selectors_never_match_participant_job_pods() -> None:
    policy = of_kind("NetworkPolicy")["autoscorer-job-deny-all"]
    job_labels = policy["spec"]["podSelector"]["matchLabels"]
    for deployment in deployments().values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert not job_labels.items() <= labels.items()


# -- deploy/Dockerfile --------------------------------------------------------------------------


def entrypoint_script() -> str:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "COPY deploy/autoscorer-service /usr/local/bin/autoscorer-service" in text
    return (ROOT / "deploy" / "autoscorer-service").read_text(encoding="utf-8")


def test_dockerfile_builds_from_python_slim_installs_the_project_and_drops_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"pip install \.( |$)", text, re.MULTILINE)
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/autoscorer-service"]' in text


@pytest.fixture
def fake_bin(tmp_path):
    """``python`` and ``autoscorer`` stand-ins that print the umask and their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "autoscorer"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "$(umask) {name} $*"\n')
        tool.chmod(0o755)
    script = tmp_path / "autoscorer-service"
    script.write_text(entrypoint_script())

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(script), *args],
            capture_output=True,
            text=True,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
            check=False,
        )

    return run


@pytest.mark.parametrize("service", SERVICES)
def test_entrypoint_runs_the_named_service_module(fake_bin, service) -> None:
    done = fake_bin(service, "--flag")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1:] == ["python", "-m", f"services.{service}.main", "--flag"]
    module = ROOT / "services" / service / "main.py"
    assert "def main() -> None:" in module.read_text(encoding="utf-8")


def test_entrypoint_umask_cli_and_unknown_service(fake_bin) -> None:
    assert fake_bin("scorer").stdout.split()[0] == "0022"
    assert fake_bin("executor", AUTOSCORER_UMASK="0002").stdout.split()[0] == "0002"
    assert fake_bin("autoscorer", "config", "dump").stdout.split()[1:] == [
        "autoscorer",
        "config",
        "dump",
    ]
    assert fake_bin().stdout.split()[1:] == ["python", "-m", "services.gateway.main"]
    wrong = fake_bin("nope")
    assert wrong.returncode == 2 and "unknown service 'nope'" in wrong.stderr


# -- docs/API.md and docs/DEPLOYMENT.md ---------------------------------------------------------


def gateway_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(
        GatewaySettings(data_root=tmp_path),
        SqliteJobStore(tmp_path / "jobs.sqlite3"),
        MemoryBus(),
        (),
        SqliteWebhookStore(str(tmp_path / "hooks.sqlite3")),
    )
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            found.add((route.method, path))
    return found


def test_api_md_documents_exactly_the_gateways_routes(tmp_path) -> None:
    text = API_MD.read_text(encoding="utf-8")
    documented = set(re.findall(r"^### `(GET|POST|PUT|PATCH|DELETE) (/\S*)`", text, re.MULTILINE))
    served = gateway_routes(tmp_path)
    assert any(path.startswith("/v1/") for _, path in served)
    assert documented == served, {
        "undocumented": served - documented,
        "not served": documented - served,
    }


def test_api_md_signature_snippet_verifies_a_real_delivery() -> None:
    text = API_MD.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    snippet = next(b for b in blocks if "def verify_webhook" in b)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "API.md", "exec"), namespace)
    verify = namespace["verify_webhook"]
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    body = b'{"type": "score.completed", "job_id": "job-1"}'
    import time

    now = int(time.time())
    headers = signing.headers(secret, "msg_1", now, body)
    assert verify(secret, headers, body) is True
    assert verify(secret, headers, body + b" ") is False
    stale = signing.headers(secret, "msg_1", now - 3600, body)
    assert verify(secret, stale, body) is False


def test_deployment_md_covers_every_settings_section() -> None:
    text = DEPLOYMENT_MD.read_text(encoding="utf-8")
    for section in Settings.model_fields:
        assert f"| `{section}` |" in text, section


def github_slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return {github_slug(h) for h in headings}


@pytest.mark.parametrize("doc", [API_MD, DEPLOYMENT_MD])
def test_doc_links_point_at_files_and_headings_that_exist(doc) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8"))
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local
    for link in local:
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), link
        if anchor:
            assert anchor in anchors(path), link
