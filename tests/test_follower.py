"""The follower (`mnist-gan deploy --follow`): an InferenceService kept on whatever `champion` names,
however the alias moved. The Kubernetes API is the recording stand-in (tests/support/kube_api.py: no
Kubernetes API server can run here); the registry is a real MLflow server, whose alias a plain
MlflowClient call moves, as the MLflow UI or a user's script would."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from infra.local_stack import mlflow_server
from tests.conftest import cli_env
from tests.support.kube_api import KubeApi, write_kubeconfig
from training import kserve
from training.deploy import CANARY_TAG, SERVING_TAG

pytestmark = pytest.mark.slow
NAME, SERVICE, PERIOD_S = "followed", "mnist-gan", 2
ITEM = f"/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices/{SERVICE}"


def _registry(uri: str) -> tuple[MlflowClient, dict[str, str]]:
    """Two versions of NAME (LoggedModels without files: deploy only points at them), version 1 the
    champion; returns the client and each version's storageUri under the server's S3 destination."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("generators")
    client.create_registered_model(NAME)
    uris = {}
    for version in ("1", "2"):
        model = client.create_logged_model(experiment, name="generator")
        client.create_model_version(NAME, f"models:/{model.model_id}", model_id=model.model_id)
        files = client.get_model_version_download_uri(NAME, version)
        uris[version] = "s3://mlflow-artifacts/" + files.split("mlflow-artifacts:", 1)[1].strip("/")
    client.set_registered_model_alias(NAME, "champion", "1")
    return client, uris


def _served(api: KubeApi) -> str | None:
    return kserve.served_storage_uri(api.objects.get(("team-a", SERVICE)))


def _serving_tags(client: MlflowClient) -> dict[str, tuple[str | None, str | None]]:
    return {str(v.version): (v.tags.get(SERVING_TAG), v.tags.get(CANARY_TAG))
            for v in client.search_model_versions(f"name='{NAME}'")}


def _within(seconds: float, condition, follower: subprocess.Popen, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert follower.poll() is None, f"the follower died: {follower.stderr.read()[-3000:]}"
        assert time.monotonic() - started < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def test_an_alias_moved_by_hand_is_served_within_the_period_and_missed_changes_heal(tmp_path):
    with mlflow_server(tmp_path / "mlflow") as uri:
        client, uris = _registry(uri)
        api = KubeApi()
        with api.serve() as host:
            write_kubeconfig(tmp_path / "kubeconfig", host)
            env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri, KUBECONFIG=str(tmp_path / "kubeconfig"))
            follower = subprocess.Popen(
                [sys.executable, "-m", "training.cli", "deploy", "--name", NAME, "--inference-service",
                 SERVICE, "--follow", str(PERIOD_S)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            try:
                _within(60, lambda: _served(api) == uris["1"], follower, "the champion served at start")
                _within(10, lambda: _serving_tags(client)["1"] == ("team-a/mnist-gan", None), follower,
                        "the registry told")

                client.set_registered_model_alias(NAME, "champion", "2")  # as the MLflow UI does
                took = _within(PERIOD_S + 15, lambda: _served(api) == uris["2"], follower, "version 2 served")
                moved = {"1": (None, None), "2": ("team-a/mnist-gan", None)}
                _within(10, lambda: _serving_tags(client) == moved, follower, "the tags follow")

                client.delete_model_version_tag(NAME, "2", SERVING_TAG)  # a lost record: healed too
                _within(PERIOD_S + 10, lambda: _serving_tags(client)["2"] == ("team-a/mnist-gan", None),
                        follower, "the tag put back")
                api.objects[("team-a", SERVICE)]["spec"]["predictor"]["model"]["storageUri"] = uris["1"]
                _within(PERIOD_S + 15, lambda: _served(api) == uris["2"], follower, "an edited service")
            finally:
                follower.terminate()
                out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err[-3000:]
    assert took <= PERIOD_S + 15
    lines = out.splitlines()
    assert lines[0] == f"deploy: following {NAME}@champion into InferenceService {SERVICE} every {PERIOD_S} s"
    assert sum(f"{NAME} version 2 serves at InferenceService team-a/{SERVICE}" in line for line in lines) == 2
    assert any("already served" in line and "tags now say so" in line for line in lines)
    assert "Traceback" not in err
    # what infra/k8s/follower's Role allows: get, create and patch
    assert {r["method"] for r in api.requests} == {"GET", "POST", "PATCH"}


def test_a_follower_that_cannot_reach_the_cluster_says_so_and_keeps_looking(tmp_path):
    with mlflow_server(tmp_path / "mlflow") as uri:
        _registry(uri)
        api = KubeApi(kserve=False)  # a cluster without KServe
        with api.serve() as host:
            write_kubeconfig(tmp_path / "kubeconfig", host)
            env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri, KUBECONFIG=str(tmp_path / "kubeconfig"))
            follower = subprocess.Popen(
                [sys.executable, "-m", "training.cli", "deploy", "--name", NAME, "--inference-service",
                 SERVICE, "--follow", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            _within(60, lambda: sum(r["path"] == ITEM for r in api.requests) >= 2, follower,
                    "a second look after the first failed")
            follower.terminate()
            _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0
    said = err.strip().splitlines()
    assert said, "each failed look is said"
    assert all("is KServe installed" in line and "looking again in 1 s" in line for line in said), said
