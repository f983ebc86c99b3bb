"""The generator as an MLflow model, and the registry's side of it: log it in the training run (a
LoggedModel), register it as `challenger`, read aliases and evaluations, carry a version into another
registry, and check its files against the sha256 recorded when it was logged (promotion, every load
and serving verify it). When a version becomes `champion` is training/promotion.py's business.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import Array

import training
from training.config import ConfigError
from training.data import file_sha256
from training.metrics import HEADLINE

CHALLENGER, CHAMPION = "challenger", "champion"
# What a version records of its evaluation (as eval.* tags) and what promotion compares.
EVALUATION_KEYS = (*HEADLINE, "samples")
SERVING_CODE = Path(training.__file__).parent / "serving.py"
GENERATOR_IN_MODEL = "artifacts/generator.keras"  # where a registered pyfunc model keeps the generator
CHECKSUM_KEY = "generator_sha256"  # version tag and pyfunc model config
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.long, "seed", required=False),
                   ColSpec(DataType.long, "n", required=False),
                   ColSpec(Array(DataType.double), "z", required=False)]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28))]),
)


class RegistryError(RuntimeError):
    """The registry lacks what an operation needs (no challenger, no previous champion, ...)."""


class ArtifactError(RegistryError):
    """A version's files are missing or do not match the checksum recorded when it was registered."""


def log_generator(generator_file: Path) -> str:
    """Log the generator as a pyfunc model of the active (training) run; returns its LoggedModel id.
    Its sha256 goes into the model's config and tags, so every later load can check the file."""
    digest = file_sha256(generator_file)
    with tempfile.TemporaryDirectory() as tmp:  # the model holds it as artifacts/generator.keras, whatever
        named = Path(tmp) / Path(GENERATOR_IN_MODEL).name  # the file it came from (generator_best.keras...)
        shutil.copyfile(generator_file, named)
        info = mlflow.pyfunc.log_model(
            name="generator", python_model=str(SERVING_CODE), artifacts={"generator": str(named)},
            code_paths=[str(SERVING_CODE.parent)], signature=SIGNATURE,
            input_example=pd.DataFrame({"seed": [0], "n": [2]}), pip_requirements=_requirements(),
            model_config={CHECKSUM_KEY: digest}, tags={CHECKSUM_KEY: digest})
    return info.model_id


def logged_model_id(client: MlflowClient, training_run_id: str) -> str | None:
    """The LoggedModel id of the generator a training run logged (None: it logged none)."""
    outputs = client.get_run(training_run_id).outputs
    models = [m.model_id for m in (outputs.model_outputs if outputs else [])]
    return models[-1] if models else None


def register(model_id: str, name: str, tags: dict[str, str], evaluation: dict[str, float]) -> str:
    """Register a logged generator under `name`, record its evaluation as eval.* tags and alias it
    `challenger`; the version points at the run that trained it. Returns the new version."""
    client = MlflowClient()
    logged = client.get_logged_model(model_id)
    all_tags = {"training_run_id": logged.source_run_id, CHECKSUM_KEY: logged.tags.get(CHECKSUM_KEY, ""),
                **tags, **{f"eval.{k}": str(v) for k, v in evaluation.items()}}
    _ensure_registered_model(client, name)
    version = str(client.create_model_version(name, f"models:/{model_id}", tags=all_tags,
                                              model_id=model_id).version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def evaluation_metrics(client: MlflowClient, evaluation_run_id: str) -> dict[str, float]:
    """What an evaluation run measured that promotion compares (EVALUATION_KEYS, `samples` included)."""
    evaluation_run = client.get_run(evaluation_run_id).data
    evaluated = dict(evaluation_run.metrics)
    if "samples" in evaluation_run.params:
        evaluated["samples"] = float(evaluation_run.params["samples"])
    missing = [m for m in EVALUATION_KEYS if m not in evaluated]
    if missing:
        raise RegistryError(f"evaluation run {evaluation_run_id} lacks metrics {', '.join(missing)}")
    return {m: evaluated[m] for m in EVALUATION_KEYS}


def version_metrics(client: MlflowClient, name: str, version: str) -> dict[str, float]:
    tags = client.get_model_version(name, version).tags
    missing = [m for m in EVALUATION_KEYS if f"eval.{m}" not in tags]
    if missing:
        raise RegistryError(f"{name} version {version} has no evaluation ({', '.join(missing)} missing)")
    return {m: float(tags[f"eval.{m}"]) for m in EVALUATION_KEYS}


def verified_generator(model_dir: Path, expected: str | None) -> Path:
    """The generator file of a downloaded model, after checking it against `expected` (the sha256
    recorded when it was logged; None for versions logged before checksums)."""
    path = model_dir / GENERATOR_IN_MODEL
    if not path.is_file():
        raise ArtifactError(f"{model_dir}: the registered model has no {GENERATOR_IN_MODEL}")
    check_checksum(path, expected)
    return path


def check_checksum(path: Path, expected: str | None) -> None:
    """Raise ArtifactError unless the file's sha256 is `expected` (None: nothing recorded to check)."""
    if not expected:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise ArtifactError(f"{path}: sha256 {actual} does not match {expected} recorded when it "
                            "was logged: the file was modified or corrupted")


def recorded_checksum(model_dir: Path) -> str | None:
    """The checksum a downloaded pyfunc model carries in its MLmodel config."""
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function", {})
    return (flavor.get("config") or {}).get(CHECKSUM_KEY)


def download_generator(client: MlflowClient, name: str, version: str, directory: Path) -> Path:
    """Download a version into `directory` and return its generator file, verified against the
    checksum tag; ArtifactError if its files cannot be read or do not match."""
    expected = client.get_model_version(name, version).tags.get(CHECKSUM_KEY)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version), dst_path=str(directory),
            tracking_uri=client.tracking_uri))
    except (MlflowException, OSError) as err:
        raise ArtifactError(f"{name} version {version}: its files cannot be read ({err})") from None
    return verified_generator(model_dir, expected)


