"""The MLflow project: `make run` (= `mlflow run .`) leaves a complete run on the embedded sqlite default
and prints what a person needs (against a real `mlflow server` and S3: tests/test_checks.py; its
parameters are generated from the config: tests/test_config.py)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, cli_env
from tests.support.secrets_scan import FAKE_SECRETS, USERNAME, leaks
from tests.support.tracked_run import check_complete_run
from training.config import JobConfig

THIRD_PARTY = re.compile(r"mlflow\.(system_metrics|store)|cpu_feature_guard|oneDNN|absl::|UserWarning|"
                         r"Add type hints|interpreted in multiple ways|grappler|NodeDef|^I0000|^W0000|^E0000|"
                         r"Successfully registered model|Created version|WARNING mlflow|\d+/\d+ - \d+s")
# recognisable fake credentials in the job's environment: none may be written anywhere
SECRETS = {**FAKE_SECRETS, "AWS_ACCESS_KEY_ID": "FAKE-key-id-Ab12",
           "AWS_SECRET_ACCESS_KEY": "FAKE-aws-secret-Zy98"}


@pytest.fixture(scope="module")
def main_job(tmp_path_factory, mnist_path):
    """The README's first command once, in a pipe as a pod's log or CI sees it: `make run` ->
    `mlflow run . --env-manager local` -> the MLproject's main, on the cpu preset for 2 epochs (the venv
    is already installed). Yields (tracking URI, work directory, the finished process)."""
    tmp_path = tmp_path_factory.mktemp("main-job")
    env = cli_env(tmp_path, MNIST_GAN_PROGRESS_EVERY_S="0", TF_CPP_MIN_LOG_LEVEL="",
                  MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1", **SECRETS, **USERNAME)
    mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(
        "project-test", artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns in the checkout
    params = {"preset": "cpu", "data": mnist_path, "train_images": 256, "batch_size": 64, "log_every": 2,
              "eval_samples": 500, "epochs": 2, "samples": 500, "checkpoint_dir": tmp_path / "ckpt"}
    cli_params = " ".join(f"-P {name}={value}" for name, value in params.items())
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-o", "install", "run",
                           f"VENV={Path(sys.executable).parent.parent}",
                           f"PARAMS={cli_params} --experiment-name project-test"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return env["MLFLOW_TRACKING_URI"], tmp_path, done


@pytest.mark.slow
@pytest.mark.xdist_group("main_job")
def test_make_run_in_a_pipe_prints_progress_lines_and_a_summary_and_nothing_else(main_job):
    """What a person sees: plain progress lines, the job's own lines and a summary; no terminal control
    characters and no third-party start-up notices."""
    _, _, done = main_job
    assert "\b" not in done.stdout and "\r" not in done.stdout, "no progress bar in a pipe"
    lines = done.stdout.splitlines()
    progress = [line for line in lines if line.startswith("epoch ")]
    assert progress and all(re.match(r"epoch \d+/2  step \d+/4  d_loss [\d.]+  g_loss [\d.]+", line)
                            for line in progress)
    noise = [line for line in lines + done.stderr.splitlines() if THIRD_PARTY.search(line)]
    assert not noise, noise
    summary = lines[lines.index(next(line for line in lines if line.startswith("main: done"))):]
    # 8 steps draw a few digit classes, not the 10 the default rule asks of a first champion
    assert re.fullmatch(r"  champion: none for mnist-gan-generator; version 1 not moved \(\d digit classes "
                        r"covered, needs 10 to be promoted at all \(min_classes_covered\)\)", summary[1])
    assert re.match(r"  FID [\d.]+ on 500 samples \(real images score [\d.]+\)", summary[2])
    assert "mlflow ui --backend-store-uri sqlite:///" in summary[3] and "report.html" in summary[5]
    assert re.fullmatch(r" +then open http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?"
                        r"workflowType=machine_learning", summary[4]), summary[4]
    outside_progress = [line for line in lines + done.stderr.splitlines() if not line.startswith("epoch ")]
    assert len(outside_progress) < 25, outside_progress


@pytest.mark.slow
@pytest.mark.xdist_group("main_job")
def test_mlflow_run_main_trains_evaluates_registers_and_applies_the_promotion_rule(main_job):
    uri, tmp_path, result = main_job
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("project-test").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"prepare-data", "train", "evaluate", "register", "promote"}
    assert all(r.info.status == "FINISHED" for r in runs)
    check_complete_run(client, children["train"].info.run_id, tmp_path, epochs=2)
    tags = parent.data.tags
    assert tags["training_run_id"] == children["train"].info.run_id
    assert tags["evaluation_run_id"] == children["evaluate"].info.run_id and tags["promoted"] == "false"
    assert "min_classes_covered" in children["promote"].data.tags["reason"]
    assert "fid" in parent.data.metrics and "reference_fid" in children["evaluate"].data.metrics
    # `mlflow run` made the experiment it was named; the job marked it as one of training runs
    kind = client.get_experiment_by_name("project-test").tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"
    note = tags["mlflow.note.content"]  # what the parent's page says it made and decided
    assert note.startswith("**mnist-gan-generator version 1: registered and not promoted.**"), note
    assert "Why: " in note and "On 500 samples (real images in brackets): FID " in note, note
    assert f"[evaluation report](#/experiments/{parent.info.experiment_id}/runs/" in note, note
    promote_note = children["promote"].data.tags["mlflow.note.content"]
    assert promote_note.startswith("**mnist-gan-generator version 1: not promoted.**"), promote_note
    model = client.get_registered_model(JobConfig().model_name)
    assert "champion" not in model.aliases, "a generator of 8 steps covers too few classes to be champion"
    challenger = client.get_model_version_by_alias(JobConfig().model_name, "challenger")
    assert str(challenger.version) == tags["registered_version"] == "1"
    assert challenger.tags["training_run_id"] == children["train"].info.run_id
    assert challenger.tags["promotion.decision"] == "refused"
    # the registered generator is the best averaged one, and both the output and the report say so
    which = (challenger.tags["generator_weights"], challenger.tags["generator_checkpoint"],
             challenger.tags["generator_epoch"])
    assert which == ("ema", "best", "2"), which
    assert "exports averaged (EMA) weights, best curve FID at epoch 2" in result.stdout
    report = Path(client.download_artifacts(children["evaluate"].info.run_id, "report/report.md",
                                            str(tmp_path)))
    assert "(averaged (EMA) weights, best curve FID at epoch 2)" in report.read_text()
    assert not leaks([tmp_path, result.stdout, result.stderr], list(SECRETS.values()))


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append(node.module or "")
    return modules


def test_training_imports_nothing_from_components_or_pipelines():
    for path in sorted((ROOT / "training").rglob("*.py")):
        outside = [m for m in _imported_modules(path) if m.split(".")[0] in ("components", "pipelines")]
        assert not outside, f"{path.name} imports {outside}"


def test_every_component_makes_one_call_into_the_jobs():
    tree = ast.parse((ROOT / "components" / "gan.py").read_text())
    components = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert len(components) == 11
    for component in components:
        calls = [node.func.attr for node in ast.walk(component) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                 and node.func.value.id == "jobs"]
        assert len(calls) == 1, f"{component.name} calls {calls or 'no job'}"
