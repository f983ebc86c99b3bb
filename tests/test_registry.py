"""Evaluation, registration, gated promotion, rollback, copying between registries, sampling and
serving, on a real sqlite-backed registry with a trained generator and a collapsed one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from infra.local_stack import background, free_port, wait_until
from tests.conftest import cli_env, run_cli
from training.data import load_mnist
from training.metrics import HEADLINE, LOWER_IS_BETTER

SAMPLES = "2000"


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory, mnist_path):
    lab = Lab(tmp_path_factory.mktemp("registry"), mnist_path)
    trained = lab.cli("train", "--data", str(mnist_path), "--preset", "tiny", "--epochs", "1",
                      "--checkpoint-dir", "ckpt").stdout
    lab.trained_run = lab.run_id(trained, "train")
    mlflow.set_tracking_uri(lab.uri)
    experiment = mlflow.set_experiment("mnist-gan")
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="collapsed") as run:
        path = lab.directory / "generator.keras"
        _collapsed_generator(mnist_path).save(path)
        mlflow.log_artifact(str(path), artifact_path="models")
        mlflow.log_params({"preset": "collapsed", "data_sha256": "none"})
    lab.collapsed_run = run.info.run_id
    lab.trained_eval, lab.collapsed_eval = lab.evaluate(lab.trained_run), lab.evaluate(lab.collapsed_run)
    yield lab
    mlflow.set_tracking_uri(None)


def test_a_collapsed_generator_scores_worse_than_a_trained_one(lab):
    trained = lab.client.get_run(lab.trained_eval).data.metrics
    collapsed = lab.client.get_run(lab.collapsed_eval).data.metrics
    assert collapsed["classes_covered"] == 1 and trained["classes_covered"] >= 9
    for name in HEADLINE:
        if name in ("precision", "classes_covered"):
            continue
        worse = collapsed[name] > trained[name] if name in LOWER_IS_BETTER else collapsed[name] < trained[name]
        assert worse, f"{name}: collapsed {collapsed[name]} vs trained {trained[name]}"
    # Precision measures fidelity only: one real digit repeated is perfectly "precise". Recall and
    # class coverage are what see the collapse.
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.01


def test_real_training_images_score_near_the_ideal(lab):
    reference = lab.client.get_run(lab.trained_eval).data.metrics
    assert reference["reference_fid"] < 5 and reference["reference_kid"] < 0.1
    assert reference["reference_classifier_score"] > 9.5 and reference["reference_classes_covered"] == 10
    assert reference["reference_precision"] > 0.8 and reference["reference_recall"] > 0.8
    assert reference["reference_kl_to_uniform"] < 0.01
    assert lab.client.get_run(lab.trained_eval).data.params["evaluator_test_accuracy"] >= "0.99"


def test_the_evaluation_report_is_logged(lab, tmp_path):
    report = Path(lab.client.download_artifacts(lab.trained_eval, "report", str(tmp_path)))
    assert {p.name for p in report.iterdir()} == {"grid.png", "neighbours.png", "histogram.png",
                                                   "report.md", "report.html"}
    markdown = (report / "report.md").read_text()
    assert "| fid |" in markdown and "![samples](grid.png)" in markdown
    assert "data:image/png;base64," in (report / "report.html").read_text()
    assert lab.client.get_run(lab.trained_run).data.tags["evaluation_run_id"] == lab.trained_eval


def _version_tags(lab, name, version):
    return lab.client.get_model_version(name, version).tags


def _champion(lab, name):
    return str(lab.client.get_model_version_by_alias(name, "champion").version)


def test_promotion_refuses_a_worse_challenger_accepts_a_better_one_and_rolls_back(lab):
    name = "gate-test"
    register = ("register", "--name", name, "--training-run-id")
    lab.cli(*register, lab.collapsed_run, "--evaluation-run-id", lab.collapsed_eval)
    first = lab.cli("promote", "--name", name).stdout
    assert "no champion yet" in first and _champion(lab, name) == "1"

    lab.cli(*register, lab.trained_run, "--evaluation-run-id", lab.trained_eval)
    dry = lab.cli("promote", "--name", name, "--dry-run").stdout
    assert "(dry run): would promote" in dry and _champion(lab, name) == "1"
    assert "promotion.decision" not in _version_tags(lab, name, "2")
    lab.cli("promote", "--name", name)
    assert _champion(lab, name) == "2"
    tags = _version_tags(lab, name, "2")
    assert tags["promotion.decision"] == "promoted" and tags["promotion.previous_champion"] == "1"
    assert tags["training_run_id"] == lab.trained_run and tags["preset"] == "tiny"
    assert float(tags["eval.fid"]) == lab.client.get_run(lab.trained_eval).data.metrics["fid"]

    lab.cli(*register, lab.collapsed_run, "--evaluation-run-id", lab.collapsed_eval)
    refused = lab.cli("promote", "--name", name).stdout
    assert "keep the champion" in refused and _champion(lab, name) == "2"
    tags = _version_tags(lab, name, "3")
    assert tags["promotion.decision"] == "refused" and "FID" in tags["promotion.reason"]

    lab.cli("rollback", "--name", name)
    assert _champion(lab, name) == "1"
    failed = lab.cli("rollback", "--name", name, expect=1)
    assert "nothing to roll back to" in failed.stderr


def test_a_stricter_rule_refuses_what_the_default_accepts(lab):
    name = "strict-test"
    for run, evaluation in ((lab.collapsed_run, lab.collapsed_eval), (lab.trained_run, lab.trained_eval)):
        lab.cli("register", "--name", name, "--training-run-id", run, "--evaluation-run-id", evaluation)
        lab.cli("promote", "--name", name, "--min-fid-gain", "100000")
    assert _champion(lab, name) == "1"
    assert "needs > 100000" in _version_tags(lab, name, "2")["promotion.reason"]


def test_promotion_into_another_registry(lab, tmp_path):
    name = "export-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    prod = f"sqlite:///{tmp_path / 'prod.db'}"
    out = lab.cli("promote", "--name", name, "--to-registry-uri", prod, "--to-name", "prod-generator").stdout
    assert "copied" in out and "promote prod-generator version 1 to champion" in out, out
    prod_client = mlflow.MlflowClient(prod, registry_uri=prod)
    champion = prod_client.get_model_version_by_alias("prod-generator", "challenger")
    assert prod_client.get_model_version_by_alias("prod-generator", "champion").version == champion.version
    assert champion.tags["copied_from"] == f"{name}/1" and champion.tags["training_run_id"] == lab.trained_run
    same_registry = lab.cli("promote", "--name", name, "--to-registry-uri", lab.uri, "--to-name",
                            "copy-test").stdout
    assert "copied" in same_registry and _champion(lab, "copy-test") == "1"


def test_sample_writes_uint8_digits_and_a_grid_and_never_overwrites(lab):
    name = "sample-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    lab.cli("promote", "--name", name)
    out = lab.directory / "samples.npz"
    lab.cli("sample", "--model-uri", f"models:/{name}@champion", "-n", "300", "--out", str(out))
    with np.load(out, allow_pickle=False) as npz:
        assert npz["images"].shape == (300, 28, 28) and npz["images"].dtype == np.uint8
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    again = lab.cli("sample", "--model-uri", f"models:/{name}@champion", "--out", str(out), expect=2)
    assert "exists" in again.stderr


def _post(url: str, payload) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_mlflow_models_serve_answers_with_images_and_4xx_for_bad_requests(lab):
    name = "serve-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    lab.cli("promote", "--name", name)
    port = free_port()
    env = cli_env(lab.directory, MLFLOW_TRACKING_URI=lab.uri)
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    args = [mlflow_cli, "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]
    log = lab.directory / "serve.log"
    with background(args, log, env) as server:
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200,
                    "mlflow models serve", server, log, timeout=180)
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, {"dataframe_split": {"columns": ["seed", "n"], "data": [[7, 3], [8, 2]]}})
        images = np.asarray(body["predictions"])
        assert status == 200 and images.shape == (5, 28, 28)
        assert images.min() >= 0 and images.max() <= 255 and np.issubdtype(images.dtype, np.integer)
        status, body = _post(url, {"dataframe_split": {"columns": ["seed", "n"], "data": [[7, 3]]}})
        assert np.array_equal(np.asarray(body["predictions"]), images[:3]), "same seed, same digits"
        z = np.zeros((2, 100)).tolist()
        status, body = _post(url, {"dataframe_split": {"columns": ["z"], "data": [[row] for row in z]}})
        assert status == 200 and np.asarray(body["predictions"]).shape == (2, 28, 28)
        for bad, message in (({"columns": ["seed"], "data": [[1]]}, "needs columns seed and n"),
                             ({"columns": ["seed", "n"], "data": [[1, -5]]}, "n must be an integer"),
                             ({"columns": ["seed", "n"], "data": [[1, 10**6]]}, "n must be an integer"),
                             ({"columns": ["z"], "data": [[[0.5, 0.5]]]}, "z must be rows of 100")):
            status, body = _post(url, {"dataframe_split": bad})
            assert status == 400 and message in body["message"], body
        status, _ = _post(url, {"instances": "not a table"})
        assert 400 <= status < 500


def _evaluation_run(lab, fid: float) -> str:
    """An evaluation run with chosen scores: what promotion compares, without scoring a new generator."""
    source = lab.client.get_run(lab.trained_eval)
    run = lab.client.create_run(source.info.experiment_id, run_name=f"evaluation fid={fid}")
    for key, value in {**source.data.metrics, "fid": fid}.items():
        lab.client.log_metric(run.info.run_id, key, value)
    lab.client.log_param(run.info.run_id, "samples", source.data.params["samples"])
    lab.client.set_terminated(run.info.run_id)
    return run.info.run_id


def _cli_process(lab, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training.cli", *args], cwd=lab.directory,
                            env=cli_env(lab.directory, MLFLOW_TRACKING_URI=lab.uri), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_racing_promotions_end_with_the_champion_the_rule_picks(lab):
    name = "race-test"
    for fid in (100.0, 50.0, 40.0):  # versions 1, 2 and 3
        lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                "--evaluation-run-id", _evaluation_run(lab, fid))
    lab.cli("promote", "--name", name, "--version", "1")
    racers = [_cli_process(lab, "promote", "--name", name, "--version", v) for v in ("2", "3")]
    for racer in racers:
        _, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-3000:]
    # whichever went first, version 3 (FID 40) must end as champion: it beats both 1 and 2
    assert _champion(lab, name) == "3"
    second = _version_tags(lab, name, "2")
    lost_to_3 = second["promotion.decision"] == "refused" and "FID 50.000 vs champion 40.000" in second["promotion.reason"]
    superseded_by_3 = _version_tags(lab, name, "3")["promotion.previous_champion"] == "2"
    assert lost_to_3 or superseded_by_3, "the loser's decision and reason are recorded"
    assert name + ".promotion-lock" not in [m.name for m in lab.client.search_registered_models()]


def test_a_promotion_waits_for_the_lock_another_holds(lab):
    from training import registry

    name = "lock-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    with registry._promotion_lock(lab.client, name):
        waiting = _cli_process(lab, "promote", "--name", name)
        time.sleep(12)
        assert waiting.poll() is None, "promoted while another promotion held the lock"
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err[-3000:]
    assert _champion(lab, name) == "1"


def _generator_file(lab, name: str, version: str) -> Path:
    location = lab.client.get_model_version_download_uri(name, version)
    return Path(urllib.parse.urlparse(location).path) / "artifacts" / "generator.keras"


def test_a_version_whose_files_were_modified_or_lost_is_refused_and_not_loaded(lab, tmp_path):
    name = "checksum-test"
    for _ in range(3):
        lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                "--evaluation-run-id", lab.trained_eval)
    assert len(_version_tags(lab, name, "1")["generator_sha256"]) == 64
    with open(_generator_file(lab, name, "1"), "ab") as f:
        f.write(b"tampered")
    _generator_file(lab, name, "2").unlink()

    for version, why in (("1", "does not match"), ("2", "has no artifacts/generator.keras")):
        out = lab.cli("promote", "--name", name, "--version", version).stdout
        assert "keep the champion" in out
        tags = _version_tags(lab, name, version)
        assert tags["promotion.decision"] == "refused" and why in tags["promotion.reason"]
    failed = lab.cli("sample", "--model-uri", f"models:/{name}/1", "--out", str(tmp_path / "s.npz"), expect=1)
    assert "does not match" in failed.stderr and not (tmp_path / "s.npz").exists()
    serve = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{name}/1",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(free_port())]
    refused = subprocess.run(serve, cwd=lab.directory, env=cli_env(lab.directory, MLFLOW_TRACKING_URI=lab.uri),
                             capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode != 0 and "refusing to serve a modified or corrupted model" in refused.stderr
    lab.cli("promote", "--name", name, "--version", "3")
    assert _champion(lab, name) == "3"
