"""The deploy step: the champion's files as a storageUri KServe can read, the InferenceService created or
patched and waited for against a recording stand-in for the Kubernetes API (tests/support/kube_api.py:
no Kubernetes API server runs here), what it sends checked against KServe's CRD, and the registry told
which version serves, through `mnist-gan deploy`, `mnist-gan rollback` and the pipeline's components on
a real (sqlite) MLflow registry. Nothing here trains: the registered versions are LoggedModels without
files, evaluated by tags."""

from __future__ import annotations

import contextlib
import re
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import ROOT, run_cli
from tests.support import crd_schema
from tests.support.kube_api import TOKEN, KubeApi, write_kubeconfig
from tests.test_cli_imports import run as cli_with_imports
from training import deploy, kserve
from training.config import ConfigError
from training.deploy import CANARY_TAG, SERVING_TAG, Target

READER = deploy.MODEL_READER.default
URI_1, URI_2 = "s3://mlflow-artifacts/1/models/m-1/artifacts", "s3://mlflow-artifacts/1/models/m-2/artifacts"
ITEM = "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices/mnist-gan"


def service(uri: str, canary: int = 0) -> dict:
    return kserve.inference_service("mnist-gan", uri, READER, canary)


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch):
    monkeypatch.setattr(kserve, "POLL_S", 0.01)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # never take this machine for a pod


@contextlib.contextmanager
def cluster(tmp_path, monkeypatch, **script):
    """The stand-in serving, with a kubeconfig pointing at it (context namespace team-a) in $KUBECONFIG."""
    api = KubeApi(**script)
    with api.serve() as host:
        write_kubeconfig(tmp_path / "kubeconfig", host)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        yield api


# ---- the storageUri ----

@pytest.mark.parametrize(("artifact_uri", "destination", "expected"), [
    (URI_1, "s3://elsewhere", URI_1),
    ("mlflow-artifacts:/1/models/m-1/artifacts", "s3://mlflow-artifacts", URI_1),
    ("mlflow-artifacts://mlflow.mnist-gan.svc:5000/1/models/m-1/artifacts", "s3://mlflow-artifacts/", URI_1),
    ("mlflow-artifacts:/1/models/m-1/artifacts", "s3://store/mlflow/", "s3://store/mlflow/1/models/m-1/artifacts"),
])
def test_the_storage_uri_is_where_the_files_are_in_s3(artifact_uri, destination, expected):
    assert deploy.storage_uri(artifact_uri, destination) == expected


@pytest.mark.parametrize("artifact_uri", [
    "file:///home/me/mlruns/1/models/m-1/artifacts", "/home/me/mlruns/1/m-1", "models:/m-1",
    "runs:/abc/generator", "gs://bucket/1/m-1", "s3:///1/m-1", "mlflow-artifacts:/", ""])
def test_a_location_kserve_cannot_read_is_refused_clearly(artifact_uri):
    with pytest.raises(kserve.DeployError, match="cannot be served by KServe: it reads s3:// here"):
        deploy.storage_uri(artifact_uri, "s3://mlflow-artifacts")


@pytest.mark.parametrize(("fields", "message"), [
    ({"artifacts_destination": "gs://bucket"}, "artifacts_destination must be the tracking server's s3://"),
    ({"artifacts_destination": "s3://"}, "artifacts_destination must be"),
    ({"artifacts_destination": "mlflow-artifacts:/"}, "artifacts_destination must be"),
    ({"inference_service": "Mnist_GAN"}, "inference_service must be a Kubernetes name"),
    ({"namespace": "team a"}, "namespace must be a Kubernetes name"),
    ({"canary_traffic_percent": 100}, r"canary_traffic_percent must be in \[0, 99\]"),
    ({"timeout": 0}, "timeout must be in"),
])
def test_a_bad_target_is_refused_before_anything_runs(fields, message):
    with pytest.raises(ConfigError, match=message):
        Target(**{"inference_service": "mnist-gan", **fields})


