"""The commands that compute nothing (register, promote, rollback, deploy, pipeline compile and submit)
import neither TensorFlow, JAX nor Keras, on their error paths too: they answer in the time MLflow and
Kubeflow take to import, not TensorFlow's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import cli_env

HEAVY = ("jax", "keras", "tensorflow")
# `python -m training.cli ARGS`, run as a user runs it; on the way out, however it exits, the last line
# on stderr names the heavy packages it imported.
CLI = f"""
import atexit, runpy, sys
atexit.register(lambda: print("heavy:", *sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)}),
                              file=sys.stderr))
runpy.run_module("training.cli", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], tmp_path) -> tuple[int, str, str, list[str]]:
    """(exit code, stdout, stderr without the last line, heavy packages imported) of `mnist-gan ARGS`."""
    done = subprocess.run([sys.executable, "-c", CLI, *args], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    *lines, last = done.stderr.rstrip("\n").split("\n")
    assert last.startswith("heavy:"), done.stderr[-2000:]
    return done.returncode, done.stdout, "\n".join(lines), last.split()[1:]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A folder with a tracking database that holds nothing, shared by the registry commands."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("empty-store")
    assert MlflowClient(cli_env(folder)["MLFLOW_TRACKING_URI"]).search_registered_models() == []
    return folder


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["register", "--training-run-id", "0" * 32, "--evaluation-run-id", "f" * 32],
                 f"Run with id={'f' * 32} not found", id="register"),
    pytest.param(["promote", "--model-name", "nope"], "nope has no 'challenger' version to promote",
                 id="promote"),
    pytest.param(["rollback", "--model-name", "nope"], "nope has no 'champion' to roll back", id="rollback"),
    pytest.param(["rollback", "--model-name", "nope", "--inference-service", "mnist-gan"],
                 "nope has no 'champion' to roll back", id="rollback-service"),
    pytest.param(["deploy", "--model-name", "nope", "--inference-service", "mnist-gan"],
                 "nope has no 'champion' to deploy", id="deploy"),
])
def test_registry_commands_on_an_empty_store(empty_store, args, message):
    code, _, stderr, heavy = run(args, empty_store)
    assert (code, stderr.splitlines()[-1:]) == (1, [f"mnist-gan {args[0]}: error: {message}"]), stderr[-2000:]
    assert heavy == []


@pytest.mark.parametrize("args", [
    pytest.param(["register", "--training-run-id", "0" * 32, "--evaluation-run-id", "f" * 32], id="register"),
    pytest.param(["promote"], id="promote"),
    pytest.param(["rollback", "--inference-service", "mnist-gan"], id="rollback"),
    pytest.param(["deploy", "--inference-service", "mnist-gan"], id="deploy")])
def test_registry_commands_where_there_is_no_store(tmp_path, args):
    """Run in the wrong folder, they say so, and leave no empty store behind."""
    code, _, stderr, heavy = run(args, tmp_path)
    store = tmp_path / "mlflow.db"
    said = (f"mnist-gan {args[0]}: error: no MLflow store at sqlite:///{store} ({store} does not exist): "
            "run this where you trained, or set MLFLOW_TRACKING_URI to the store that holds the model")
    assert (code, stderr.splitlines()) == (2, [said]), stderr[-2000:]
    assert not store.exists() and heavy == []


def test_pipeline_compile(tmp_path):
    output = tmp_path / "pipeline.yaml"
    code, stdout, stderr, heavy = run(["pipeline", "compile", "-o", str(output)], tmp_path)
    assert (code, stdout) == (0, f"pipeline: wrote {output}\n"), stderr[-2000:]
    assert output.read_text().startswith("# PIPELINE DEFINITION")
    assert heavy == []


def test_pipeline_submit_to_an_unreachable_host(tmp_path):
    from infra.local_stack import free_port

    host = f"http://127.0.0.1:{free_port()}"
    code, _, stderr, heavy = run(["pipeline", "submit", "--host", host], tmp_path)
    assert code == 1 and f"Kubeflow Pipelines at {host} is unreachable" in stderr, stderr[-2000:]
    assert heavy == []
