"""The pipeline under Kubeflow Pipelines' MLflow plugin: one run tree, KFP's, with our records in the runs KFP
opened for the tasks; a retried training task resumes in its reopened run; and everything in the MLflow
workspace the environment names.

No KFP backend runs here: tests/support/kfp_mlflow_plugin.py plays KFP 2.17.0's API server, driver and
launcher exactly as that release's code does, against a real `mlflow server` with workspaces enabled,
and each task runs its component's function in a process of its own with the environment KFP gives it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import mlflow
import pytest

from infra.local_stack import mlflow_server
from tests.conftest import cli_env, run_cli
from tests.support.kfp_mlflow_plugin import Plugin, task_command
from tests.support.waiting import wait_for
from tests.test_reliability import STEPS, _history, _logged_past_checkpoint
from training.mlflow_env import EXPERIMENT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("kfp-mlflow-plugin")]

WORKSPACE = "team-a"
MODEL = "mnist-gan-generator"  # the main job's
PIPELINE_MODEL = "pipeline-gan"  # the pipeline's here: its own champion, whichever test runs first
TRAINING = {"preset": "cpu", "train_images": 256, "epochs": 1, "log_every": 2, "eval_samples": 500}
RULE = {"min_fid_gain": 0.0, "max_classes_lost": 0, "min_classes_covered": 0, "confidence": 0.95}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tracking server with workspaces on, and the workspace the team's runs go to."""
    directory = tmp_path_factory.mktemp("workspaces")
    with mlflow_server(directory / "mlflow", extra_args=("--enable-workspaces",)) as uri:
        mlflow.MlflowClient(uri).create_workspace(WORKSPACE)
        yield uri


@pytest.fixture()
def team(server, monkeypatch):
    """This process's MLflow clients in the team's workspace, as the tasks' are."""
    monkeypatch.setenv("MLFLOW_WORKSPACE", WORKSPACE)
    return server


def _env(tmp_path, uri: str) -> dict[str, str]:
    return cli_env(tmp_path, MLFLOW_TRACKING_URI=uri, MLFLOW_WORKSPACE=WORKSPACE)


def _run_pipeline(plugin: Plugin, tmp_path, mnist_path) -> dict[str, str]:
    """The pipeline's tasks in its order (tests/test_pipeline.py holds the graph); returns the task
    runs by task name, and what register returned as "version"."""
    env, out = _env(tmp_path, plugin.uri), tmp_path / "artifacts"
    for folder in ("data", "classifier", "train", "evaluate"):
        (out / folder).mkdir(parents=True)
    dataset, classifier = out / "data" / "mnist.npz", out / "classifier" / "model"
    generator, evaluated = out / "train" / "generator", out / "evaluate"
    runs = {}

    def task(name, arguments, artifacts, parent_run_id=None):
        runs[name], result = plugin.run_task(name, arguments, artifacts, env, tmp_path, parent_run_id)
        return result

    task("prepare-data", {"data": str(mnist_path)}, {"dataset": dataset})
    task("train-classifier", {}, {"dataset": dataset, "classifier": classifier})
    parent = task("open-mlflow-run", {"data": str(mnist_path), "kfp_run": plugin.kfp_run_id},
                  {"dataset": dataset})
    training_run = task("train-gan",
                        {"parent_run_id": parent, "checkpoint_root": str(tmp_path / "ckpt"), **TRAINING},
                        {"dataset": dataset, "classifier": classifier, "generator": generator,
                         "metrics": out / "train" / "metrics"})
    evaluation_run = task("evaluate",
                          {"parent_run_id": parent, "training_run_id": training_run, "samples": 500},
                          {"dataset": dataset, "generator": generator, "classifier": classifier,
                           "metrics": evaluated / "metrics", "report": evaluated / "report.html",
                           "summary": evaluated / "report.md"})
    assert task("evaluation-gate", {"evaluation_run_id": evaluation_run, **RULE}, {}) is True
    runs["version"] = task("register", {"parent_run_id": parent, "training_run_id": training_run,
                                        "evaluation_run_id": evaluation_run,
                                        "model_name": PIPELINE_MODEL}, {})
    runs["condition-1"] = plugin.dag_run("condition-1")
    task("promote", {"parent_run_id": parent, "model_name": PIPELINE_MODEL, "version": runs["version"],
                     "samples": 500, **RULE},
         {"dataset": dataset, "classifier": classifier, "generator": generator},
         parent_run_id=runs["condition-1"])
    unfinished = [run.info.run_name for run in plugin.client.search_runs([plugin.experiment_id])
                  if run.info.status != "FINISHED" and run.info.run_id != plugin.parent_run_id]
    assert unfinished == [], "every task's run ended before the pipeline run"
    plugin.end()
    return runs | {"parent": parent}


