"""Faults with real processes: SIGKILL mid-epoch, a retried Kubeflow training task, a tracking server
that goes down mid-training, an S3 store refusing the credentials."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from infra.local_stack import free_port, mlflow_server, s3_server
from tests.conftest import QUICK, cli_env, run_cli
from tests.support.waiting import wait_for
from training import checkpoint

# 4,096 images in batches of 64: 64 steps per epoch, metrics every 2 steps
LONG = [*QUICK, "--train-images", "4096", "--epochs", "3"]
STEPS = 3 * 64


# every test here trains, most against a real server
pytestmark = pytest.mark.slow


def _train_args(mnist_path: Path, checkpoint_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", "train", "--data", str(mnist_path), *LONG,
            "--checkpoint-dir", str(checkpoint_dir), *extra]


def _history(client, run_id: str, key: str = "d_loss") -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _arrays(run_dir: Path) -> list[np.ndarray]:
    manifest = checkpoint.latest_manifest(run_dir)
    with np.load(run_dir / manifest["arrays"]) as npz:
        # the state; not the digest of the manifest, whose run id and timings differ between runs
        return [npz[k] for k in sorted(npz.files) if k != checkpoint.MANIFEST_DIGEST]


def _logged_past_checkpoint(client, root: Path):
    """(run dir, manifest) once a checkpoint exists and the run has logged steps beyond it."""
    run_dir = checkpoint.latest_run_dir(root)
    manifest = checkpoint.latest_manifest(run_dir) if run_dir else None
    if not manifest or manifest["epoch"] < 1:
        return None
    steps = [step for step, _ in _history(client, run_dir.name)]
    return (run_dir, manifest) if steps and max(steps) >= manifest["global_step"] + 6 else None


def test_sigkill_mid_epoch_then_resume_continues_the_same_run_to_the_same_weights(tmp_path, mnist_path):
    with mlflow_server(tmp_path / "mlflow") as uri:
        client = mlflow.MlflowClient(uri)
        env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri)
        straight = subprocess.run(_train_args(mnist_path, tmp_path / "straight"), cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600, check=False)
        assert straight.returncode == 0, straight.stderr[-3000:]

        victim = subprocess.Popen(_train_args(mnist_path, tmp_path / "killed"), cwd=tmp_path, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run_dir, manifest = wait_for(lambda: _logged_past_checkpoint(client, tmp_path / "killed"), 300,
                                      "a checkpoint and metrics logged past it", victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert manifest["global_step"] < STEPS, "killed after the run had finished"

        resumed = subprocess.run(_train_args(mnist_path, tmp_path / "killed", "--resume"), cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=600, check=False)
        assert resumed.returncode == 0, resumed.stderr[-3000:]

        straight_dir = checkpoint.latest_run_dir(tmp_path / "straight")
        assert [p.name for p in (tmp_path / "killed").iterdir()] == [run_dir.name], "one run, continued"
        assert client.get_run(run_dir.name).info.status == "FINISHED"
        # the same metric series as the uninterrupted run: every step once, the same values
        assert _history(client, run_dir.name) == _history(client, straight_dir.name)
        assert [s for s, _ in _history(client, run_dir.name)] == list(range(2, STEPS + 1, 2))
        assert [s for s, _ in _history(client, run_dir.name, "epoch_d_loss")] == [1, 2, 3]
        for a, b in zip(_arrays(run_dir), _arrays(straight_dir), strict=True):
            np.testing.assert_array_equal(a, b)


RETRY_SCRIPT = """
import sys
from training import jobs
from training.config import TrainConfig

config = TrainConfig(preset="cpu", data=sys.argv[1], train_images=4096, epochs=3,
                     log_every=2, checkpoint_dir=sys.argv[2])
