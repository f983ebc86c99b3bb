"""The registry: a version points at the run that trained it, carries its evaluation and checksum,
travels into another registry, and is refused when its files were modified or lost."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import mlflow

from infra.local_stack import free_port
from tests.conftest import cli_env
from tests.support.two_generators import USES_LAB, champion, copy_of_the_trained_generator, version_tags

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