def test_one_run_tree_kfps_with_our_records_in_its_task_runs(team, tmp_path, mnist_path):
    plugin = Plugin(team, experiment_name="gan-team-a", workspace=WORKSPACE)
    client = plugin.client

    def everything() -> tuple[list, set[str]]:  # the workspace's runs and experiments
        experiments = client.search_experiments()
        return client.search_runs([e.experiment_id for e in experiments]), {e.name for e in experiments}

    # the other tests here share the server and the workspace: this one reads only what it made
    (earlier, experiments_before) = everything()
    earlier = {run.info.run_id for run in earlier} - {plugin.parent_run_id}
    runs = _run_pipeline(plugin, tmp_path, mnist_path)
    assert runs["parent"] == plugin.parent_run_id, "the pipeline's parent is KFP's"

    every, experiments = everything()
    every = [run for run in every if run.info.run_id not in earlier]
    names = {run.info.run_id: run.info.run_name for run in every}
    tree = sorted((run.info.run_name, names.get(run.data.tags.get("mlflow.parentRunId"), "-"))
                  for run in every)
    root = client.get_run(plugin.parent_run_id).info.run_name
    tasks = ["condition-1", "evaluate", "evaluation-gate", "open-mlflow-run", "prepare-data", "register",
             "train-classifier", "train-gan"]
    assert tree == sorted([(root, "-"), *((name, root) for name in tasks), ("promote", "condition-1")])
    assert {run.info.experiment_id for run in every} == {plugin.experiment_id}  # KFP's, not ours
    assert EXPERIMENT not in experiments - experiments_before

    parent = client.get_run(plugin.parent_run_id)
    assert parent.data.tags["kfp_run"] == plugin.kfp_run_id and parent.data.tags["data_sha256"]
    assert client.get_run(runs["open-mlflow-run"]).inputs.dataset_inputs, "the dataset, on its task's run"

    training = client.get_run(runs["train-gan"])
    # KFP's launcher logged the task's inputs into the run that holds ours, and MLflow took the batch.
    assert (training.data.params["preset"], training.data.params["learning_rate"]) == ('"cpu"', "0")
    assert training.data.params["effective.learning_rate"] == "0.001", "what the preset chose"
    assert training.data.params["backend"] == "tensorflow" and "data_sha256" in training.data.params
    steps = [step for step, _ in _history(client, runs["train-gan"])]
    assert steps == sorted(set(steps)) and steps[0] > 0, "the launcher's step-0 metrics join no curve"
    assert "final/d_loss" in training.data.metrics
    (model,) = client.search_logged_models([plugin.experiment_id])
    assert model.source_run_id == runs["train-gan"]

    evaluation = client.get_run(runs["evaluate"])
    assert evaluation.data.tags["training_run_id"] == runs["train-gan"]
    assert len(client.get_metric_history(runs["evaluate"], "fid")) == 1
    assert evaluation.data.metrics["final/fid"] == evaluation.data.metrics["fid"]
    assert client.get_run(runs["register"]).data.tags["registered_version"] == runs["version"]
    assert client.get_model_version(PIPELINE_MODEL, runs["version"]).run_id == runs["train-gan"]
    assert client.get_run(runs["promote"]).data.tags["promoted"] == "true"
    assert client.get_model_version_by_alias(PIPELINE_MODEL, "champion").version == runs["version"]
    launched = {runs[task] for task in tasks if task != "condition-1"} | {runs["promote"]}
    assert {run for run, _ in plugin.batches} == launched, "KFP's launcher logged into every task's run"


def test_a_sweeps_trials_land_under_the_runs_of_kfps_loop_iterations(team, tmp_path, mnist_path):
    """dsl.ParallelFor: KFP's loop run, one run per iteration beneath it (same name), each trial's
    training and evaluation nested in its iteration's run; the ranking on KFP's parent, still running."""
    from training.sweep import Trial

    plugin = Plugin(team, experiment_name="gan-sweep", workspace=WORKSPACE)
    env, out = _env(tmp_path, team), tmp_path / "artifacts"
    (out / "data").mkdir(parents=True)
    dataset, classifier = out / "data" / "mnist.npz", out / "classifier"
    plugin.run_task("prepare-data", {"data": str(mnist_path)}, {"dataset": dataset}, env, tmp_path)
    plugin.run_task("train-classifier", {}, {"dataset": dataset, "classifier": classifier}, env, tmp_path)
    _, parent = plugin.run_task("open-mlflow-run", {"data": str(mnist_path), "kfp_run": plugin.kfp_run_id},
                                {"dataset": dataset}, env, tmp_path)
    loop = plugin.dag_run("for-loop-2")
    trials = [Trial(1, {"seed": 1}).to_json(), Trial(2, {"seed": 2}).to_json()]
    iterations, outcomes = {}, []
    for trial in trials:
        arguments = {"kfp_run": plugin.kfp_run_id, "checkpoint_root": str(tmp_path / "ckpt"), "trial": trial,
                     "samples": 500, **TRAINING}
        iteration, outcome = plugin.run_task("train-and-evaluate-trial", arguments,
                                             {"dataset": dataset, "classifier": classifier}, env, tmp_path,
                                             parent_run_id=loop)
        iterations[json.loads(trial)["index"]] = iteration
        outcomes.append(outcome)
    plugin.run_task("rank-trials", {"trials": trials, "parent_run_id": parent, "outcomes": outcomes, **RULE},
                    {}, env, tmp_path)
    assert plugin.client.get_run(plugin.parent_run_id).info.status == "RUNNING", "KFP ends its parent"
    plugin.end()

    client = plugin.client
    every = client.search_runs([plugin.experiment_id])
    parents = {run.info.run_id: run.data.tags.get("mlflow.parentRunId") for run in every}
    for index, iteration in iterations.items():
        (trial_run,) = [r for r in every if r.data.tags.get("sweep_trial") == str(index)]
        assert trial_run.info.run_name == f"trial-{index}" and parents[trial_run.info.run_id] == iteration
        evaluation = client.get_run(trial_run.data.tags["evaluation_run_id"])
        assert parents[evaluation.info.run_id] == iteration
        assert parents[iteration] == loop and parents[loop] == plugin.parent_run_id
    assert client.get_run(plugin.parent_run_id).data.metrics["trials_finished"] == 2
    # the parent; 3 tasks and the loop; 2 iterations; a training and an evaluation run each; rank-trials
    assert len(every) == 1 + 4 + 2 + 4 + 1


