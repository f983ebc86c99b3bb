"""Where every entry point tracks: one experiment, `mnist-gan` unless the user names another, marked as an
experiment of training runs (MLflow's `mlflow.experimentKind`) unless it already has a kind. Each case
runs in a fresh process, as a job does (MLflow keeps the active experiment in the process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, cli_env, run_cli
from training.mlflow_env import DEFAULT_EXPERIMENT, KIND_TAG, TRAINING_KIND, runs_view, ui_route

CHOOSE = """
import json, sys
from training import mlflow_env
from training.config import ConfigError
try:
    print(json.dumps({"id": mlflow_env.set_experiment(*sys.argv[1:]).experiment_id}))
except ConfigError as err:
    print(json.dumps({"error": str(err)}))
"""


def _choose(tmp_path: Path, *args: str, **env: str) -> dict:
    """The experiment a process in `env` tracks to (its id), or the one-line error it stops with."""
    done = subprocess.run([sys.executable, "-c", CHOOSE, *args], cwd=tmp_path, env=cli_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _client(tmp_path: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])


def test_the_project_creates_its_one_experiment_as_a_training_experiment(tmp_path):
    chosen = _choose(tmp_path)
    experiment = _client(tmp_path).get_experiment(chosen["id"])
    assert experiment.name == DEFAULT_EXPERIMENT and experiment.tags[KIND_TAG] == TRAINING_KIND
    assert _choose(tmp_path) == chosen, "found again, not created twice"


def test_an_experiment_without_a_kind_gets_it_and_one_of_another_kind_keeps_its_own(tmp_path):
    client = _client(tmp_path)
    plain = client.create_experiment(DEFAULT_EXPERIMENT)
    genai = client.create_experiment("agents", tags={KIND_TAG: "genai_development"})
    assert _choose(tmp_path) == {"id": plain}
    assert client.get_experiment(plain).tags[KIND_TAG] == TRAINING_KIND
    assert _choose(tmp_path, MLFLOW_EXPERIMENT_NAME="agents") == {"id": genai}
    assert client.get_experiment(genai).tags[KIND_TAG] == "genai_development"


@pytest.mark.slow  # five processes that each import MLflow: past the fast tier's 60 s on a loaded machine
def test_the_experiment_the_user_names_is_the_one_used(tmp_path):
    client = _client(tmp_path)
    named = client.create_experiment("team-a")
    assert _choose(tmp_path, MLFLOW_EXPERIMENT_ID=named) == {"id": named}
    created = _choose(tmp_path, MLFLOW_EXPERIMENT_NAME="team-b")["id"]
    assert client.get_experiment(created).name == "team-b"
    run = client.create_run(named).info.run_id  # `mlflow run` and KFP open the run first: its experiment
    assert _choose(tmp_path, MLFLOW_RUN_ID=run) == {"id": named}
    assert client.get_experiment_by_name(DEFAULT_EXPERIMENT) is None
    assert {client.get_experiment(e).tags[KIND_TAG] for e in (named, created)} == {TRAINING_KIND}
    assert "no such experiment" in _choose(tmp_path, MLFLOW_EXPERIMENT_ID="999")["error"]


def test_a_deleted_experiment_stops_the_job_in_one_line_that_says_how_to_restore_it(tmp_path, mnist_path):
    client = _client(tmp_path)
    deleted = client.create_experiment(DEFAULT_EXPERIMENT)
    client.delete_experiment(deleted)
    done = run_cli(["main", "--data", str(mnist_path), "--preset", "cpu", "--epochs", "1"], tmp_path,
                   timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"mnist-gan main: error: experiment '{DEFAULT_EXPERIMENT}' (id {deleted}) is deleted: restore it "
        f"(mlflow experiments restore --experiment-id {deleted}) or track to another "
        "(MLFLOW_EXPERIMENT_NAME=...)")
    assert client.search_runs([deleted]) == [], "nothing ran"


def test_the_uis_links_open_the_training_view(monkeypatch):
    assert ui_route("3") == "#/experiments/3/runs?workflowType=machine_learning"
    assert (ui_route("3", "abc", "report/report.html")
            == "#/experiments/3/runs/abc/artifacts/report/report.html?workflowType=machine_learning")
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "sqlite:///mlflow.db")
    assert runs_view("3") == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "https://me:secret@mlflow.example:8443/")
    assert runs_view("3") == "https://mlflow.example:8443/#/experiments/3/runs?workflowType=machine_learning"


@pytest.mark.parametrize(("environment", "params", "flag"), [
    ({}, "-P epochs=1", "--experiment-name mnist-gan"),
    ({"MLFLOW_EXPERIMENT_ID": "4"}, "-P epochs=1", None),
    ({"MLFLOW_EXPERIMENT_NAME": "team-a"}, "-P epochs=1", None),
    ({}, "-P epochs=1 --experiment-id 4", None),
])
def test_make_run_names_the_experiment_unless_the_user_did(environment, params, flag):
    """`mlflow run` opens its run before the project's code starts, in experiment Default unless told."""
    env = {k: v for k, v in cli_env(ROOT).items() if not k.startswith("MLFLOW_")} | environment
    command = subprocess.run(["make", "--no-print-directory", "-n", "-o", "install", "-C", str(ROOT), "run",
                              f"PARAMS={params}"], env=env, capture_output=True, text=True, timeout=30,
                             check=True).stdout.splitlines()[-1]
    assert command.count("--experiment-") == (1 if flag or "--experiment-" in params else 0), command
    if flag:
        assert flag == f"--experiment-name {DEFAULT_EXPERIMENT}" and flag in command


def test_the_readmes_mlflow_run_commands_name_the_experiment():
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if "mlflow run ." in line]
    assert commands and all(f"mlflow run . --experiment-name {DEFAULT_EXPERIMENT}" in line
                            for line in commands), commands


def test_the_cli_moves_tracked_files_through_the_tracking_server_unless_the_user_said(monkeypatch,
                                                                                  kept_environment):
    """MLflow's client reads the two variables; with them unset it would ask the server for presigned
    URLs into a bucket a laptop cannot reach (tests/test_containers.py runs `mnist-gan deploy` from the
    host against such a server)."""
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    from training import cli, mlflow_env

    for name in mlflow_env.THROUGH_THE_SERVER:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setattr(cli, "_run", lambda *args: 0)  # the command itself is not the point
    monkeypatch.setattr(cli.checks, "existing_store", lambda: None)
    assert cli.main(["rollback", "--name", "m"]) == 0
    repository = MlflowArtifactsRepository("mlflow-artifacts://127.0.0.1:9/a", tracking_uri="http://127.0.0.1:9")
    assert not repository._is_multipart_download_enabled(), "no server asked: the variable decides"
    assert repository._is_multipart_upload_enabled(), "the user's own setting stays"
