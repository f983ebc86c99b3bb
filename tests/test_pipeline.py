"""The Kubeflow pipeline: compiled YAML, submission to a KFP API, and kfp.local's cache. The whole
pipeline runs, in containers, in test_containers.py."""

from __future__ import annotations

import json

import pytest
import yaml

from pipelines.mnist_gan import SECRET_ENV
from tests.conftest import run_cli
from tests.support.kfp_api import KfpApi

TRACKED_TASKS = {"open-mlflow-run", "train-gan", "evaluate", "evaluation-gate", "register", "promote"}
CACHED_TASKS = {"prepare-data", "train-classifier"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    result = run_cli(["pipeline", "compile", "-o", str(path), "--gpu-type", "nvidia.com/gpu",
                      "--gpu-node-selector", "nvidia.com/gpu.present=true"], path.parent, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_the_task_graph(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    dependencies = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert dependencies == {
        "prepare-data": set(), "open-mlflow-run": {"prepare-data"}, "train-classifier": {"prepare-data"},
        "train-gan": {"prepare-data", "open-mlflow-run", "train-classifier"},  # the FID curve's judge
        "evaluate": {"prepare-data", "open-mlflow-run", "train-gan", "train-classifier"},
        "evaluation-gate": {"evaluate"}, "register": {"open-mlflow-run", "train-gan", "evaluate"},
        # promote checks the generator artifact itself, so it also waits on train-gan, and scores it
        # head to head with the champion on the dataset's test split, by the pipeline's classifier
        "condition-1": {"evaluation-gate", "open-mlflow-run", "register", "train-gan", "prepare-data",
                        "train-classifier"}}
    assert "evaluation-gate-Output" in tasks["condition-1"]["triggerPolicy"]["condition"]
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert list(inner) == ["promote"]


def test_only_the_training_task_asks_for_a_gpu(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    with_gpu = {name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert with_gpu == {"exec-train-gan"}
    resources = executors["exec-train-gan"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert spec["root"]["dag"]["tasks"]["train-gan"]["retryPolicy"]["maxRetryCount"] == 2
    assert executors["exec-train-gan"]["container"]["image"].endswith("-cuda")
    assert "env" not in executors["exec-train-gan"]["container"]  # one GPU: the TensorFlow backend


def test_every_task_requests_and_caps_cpu_and_memory(compiled):
    spec, _ = compiled
    for name, executor in spec["deploymentSpec"]["executors"].items():
        resources = executor["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources.get(key), (name, key)
    train = spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["resources"]
    assert (train["resourceCpuRequest"], train["resourceMemoryLimit"]) == ("4", "16Gi")


def test_the_training_task_tolerates_tainted_gpu_nodes_and_selects_them(compiled):
    _, kubernetes = compiled
    train = kubernetes["exec-train-gan"]
    assert train["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert not any("tolerations" in e or "nodeSelector" in e for n, e in kubernetes.items()
                   if n != "exec-train-gan")


def test_gpu_count_is_both_the_request_and_the_devices_training_uses(tmp_path):
    spec, _ = _compile(tmp_path, "--gpu-count", "4")
    resources = spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "4"
    devices = spec["root"]["dag"]["tasks"]["train-gan"]["inputs"]["parameters"]["devices"]
    assert devices["runtimeValue"]["constant"] == 4
    env = spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["env"]
    assert {"name": "KERAS_BACKEND", "value": "jax"} in env  # data parallel is JAX's
    refused = run_cli(["pipeline", "compile", "-o", str(tmp_path / "p.yaml"), "--gpu-count", "2",
                       "--cpu-only"], tmp_path, timeout=120)
    assert refused.returncode == 2 and "gpu_count must be at least 1, and 1 with cpu_only" in refused.stderr
    assert not (tmp_path / "p.yaml").exists()


def _compile(tmp_path, *flags) -> tuple[dict, dict]:
    path = tmp_path / "pipeline.yaml"
    result = run_cli(["pipeline", "compile", "-o", str(path), *flags], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]


@pytest.mark.parametrize("flags", [[], ["--checkpoint-pvc", "mnist-gan-checkpoints"]])
def test_checkpoints_live_on_storage_that_outlives_the_pod(tmp_path, flags):
    """The pipeline run's workspace (a PVC KFP makes per run: retries resume), or a named PVC (kept across
    runs: resume=true continues an earlier run)."""
    spec, kubernetes = _compile(tmp_path, *flags)
    root = spec["root"]["dag"]["tasks"]["train-gan"]["inputs"]["parameters"]["checkpoint_root"]
    train = kubernetes["deploymentSpec"]["executors"]["exec-train-gan"]
    if not flags:
        assert root["runtimeValue"]["constant"] == "{{$.workspace_path}}"
        assert kubernetes["pipelineConfig"]["workspace"]["size"] == "20Gi"
        assert "pvcMount" not in train
    else:
        assert root["runtimeValue"]["constant"] == "/mnt/checkpoints"
        (mount,) = train["pvcMount"]
        assert mount["mountPath"] == "/mnt/checkpoints"
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "mnist-gan-checkpoints"
        assert "workspace" not in kubernetes.get("pipelineConfig", {})


def test_data_and_evaluator_are_cached_and_tasks_that_write_to_mlflow_never(compiled):
    spec, _ = compiled
    tasks = {**spec["root"]["dag"]["tasks"], **spec["components"]["comp-condition-1"]["dag"]["tasks"]}
    cached = {name for name, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")}
    assert cached == CACHED_TASKS
    assert TRACKED_TASKS <= set(tasks)


def test_cpu_only_compiles_without_an_accelerator(tmp_path):
    path = tmp_path / "cpu.yaml"
    assert run_cli(["pipeline", "compile", "-o", str(path), "--cpu-only"], tmp_path,
                   timeout=120).returncode == 0
    assert "accelerator" not in path.read_text()


def test_credentials_come_from_the_secret_never_from_parameters(compiled):
    spec, kubernetes = compiled
    assert {f"exec-{t}" for t in TRACKED_TASKS} == set(kubernetes)
    for executor in kubernetes.values():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == "mnist-gan-tracking"
        assert {k["envVar"] for k in secret["keyToEnv"]} == set(SECRET_ENV)
    parameters = set(spec["root"]["inputDefinitions"]["parameters"])
    assert not {"MLFLOW_TRACKING_URI", "AWS_SECRET_ACCESS_KEY"} & {p.upper() for p in parameters}


def test_submit_posts_the_run_with_auth_namespace_and_experiment(tmp_path):
    api = KfpApi()
    with api.serve() as host:
        result = run_cli(["pipeline", "submit", "--host", host, "--namespace", "team-a", "--experiment",
                          "gan-exp", "--run-name", "nightly", "--token", "secret-token", "-p", "epochs=3",
                          "-p", "preset=small", "--wait"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{host}/#/runs/details/run-1" in result.stdout
    assert all(r["headers"].get("authorization") == "Bearer secret-token" for r in api.requests)
    (experiment,) = [r for r in api.requests if r["method"] == "POST" and r["path"].endswith("/experiments")]
    assert experiment["body"]["display_name"] == "gan-exp" and experiment["body"]["namespace"] == "team-a"
    (run,) = [r for r in api.requests if r["method"] == "POST" and r["path"].endswith("/runs")]
    assert run["body"]["display_name"] == "nightly" and run["body"]["experiment_id"] == "exp-1"
    assert run["body"]["runtime_config"]["parameters"] == {"epochs": 3, "preset": "small"}
    assert run["body"]["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "mnist-gan"
    assert "secretAsEnv" in str(run["body"]["pipeline_spec"]["platform_spec"])
    assert "secret-token" not in str(run["body"])


def test_deploy_follows_promote_only_when_the_champion_moved_uncached_with_the_secret(tmp_path):
    serving = ["--inference-service", "mnist-gan", "--canary-traffic-percent", "10",
               "--artifacts-destination", "s3://store/mlflow", "--model-reader", "reader"]
    spec, kubernetes = _compile(tmp_path, *serving)
    outer = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    (moved,) = set(outer) - {"promote"}
    assert outer[moved]["dependentTasks"] == ["promote"]
    assert outer[moved]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--promote-promoted'] == true"
    (deploy,) = spec["components"][outer[moved]["componentRef"]["name"]]["dag"]["tasks"].values()
    assert deploy["taskInfo"]["name"] == "deploy" and not deploy["cachingOptions"].get("enableCache")
    inputs = deploy["inputs"]["parameters"]
    assert inputs.pop("model_name") == {"componentInputParameter": "pipelinechannel--model_name"}
    assert {name: value["runtimeValue"]["constant"] for name, value in inputs.items()} == {
        "inference_service": "mnist-gan", "namespace": "", "artifacts_destination": "s3://store/mlflow",
        "model_reader": "reader", "canary_traffic_percent": 10, "timeout": 600}
    (secret,) = kubernetes["deploymentSpec"]["executors"]["exec-deploy"]["secretAsEnv"]
    assert secret["secretName"] == "mnist-gan-tracking"
    assert {k["envVar"] for k in secret["keyToEnv"]} == set(SECRET_ENV)
    assert spec["deploymentSpec"]["executors"]["exec-deploy"]["container"]["resources"]["resourceMemoryLimit"]
    strict_pipeline_check(spec, kubernetes)


def test_the_run_that_deploys_runs_under_the_service_account_given(tmp_path):
    """KFP sets a run's service account, not a task's: the deployer Role binds it
    (infra/k8s/serving/deployer.yaml)."""
    api = KfpApi()
    with api.serve() as host:
        result = run_cli(["pipeline", "submit", "--host", host, "--inference-service", "mnist-gan",
                          "--service-account", "mnist-gan-deployer"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = [r for r in api.requests if r["method"] == "POST" and r["path"].endswith("/runs")]
    assert run["body"]["service_account"] == "mnist-gan-deployer"
    assert "comp-deploy" in run["body"]["pipeline_spec"]["pipeline_spec"]["components"]


@pytest.mark.parametrize(("flags", "plugins_input"), [
    pytest.param(["--mlflow-experiment", "gan-team-a"], {"mlflow": {"experiment_name": "gan-team-a"}},
                 id="chosen"),
    pytest.param([], None, id="the-plugins-default")])
def test_submit_picks_the_mlflow_experiment_of_kfps_mlflow_plugin(tmp_path, flags, plugins_input):
    """The run's `plugins_input` (KFP 2.17 API, V2beta1Run field 19), which kfp.Client cannot send."""
    api = KfpApi()
    with api.serve() as host:
        result = run_cli(["pipeline", "submit", "--host", host, *flags], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = [r for r in api.requests if r["method"] == "POST" and r["path"].endswith("/runs")]
    assert run["body"].get("plugins_input") == plugins_input


def test_submit_with_a_cookie_and_a_failing_run(tmp_path):
    api = KfpApi(final_state="FAILED")
    with api.serve() as host:
        result = run_cli(["pipeline", "submit", "--host", host, "--cookie", "authservice_session=abc",
                          "--wait"], tmp_path, timeout=120)
    assert result.returncode == 1 and "ended FAILED" in result.stderr
    assert all(r["headers"].get("cookie") == "authservice_session=abc" for r in api.requests)


@pytest.mark.parametrize(("flags", "message"), [
    (["-p", "epochs=many"], "epochs must be an integer"),
    (["-p", "epoch=2"], "unknown pipeline parameter(s): epoch"),
    (["-p", "epochs"], "each -p must be KEY=VALUE"),
])
def test_submit_refuses_bad_parameters_before_calling(tmp_path, flags, message):
    api = KfpApi()
    with api.serve() as host:
        result = run_cli(["pipeline", "submit", "--host", host, *flags], tmp_path, timeout=120)
    assert result.returncode == 2 and message in result.stderr and not api.requests


# What a task would refuse on the cluster, after minutes or in every retry: the training task, a batch the
# GPUs of --gpu-count cannot share evenly (each trains with devices=gpu_count); the register task, a
# name MLflow's registry refuses. The CLI refuses the same up front; so must compile, submit, run-local.
REFUSED_ON_THE_CLUSTER = [
    (["compile", "--gpu-count", "3"], "batch_size must be a multiple of devices=3 (got 128)"),
    (["submit", "--gpu-count", "3"], "batch_size must be a multiple of devices=3 (got 128)"),
    (["submit", "--gpu-count", "4", "-p", "batch_size=66"],
     "batch_size must be a multiple of devices=4 (got 66)"),
    (["submit", "--gpu-count", "2", "--sweep", "{batch_size: [64, 33]}"],
     "trial 2: batch_size must be a multiple of devices=2 (got 33)"),
    (["compile", "--gpu-count", "4", "-s", "batch_size=64,66"],
     "trial 2: batch_size must be a multiple of devices=4 (got 66)"),
    (["submit", "-p", "model_name=team/gan"],
     "model_name must be a registered model name, without '/' or ':' (got 'team/gan')"),
    (["run-local", "-p", "model_name=..gan"],
     "model_name must be a registered model name, not '.' or starting with '..' (got '..gan')"),
]


@pytest.mark.parametrize(("flags", "message"), REFUSED_ON_THE_CLUSTER,
                         ids=[" ".join(f) for f, _ in REFUSED_ON_THE_CLUSTER])
def test_what_a_task_would_refuse_is_refused_before_compiling_submitting_or_running(tmp_path, flags, message):
    action, *rest = flags
    api = KfpApi()
    with api.serve() as host:
        where = {"compile": ["-o", "p.yaml"], "submit": ["--host", host],
                 "run-local": ["--pipeline-root", "kfp"]}[action]
        result = run_cli(["pipeline", action, *where, *rest], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"mnist-gan pipeline: error: {message}"), line
    assert not api.requests, "the cluster was not contacted"
    assert not list(tmp_path.iterdir()), "nothing compiled, run or tracked"


def test_submit_to_an_unreachable_host_fails_clearly(tmp_path):
    from infra.local_stack import free_port

    host = f"http://127.0.0.1:{free_port()}"
    result = run_cli(["pipeline", "submit", "--host", host], tmp_path, timeout=300)
    assert result.returncode == 1 and f"Kubeflow Pipelines at {host} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr


CACHE_RUN = """
import logging, sys
from kfp import dsl, local
from components import gan

@dsl.pipeline(name="cacheable-part")
def cacheable_part(data: str):
    gan.train_classifier(dataset=gan.prepare_data(data=data).outputs["dataset"])

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1], enable_caching=True)
logging.basicConfig(level=logging.INFO)
cacheable_part(data=sys.argv[2])
"""


@pytest.mark.slow
def test_the_same_data_reuses_the_dataset_and_the_evaluator_from_the_cache(tmp_path, mnist_path):
    """The pipeline's cacheable tasks, run twice on the same root: the second run executes neither."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    def run() -> str:
        result = subprocess.run([sys.executable, "-c", CACHE_RUN, str(tmp_path / "root"), str(mnist_path)],
                                cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout + result.stderr

    first, second = run(), run()
    assert "cache hit" not in first
    for task in CACHED_TASKS:
        assert f"Task {task} cache hit" in second
    assert "Executing task" not in second


def strict_pipeline_check(spec: dict, kubernetes: dict) -> None:
    """Parse the compiled pipeline as the KFP backend does: every field known to its protobuf schemas."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    for executor in kubernetes["deploymentSpec"]["executors"].values():
        json_format.ParseDict(executor, kubernetes_executor_config_pb2.KubernetesExecutorConfig())


@pytest.mark.parametrize("flags", [[], ["--checkpoint-pvc", "claim", "--gpu-node-selector", "pool=gpu"]])
def test_the_compiled_pipeline_parses_strictly_and_a_broken_one_does_not(tmp_path, flags):
    from google.protobuf import json_format

    spec, kubernetes = _compile(tmp_path, *flags)
    strict_pipeline_check(spec, kubernetes)
    kubernetes["deploymentSpec"]["executors"]["exec-train-gan"]["tolerations"][0]["efect"] = "NoSchedule"
    with pytest.raises(json_format.ParseError, match="efect"):
        strict_pipeline_check(spec, kubernetes)


def test_a_sweep_fans_trials_out_under_a_capped_parallel_for_with_the_gpu_inside_only(tmp_path):
    spec, _ = _compile(tmp_path, "--sweep", "{seed: [0, 1, 2], learning_rate: [1e-4, 2e-4]}",
                       "--parallelism", "3", "--gpu-count", "2")
    tasks = spec["root"]["dag"]["tasks"]
    (loop,) = [name for name in tasks if name.startswith("for-loop")]
    assert tasks[loop]["iteratorPolicy"]["parallelismLimit"] == 3
    trials = [json.loads(item) for item in json.loads(tasks[loop]["parameterIterator"]["items"]["raw"])]
    assert [t["index"] for t in trials] == [1, 2, 3, 4, 5, 6] and trials[5]["values"]["seed"] == 2
    inner = spec["components"][tasks[loop]["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["train-and-evaluate-trial"]
    executors = spec["deploymentSpec"]["executors"]
    with_gpu = {name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert with_gpu == {"exec-train-and-evaluate-trial"}
    assert (executors["exec-train-and-evaluate-trial"]["container"]["resources"]["accelerator"]
            ["resourceCount"] == "2")
    assert {"rank-trials", "register", "evaluation-gate"} <= set(tasks) and "train-gan" not in tasks
    assert tasks["rank-trials"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
