"""The images as a cluster runs them: the component image as its non-root user, the tracking-server image
with authentication, and the whole pipeline in containers (kfp.local's DockerRunner) against MLflow on
PostgreSQL with artifacts in S3, reached by host names; then a training container killed mid-epoch and
its task rerun as a KFP retry does. `make test` builds the images first."""

import json
import shutil
import threading
import time
from pathlib import Path

import boto3
import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException

from infra.local_stack import free_port
from tests.conftest import run_cli
from tests.support.container_stack import (
    BUCKET,
    HOSTS,
    IMAGE,
    SERVER_IMAGE,
    container,
    engine,
    logs,
    run_args,
    tracking_stack,
    wait_for,
)
from tests.support.secrets_scan import FAKE_SECRETS, USERNAME, leaks
from training.config import JobConfig
from training.data import file_sha256

# one worker runs them all, in order: they share the images, the tracking stack and one pipeline run
pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.xdist_group("containers")]
MODEL_NAME = JobConfig().model_name
QUICK = {"preset": "cpu", "train_images": 2048, "batch_size": 64, "log_every": 4}
RETRY_EPOCHS = 6  # of the training killed after its first epoch


def writable_folder(path: Path) -> Path:
    """A host folder the images' user (uid 10001) may write, as a volume mount."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def test_the_component_image_runs_its_cli_as_a_non_root_user():
    assert engine("run", "--rm", IMAGE, "--help").stdout.startswith("usage: mnist-gan")
    assert engine("run", "--rm", "--entrypoint", "id", IMAGE, "-u").stdout.strip() == "10001"


def test_a_short_training_in_the_image_writes_only_to_its_volume(tmp_path, mnist_path):
    """Default (relative) checkpoint folder: the image's working folder is the user's own."""
    volume = writable_folder(tmp_path / "volume")
    shutil.copy(mnist_path, volume / "mnist.npz")
    env = {"MLFLOW_TRACKING_URI": "sqlite:////data/mlflow.db"}
    result = engine("run", "--rm", *run_args(env, {volume: "/data"}), IMAGE, "train",
                    "--data=/data/mnist.npz", "--preset=cpu", "--train-images=256", "--batch-size=64",
                    "--epochs=1", "--max-steps=2", "--eval-every=0", env=env)
    assert "Failed to import Git" not in result.stdout + result.stderr
    client = mlflow.MlflowClient(f"sqlite:///{volume / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["global_step"] == "2"
    assert volume.stat().st_uid != 10001 and (volume / "mlflow.db").stat().st_uid == 10001


def test_the_server_image_has_mlflow_and_no_tensorflow():
    check = ("import importlib.util as u; print(u.find_spec('tensorflow') is None, "
             "u.find_spec('psycopg') is not None)")
    result = engine("run", "--rm", "--entrypoint", "python", SERVER_IMAGE, "-c", check)
    assert result.stdout.split() == ["True", "True"]
    refused = engine("run", "--rm", SERVER_IMAGE, check=False)
    assert refused.returncode == 2 and "set MLFLOW_BACKEND_STORE_URI" in refused.stderr


# Run inside the server image (it has MLflow's auth app; the project's venv has not): the admin makes
# workspace team-a and user `pipeline`, who may write there only once a role grants USE on it.
WORKSPACE_ROLES = """
import json, os, sys
import mlflow
from mlflow.server.auth.client import AuthServiceClient

uri = sys.argv[1]
def as_user(name, password, workspace=None):
    os.environ.update(MLFLOW_TRACKING_USERNAME=name, MLFLOW_TRACKING_PASSWORD=password)
    os.environ.pop("MLFLOW_WORKSPACE", None)
    os.environ.update({"MLFLOW_WORKSPACE": workspace} if workspace else {})
    return mlflow.MlflowClient(uri)

def creates_experiment(client, name):
    try:
        return bool(client.create_experiment(name))
    except mlflow.exceptions.MlflowException as err:
        return err.error_code
