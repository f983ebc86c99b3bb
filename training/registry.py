"""The MLflow model registry: register a generator as `challenger`, promote it to `champion` only when
its evaluation beats the champion's, roll back, and carry a version into another registry.

Every decision is recorded on the version as tags (`promotion.*`), promoted or not.
"""

from __future__ import annotations

import tempfile
import time
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
from training.evaluation import HEADLINE
from training.promotion import PromotionRule

CHALLENGER, CHAMPION = "challenger", "champion"
# What a version records of its evaluation (as eval.* tags) and what promotion compares.
EVALUATION_KEYS = (*HEADLINE, "samples")
SERVING_CODE = Path(training.__file__).parent / "serving.py"
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.long, "seed", required=False),
                   ColSpec(DataType.long, "n", required=False),
                   ColSpec(Array(DataType.double), "z", required=False)]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28))]),
)


class RegistryError(RuntimeError):
    """The registry lacks what an operation needs (no challenger, no previous champion, ...)."""


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
    info = mlflow.pyfunc.log_model(
        name="generator", python_model=str(SERVING_CODE), artifacts={"generator": str(generator_file)},
        code_paths=[str(SERVING_CODE.parent)], signature=SIGNATURE, input_example=input_example,
        pip_requirements=_requirements())
    version = str(mlflow.register_model(info.model_uri, name).version)
    client = MlflowClient()
    all_tags = {"training_run_id": training_run_id, **tags,
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


def promote(name: str, rule: PromotionRule, dry_run: bool = False,
            client: MlflowClient | None = None) -> Decision:
    """Move `champion` to the `challenger` version if the rule says so; record why either way."""
    client = client or MlflowClient()
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no '{CHALLENGER}' version to promote")
    champion = _alias_version(client, name, CHAMPION)
    if champion == challenger:
        return Decision(False, f"version {challenger} is already the champion", challenger, champion)
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


def rollback(name: str, client: MlflowClient | None = None) -> tuple[str, str]:
    """Point `champion` back at the version it replaced; returns (from_version, to_version)."""
    client = client or MlflowClient()
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
