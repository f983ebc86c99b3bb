"""A tracking database with two generators, trained (or built) and evaluated once per test session:
the shared ground of the evaluation, registry, promotion, sampling and serving tests."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import keras
import mlflow
import pytest

from tests.conftest import cli_env, run_cli
from training import registry
from training.data import load_mnist

# The marks of a test that uses the lab: one worker builds it and runs them all.
USES_LAB = [pytest.mark.slow, pytest.mark.xdist_group("lab")]
SAMPLES = "2000"
# One epoch of preset cpu on a sixth of the training set (157 steps): the trained generator covers all 10
# classes at a recall well above the collapsed one's (docs/BENCHMARKS.md, "The test suite on 2 CPU cores").
TRAIN_IMAGES = "10000"


class Lab:
    """One tracking database with two generators, each trained (or built) and evaluated once."""

    def __init__(self, directory: Path, mnist_path: Path):
        self.directory, self.mnist_path = directory, mnist_path
        self.uri = f"sqlite:///{directory / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(self.uri)

    def cli(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
        result = run_cli(list(args), self.directory, MLFLOW_TRACKING_URI=self.uri)
        assert result.returncode == expect, result.stderr[-3000:]
        return result

    def champion_of_the_trained_generator(self, name: str) -> None:
        """Register the trained generator under `name` and promote it, as a user would."""
        self.cli("register", "--name", name, "--training-run-id", self.trained_run,
                 "--evaluation-run-id", self.trained_eval)
        self.cli("promote", "--name", name)

    def run_id(self, output: str, step: str) -> str:
        line = next(line for line in output.splitlines() if line.startswith(f"{step}: run "))
        return line.split()[2].rstrip(",")

    def evaluate(self, training_run_id: str) -> str:
        out = self.cli("evaluate", "--generator", training_run_id, "--data", str(self.mnist_path),
                       "--samples", SAMPLES, "--training-run-id", training_run_id).stdout
        return self.run_id(out, "evaluate")


def _collapsed_generator(mnist_path: Path) -> keras.Model:
    """A generator that ignores z and always draws the same real '1': total mode collapse."""
    mnist = load_mnist(str(mnist_path))
    one = (mnist.x_train[mnist.y_train == 1][0].astype("float32") - 127.5) / 127.5
    return keras.Sequential([
        keras.Input((100,)),
        keras.layers.Dense(784, kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(one.ravel())),
        keras.layers.Reshape((28, 28, 1)),
    ])


def open_lab(directory: Path, mnist_path: Path) -> Lab:
    lab = Lab(directory, mnist_path)
    trained = lab.cli("train", "--data", str(mnist_path), "--preset", "cpu", "--epochs", "1",
                      "--train-images", TRAIN_IMAGES, "--checkpoint-dir", "ckpt").stdout
    lab.trained_run = lab.run_id(trained, "train")
    mlflow.set_tracking_uri(lab.uri)
    experiment = mlflow.set_experiment("mnist-gan")
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="collapsed") as run:
        path = lab.directory / "generator.keras"
        _collapsed_generator(mnist_path).save(path)
        mlflow.log_artifact(str(path), artifact_path="models")
        registry.log_generator(path)
        mlflow.log_params({"preset": "collapsed", "data_sha256": "none"})
    lab.collapsed_run = run.info.run_id
    lab.trained_eval, lab.collapsed_eval = lab.evaluate(lab.trained_run), lab.evaluate(lab.collapsed_run)
    return lab


def version_tags(lab, name, version):
    return lab.client.get_model_version(name, version).tags


def champion(lab, name):
    return str(lab.client.get_model_version_by_alias(name, "champion").version)


def evaluation_run(lab, fid: float) -> str:
    """An evaluation run with chosen scores: what promotion compares, without scoring a new generator."""
    source = lab.client.get_run(lab.trained_eval)
    run = lab.client.create_run(source.info.experiment_id, run_name=f"evaluation fid={fid}")
    for key, value in {**source.data.metrics, "fid": fid}.items():
        lab.client.log_metric(run.info.run_id, key, value)
    lab.client.log_param(run.info.run_id, "samples", source.data.params["samples"])
    lab.client.set_terminated(run.info.run_id)
    return run.info.run_id


def cli_process(lab, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training.cli", *args], cwd=lab.directory,
                            env=cli_env(lab.directory, MLFLOW_TRACKING_URI=lab.uri), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def post(url: str, payload) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def copy_of_the_trained_generator(lab) -> str:
    """A run that logged the trained generator as a model of its own (files not shared with others)."""
    mlflow.set_tracking_uri(lab.uri)
    generator = mlflow.artifacts.download_artifacts(run_id=lab.trained_run,
                                                    artifact_path="models/generator.keras")
    with mlflow.start_run(experiment_id=mlflow.set_experiment("mnist-gan").experiment_id) as run:
        registry.log_generator(Path(generator))
    return run.info.run_id