trained = jobs.train(config, parent_run_id=sys.argv[3], checkpoint_root=".", generator_out=sys.argv[4])
print("trained", trained.run_id, "resumed" if trained.resumed else "from scratch")
"""


def test_a_retried_kubeflow_training_task_resumes_its_own_checkpoint(tmp_path, mnist_path):
    with mlflow_server(tmp_path / "mlflow") as uri:
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment("mnist-gan")
        parent = client.create_run(experiment, run_name="kfp-test").info.run_id
        env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri)
        task = [sys.executable, "-c", RETRY_SCRIPT, str(mnist_path), str(tmp_path / "ckpt"), parent,
                str(tmp_path / "generator")]
        first = subprocess.Popen(task, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        run_dir, _ = wait_for(lambda: _logged_past_checkpoint(client, tmp_path / "ckpt" / f"kfp-{parent}"),
                               300, "a checkpoint of the first attempt", first)
        first.send_signal(signal.SIGKILL)  # the pod dies; KFP runs the same task again
        first.wait()
        retry = subprocess.run(task, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                               check=False)
        assert retry.returncode == 0, retry.stderr[-3000:]
        assert f"trained {run_dir.name} resumed" in retry.stdout, (
            "the retry continued the first attempt's run")
        run = client.get_run(run_dir.name)
        assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "FINISHED"
        assert [s for s, _ in _history(client, run_dir.name)] == list(range(2, STEPS + 1, 2))
        assert (tmp_path / "generator" / "generator.keras").is_file()


def test_training_survives_a_tracking_server_outage_and_loses_no_metric(tmp_path, mnist_path):
    server_dir, log = tmp_path / "mlflow", tmp_path / "train.log"
    with mlflow_server(server_dir) as uri:
        port = int(uri.rsplit(":", 1)[1])  # the restart continues the same server on the same port
        client = mlflow.MlflowClient(uri)
        with open(log, "w") as out:
            trainer = subprocess.Popen(_train_args(mnist_path, tmp_path / "ckpt"), cwd=tmp_path, stdout=out,
                                       stderr=subprocess.STDOUT,
                                       env=cli_env(tmp_path, MLFLOW_TRACKING_URI=uri))
        run_dir = wait_for(lambda: next((tmp_path / "ckpt").glob("*"), None), 300, "the training run",
                            trainer)
        run_id = run_dir.name
        wait_for(lambda: len(_history(client, run_id)) >= 3, 300, "the first metrics", trainer)
    # the server is down: training must go on
    wait_for(lambda: "MLflow unreachable" in log.read_text(), 120, "training to notice the outage", trainer)
    before = checkpoint.latest_manifest(run_dir)
    wait_for(lambda: checkpoint.latest_manifest(run_dir) != before or trainer.poll() is not None, 120,
              "training to progress during the outage")
    assert trainer.poll() in (None, 0), log.read_text()[-3000:]
    with mlflow_server(server_dir, port=port) as uri:
        assert trainer.wait(timeout=600) == 0, log.read_text()[-3000:]
        client = mlflow.MlflowClient(uri)
        assert [s for s, _ in _history(client, run_id)] == list(range(2, STEPS + 1, 2)), "no metric lost"
        assert [s for s, _ in _history(client, run_id, "epoch_g_loss")] == [1, 2, 3]
        grids = [f.path for f in client.list_artifacts(run_id, "grids")]
        assert len(grids) == 3 and client.get_run(run_id).info.status == "FINISHED"
    said = log.read_text()
    assert "reachable again" in said
    assert "View run" not in said, "MLflow's own links are hidden: ours open the training view"


def test_an_s3_store_refusing_the_credentials_fails_fast_naming_endpoint_and_bucket(tmp_path, mnist_path):
    with s3_server(tmp_path / "s3") as s3_env:
        endpoint = s3_env["AWS_ENDPOINT_URL"]
        with mlflow_server(tmp_path / "mlflow", extra_args=(
                "--default-artifact-root", "s3://mnist-gan/mlflow", "--no-serve-artifacts")) as uri:
            wrong = {**s3_env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-q8Zx3",
                     "MLFLOW_S3_ENDPOINT_URL": endpoint}
            result = run_cli(["train", "--data", str(mnist_path), *QUICK, "--epochs", "1"], tmp_path,
                             MLFLOW_TRACKING_URI=uri, **wrong)
            assert result.returncode == 2, result.stderr[-3000:]
            line = result.stderr.strip().splitlines()[-1]
            assert f"S3 artifact store {endpoint}, bucket mnist-gan" in line and "access refused" in line
            assert "Traceback" not in result.stderr
            for secret in ("wrong-secret-q8Zx3", s3_env["AWS_ACCESS_KEY_ID"]):
                assert secret not in result.stdout + result.stderr
            unreachable = {**wrong, "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
            result = run_cli(["train", "--data", str(mnist_path), *QUICK, "--epochs", "1"], tmp_path,
                             MLFLOW_TRACKING_URI=uri, **unreachable)
            assert result.returncode == 2 and "bucket mnist-gan: unreachable" in result.stderr
            assert mlflow.MlflowClient(uri).search_runs(
                [mlflow.MlflowClient(uri).get_experiment_by_name("mnist-gan").experiment_id]) == []