def test_a_retried_training_task_resumes_in_its_reopened_run(team, tmp_path, mnist_path):
    """Killed mid-epoch; KFP ends the run FAILED, then its retry reopens the run and runs the task again
    with the same nested run (the driver's output is reused)."""
    plugin = Plugin(team, experiment_name="gan-retry", workspace=WORKSPACE)
    client, env = plugin.client, _env(tmp_path, team)
    (tmp_path / "data").mkdir()
    dataset = tmp_path / "data" / "mnist.npz"
    plugin.run_task("prepare-data", {"data": str(mnist_path)}, {"dataset": dataset}, env, tmp_path)
    task_run = plugin.nested_run("train-gan")
    arguments = {"parent_run_id": plugin.parent_run_id, "checkpoint_root": str(tmp_path / "ckpt"),
                 **TRAINING, "train_images": 4096, "epochs": 3}
    artifacts = {"dataset": dataset, "generator": tmp_path / "generator", "metrics": tmp_path / "metrics"}
    first = subprocess.Popen(task_command("train-gan", arguments, artifacts), cwd=tmp_path,
                             env={**env, **plugin.environment(task_run)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    run_dir, _ = wait_for(lambda: _logged_past_checkpoint(
        client, tmp_path / "ckpt" / "checkpoints" / f"kfp-{plugin.parent_run_id}"),
                           300, "a checkpoint of the first attempt", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert run_dir.name == task_run, "training checkpoints KFP's run"
    plugin.end("FAILED")
    plugin.retry()
    assert client.get_run(task_run).info.status == "RUNNING"

    plugin.run_task("train-gan", arguments, artifacts, env, tmp_path, task_run_id=task_run)
    assert [s for s, _ in _history(client, task_run)] == list(range(2, STEPS + 1, 2)), "every step once"
    assert client.get_run(task_run).info.status == "FINISHED"
    names = [run.info.run_name for run in client.search_runs([plugin.experiment_id])]
    assert sorted(names) == sorted([client.get_run(plugin.parent_run_id).info.run_name, "prepare-data",
                                    "train-gan"])


def test_the_main_job_writes_only_in_the_workspace_the_environment_names(team, tmp_path, mnist_path):
    """After this module's pipeline and retry and this main job, all in team-a, the default workspace
    holds nothing: no run, experiment but MLflow's own, model, alias or promotion lock."""
    done = run_cli(["main", "--data", str(mnist_path), "--preset", "cpu", "--train-images", "256",
                    "--epochs", "1", "--eval-every", "0", "--samples", "500", "--min-classes-covered", "0"],
                   tmp_path, MLFLOW_TRACKING_URI=team, MLFLOW_WORKSPACE=WORKSPACE)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(team)
    assert client.get_model_version_by_alias(MODEL, "champion")
    assert client.get_experiment_by_name(EXPERIMENT).experiment_id

    default = subprocess.run([sys.executable, "-c", DEFAULT_WORKSPACE, team], env=cli_env(tmp_path),
                             capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(default.stdout) == {"experiments": ["Default"], "runs": 0, "models": []}


# What the default workspace holds, asked by a client that names no workspace.
DEFAULT_WORKSPACE = """
import json, sys, mlflow
client = mlflow.MlflowClient(sys.argv[1])
experiments = client.search_experiments()
print(json.dumps({"experiments": sorted(e.name for e in experiments),
                  "runs": len(client.search_runs([e.experiment_id for e in experiments])),
                  "models": sorted(m.name for m in client.search_registered_models())}))
"""
