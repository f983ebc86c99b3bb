"""The registry: a version points at the run that trained it, carries its evaluation and checksum,
travels into another registry, and is refused when its files were modified or lost, or when the
evaluation offered with it scored another generator."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import mlflow
import pytest

from infra.local_stack import free_port
from tests.conftest import cli_env
from tests.support.two_generators import (
    SAMPLES,
    USES_LAB,
    champion,
    copy_of_the_trained_generator,
    exported_generator,
    version_tags,
)
from training.registry import logged_model_id

pytestmark = USES_LAB


def test_promotion_into_another_registry(lab, tmp_path):
    name = "export-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    prod = f"sqlite:///{tmp_path / 'prod.db'}"
    out = lab.cli("promote", "--name", name, "--to-registry-uri", prod, "--to-name", "prod-generator").stdout
    assert "copied" in out and "promote prod-generator version 1 to champion" in out, out
    prod_client = mlflow.MlflowClient(prod, registry_uri=prod)
    copied = prod_client.get_model_version_by_alias("prod-generator", "challenger")
    assert prod_client.get_model_version_by_alias("prod-generator", "champion").version == copied.version
    assert copied.tags["copied_from"] == f"{name}/1" and copied.tags["training_run_id"] == lab.trained_run
    same_registry = lab.cli("promote", "--name", name, "--to-registry-uri", lab.uri, "--to-name",
                            "copy-test").stdout
    assert "copied" in same_registry and champion(lab, "copy-test") == "1"


def _generator_file(lab, name: str, version: str) -> Path:
    location = lab.client.get_model_version_download_uri(name, version)
    return Path(urllib.parse.urlparse(location).path) / "artifacts" / "generator.keras"


def test_a_version_whose_files_were_modified_or_lost_is_refused_and_not_loaded(lab, tmp_path):
    name = "checksum-test"
    for _ in range(3):
        lab.cli("register", "--name", name, "--training-run-id", copy_of_the_trained_generator(lab),
                "--evaluation-run-id", lab.trained_eval)
    assert len(version_tags(lab, name, "1")["generator_sha256"]) == 64
    with open(_generator_file(lab, name, "1"), "ab") as f:
        f.write(b"tampered")
    _generator_file(lab, name, "2").unlink()

    for version, why in (("1", "does not match"), ("2", "has no artifacts/generator.keras")):
        out = lab.cli("promote", "--name", name, "--version", version).stdout
        assert f"refuse {name} version {version} (no champion yet, none made)" in out
        tags = version_tags(lab, name, version)
        assert tags["promotion.decision"] == "refused" and why in tags["promotion.reason"]
    failed = lab.cli("sample", "--model-uri", f"models:/{name}/1", "--out", str(tmp_path / "s.npz"), expect=1)
    assert "does not match" in failed.stderr and not (tmp_path / "s.npz").exists()
    serve = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{name}/1",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(free_port())]
    refused = subprocess.run(serve, cwd=lab.directory,
                             env=cli_env(lab.directory, MLFLOW_TRACKING_URI=lab.uri),
                             capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode != 0 and "refusing to serve a modified or corrupted model" in refused.stderr
    lab.cli("promote", "--name", name, "--version", "3")
    assert champion(lab, name) == "3"


def test_a_version_is_the_logged_model_of_the_run_that_trained_it(lab):
    name = "lineage-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    version = lab.client.get_model_version(name, "1")
    assert version.run_id == lab.trained_run and version.source.startswith("models:/m-")
    model = lab.client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.source_run_id == lab.trained_run and model.name == "generator"
    assert model.tags["generator_sha256"] == version.tags["generator_sha256"]
    metrics = {m.key: m for m in model.metrics}
    evaluated = lab.client.get_run(lab.trained_eval).data.metrics
    assert metrics["fid"].value == evaluated["fid"] and metrics["fid"].dataset_name == "mnist-test"
    assert metrics["fid"].run_id == lab.trained_eval, "the evaluation run scored this model"
    assert (metrics["final_g_loss"].dataset_name == "mnist"
            and metrics["final_g_loss"].run_id == lab.trained_run)


def _generator_sha256(lab, training_run_id: str) -> str:
    return lab.client.get_logged_model(logged_model_id(lab.client, training_run_id)).tags["generator_sha256"]


def _all_runs(lab) -> dict[str, tuple]:
    """Every run of the store with what it holds: what a refused command must leave as it was."""
    experiments = [e.experiment_id for e in lab.client.search_experiments()]
    return {run.info.run_id: (run.data.tags, run.data.metrics, run.data.params)
            for run in lab.client.search_runs(experiments, max_results=5000)}


def _refused(result, command: str, *words: str) -> None:
    said = result.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"mnist-gan {command}: error: "), result.stderr[-3000:]
    assert all(word in said[0] for word in words), said


def test_an_evaluation_records_the_generator_file_and_the_evaluator_weights_it_used(lab):
    trained, collapsed = (lab.client.get_run(run).data.params
                          for run in (lab.trained_eval, lab.collapsed_eval))
    assert trained["generator_sha256"] == _generator_sha256(lab, lab.trained_run)
    assert collapsed["generator_sha256"] == _generator_sha256(lab, lab.collapsed_run)
    assert trained["generator_sha256"] != collapsed["generator_sha256"]
    assert len(trained["evaluator_sha256"]) == 64 and trained["evaluator_sha256"] != trained["evaluator"]
    assert collapsed["evaluator_sha256"] == trained["evaluator_sha256"], "one classifier scored both"


def _legacy_evaluation(lab, training_run_id: str | None) -> str:
    """An evaluation of the trained generator as runs made before evaluations recorded their generator:
    metrics, samples and (maybe) a training_run_id tag."""
    source = lab.client.get_run(lab.trained_eval)
    tags = {"training_run_id": training_run_id} if training_run_id else None
    run_id = lab.client.create_run(source.info.experiment_id, tags=tags).info.run_id
    for key, value in source.data.metrics.items():
        lab.client.log_metric(run_id, key, value)
    lab.client.log_param(run_id, "samples", source.data.params["samples"])
    lab.client.set_terminated(run_id)
    return run_id


def test_an_evaluation_of_another_generator_is_not_registered(lab):
    name = "ownership-test"
    of_the_collapsed, unlinked = _legacy_evaluation(lab, lab.collapsed_run), _legacy_evaluation(lab, None)
    before = _all_runs(lab)
    refused = lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                      "--evaluation-run-id", lab.collapsed_eval, expect=2)
    _refused(refused, "register", lab.collapsed_eval, lab.trained_run, "nothing was registered")
    for legacy in (of_the_collapsed, unlinked):
        refused = lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                          "--evaluation-run-id", legacy, expect=2)
        _refused(refused, "register", legacy, lab.trained_run, "cannot tell which generator it scored")
    assert lab.client.search_registered_models(f"name = '{name}'") == []
    assert _all_runs(lab) == before, "a refused registration wrote nothing"

    for evaluation in (_legacy_evaluation(lab, lab.trained_run), lab.trained_eval):
        lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                "--evaluation-run-id", evaluation)
    assert "evaluator_sha256" not in version_tags(lab, name, "1")
    evaluator = lab.client.get_run(lab.trained_eval).data.params["evaluator_sha256"]
    assert version_tags(lab, name, "2")["evaluator_sha256"] == evaluator


@pytest.mark.parametrize("case", ["another generator", "a run that logged none", "a run that does not exist"])
def test_an_evaluation_is_not_recorded_on_a_run_that_did_not_log_its_generator(lab, case):
    if case == "a run that logged none":
        experiment = lab.client.get_experiment_by_name("mnist-gan").experiment_id
        training_run_id = lab.client.create_run(experiment, run_name="no model").info.run_id
        lab.client.set_terminated(training_run_id)
    else:
        training_run_id = {"another generator": lab.trained_run, "a run that does not exist": "0" * 32}[case]
    before = _all_runs(lab)
    refused = lab.cli("evaluate", "--generator", f"runs:/{lab.collapsed_run}", "--data", str(lab.mnist_path),
                      "--samples", SAMPLES, "--training-run-id", training_run_id,
                      expect=1 if case == "a run that does not exist" else 2)
    _refused(refused, "evaluate", training_run_id)
    if case != "a run that does not exist":
        _refused(refused, "evaluate", f"runs:/{lab.collapsed_run}", "nothing was recorded")
    assert _all_runs(lab) == before, "a refused evaluation wrote nothing"


def test_the_pipelines_generator_artifact_is_evaluated_for_the_run_that_logged_it(lab, tmp_path):
    """components/gan.py evaluates the training task's Model artifact: a folder holding generator.keras,
    a copy of the file the training run logged (jobs.train's generator_out)."""
    training_run_id = copy_of_the_trained_generator(lab)  # the lab's trained run stays as it is
    folder = tmp_path / "generator-artifact"
    folder.mkdir()
    shutil.copyfile(exported_generator(lab, tmp_path), folder / "generator.keras")
    out = lab.cli("evaluate", "--generator", str(folder), "--data", str(lab.mnist_path), "--samples", "500",
                  "--training-run-id", training_run_id).stdout
    evaluation = lab.client.get_run(lab.run_id(out, "evaluate")).data
    assert evaluation.params["generator_sha256"] == _generator_sha256(lab, training_run_id)
    assert evaluation.tags["training_run_id"] == training_run_id
    assert lab.client.get_run(training_run_id).data.tags["evaluation_run_id"] == lab.run_id(out, "evaluate")
