"""The MLflow model registry: register a generator as `challenger`, promote it to `champion` only when
its evaluation beats the champion's, roll back, and carry a version into another registry.

Every decision is recorded on the version as tags (`promotion.*`), promoted or not. Promotions of one
model are serialised by a lock held in the registry itself, so two racing promotions end with the one
champion the rule picks. Each version records the sha256 of its generator file (tag and model config);
promotion and every load verify it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from dataclasses import dataclass
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
from training.data import file_sha256
from training.metrics import HEADLINE
from training.promotion import PromotionRule

CHALLENGER, CHAMPION = "challenger", "champion"
# What a version records of its evaluation (as eval.* tags) and what promotion compares.
EVALUATION_KEYS = (*HEADLINE, "samples")
SERVING_CODE = Path(training.__file__).parent / "serving.py"
GENERATOR_IN_MODEL = "artifacts/generator.keras"  # where a registered pyfunc model keeps the generator
CHECKSUM_KEY = "generator_sha256"  # version tag and pyfunc model config
LOCK_STALE_S = 300  # a promotion lock older than this was left by a killed process and is broken
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


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    challenger: str
    champion: str | None


def register_generator(generator_file: Path, name: str, training_run_id: str,
                       evaluation: dict[str, float], tags: dict[str, str]) -> str:
    """Log the generator as a pyfunc model in the active run, register it, alias it `challenger`.
    Returns the new version."""
    input_example = pd.DataFrame({"seed": [0], "n": [2]})
    digest = file_sha256(generator_file)
    info = mlflow.pyfunc.log_model(
        name="generator", python_model=str(SERVING_CODE), artifacts={"generator": str(generator_file)},
        code_paths=[str(SERVING_CODE.parent)], signature=SIGNATURE, input_example=input_example,
        pip_requirements=_requirements(), model_config={CHECKSUM_KEY: digest})
    version = str(mlflow.register_model(info.model_uri, name).version)
    client = MlflowClient()
    all_tags = {"training_run_id": training_run_id, CHECKSUM_KEY: digest, **tags,
                **{f"eval.{k}": str(v) for k, v in evaluation.items()}}
    for key, value in all_tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def version_metrics(client: MlflowClient, name: str, version: str) -> dict[str, float]:
    tags = client.get_model_version(name, version).tags
    missing = [m for m in EVALUATION_KEYS if f"eval.{m}" not in tags]
    if missing:
        raise RegistryError(f"{name} version {version} has no evaluation ({', '.join(missing)} missing)")
    return {m: float(tags[f"eval.{m}"]) for m in EVALUATION_KEYS}


def verified_generator(model_dir: Path, expected: str | None) -> Path:
    """The generator file of a downloaded registered model, after checking it against `expected`
    (the sha256 recorded at registration; None for versions registered before checksums)."""
    path = model_dir / GENERATOR_IN_MODEL
    if not path.is_file():
        raise ArtifactError(f"{model_dir}: the registered model has no {GENERATOR_IN_MODEL}")
    if expected and file_sha256(path) != expected:
        raise ArtifactError(f"{path}: sha256 {file_sha256(path)} does not match {expected} recorded at "
                            "registration; refusing a modified or corrupted model")
    return path


def recorded_checksum(model_dir: Path) -> str | None:
    """The checksum a downloaded pyfunc model carries in its MLmodel config."""
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function", {})
    return (flavor.get("config") or {}).get(CHECKSUM_KEY)


def check_version_files(client: MlflowClient, name: str, version: str) -> None:
    """Download a version and verify its generator against the checksum tag; raise ArtifactError."""
    expected = client.get_model_version(name, version).tags.get(CHECKSUM_KEY)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model_dir = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_model_version_download_uri(name, version), dst_path=tmp,
                tracking_uri=client.tracking_uri))
        except (MlflowException, OSError) as err:
            raise ArtifactError(f"{name} version {version}: its files cannot be read ({err})") from None
        verified_generator(model_dir, expected)


def promote(name: str, rule: PromotionRule, dry_run: bool = False, client: MlflowClient | None = None,
            version: str | None = None) -> Decision:
    """Move `champion` to `version` (default: the `challenger`) if the rule says so; record why either
    way. The decision and the alias move happen under the model's promotion lock."""
    client = client or MlflowClient()
    challenger = version or _alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no '{CHALLENGER}' version to promote")
    lock = contextlib.nullcontext() if dry_run else _promotion_lock(client, name)
    with lock:
        champion = _alias_version(client, name, CHAMPION)
        if champion == challenger:
            return Decision(False, f"version {challenger} is already the champion", challenger, champion)
        try:
            check_version_files(client, name, challenger)
        except ArtifactError as err:
            promote_it, reason = False, f"artifacts not verified: {err}"
        else:
            promote_it, reason = rule.decide(version_metrics(client, name, challenger),
                                             version_metrics(client, name, champion) if champion else None)
        decision = Decision(promote_it, reason, challenger, champion)
        if dry_run:
            return decision
        client.set_model_version_tag(name, challenger, "promotion.decision",
                                     "promoted" if promote_it else "refused")
        client.set_model_version_tag(name, challenger, "promotion.reason", reason)
        client.set_model_version_tag(name, challenger, "promotion.time", _now())
        if promote_it:
            if champion:
                client.set_model_version_tag(name, challenger, "promotion.previous_champion", champion)
            client.set_registered_model_alias(name, CHAMPION, challenger)
    return decision


@contextlib.contextmanager
def _promotion_lock(client: MlflowClient, name: str, timeout_s: float = 600):
    """Hold `<name>.promotion-lock`: a registered model, created atomically by the registry's unique
    name, so promotions from any process or machine that share the registry take turns."""
    lock, holder = f"{name}.promotion-lock", uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(lock, tags={"holder": holder, "since": str(time.time())},
                                           description=f"held while a version of {name} is being promoted")
            break
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        with contextlib.suppress(MlflowException):
            since = float(client.get_registered_model(lock).tags.get("since", "0"))
            if time.time() - since > LOCK_STALE_S:
                client.delete_registered_model(lock)  # left by a killed promotion
                continue
        if time.monotonic() > deadline:
            raise RegistryError(f"{lock} is held by another promotion for over {timeout_s:.0f} s")
        time.sleep(0.2 + 0.3 * np.random.default_rng().random())
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def rollback(name: str, client: MlflowClient | None = None) -> tuple[str, str]:
    """Point `champion` back at the version it replaced; returns (from_version, to_version)."""
    client = client or MlflowClient()
    with _promotion_lock(client, name):
        champion = _alias_version(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"{name} has no '{CHAMPION}' to roll back")
        previous = client.get_model_version(name, champion).tags.get("promotion.previous_champion")
        if not previous:
            raise RegistryError(f"{name} version {champion} replaced no earlier champion: nothing to roll back to")
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, champion, "promotion.rolled_back", _now())
    return champion, previous


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
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _requirements() -> list[str]:
    from training.tracking import installed_versions

    packages = ("mlflow", "keras", "numpy", "pandas", "pillow", "tensorflow", "tensorflow-cpu", "jax")
    return [f"{name}=={version}" for name, version in installed_versions(packages).items()]
