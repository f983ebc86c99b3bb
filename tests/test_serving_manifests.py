"""The KServe manifests, checked as a cluster would: `infra/k8s/serving` rendered by `kubectl kustomize` and
the InferenceService template beside it, KServe's objects validated strictly against KServe v0.20's CRDs,
the rest against the Kubernetes API; and what the objects promise each other (account, secret, runtime,
deployer's role)."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest
import yaml

from tests.support import crd_schema
from tests.test_manifests import K8S, image_tag, refusals, rendered

SERVING = K8S / "serving"
TEMPLATE = SERVING / "inferenceservice.yaml"
KSERVE = "serving.kserve.io/"
S3_ANNOTATIONS = {f"serving.kserve.io/s3-{name}" for name in ("endpoint", "usehttps", "verifyssl", "region")}


def by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds = {obj["kind"]: obj for obj in objects}
    assert len(kinds) == len(objects), "one object of each kind"
    return kinds


def env_values(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))


def at(obj: dict, path: str) -> tuple[dict | list, str | int]:
    """The container of the field at dotted `path` in `obj` (list indices as numbers), and its key."""
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    for part in parents:
        obj = obj[part]
    return obj, last


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> list[dict]:
    """What `kubectl apply -k infra/k8s/serving` creates."""
    return rendered(SERVING, tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def serving(applied) -> dict[str, dict]:
    """Those objects and the InferenceService that `mnist-gan deploy` creates beside them."""
    return by_kind([*applied, yaml.safe_load(TEMPLATE.read_text())])


def test_reapplying_the_kustomization_leaves_the_served_model_alone(applied):
    """Deploy owns the InferenceService: were it a resource, `kubectl apply -k` after a deploy would point
    the service back at the template's placeholder storageUri."""
    assert "InferenceService" not in {obj["kind"] for obj in applied}
    assert TEMPLATE.name not in yaml.safe_load((SERVING / "kustomization.yaml").read_text())["resources"]


