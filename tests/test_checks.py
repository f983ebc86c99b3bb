"""Pre-flight checks run once per command: `main` (five jobs) probes the tracking server once, asks S3
for the bucket once and reads and validates the data once, against a real MLflow server whose
artifacts go to a real S3 store; the training run it tracks there is complete."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import mlflow
import pytest

from infra.local_stack import mlflow_server, s3_server
from tests.conftest import QUICK, cli_env
from tests.support.tracked_run import check_complete_run

COUNTING_MAIN = """
import json, sys, urllib.request
import botocore.session
from training import cli, data

counts = {"health": 0, "head_bucket": 0, "read_npz": 0}
urlopen, read_npz = urllib.request.urlopen, data.read_npz

def counting_urlopen(url, *args, **kwargs):
    counts["health"] += str(getattr(url, "full_url", url)).endswith("/health")
    return urlopen(url, *args, **kwargs)

def counting_read_npz(*args, **kwargs):
    counts["read_npz"] += 1
    return read_npz(*args, **kwargs)

def count_head_bucket(**_):
    counts["head_bucket"] += 1

urllib.request.urlopen, data.read_npz = counting_urlopen, counting_read_npz
original_session = botocore.session.get_session
def session_with_a_counter(*args, **kwargs):
    session = original_session(*args, **kwargs)
    session.register("before-call.s3.HeadBucket", count_head_bucket)
    return session
botocore.session.get_session = session_with_a_counter
code = cli.main(sys.argv[1:])
print("COUNTS", json.dumps(counts))
sys.exit(code)
"""


@pytest.mark.slow
def test_main_checks_the_server_the_bucket_and_the_data_once_and_tracks_a_complete_run(tmp_path, mnist_path,
                                                                                        monkeypatch):
    with s3_server(tmp_path / "s3") as s3_env, mlflow_server(tmp_path / "mlflow", extra_args=(
            "--default-artifact-root", "s3://mnist-gan/mlflow", "--no-serve-artifacts"), env=s3_env) as uri:
        env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri, MLFLOW_S3_ENDPOINT_URL=s3_env["AWS_ENDPOINT_URL"],
                      MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1", **s3_env)
        result = subprocess.run(
            [sys.executable, "-c", COUNTING_MAIN, "main", "--data", str(mnist_path), *QUICK, "--epochs", "1",
             "--samples", "500"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
            check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        counts = json.loads(result.stdout.split("COUNTS ", 1)[1])
        assert counts == {"health": 1, "head_bucket": 1, "read_npz": 1}, counts

        for name in ("MLFLOW_S3_ENDPOINT_URL", *s3_env):  # this process reads the artifacts from S3 too
            monkeypatch.setenv(name, env[name])
        client = mlflow.MlflowClient(uri)
        (training,) = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id],
                                         "attributes.run_name = 'train'")
        check_complete_run(client, training.info.run_id, tmp_path, epochs=1)
        artifacts = boto3.client("s3").list_objects_v2(Bucket="mnist-gan", Prefix="mlflow/")
        assert any(o["Key"].endswith("/models/generator.keras") for o in artifacts["Contents"]), \
            "the artifacts are in the bucket"