def test_the_default_artifacts_destination_is_the_tracking_stacks():
    for stack in ("infra/k8s/tracking/mlflow.yaml", "infra/compose/docker-compose.yaml"):
        text = (ROOT / stack).read_text()
        (destination,) = re.findall(r"MLFLOW_ARTIFACTS_DESTINATION.*?(s3://[^\"'\s}]+)", text)
        assert destination.rstrip("/") == deploy.ARTIFACTS_DESTINATION.default, stack


# ---- the InferenceService ----

def test_the_manifest_template_is_the_object_deploy_builds():
    """One definition: the template in infra/k8s/serving is the builder's object with a placeholder."""
    template = yaml.safe_load((ROOT / "infra/k8s/serving/inferenceservice.yaml").read_text())
    placeholder = template["spec"]["predictor"]["model"]["storageUri"]
    assert template == kserve.inference_service(template["metadata"]["name"], placeholder, READER)
    assert "canaryTrafficPercent" not in template["spec"]["predictor"]
    assert service(URI_1, canary=10)["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_an_absent_service_is_created_then_waited_for(tmp_path, monkeypatch):
    with cluster(tmp_path, monkeypatch) as api:
        applied = kserve.apply(service(URI_1), None, timeout_s=30)
    assert (applied.created, applied.namespace, applied.name) == (True, "team-a", "mnist-gan")
    # absent; created; KServe not there yet; Ready
    assert [(r["method"], r["path"]) for r in api.requests] == [
        ("GET", ITEM), ("POST", ITEM.rsplit("/", 1)[0]), ("GET", ITEM), ("GET", ITEM)]
    post = api.requests[1]
    assert post["body"] == service(URI_1) and post["query"]["fieldValidation"] == ["Strict"]
    assert {r["headers"]["authorization"] for r in api.requests} == {f"Bearer {TOKEN}"}  # the kubeconfig's
    assert applied.ready == api.objects[("team-a", "mnist-gan")]


def test_an_existing_service_is_patched_and_the_old_models_ready_does_not_count(tmp_path, monkeypatch):
    with cluster(tmp_path, monkeypatch, reconcile_after=2) as api:
        api.add("team-a", service(URI_1, canary=10))
        applied = kserve.apply(service(URI_2), "team-a", timeout_s=30)
    assert not applied.created
    patch = api.after("PATCH")[0]
    assert patch["headers"]["content-type"] == "application/merge-patch+json"
    assert patch["body"]["spec"]["predictor"]["canaryTrafficPercent"] is None  # the old canary goes
    stored = api.objects[("team-a", "mnist-gan")]
    assert stored["spec"] == service(URI_2)["spec"] and stored["metadata"]["generation"] == 2
    # the first two reads still showed the Ready of the model before; the reconciled third ended the wait
    assert [r["method"] for r in api.after("PATCH")] == ["PATCH", "GET", "GET", "GET"]
    assert applied.ready["status"]["observedGeneration"] == 2


def test_patching_in_what_is_already_there_waits_for_nothing_new(tmp_path, monkeypatch):
    with cluster(tmp_path, monkeypatch, reconcile_after=5) as api:
        api.add("team-a", service(URI_1))
        kserve.apply(service(URI_1), None, timeout_s=30)
    assert [r["method"] for r in api.after("PATCH")] == ["PATCH", "GET"]


def test_not_ready_in_time_fails_with_what_kserve_says_in_one_line(tmp_path, monkeypatch):
    said = {"ready": "False", "reason": "RevisionFailed", "failure": "NoSuchKey: 1/models/m-1/artifacts",
            "message": 'Revision "mnist-gan-predictor-00001" failed with message: \n0/3 nodes are available.'}
    with cluster(tmp_path, monkeypatch, **said), pytest.raises(kserve.DeployError) as raised:
        kserve.apply(service(URI_1), None, timeout_s=0.5)
    assert str(raised.value) == (
        "InferenceService team-a/mnist-gan was not Ready within 0.5 s: Ready is False: RevisionFailed: "
        'Revision "mnist-gan-predictor-00001" failed with message: 0/3 nodes are available.; '
        "last failure: ModelLoadFailed: NoSuchKey: 1/models/m-1/artifacts")


def test_a_change_kserve_never_picks_up_times_out_saying_so(tmp_path, monkeypatch):
    with cluster(tmp_path, monkeypatch, reconcile_after=10**6) as api:
        with pytest.raises(kserve.DeployError, match="within 0.2 s: KServe has reported nothing on it yet"):
            kserve.apply(service(URI_1), None, timeout_s=0.2)
        api.add("team-a", service(URI_1))
        with pytest.raises(kserve.DeployError, match=r"not picked up the change yet \(Ready is True from"):
            kserve.apply(service(URI_2), None, timeout_s=0.2)


@pytest.mark.parametrize(("script", "message"), [
    ({"kserve": False}, ("the Kubernetes API has no serving.kserve.io/v1beta1 inferenceservices: is KServe "
                         "installed in the cluster?")),
    ({"forbidden": True}, ("Kubernetes refused to read InferenceService team-a/mnist-gan: HTTP 403: "
                           "inferenceservices.serving.kserve.io is forbidden: .* \\(the deploy step's "
                           "service account needs the Role in infra/k8s/serving/deployer.yaml\\)")),
])
def test_a_cluster_that_cannot_take_it_is_named(tmp_path, monkeypatch, script, message):
    with cluster(tmp_path, monkeypatch, **script), pytest.raises(kserve.DeployError, match=message):
        kserve.apply(service(URI_1), None, timeout_s=5)


def test_without_credentials_or_a_cluster_it_says_which(tmp_path, monkeypatch):
    from infra.local_stack import free_port

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    with pytest.raises(kserve.DeployError, match=r"^no Kubernetes credentials: .*\$KUBECONFIG"):
        kserve.apply(service(URI_1), None, timeout_s=5)
    host = f"http://127.0.0.1:{free_port()}"
    write_kubeconfig(tmp_path / "kubeconfig", host)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    with pytest.raises(kserve.DeployError, match=f"^the Kubernetes API at {host} is unreachable"):
        kserve.apply(service(URI_1), None, timeout_s=5)


def test_what_deploy_sends_is_valid_under_kserves_crd(tmp_path, monkeypatch):
    """The object created, and the object a canary patch leaves, checked as `kubectl apply` would."""
    with cluster(tmp_path, monkeypatch) as api:
        kserve.apply(service(URI_1), None, timeout_s=30)
        kserve.apply(service(URI_2, canary=10), None, timeout_s=30)
    created = api.after("POST")[0]["body"]
    patched = {k: v for k, v in api.objects[("team-a", "mnist-gan")].items() if k != "status"}
    assert patched["spec"]["predictor"]["canaryTrafficPercent"] == 10
    folder = crd_schema.crd_folder()
    assert [crd_schema.refusals(obj, folder) for obj in (created, patched)] == [[], []]


# ---- the registry ----

EVALUATED = {"kid": 0.01, "classifier_score": 9.0, "precision": 0.8, "recall": 0.7, "classes_covered": 10.0,
             "kl_to_uniform": 0.01, "samples": 10_000.0}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A sqlite registry (where `run_cli` tracks) whose model files would be behind a tracking server
    (mlflow-artifacts:/)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("generators", artifact_location="mlflow-artifacts:/7")
    parent = client.create_run(experiment).info.run_id
    return SimpleNamespace(client=client, experiment=experiment, parent=parent)


def register(registry, name: str, fid: float) -> tuple[str, str]:
    """A version of `name` evaluated at `fid`; returns (version, the storageUri its files map to)."""
    client = registry.client
    model = client.create_logged_model(registry.experiment, name="generator")
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    tags = {f"eval.{key}": str(value) for key, value in {**EVALUATED, "fid": fid}.items()}
    version = client.create_model_version(name, f"models:/{model.model_id}", tags=tags,
                                          model_id=model.model_id).version
    return str(version), f"s3://mlflow-artifacts/7/models/{model.model_id}/artifacts"


def crown(registry, name: str, version: str) -> None:
    """Make `version` champion as a promotion records it (promotion itself, with its head-to-head of real
    generators, is tests/test_promotion.py's)."""
    champion = registry.client.get_registered_model(name).aliases.get("champion")
    if champion:
        registry.client.set_model_version_tag(name, version, "promotion.previous_champion", str(champion))
    registry.client.set_registered_model_alias(name, "champion", version)


def served(registry, name: str) -> dict[str, tuple[str | None, str | None]]:
    versions = registry.client.search_model_versions(f"name='{name}'")
    return {str(v.version): (v.tags.get(SERVING_TAG), v.tags.get(CANARY_TAG)) for v in versions}


def served_uri(api) -> str:
    return api.objects[("team-a", "mnist-gan")]["spec"]["predictor"]["model"]["storageUri"]


def test_the_pipelines_deploy_follows_each_champion_and_the_registry_records_who_serves(
        tmp_path, monkeypatch, registry):
    """deploy when the champion moved (its component's body, as the pipeline runs it); a canary, then the
    full rollout; then `rollback` re-points the service."""
    from components import gan
    from training import jobs

    name, here = "serve-test", "team-a/mnist-gan"
    first, first_uri = register(registry, name, fid=50.0)
    second, second_uri = register(registry, name, fid=40.0)
    inputs = {"model_name": name, "inference_service": "mnist-gan", "namespace": "",
              "artifacts_destination": "s3://mlflow-artifacts", "model_reader": READER, "timeout": 30}
    with cluster(tmp_path, monkeypatch) as api:
        crown(registry, name, first)
        gan.deploy.python_func(**inputs, canary_traffic_percent=0)
        assert served_uri(api) == first_uri and served(registry, name) == {first: (here, None),
                                                                            second: (None, None)}

        crown(registry, name, second)
        gan.deploy.python_func(**inputs, canary_traffic_percent=10)
        assert served_uri(api) == second_uri
        assert api.objects[("team-a", "mnist-gan")]["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert served(registry, name) == {first: (here, None), second: (here, "10")}  # 90% stay on the first

        deployed = jobs.deploy(name, Target("mnist-gan"))
        assert (deployed.version, deployed.created) == (second, False)
        assert "canaryTrafficPercent" not in api.objects[("team-a", "mnist-gan")]["spec"]["predictor"]
        assert served(registry, name) == {first: (None, None), second: (here, None)}

        assert (*jobs.rollback(name, Target("mnist-gan"))[:2],) == (second, first)
        assert served_uri(api) == first_uri and served(registry, name) == {first: (here, None),
                                                                            second: (None, None)}
    assert registry.client.get_model_version_by_alias(name, "champion").version == int(first)


def test_the_deploy_and_rollback_commands(tmp_path, monkeypatch, registry):
    """As a user runs them, with a kubeconfig; deploy imports neither TensorFlow, JAX nor Keras."""
    name = "cli-test"
    first, first_uri = register(registry, name, fid=50.0)
    second, second_uri = register(registry, name, fid=40.0)
    crown(registry, name, first)
    crown(registry, name, second)
    with cluster(tmp_path, monkeypatch, reconcile_after=0) as api:  # $KUBECONFIG passes on to the CLI
        code, deployed, stderr, heavy = cli_with_imports(["deploy", "--name", name, "--inference-service",
                                                          "mnist-gan"], tmp_path)
        assert (code, heavy) == (0, []), stderr[-2000:]
        assert served_uri(api) == second_uri
        rolled_back = run_cli(["rollback", "--name", name, "--inference-service", "mnist-gan"], tmp_path)
        assert rolled_back.returncode == 0, rolled_back.stderr[-2000:]
        assert served_uri(api) == first_uri
    serves = "serves at InferenceService team-a/mnist-gan"
    unchecked = "its answer not checked: KServe reported no URL"  # the stand-in reports none
    assert deployed.splitlines() == [
        f"deploy: {name} version {second} {serves} (created, Ready); storageUri {second_uri}; {unchecked}"]
    assert rolled_back.stdout.splitlines() == [
        f"rollback: {name} champion moved from version {second} back to {first}",
        f"deploy: {name} version {first} {serves} (patched, Ready); storageUri {first_uri}; {unchecked}"]
    assert served(registry, name) == {first: ("team-a/mnist-gan", None), second: (None, None)}


def test_a_deploy_not_ready_in_time_exits_1_with_one_line_and_records_nothing(tmp_path, monkeypatch,
                                                                               registry):
    name = "late-test"
    version, _ = register(registry, name, fid=50.0)
    crown(registry, name, version)
    with cluster(tmp_path, monkeypatch, ready="False", reason="RevisionFailed", message="image pull") as api:
        late = run_cli(["deploy", "--name", name, "--inference-service", "mnist-gan", "--timeout", "1"],
                       tmp_path)
    assert late.returncode == 1 and api.objects
    assert late.stderr.strip().splitlines() == [("mnist-gan deploy: error: InferenceService team-a/mnist-gan "
                                                 "was not Ready within 1 s: Ready is False: RevisionFailed: "
                                                 "image pull")]
    assert served(registry, name) == {version: (None, None)}


# ---- canaries and KServe's deployment modes ----

@pytest.mark.parametrize(("mode", "refusal"), [
    ("Standard", "runs in KServe's Standard mode, where a canary share of the traffic is not possible"),
    ("RawDeployment", "runs in KServe's Standard mode"),  # the spelling before KServe 0.16
    (None, "does not say its deployment mode (no status.deploymentMode)"),
])
def test_a_canary_the_service_cannot_give_is_refused_and_nothing_changes(tmp_path, monkeypatch, registry,
                                                                          mode, refusal):
    """In Standard mode KServe ignores canaryTrafficPercent (the stand-in, like KServe, would roll the new
    model out to all the traffic): a canary there is refused in one line before anything is sent."""
    name = "standard-mode"
    first, first_uri = register(registry, name, fid=50.0)
    second, _ = register(registry, name, fid=40.0)
    crown(registry, name, first)
    with cluster(tmp_path, monkeypatch, mode=mode) as api:
        deploy.deploy(name, Target("mnist-gan"))
        crown(registry, name, second)
        refused = run_cli(["deploy", "--name", name, "--inference-service", "mnist-gan",
                           "--canary-traffic-percent", "10"], tmp_path)
        assert refused.returncode == 1
        said = refused.stderr.strip().splitlines()
        assert len(said) == 1 and said[0].startswith(f"mnist-gan deploy: error: InferenceService "
                                                     f"team-a/mnist-gan {refusal}"), said
        assert [r["method"] for r in api.after("POST")].count("PATCH") == 0 and served_uri(api) == first_uri
        assert served(registry, name) == {first: ("team-a/mnist-gan", None), second: (None, None)}
        full = run_cli(["deploy", "--name", name, "--inference-service", "mnist-gan"], tmp_path)
        assert full.returncode == 0, full.stderr[-2000:]
    assert served(registry, name) == {first: (None, None), second: ("team-a/mnist-gan", None)}


def test_a_canary_of_the_first_model_is_a_full_rollout_recorded_as_one(tmp_path, monkeypatch, registry):
    name = "first-canary"
    version, _ = register(registry, name, fid=50.0)
    crown(registry, name, version)
    with cluster(tmp_path, monkeypatch) as api:
        deployed = deploy.deploy(name, Target("mnist-gan", canary_traffic_percent=10))
        assert "canaryTrafficPercent" not in api.objects[("team-a", "mnist-gan")]["spec"]["predictor"]
    assert deployed.canary_traffic_percent == 0
    assert served(registry, name) == {version: ("team-a/mnist-gan", None)}