def test_strict_schemas_close_described_objects_only():
    schema = crd_schema.strict({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {
            "inner": {"type": "object", "properties": {}}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}}})
    assert schema["additionalProperties"] is False
    assert schema["properties"]["spec"]["additionalProperties"] is False
    assert schema["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema["properties"]["free"]
    assert schema["properties"]["free"]["properties"]["inner"]["additionalProperties"] is False
    assert schema["properties"]["list"]["items"]["additionalProperties"] is False


def test_kserve_resources_match_their_crds(serving):
    folder = crd_schema.crd_folder()
    resources = {kind: obj for kind, obj in serving.items() if obj["apiVersion"].startswith(KSERVE)}
    assert set(resources) == {"InferenceService", "ServingRuntime"}
    assert {kind: crd_schema.refusals(obj, folder) for kind, obj in resources.items()} == {
        "InferenceService": [], "ServingRuntime": []}


@pytest.mark.parametrize(("kind", "path", "misspelled"), [
    ("InferenceService", "spec.predictor.model.storageUri", "storageURI"),
    ("ServingRuntime", "spec.supportedModelFormats.0.autoSelect", "autoselect")])
def test_a_misspelled_field_is_refused(serving, kind, path, misspelled):
    folder = crd_schema.crd_folder()
    broken = copy.deepcopy(serving[kind])
    parent, key = at(broken, path)
    parent[misspelled] = parent.pop(key)
    assert crd_schema.refusals(broken, folder) == [f"{path.rsplit('.', 1)[0]}.{misspelled}: unknown field"]


@pytest.mark.parametrize(("kind", "path", "value", "expected"), [
    ("InferenceService", "spec.predictor.canaryTrafficPercent", "ten", "'ten' is not of type 'integer'"),
    ("ServingRuntime", "spec.protocolVersions", "v2", "'v2' is not of type 'array'"),
    ("ServingRuntime", "spec.containers.0.resources.limits.memory", [2], "[2] is not valid under any")])
def test_a_field_of_the_wrong_type_is_refused(serving, kind, path, value, expected):
    folder = crd_schema.crd_folder()
    broken = copy.deepcopy(serving[kind])
    parent, key = at(broken, path)
    parent[key] = value
    (refused,) = crd_schema.refusals(broken, folder)
    assert refused.startswith(f"{path}: {expected}"), refused


def test_a_kind_without_a_crd_is_refused_by_name(serving):
    folder = crd_schema.crd_folder()
    unknown = dict(serving["InferenceService"], apiVersion="serving.kserve.io/v1alpha2")
    with pytest.raises(LookupError, match="serving.kserve.io/v1alpha2, kind InferenceService"):
        crd_schema.refusals(unknown, folder)


def test_built_in_objects_are_valid_kubernetes(serving):
    built_in = [obj for obj in serving.values() if not obj["apiVersion"].startswith(KSERVE)]
    assert {obj["kind"] for obj in built_in} == {"ServiceAccount", "Secret", "Role", "RoleBinding"}
    assert refusals(built_in) == []


def test_serving_objects_take_the_namespace_they_are_applied_to(serving):
    """As infra/k8s/pipeline's: the Kubeflow user namespace where the pipeline runs."""
    assert [obj["kind"] for obj in serving.values() if "namespace" in obj["metadata"]] == []


def test_the_runtime_serves_the_mlflow_model_with_mlserver(serving):
    runtime, model = serving["ServingRuntime"], serving["InferenceService"]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"] == {"name": "mlflow", "version": "3"}
    assert {**model["modelFormat"], "autoSelect": True} in runtime["spec"]["supportedModelFormats"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"] == ["v2"]
    assert model["storageUri"].startswith("s3://mlflow-artifacts/")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].rsplit(":", 1)[0].endswith("/mnist-gan-serving")
    assert image_tag(container["image"]) not in ("", "latest"), container["image"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == "serving_runtime.GeneratorRuntime"  # bad input: 400
    assert env["MLSERVER_MODEL_URI"] == "/mnt/models"  # where KServe's storage initializer puts the model
    assert env["MLSERVER_MODEL_NAME"] == "{{.Name}}"  # the InferenceService's name
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


def test_the_serving_image_defaults_to_the_runtimes_settings(serving):
    """`docker run` of the image serves as the ServingRuntime does; KServe names the model after the
    InferenceService, the image after the one in inferenceservice.yaml."""
    (container,) = serving["ServingRuntime"]["spec"]["containers"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    dockerfile = (K8S.parent / "docker" / "serving.Dockerfile").read_text()
    image_env = dict(re.findall(r"^\s*(?:ENV )?(MLSERVER_\w+)=(\S+)", dockerfile, re.MULTILINE))
    assert image_env == {**env, "MLSERVER_MODEL_NAME": serving["InferenceService"]["metadata"]["name"]}
    assert f"CMD {json.dumps(container['command'])}" in dockerfile
    module = env["MLSERVER_MODEL_IMPLEMENTATION"].rsplit(".", 1)[0]
    assert f"COPY infra/{module}.py /opt/mnist-gan-serving/{module}.py" in dockerfile
    assert "ENV PYTHONPATH=/opt/mnist-gan-serving" in dockerfile


def test_the_model_is_read_with_the_read_only_identity(serving):
    account, secret = serving["ServiceAccount"], serving["Secret"]
    predictor = serving["InferenceService"]["spec"]["predictor"]
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert S3_ANNOTATIONS <= set(secret["metadata"]["annotations"])
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    stack = env_values((K8S / "tracking" / "secrets.env.example").read_text())
    assert base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]).decode() != stack["S3_ACCESS_KEY_ID"]


def test_the_s3_endpoint_is_the_tracking_stacks_artifact_store(serving, tmp_path):
    tracking = rendered(K8S / "tracking", tmp_path)
    (store,) = [o for o in tracking if o["kind"] == "Service" and o["metadata"]["name"] == "seaweedfs"]
    annotations = serving["Secret"]["metadata"]["annotations"]
    address = f"seaweedfs.{store['metadata']['namespace']}.svc:{store['spec']['ports'][0]['port']}"
    assert annotations["serving.kserve.io/s3-endpoint"] == address
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"


def test_the_pipeline_may_create_and_patch_the_inference_service(serving):
    role, binding = serving["Role"], serving["RoleBinding"]
    assert any("serving.kserve.io" in rule["apiGroups"] and "inferenceservices" in rule["resources"]
               and {"get", "create", "patch"} <= set(rule["verbs"]) for rule in role["rules"])
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    # No namespace: the service account of the RoleBinding's own namespace.
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner"}]


def test_secrets_hold_only_the_example_values(serving):
    examples = {}
    for example in SERVING.glob("*.example"):
        examples |= env_values(example.read_text())
    secrets = [obj for obj in serving.values() if obj["kind"] == "Secret"]
    assert secrets and all("stringData" not in secret for secret in secrets)
    for secret in secrets:
        values = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        assert values.items() <= examples.items(), secret["metadata"]["name"]
    assert examples["AWS_SECRET_ACCESS_KEY"].startswith("change-me")