as_user("admin", "admin-password-1").create_workspace("team-a")
admin = AuthServiceClient(uri)
admin.create_user("pipeline", "pipeline-password-1")
before = creates_experiment(as_user("pipeline", "pipeline-password-1", "team-a"), "mnist-gan")
as_user("admin", "admin-password-1", "team-a")
role = admin.create_role("team-a", "pipelines")
admin.add_role_permission(role.id, "workspace", "*", "USE")
admin.assign_role("pipeline", role.id)
team = as_user("pipeline", "pipeline-password-1", "team-a")
after = creates_experiment(team, "mnist-gan")
team.create_registered_model("mnist-gan-generator")
team_models = [m.name for m in team.search_registered_models()]
default = as_user("pipeline", "pipeline-password-1")  # clients read the workspace at each request
print(json.dumps({"before_the_role": before, "with_the_role": after,
                  "in_default": creates_experiment(default, "elsewhere"), "team_models": team_models}))
"""


def test_the_server_image_with_workspaces_lets_a_user_write_only_where_a_role_allows(tmp_path):
    """MLFLOW_ENABLE_WORKSPACES=true, as the tracking stack turns workspaces on: MLflow 3.17's basic-auth
    app and workspaces together."""
    port = free_port()
    env = {"MLFLOW_BACKEND_STORE_URI": "sqlite:////tmp/store.db",
           "MLFLOW_ARTIFACTS_DESTINATION": "/tmp/artifacts", "MLFLOW_HOST": "127.0.0.1",
           "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
           "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{port}", "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-1", "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
           "MLFLOW_ENABLE_WORKSPACES": "true"}
    refused = engine("run", "--rm", *run_args({**env, "MLFLOW_ENABLE_WORKSPACES": "yes"}), SERVER_IMAGE,
                     env={**env, "MLFLOW_ENABLE_WORKSPACES": "yes"}, check=False)
    assert refused.returncode == 2 and "MLFLOW_ENABLE_WORKSPACES must be true or false" in refused.stderr
    uri = f"http://127.0.0.1:{port}"
    with container(SERVER_IMAGE, env=env) as server:
        wait_for(lambda: requests.get(f"{uri}/health", timeout=2).status_code == 200, "the server", server)
        done = engine("exec", server, "python", "-c", WORKSPACE_ROLES, uri)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "before_the_role": "PERMISSION_DENIED", "with_the_role": True, "in_default": "PERMISSION_DENIED",
        "team_models": ["mnist-gan-generator"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tracking_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def test_the_server_answers_a_service_host_name_and_only_signed_in_users(stack):
    search = "/api/2.0/mlflow/experiments/search"
    port = stack.host_uri.rsplit(":", 1)[1]
    anonymous = requests.post(f"{stack.host_uri}{search}", json={"max_results": 1},
                              headers={"Host": f"mlflow:{port}"}, timeout=30)
    assert anonymous.status_code == 401
    admin = requests.post(f"{stack.host_uri}{search}", json={"max_results": 1}, auth=stack.admin,
                          headers={"Host": f"mlflow:{port}"}, timeout=30)
    assert admin.status_code == 200
    rebound = requests.post(f"{stack.host_uri}{search}", json={"max_results": 1}, auth=stack.admin,
                            headers={"Host": f"attacker.example:{port}"}, timeout=30)
    assert rebound.status_code == 403


@pytest.fixture(scope="module")
def pipeline_user(stack):
    """The pipeline's MLflow user, with recognisable fake credentials that no output may contain."""
    return stack.create_user(USERNAME["MLFLOW_TRACKING_USERNAME"], FAKE_SECRETS["MLFLOW_TRACKING_PASSWORD"])


