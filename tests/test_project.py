"""The MLflow project: `mlflow run .` leaves a complete run, against the embedded sqlite default and
against a real `mlflow server` (its parameters are generated from the config: tests/test_config.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np

from infra.local_stack import mlflow_server
from tests.conftest import ROOT, TINY, cli_env, run_cli
from tests.secrets_scan import FAKE_SECRETS, USERNAME, leaks
from training.config import JobConfig, TrainConfig, names


def _check_complete_run(client: mlflow.MlflowClient, run_id: str, tmp_path: Path, epochs: int) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["preset"] == "tiny" and params["epochs"] == str(epochs)
    assert set(names(TrainConfig)) <= set(params)
    assert params["backend"] == "tensorflow" and params["compute_precision"] == "float32"
    assert params["accelerator"] == "cpu" and params["version_keras"] == keras.__version__
    assert len(params["data_sha256"]) == 64
    for name in ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake", "images_per_sec"):
        assert len(client.get_metric_history(run_id, name)) >= 2, name
        assert len(client.get_metric_history(run_id, f"epoch_{name}")) == epochs, name
    assert any(key.startswith("system/") for key in run.data.metrics), "system metrics are on"
    (dataset_input,) = run.inputs.dataset_inputs
    assert (dataset_input.dataset.name == "mnist"
            and dataset_input.dataset.digest == params["data_sha256"][:32])

    artifacts = Path(client.download_artifacts(run_id, "", str(tmp_path / "downloaded")))
    grids = sorted(p.name for p in (artifacts / "grids").iterdir())
    assert grids == [f"epoch_{e:04d}.png" for e in range(1, epochs + 1)]
    assert (artifacts / "samples.gif").read_bytes()[:6] == b"GIF89a"
    assert (artifacts / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (artifacts / "fid_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(client.get_metric_history(run_id, "curve/fid")) == 1, "the curve is scored at the end"
    for exported in ("generator_ema", "generator_best"):
        keras.saving.load_model(artifacts / "models" / f"{exported}.keras", safe_mode=True)
    generator = keras.saving.load_model(artifacts / "models" / "generator.keras", safe_mode=True)
    keras.saving.load_model(artifacts / "models" / "discriminator.keras", safe_mode=True)
    fake = keras.ops.convert_to_numpy(generator(np.zeros((3, 100), "float32"), training=False))
    assert fake.shape == (3, 28, 28, 1)


def test_mlflow_run_main_trains_evaluates_registers_and_promotes(tmp_path, mnist_path):
    # recognisable fake credentials in the environment: none may be written anywhere (checked at the end)
    secrets = {**FAKE_SECRETS, "AWS_ACCESS_KEY_ID": "FAKE-key-id-Ab12",
               "AWS_SECRET_ACCESS_KEY": "FAKE-aws-secret-Zy98"}
    env = cli_env(tmp_path, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1", **secrets, **USERNAME)
    params = {"preset": "tiny", "data": str(mnist_path), "train_images": 256, "batch_size": 64,
              "epochs": 2, "log_every": 2, "checkpoint_dir": str(tmp_path / "ckpt"), "samples": 500}
    command = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "--env-manager", "local",
               "--experiment-name", "project-test"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("project-test").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"prepare-data", "train", "evaluate", "register", "promote"}
    assert all(r.info.status == "FINISHED" for r in runs)
    _check_complete_run(client, children["train"].info.run_id, tmp_path, epochs=2)
    tags = parent.data.tags
    assert tags["training_run_id"] == children["train"].info.run_id
    assert tags["evaluation_run_id"] == children["evaluate"].info.run_id and tags["promoted"] == "true"
    assert "fid" in parent.data.metrics and "reference_fid" in children["evaluate"].data.metrics
    champion = client.get_model_version_by_alias(JobConfig().model_name, "champion")
    assert str(champion.version) == tags["registered_version"] == "1"
    assert champion.tags["training_run_id"] == children["train"].info.run_id
    # the registered generator is the best averaged one, and both the output and the report say so
    which = (champion.tags["generator_weights"], champion.tags["generator_checkpoint"],
             champion.tags["generator_epoch"])
    assert which == ("ema", "best", "2"), which
    assert "exports averaged (EMA) weights, best curve FID at epoch 2" in result.stdout
    report = Path(client.download_artifacts(children["evaluate"].info.run_id, "report/report.md",
                                            str(tmp_path)))
    assert "(averaged (EMA) weights, best curve FID at epoch 2)" in report.read_text()
    assert not leaks([tmp_path, result.stdout, result.stderr], list(secrets.values()))


def test_training_tracks_to_an_http_tracking_server(tmp_path, mnist_path):
    with mlflow_server(tmp_path / "server") as uri:
        result = run_cli(["train", "--data", str(mnist_path), *TINY, "--epochs", "1"], tmp_path,
                         MLFLOW_TRACKING_URI=uri, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
        assert result.returncode == 0, result.stderr[-3000:]
        client = mlflow.MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id])
        _check_complete_run(client, run.info.run_id, tmp_path, epochs=1)
        assert (tmp_path / "server" / "artifacts").is_dir()


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append(node.module or "")
    return modules


def test_training_imports_nothing_from_components_or_pipelines():
    for path in sorted((ROOT / "training").glob("*.py")):
        outside = [m for m in _imported_modules(path) if m.split(".")[0] in ("components", "pipelines")]
        assert not outside, f"{path.name} imports {outside}"


def test_every_component_makes_one_call_into_the_jobs():
    tree = ast.parse((ROOT / "components" / "gan.py").read_text())
    components = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert len(components) == 10
    for component in components:
        calls = [node.func.attr for node in ast.walk(component) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                 and node.func.value.id == "jobs"]
        assert len(calls) == 1, f"{component.name} calls {calls or 'no job'}"
