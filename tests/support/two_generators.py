"""A tracking database with four generators, trained (or built) and evaluated once per test session:
the shared ground of the evaluation, registry, promotion, sampling and serving tests."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from tests.conftest import cli_env, run_cli
from tests.support.process_state import tracking_to
from training import registry
from training.data import load_mnist

# The marks of a test that uses the lab: one worker builds it and runs them all.
USES_LAB = [pytest.mark.slow, pytest.mark.xdist_group("lab")]
SAMPLES = "2000"
# One epoch of preset cpu on a sixth of the training set (157 steps): the trained generator covers all 10
# classes at a recall well above the collapsed one's (docs/BENCHMARKS.md, "The test suite on 2 CPU cores").
TRAIN_IMAGES = "10000"


class Lab:
    """One tracking database with four generators, each trained (or built) and evaluated once: `trained`
    (one short epoch), `slightly_worse` and `worse` (its weights with noise added), and `collapsed`
    (one digit, always). Each has `<kind>_run` (its run, which logged it) and `<kind>_eval`."""

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
        self.register(name, "trained")
        self.promote("--name", name)

    def register(self, name: str, kind: str) -> str:
        """Register the lab's `kind` generator with its evaluation under `name`; returns the version."""
        out = self.cli("register", "--name", name, "--training-run-id", getattr(self, f"{kind}_run"),
                       "--evaluation-run-id", getattr(self, f"{kind}_eval")).stdout
        return out.split("version ")[1].split()[0]

    def promote(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
        """`mnist-gan promote ARGS`, head to head on the lab's MNIST and N."""
        return self.cli("promote", "--data", str(self.mnist_path), "--samples", SAMPLES, *args, expect=expect)

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
    with tracking_to(lab.uri):
        collapsed = _generator_file(lab, "collapsed")
        _collapsed_generator(mnist_path).save(collapsed)
        lab.collapsed_run = _generator_run(collapsed, "collapsed")
        (lab.directory / "exported").mkdir()
        trained = exported_generator(lab, lab.directory / "exported")  # the generator the trained run scores
        for kind, scale in (("worse", 0.2), ("slightly_worse", 0.05)):
            _worse_copy(trained, scale, _generator_file(lab, kind))
            setattr(lab, f"{kind}_run", _generator_run(_generator_file(lab, kind), kind))
    for kind in ("trained", "collapsed", "worse", "slightly_worse"):
        setattr(lab, f"{kind}_eval", lab.evaluate(getattr(lab, f"{kind}_run")))
    return lab


def _generator_file(lab: Lab, kind: str) -> Path:
    (lab.directory / kind).mkdir(exist_ok=True)
    return lab.directory / kind / "generator.keras"  # the name a training run logs it under


def _worse_copy(generator_file: Path, scale: float, target: Path) -> None:
    """The trained generator with noise added to its weights, `scale` times each weight's spread: it still
    draws every digit, with a FID about 1 (0.05) or 5 (0.2) above the trained one's."""
    generator = keras.saving.load_model(generator_file, compile=False)
    rng = np.random.default_rng(0)
    for weight in generator.trainable_variables:
        value = keras.ops.convert_to_numpy(weight)
        weight.assign(value + scale * value.std() * rng.normal(size=value.shape).astype(value.dtype))
    generator.save(target)


def _generator_run(path: Path, kind: str) -> str:
    """A run of the lab's experiment that logged the generator file as its model (as training does)."""
    experiment_id = mlflow.set_experiment("mnist-gan").experiment_id
    with mlflow.start_run(experiment_id=experiment_id, run_name=kind) as run:
        mlflow.log_artifact(str(path), artifact_path="models")
        registry.log_generator(path)
        mlflow.log_params({"preset": kind, "data_sha256": "none"})
    return run.info.run_id


def version_tags(lab, name, version):
    return lab.client.get_model_version(name, version).tags


def champion(lab, name):
    return str(lab.client.get_model_version_by_alias(name, "champion").version)


def evaluation_run(lab, fid: float) -> str:
    """An evaluation run of the trained generator with chosen scores: what promotion compares, without
    scoring it again."""
    source = lab.client.get_run(lab.trained_eval)
    run = lab.client.create_run(source.info.experiment_id, run_name=f"evaluation fid={fid}")
    for key, value in {**source.data.metrics, "fid": fid}.items():
        lab.client.log_metric(run.info.run_id, key, value)
    for key in ("samples", registry.CHECKSUM_KEY, registry.EVALUATOR_KEY):  # what it scored, and with what
        lab.client.log_param(run.info.run_id, key, source.data.params[key])
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
    """A run that logged the trained generator (the one its run exports, which the lab evaluated) as a
    model of its own (files not shared with others)."""
    with (tracking_to(lab.uri), tempfile.TemporaryDirectory() as tmp,
          mlflow.start_run(experiment_id=mlflow.set_experiment("mnist-gan").experiment_id) as run):
        registry.log_generator(exported_generator(lab, Path(tmp)))
    return run.info.run_id


def exported_generator(lab, directory: Path) -> Path:
    """The trained run's exported generator file (its generator_artifact tag), downloaded."""
    artifact = lab.client.get_run(lab.trained_run).data.tags["generator_artifact"]
    return Path(mlflow.artifacts.download_artifacts(run_id=lab.trained_run, artifact_path=artifact,
                                                    dst_path=str(directory), tracking_uri=lab.uri))
