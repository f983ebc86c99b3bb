"""The deployment manifests, checked as a cluster would: each kustomization rendered by `kubectl
kustomize` and every object validated strictly against the Kubernetes API; and the compose file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

K8S = ROOT / "infra" / "k8s"
COMPOSE = ROOT / "infra" / "compose"
KUBERNETES_VERSION = "1.32.0"
ADMIN_ENV = {"MLFLOW_AUTH_ADMIN_USERNAME": "MLFLOW_ADMIN_USERNAME",
             "MLFLOW_AUTH_ADMIN_PASSWORD": "MLFLOW_ADMIN_PASSWORD",
             "MLFLOW_FLASK_SERVER_SECRET_KEY": "MLFLOW_FLASK_SECRET_KEY"}


def rendered(folder: Path, workdir: Path) -> list[dict]:
    """`kubectl kustomize` of a copy of `folder` in `workdir` where every `X.example` is copied to `X`."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (kustomize is built in) renders the manifests"
    copy = shutil.copytree(folder, workdir / "rendered")
    for example in copy.glob("*.example"):
        shutil.copy(example, example.with_suffix(""))
    result = subprocess.run([kubectl, "kustomize", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def refusals(objects: list[dict]) -> list[str]:
    """Why the API server would refuse each of `objects`, unknown fields included."""
    refused = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            refused.append(f"{name}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            refused.append(f"{name}: {error.message}")
    return refused


def pod_specs(objects: list[dict]) -> list[dict]:
    return [obj["spec"]["template"]["spec"] for obj in objects
            if obj["kind"] in ("Deployment", "StatefulSet")]


def containers(objects: list[dict]) -> dict[str, dict]:
    """Every container of every pod, init containers included, by name."""
    return {container["name"]: container for pod in pod_specs(objects)
            for container in pod.get("initContainers", []) + pod["containers"]}


def env_keys(path: Path) -> set[str]:
    return set(re.findall(r"^(\w+)=", path.read_text(), re.MULTILINE))


def image_tag(image: str) -> str:
    return image.rsplit("/", 1)[-1].partition(":")[2]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> list[dict]:
    return rendered(K8S / "tracking", tmp_path_factory.mktemp("tracking"))


@pytest.mark.parametrize("folder", ["tracking", "pipeline", "follower"])
def test_every_rendered_object_is_valid_kubernetes(folder, tmp_path):
    objects = rendered(K8S / folder, tmp_path)
    assert objects
    assert refusals(objects) == []


@pytest.mark.parametrize(("field", "broken"), [("replicas: 1", 'replicas: "one"'),
                                               ("ports: [{containerPort: 5000}]", "port: 5000")])
def test_a_broken_field_is_refused(field, broken, tmp_path):
    manifests = shutil.copytree(K8S / "tracking", tmp_path / "broken")
    mlflow = manifests / "mlflow.yaml"
    assert mlflow.read_text().count(field) == 1
    mlflow.write_text(mlflow.read_text().replace(field, broken))
    refused = refusals(rendered(manifests, tmp_path))
    assert len(refused) == 1 and refused[0].startswith("Deployment/mlflow: spec."), refused


def test_nothing_under_infra_mentions_minio():
    assert [path for path in (ROOT / "infra").rglob("*")
            if path.is_file() and b"minio" in path.read_bytes().lower()] == []


def test_mlflow_answers_to_its_service_names_and_requires_a_login(tracking):
    mlflow = containers(tracking)["mlflow"]
    env = {variable["name"]: variable for variable in mlflow["env"]}
    assert "command" not in mlflow and "args" not in mlflow
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert {"mlflow.mnist-gan.svc:5000", "mlflow:5000"} <= set(allowed)
    for variable, key in ADMIN_ENV.items():
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "mnist-gan-stack", "key": key}
    assert (mlflow["readinessProbe"]["httpGet"]["path"] == mlflow["livenessProbe"]["httpGet"]["path"]
            == "/health")


def test_the_server_upgrades_its_database_schema_before_it_starts(tracking):
    (pod,) = [pod for pod in pod_specs(tracking) if any(c["name"] == "mlflow" for c in pod["containers"])]
    (upgrade,) = pod["initContainers"]
    assert upgrade["args"] == ["upgrade-db"] and upgrade["image"] == containers(tracking)["mlflow"]["image"]
    server_env = {v["name"]: v for v in containers(tracking)["mlflow"]["env"]}
    for variable in upgrade["env"]:  # the same database as the server's
        assert variable == server_env[variable["name"]]
    assert {v["name"] for v in upgrade["env"]} >= {"MLFLOW_BACKEND_STORE_URI"}


def test_env_references_resolve(tracking):
    """A `$(VAR)` stays literal text unless VAR comes earlier in the list; a pod whose secretKeyRef names a
    missing key never starts."""
    (secret,) = [obj for obj in tracking if obj["metadata"]["name"] == "mnist-gan-stack"]
    assert env_keys(K8S / "tracking" / "secrets.env.example") == set(secret["data"])
    for container in containers(tracking).values():
        defined = set()
        for variable in container.get("env", []):
            assert set(re.findall(r"\$\((\w+)\)", variable.get("value", ""))) <= defined, variable
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            assert reference is None or reference["key"] in secret["data"], variable
            defined.add(variable["name"])


def test_every_pod_runs_unprivileged_limited_and_pinned(tracking):
    namespace = next(obj for obj in tracking if obj["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for pod in pod_specs(tracking):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
            assert image_tag(container["image"]) not in ("", "latest"), container["image"]


def test_pipeline_objects_take_the_namespace_they_are_applied_to(tmp_path):
    objects = {obj["kind"]: obj for obj in rendered(K8S / "pipeline", tmp_path)}
    assert set(objects) == {"Secret", "PersistentVolumeClaim"}
    assert all("namespace" not in obj["metadata"] for obj in objects.values())
    assert objects["Secret"]["metadata"]["name"] == "mnist-gan-tracking"
    assert set(objects["Secret"]["data"]) == {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                              "MLFLOW_TRACKING_PASSWORD"}
    assert objects["PersistentVolumeClaim"]["metadata"]["name"] == "mnist-gan-checkpoints"


def test_compose_runs_the_same_images_on_localhost_only(tracking):
    text = (COMPOSE / "docker-compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"postgres", "seaweedfs", "upgrade-db", "mlflow"}
    assert services["upgrade-db"]["command"] == ["upgrade-db"]
    assert services["mlflow"]["depends_on"]["upgrade-db"] == {"condition": "service_completed_successfully"}
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published)
    defined = env_keys(COMPOSE / ".env.example")
    assert defined == env_keys(K8S / "tracking" / "secrets.env.example")
    assert set(re.findall(r"(?<!\$)\$\{(\w+)", text)) <= defined
    environment = services["mlflow"]["environment"]
    assert "mlflow:5000" in environment["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert set(ADMIN_ENV) <= set(environment)
    images = {service["image"] for service in services.values()}
    assert images == {container["image"] for container in containers(tracking).values()}


def test_the_follower_runs_deploy_follow_with_only_the_rights_deploy_uses(tmp_path):
    """infra/k8s/follower: one pod running `mnist-gan deploy --follow` (flags the CLI accepts), unprivileged,
    with a Role allowing exactly the requests a deploy makes (tests/test_follower.py records them: GET,
    POST and PATCH of inferenceservices) and the pipeline's tracking Secret."""
    from training.cli import build_parser

    objects = rendered(K8S / "follower", tmp_path)
    assert refusals(objects) == [] and all("namespace" not in obj["metadata"] for obj in objects)
    by_kind = {obj["kind"]: obj for obj in objects}
    assert set(by_kind) == {"ServiceAccount", "Role", "RoleBinding", "Deployment"}
    (rule,) = by_kind["Role"]["rules"]
    assert rule == {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                    "verbs": ["get", "create", "patch"]}
    assert by_kind["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "mnist-gan-follower"}]
    deployment = by_kind["Deployment"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    pod = deployment["template"]["spec"]
    assert pod["serviceAccountName"] == "mnist-gan-follower" and pod["securityContext"]["runAsNonRoot"]
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.follow, args.inference_service) == ("deploy", 60, "mnist-gan")
    assert container["envFrom"] == [{"secretRef": {"name": "mnist-gan-tracking"}}]  # infra/k8s/pipeline's
    unprivileged = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["securityContext"] == unprivileged
    assert image_tag(container["image"]) == "0.1.0" and "memory" in container["resources"]["limits"]