@pytest.fixture(scope="module")
def pipeline_run(stack, pipeline_user, host_classifier, tmp_path_factory, mnist_path):
    """The whole pipeline in containers, as the pipeline's MLflow user; returns (user, pipeline root)."""
    work = tmp_path_factory.mktemp("pipeline")
    user = pipeline_user
    params = {**QUICK, "data": str(mnist_path), "epochs": 1, "samples": 500, "min_classes_covered": 0}
    flags = [item for key, value in params.items() for item in ("-p", f"{key}={value}")]
    hosts = [item for name, ip in HOSTS.items() for item in ("--add-host", f"{name}:{ip}")]
    result = run_cli(["pipeline", "run-local", "--runner", "docker", *hosts, *flags,
                      "--pipeline-root", str(work / "root")], work, timeout=1500,
                     MLFLOW_TRACKING_URI=stack.service_uri, **FAKE_SECRETS, **USERNAME)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    compiled = run_cli(["pipeline", "compile", "-o", str(work / "pipeline.yaml")], work, **FAKE_SECRETS)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    return user, work, result


def test_the_whole_pipeline_runs_in_containers(stack, pipeline_run, host_classifier, monkeypatch, mnist_path):
    _, work, result = pipeline_run
    client = stack.signed_in(monkeypatch)
    runs = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("kfp_run")]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"prepare-data", "train", "evaluate", "register", "promote"}
    assert all(run.info.status == "FINISHED" for run in children.values())
    train = children["train"]
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["training_run_id"] == train.info.run_id
    # the dataset artifact is the source's bytes: lineage (and the evaluator cache) match `mlflow run`
    assert train.data.params["data_sha256"] == file_sha256(mnist_path) == parent.data.tags["data_sha256"]
    # the train-classifier task loaded the host's classifier, mounted read-only, instead of training one
    (classifier_meta,) = (work / "root").glob("*/train-classifier/classifier/meta.json")
    assert json.loads(classifier_meta.read_text())["fingerprint"] == host_classifier.fingerprint
    assert "evaluator: training the MNIST classifier" not in result.stdout + result.stderr
    # the registered version is the model the training run logged, and the KFP artifacts link to MLflow
    assert champion.run_id == train.info.run_id and champion.source.startswith("models:/m-")
    (trained_output,) = (work / "root").glob("*/train-gan/executor_output.json")
    generator = json.loads(trained_output.read_text())["artifacts"]["generator"]["artifacts"][0]["metadata"]
    assert generator["mlflow_run_id"] == train.info.run_id
    assert (generator["mlflow_run"].endswith(f"/runs/{train.info.run_id}?workflowType=machine_learning")
            and "@" not in generator["mlflow_run"])

    s3 = boto3.client("s3", endpoint_url=stack.s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id=stack.s3_env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=stack.s3_env["AWS_SECRET_ACCESS_KEY"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")["Contents"]}
    assert any(k.endswith(f"{children['evaluate'].info.run_id}/artifacts/report/report.html") for k in keys)
    assert any(k.endswith(f"{train.info.run_id}/artifacts/models/generator.keras") for k in keys)

    # what the server keeps is in PostgreSQL
    run_id = train.info.run_id
    params = dict(stack.sql(f"select key, value from params where run_uuid = '{run_id}'"))
    assert params["preset"] == "cpu" and params["train_images"] == "2048"
    ((logged,),) = stack.sql(f"select count(*) from metrics where run_uuid = '{run_id}' and key = 'g_loss'")
    assert int(logged) >= 2

    # no credential in the database, any artifact, the compiled YAML, the task outputs or any log
    objects = [s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys]
    secrets = [*FAKE_SECRETS.values(), stack.s3_env["AWS_SECRET_ACCESS_KEY"], stack.admin[1]]
    server_logs = [logs(container_id) for container_id in (stack.server, stack.postgres)]
    assert not leaks([work, *objects, stack.dump(), *server_logs, result.stdout, result.stderr], secrets)


def test_a_read_only_user_cannot_move_the_champion_but_the_pipeline_can(stack, pipeline_run, monkeypatch):
    pipeline_user, _, _ = pipeline_run
    viewer = stack.create_user("viewer")
    version = (stack.signed_in(monkeypatch)
               .get_model_version_by_alias(MODEL_NAME, "champion").version)
    client = stack.signed_in(monkeypatch, viewer)
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == version  # may read
    with pytest.raises(MlflowException, match="Permission denied|PERMISSION_DENIED|403"):
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
    stack.signed_in(monkeypatch, pipeline_user).set_registered_model_alias(MODEL_NAME, "champion",
                                                                           version)


def v2_request(**columns: list) -> dict:
    """An Open Inference Protocol (V2) request for a table: integer columns as INT64, `z` rows as JSON."""
    z = {"datatype": "BYTES", "parameters": {"content_type": "pd_json"}}
    inputs = [{"name": name, "shape": [len(values)], **(z if name == "z" else {"datatype": "INT64"}),
               "data": [json.dumps(row) for row in values] if name == "z" else values}
              for name, values in columns.items()]
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def test_the_serving_image_serves_the_champion_as_kserve_does(stack, pipeline_run, tmp_path, monkeypatch):
    """The pipeline's champion at the storageUri the deploy step sets, downloaded from S3 by KServe's
    storage initializer with the environment KServe gives it, served over V2 by the serving image as a
    non-root user from a read-only /mnt/models: the local pyfunc's digits for the same seeds, and for a
    bad n, seed or z HTTP 400 with the one-line message `mlflow models serve` gives. Then `mnist-gan deploy`
    from the host, as a laptop outside the cluster runs it (the tracking server's bucket is out of its
    reach), against it as KServe would report it Ready at its URL (the Kubernetes API is the stand-in of
    tests/support/kube_api.py): its answer checked against the champion's own digits, then recorded."""
    import numpy as np
    import pandas as pd

    from tests.support.serving_image import download, kserve_s3_env, serving
    from training import deploy, registry

    client = stack.signed_in(monkeypatch)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    storage_uri = deploy.storage_uri(client.get_model_version_download_uri(MODEL_NAME, champion.version),
                                     f"s3://{BUCKET}/mlflow")
    s3 = stack.s3_env
    env = kserve_s3_env(s3["AWS_ENDPOINT_URL"].split("://", 1)[1], s3["AWS_ACCESS_KEY_ID"],
                        s3["AWS_SECRET_ACCESS_KEY"])
    model = download(storage_uri, tmp_path / "models", env)
    registry.verified_generator(model, champion.tags[registry.CHECKSUM_KEY])  # every file came
    local = mlflow.pyfunc.load_model(str(model))
    digits = local.predict(pd.DataFrame({"seed": [7, 8], "n": [3, 2]}))

    with serving(model) as (container_id, url):
        assert engine("exec", container_id, "id", "-u").stdout.strip() == "10001"
        assert engine("exec", container_id, "touch", "/mnt/models/x", check=False).returncode != 0
        infer = f"{url}/v2/models/mnist-gan/infer"
        answer = requests.post(infer, json=v2_request(seed=[7, 8], n=[3, 2]), timeout=120)
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        assert output["datatype"] == "UINT8" and output["shape"] == [5, 28, 28]
        assert np.array_equal(np.asarray(output["data"], np.uint8).reshape(5, 28, 28), digits)
        zeros = [[0.0] * 100] * 2
        answer = requests.post(infer, json=v2_request(z=zeros), timeout=120)
        assert answer.status_code == 200, answer.text
        assert np.array_equal(np.asarray(answer.json()["outputs"][0]["data"], np.uint8).reshape(2, 28, 28),
                              local.predict(pd.DataFrame({"z": zeros})))
        for bad in ({"seed": [7, 8], "n": [3, -5]}, {"seed": [-1], "n": [1]}, {"z": [[0.5, 0.5]]},
                    {"seed": [1]}):
            with pytest.raises(MlflowException) as refused:
                local.predict(pd.DataFrame(bad))
            answer = requests.post(infer, json=v2_request(**bad), timeout=120)
            assert answer.status_code == 400, (bad, answer.text)
            error = answer.json()["error"]
            assert refused.value.message in error and "\n" not in error, (bad, error)

        from tests.support.kube_api import KubeApi, write_kubeconfig

        api = KubeApi(url=url)
        with api.serve() as host:
            write_kubeconfig(tmp_path / "kubeconfig", host)
            deployed = run_cli(["deploy", "--name", MODEL_NAME, "--inference-service", "mnist-gan",
                                "--artifacts-destination", f"s3://{BUCKET}/mlflow"], tmp_path, timeout=600,
                               MLFLOW_TRACKING_URI=stack.host_uri, KUBECONFIG=str(tmp_path / "kubeconfig"),
                               MLFLOW_TRACKING_USERNAME=stack.admin[0],
                               MLFLOW_TRACKING_PASSWORD=stack.admin[1])
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert (f"its answer checked: the digits of version {champion.version} for seeds [0, 1]"
            in deployed.stdout), deployed.stdout
    served = client.get_model_version(MODEL_NAME, champion.version).tags[deploy.SERVING_TAG]
    assert served == "team-a/mnist-gan"


def test_a_killed_training_container_resumes_on_retry_in_the_same_run(stack, pipeline_user, mnist_path,
                                                                      tmp_path, monkeypatch):
    """Kill the training task's container mid-epoch, then run the task again with the same inputs, as a
    KFP retry does: it finds its checkpoint on the checkpoint volume (a host folder mounted where the
    cluster mounts the PVC) and continues the same MLflow run."""
    from kfp import dsl, local

    from components import gan
    from pipelines import runner
    from pipelines.mnist_gan import CHECKPOINT_MOUNT

    client = stack.signed_in(monkeypatch, pipeline_user)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.service_uri)  # what the task containers get
    experiment = client.get_experiment_by_name("mnist-gan") or client.get_experiment(
        client.create_experiment("mnist-gan"))
    parent = client.create_run(experiment.experiment_id, run_name="kfp-retry-test").info.run_id
    root, checkpoints = tmp_path / "root", tmp_path / "checkpoints"
    local.init(runner=runner.docker_runner(root, root / "workspace", HOSTS, "host", checkpoints),
               pipeline_root=str(root), raise_on_error=False)
    train_on_cpu = dsl.component(base_image=IMAGE)(gan.train_gan.python_func)

    @dsl.pipeline(name="train-task")
    def train_task(data: str, parent_run_id: str):
        prepared = gan.prepare_data(data=data)
        train_on_cpu(dataset=prepared.outputs["dataset"], parent_run_id=parent_run_id,  # no FID curve:
                     checkpoint_root=CHECKPOINT_MOUNT, epochs=RETRY_EPOCHS, eval_every=0,  # no evaluator
                     **QUICK)

    data = runner._visible_to_containers(str(mnist_path), root)
    attempt = threading.Thread(target=lambda: train_task(data=data, parent_run_id=parent))
    attempt.start()
    own = checkpoints / "checkpoints" / f"kfp-{parent}"
    deadline = time.monotonic() + 600
    while not list(own.glob("*/ckpt-*.json")) and time.monotonic() < deadline:  # the first epoch's
        time.sleep(0.2)
    (run_dir,) = own.iterdir()
    first_epoch = QUICK["train_images"] // QUICK["batch_size"]
    while (not [m for m in client.get_metric_history(run_dir.name, "d_loss") if m.step > first_epoch]
           and time.monotonic() < deadline):  # into the second epoch: steps logged past the checkpoint
        time.sleep(0.2)
    (training,) = engine("ps", "-q", "--filter", f"ancestor={IMAGE}").stdout.split()
    engine("kill", training)
    attempt.join(timeout=120)
    killed = client.get_run(run_dir.name)
    assert "epochs_done" not in killed.data.tags and killed.info.status == "RUNNING"

    train_task(data=data, parent_run_id=parent)
    run = client.get_run(run_dir.name)
    assert run.info.status == "FINISHED" and run.data.tags["epochs_done"] == str(RETRY_EPOCHS)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.params["epochs"] == str(RETRY_EPOCHS)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "d_loss")]
    # every step once, across the kill
    assert steps == sorted(set(steps)) and steps[-1] == RETRY_EPOCHS * 2048 // 64
    assert len(client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")) == 1
