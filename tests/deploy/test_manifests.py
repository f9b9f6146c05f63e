"""deploy/: the Kubernetes manifests against the Kubernetes schemas and the Compose file against
the Compose specification's schema, offline (the schemas ship in kubernetes-validate and
check-jsonschema); and both describe the topology and environment of `make up`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.localmesh import Mesh, demo_spec

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_POSTGRES = DEPLOY / "k8s-postgres"
K8S_DIRS = {"sqlite": K8S, "postgresql": K8S_POSTGRES}
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests are checked against
# What a process gets from services/localmesh that a container gets differently.
SECURITY = {
    "IDMESH_TLS_CA",
    "IDMESH_TLS_CERT",
    "IDMESH_TLS_KEY",
    "IDMESH_INSECURE_DEV_MODE",
    "OTEL_SERVICE_NAME",  # a container is named in traces by the service it runs
}


def _load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def k8s_documents(folder: Path = K8S) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str, folder: Path = K8S) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents(folder) if d["kind"] == kind}


def demo_env() -> dict[str, dict[str, str]]:
    """The environment services/localmesh gives each process of `make up`."""
    mesh = Mesh(demo_spec(), ROOT / "data")  # building it starts nothing
    return {name: svc.env for name, svc in mesh.services.items()}


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


# --- Kubernetes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("store", list(K8S_DIRS))
def test_the_manifests_are_what_tools_gen_k8s_writes(store: str) -> None:
    rendered = _load_tool("gen_k8s").render(store)
    folder = K8S_DIRS[store]
    on_disk = {p.name: p.read_text() for p in folder.glob("*.yaml")}
    assert on_disk == rendered, f"deploy/{folder.name} is stale: run python tools/gen_k8s.py"


@pytest.mark.parametrize(
    "name,doc",
    k8s_documents() + [(f"k8s-postgres/{n}", d) for n, d in k8s_documents(K8S_POSTGRES)],
    ids=lambda v: v if isinstance(v, str) else v["kind"],
)
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    name: str, doc: dict[str, Any]
) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize("folder", list(K8S_DIRS.values()), ids=lambda f: f.name)
def test_the_kustomization_lists_every_manifest_but_the_secrets_examples(folder: Path) -> None:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    expected = {
        p.name
        for p in folder.glob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    }
    assert set(kustomization["resources"]) == expected


def test_each_service_is_one_hardened_replica_with_grpc_probes_and_tls() -> None:
    deployments = by_kind("Deployment")
    assert set(deployments) == set(demo_env())
    secrets = by_kind("Secret")
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name  # SQLite
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": 8086}, (name, probe)
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "persistentVolumeClaim" in volumes[mounts["/data"]]
        assert "emptyDir" in volumes[mounts["/tmp"]]
        tls = volumes[mounts["/etc/idmesh/tls"]]["secret"]["secretName"]
        assert tls in secrets and set(secrets[tls]["stringData"]) == {
            "ca.crt",
            "tls.crt",
            "tls.key",
        }


def test_the_containers_get_the_environment_of_make_up_with_tls() -> None:
    configs = by_kind("ConfigMap")
    for name, env in demo_env().items():
        data = configs[f"{name}-env"]["data"]
        assert set(env) - SECURITY <= set(data), name
        assert {"IDMESH_TLS_CA", "IDMESH_TLS_CERT", "IDMESH_TLS_KEY", "IDMESH_HEALTH_BIND"} <= set(
            data
        )
        assert "IDMESH_INSECURE_DEV_MODE" not in data


def test_the_numbering_plan_config_map_is_the_repositorys_file() -> None:
    plan = by_kind("ConfigMap")["idmesh-numbering-plan"]["data"]["numbering-plan.csv"]
    assert plan == (DEPLOY / "numbering-plan.csv").read_text()


def test_gateways_have_a_disruption_budget_and_singletons_none() -> None:
    budgets = by_kind("PodDisruptionBudget")
    assert set(budgets) == {"gateway-alpha", "gateway-beta"}


def test_on_postgresql_each_service_is_two_replicas_rolling_with_its_database_url() -> None:
    deployments = by_kind("Deployment", K8S_POSTGRES)
    assert set(deployments) == set(demo_env())
    secrets = by_kind("Secret", K8S_POSTGRES)
    configs = by_kind("ConfigMap", K8S_POSTGRES)
    urls = set()
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["replicas"] == 2, name
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }, name
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert refs == [f"{name}-env", f"{name}-database"], name
        url = secrets[f"{name}-database"]["stringData"]["IDMESH_DATABASE_URL"]
        assert url.startswith("postgresql://") and url.endswith(
            f"/idmesh_{name.replace('-', '_')}"
        ), name
        urls.add(url)
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "persistentVolumeClaim" not in volumes["data"], name  # no state in the pod
        env = configs[f"{name}-env"]["data"]
        assert set(demo_env()[name]) - SECURITY - {"IDMESH_DB_PATH"} <= set(env), name
        if name.startswith("gateway-"):  # the replicas share the one-time codes' key
            key = volumes["otp-key"]["secret"]["secretName"]
            assert secrets[key]["data"] == {"otp-hmac.key": ""}  # a placeholder: refused
            assert env["IDMESH_OTP_KEY_FILE"] == "/etc/idmesh/otp/otp-hmac.key"
        else:
            assert "IDMESH_DB_PATH" not in env, name
    assert len(urls) == len(deployments)  # a database per service deployment
    assert by_kind("PersistentVolumeClaim", K8S_POSTGRES) == {}
    assert set(by_kind("PodDisruptionBudget", K8S_POSTGRES)) == set(deployments)


# --- Compose --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compose.yaml", "compose.postgres.yaml"])
def test_the_compose_file_is_valid_against_the_compose_specification(name: str) -> None:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose(name)), key=lambda e: e.json_path)
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors]


def test_compose_on_postgres_runs_two_replicas_of_each_service_on_a_database_each() -> None:
    services = compose("compose.postgres.yaml")["services"]
    sqlite = compose()["services"]
    assert set(services) == set(sqlite) | {"postgres", "databases"}
    databases = services["databases"]["command"][-1]
    urls = set()
    for name in set(sqlite) - {"pki"}:
        service, twin = services[name], sqlite[name]
        assert service["deploy"]["replicas"] == 2, name
        assert "ports" not in service, name  # replicas cannot share a host port
        env = service["environment"]
        database = f"idmesh_{name.replace('-', '_')}"
        assert env["IDMESH_DATABASE_URL"].endswith(f"@postgres:5432/{database}"), name
        assert database.removeprefix("idmesh_") in databases, name
        urls.add(env["IDMESH_DATABASE_URL"])
        # the rest of the environment as on SQLite (the SQLite file aside)
        assert set(twin["environment"]) - {"IDMESH_DB_PATH"} <= set(env), name
        assert service["depends_on"]["databases"]["condition"] == "service_completed_successfully"
        assert service["read_only"] is True and service["user"] == "10001:10001"
    assert len(urls) == len(set(sqlite)) - 1  # one database per service deployment


def test_compose_runs_the_topology_of_make_up() -> None:
    services = compose()["services"]
    pki_job = services.pop("pki")
    mesh_env = demo_env()
    assert set(services) == set(mesh_env)
    demo = Mesh(demo_spec(), ROOT / "data")
    for name, service in services.items():
        published = {p.split(":")[1]: int(p.split(":")[0]) for p in service["ports"]}
        assert published["50051"] == int(demo.address(name).rpartition(":")[2]), name
        assert published["9100"] == int(demo.metrics_address(name).rpartition(":")[2]), name
        env = service["environment"]
        assert set(mesh_env[name]) - SECURITY <= set(env), name
        # Mutual TLS: each service's certificate comes from the one-shot pki job, which
        # names the service's host name, and the volume is mounted read-only.
        assert "IDMESH_INSECURE_DEV_MODE" not in env
        assert env["IDMESH_TLS_CA"] == "/pki/ca.pem"
        stem = Path(env["IDMESH_TLS_CERT"]).stem
        assert env["IDMESH_TLS_KEY"] == f"/pki/{stem}-key.pem"
        assert f"{stem.replace('_', '/')}@{name}" in pki_job["command"], name
        assert "pki:/pki:ro" in service["volumes"], name
        assert any(v.endswith(":/data") for v in service["volumes"]), name
        assert service["healthcheck"]["test"][1:5] == [
            "idmesh-entrypoint",
            "idmesh",
            "health",
            "--address",
        ]
        assert service["read_only"] is True and service["user"] == "10001:10001"


# --- the image ------------------------------------------------------------------------------------


def test_the_image_runs_as_a_non_root_user_through_the_entrypoint() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in dockerfile
    assert '\nENTRYPOINT ["idmesh-entrypoint"]\n' in dockerfile
    entrypoint = DEPLOY / "entrypoint.sh"
    subprocess.run(["sh", "-n", str(entrypoint)], check=True)
    usage = subprocess.run(["sh", str(entrypoint), "nothing"], capture_output=True, text=True)
    assert usage.returncode == 2 and "operator_registry" in usage.stderr