def copy_to_registry(name: str, version: str, target_uri: str, target_name: str | None = None) -> str:
    """Carry a version (model files and tags) into another registry, or under another name in the same
    one (`copy_model_version`); it becomes the target's `challenger`. Returns the target version."""
    target_name = target_name or name
    source_client = MlflowClient()
    if target_uri == mlflow.get_registry_uri():
        copied = str(source_client.copy_model_version(f"models:/{name}/{version}", target_name).version)
        target_client = source_client
    else:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
            target_client = MlflowClient(tracking_uri=target_uri, registry_uri=target_uri)
            experiment = target_client.get_experiment_by_name("mnist-gan-imports")
            experiment_id = (experiment.experiment_id if experiment
                             else target_client.create_experiment("mnist-gan-imports"))
            run = target_client.create_run(experiment_id, tags={"source_model": f"models:/{name}/{version}"})
            target_client.log_artifacts(run.info.run_id, local, "generator")
            target_client.set_terminated(run.info.run_id)
            _ensure_registered_model(target_client, target_name)
            copied = str(target_client.create_model_version(
                target_name, f"{run.info.artifact_uri}/generator", run_id=run.info.run_id).version)
    for key, value in source_client.get_model_version(name, version).tags.items():
        if not key.startswith("promotion."):
            target_client.set_model_version_tag(target_name, copied, key, value)
    target_client.set_model_version_tag(target_name, copied, "copied_from", f"{name}/{version}")
    target_client.set_registered_model_alias(target_name, CHALLENGER, copied)
    return copied


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as error:  # another registration may create it at the same moment
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def one_line(err: MlflowException) -> str:
    """An MlflowException in one line: its code and the first line of its message."""
    message = str(err.message).strip().splitlines() or [""]
    return f"{err.error_code}: {message[0][:300]}"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `alias` points at; None only when the registry says the model or the alias does not
    exist. Any other answer (a server error, a refused request) is a RegistryError: an unreadable
    champion is not "no champion"."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"the registry did not say which version of {name} is '{alias}' "
                            f"({one_line(err)}); nothing was changed") from None
    version = aliases.get(alias)
    return None if version is None else str(version)


def _requirements() -> list[str]:
    from training.backend import installed_versions

    packages = ("mlflow", "keras", "numpy", "pandas", "pillow", "tensorflow", "tensorflow-cpu", "jax")
    return [f"{name}=={version}" for name, version in installed_versions(packages).items()]


# ---- which generator an evaluation scored, and with which evaluator ----

EVALUATOR_KEY = "evaluator_sha256"  # an evaluation run's param and a version's tag: the classifier's weights


class EvaluationMismatch(ConfigError):
    """An evaluation offered for a generator it did not score (or cannot be shown to have scored): the
    ids given do not belong together. Raised before anything is written; the CLI exits 2."""


def generator_of(client: MlflowClient, training_run_id: str, generator: str, sha256: str) -> str:
    """The LoggedModel id of the generator the training run logged, once checked to be the file being
    evaluated (`generator`, with `sha256`); raises EvaluationMismatch."""
    model_id = logged_model_id(client, training_run_id)
    if model_id is None:
        raise EvaluationMismatch(f"training run {training_run_id} logged no generator, so the evaluation of "
                                 f"{generator} cannot be recorded on it; nothing was recorded")
    logged = logged_checksum(client, model_id)
    if logged != sha256:
        raise EvaluationMismatch(f"{generator} (sha256 {sha256[:12]}) is not the generator training run "
                                 f"{training_run_id} logged (sha256 {logged[:12]}); nothing was recorded")
    return model_id


def check_evaluation_of(client: MlflowClient, evaluation_run_id: str, training_run_id: str,
                        model_id: str) -> None:
    """Raise EvaluationMismatch unless the evaluation run scored `model_id`, the generator the training
    run logged: its generator_sha256 param, or for a run made before that param, its training_run_id tag."""
    evaluation = client.get_run(evaluation_run_id).data
    scored = evaluation.params.get(CHECKSUM_KEY)
    if scored is None:
        named = evaluation.tags.get("training_run_id")
        if named != training_run_id:
            raise EvaluationMismatch(
                f"evaluation run {evaluation_run_id} records no {CHECKSUM_KEY} and names training run "
                f"{named or '(none)'}, not {training_run_id}: cannot tell which generator it scored; "
                "nothing was registered")
        return
    logged = logged_checksum(client, model_id)
    if scored != logged:
        raise EvaluationMismatch(f"evaluation run {evaluation_run_id} scored a generator with sha256 "
                                 f"{scored[:12]}, not the one training run {training_run_id} logged (sha256 "
                                 f"{logged[:12]}); nothing was registered")


def logged_checksum(client: MlflowClient, model_id: str) -> str:
    """The sha256 of a logged generator: its tag, or for one logged before checksums, its file's."""
    logged = client.get_logged_model(model_id)
    if logged.tags.get(CHECKSUM_KEY):
        return logged.tags[CHECKSUM_KEY]
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{logged.artifact_location}/{GENERATOR_IN_MODEL}", dst_path=tmp,
            tracking_uri=client.tracking_uri)
        return file_sha256(Path(path))
