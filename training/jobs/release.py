"""The jobs that move a trained generator toward serving: register it as `challenger`, promote it to
`champion` if the promotion rule says so, roll `champion` back, and deploy the champion to a KServe
InferenceService."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from training import checks, promotion
from training.config import JobConfig
from training.deploy import Deployed, Target, deploy  # deploy: a job as it is (training.jobs)
from training.kserve import DeployError
from training.promotion import Decision, PromotionRule


@dataclass(frozen=True)
class Promoted:
    name: str
    decision: Decision
    dry_run: bool
    copied_from: str | None = None  # "<name>/<version>" when carried over from another registry


def register(training_run_id: str, evaluation_run_id: str, name: str,
             parent_run_id: str | None = None) -> str:
    """Register the generator the training run logged, with the evaluation run's metrics, as the
    model's `challenger`; returns the version."""
    import mlflow

    from training import registry, tracking

    client = mlflow.MlflowClient()
    evaluated = registry.evaluation_metrics(client, evaluation_run_id)
    model_id = registry.logged_model_id(client, training_run_id)
    if model_id is None:
        raise registry.RegistryError(f"run {training_run_id} logged no generator model "
                                     "(is it a training run?)")
    trained = client.get_run(training_run_id).data
    tags = {"evaluation_run_id": evaluation_run_id, "data_sha256": trained.params.get("data_sha256", ""),
            "preset": trained.params.get("preset", ""),
            **{k: v for k, v in trained.tags.items() if k in tracking.GENERATOR_TAGS}}
    checks.artifact_store()
    with tracking.start_run("register", parent_run_id):
        version = registry.register(model_id, name, tags, evaluated)
        mlflow.set_tags({"registered_model": name, "registered_version": version})
    return version


def promote(name: str, rule: PromotionRule, dry_run: bool = False, target_uri: str | None = None,
            target_name: str | None = None, parent_run_id: str | None = None, version: str | None = None,
            generator_file: str | None = None) -> Promoted:
    """Gate `version` (default: the challenger) against the champion, in the target registry when one
    is given. `generator_file`: the registered file itself (a pipeline artifact), checked in place."""
    import mlflow

    from training import registry, tracking

    client, copied_from = mlflow.MlflowClient(), None
    if target_uri:
        source = version or registry.alias_version(client, name, registry.CHALLENGER)
        if source is None:
            raise registry.RegistryError(f"{name} has no '{registry.CHALLENGER}' version to copy")
        version = registry.copy_to_registry(name, str(source), target_uri, target_name)
        copied_from, name = f"{name}/{source}", target_name or name
        client = mlflow.MlflowClient(tracking_uri=target_uri, registry_uri=target_uri)
        generator_file = None  # the copy is what gets promoted: verify its files
    tracked = parent_run_id and not dry_run
    with tracking.start_run("promote", parent_run_id) if tracked else contextlib.nullcontext():
        decision = promotion.promote(name, rule, dry_run=dry_run, client=client, version=version,
                                     generator_file=Path(generator_file) if generator_file else None)
        if tracked:
            mlflow.set_tags({"promoted": str(decision.promote).lower(), "reason": decision.reason,
                             "challenger_version": decision.challenger})
    return Promoted(name, decision, dry_run, copied_from)


def register_and_promote(training_run_id: str, evaluation_run_id: str, job: JobConfig,
                         parent_run_id: str | None = None) -> tuple[str, Promoted]:
    """The end of `main` and of a sweep: register the generator as challenger, then promote that very
    version by the job's promotion rule; returns (version, Promoted)."""
    version = register(training_run_id, evaluation_run_id, job.model_name, parent_run_id=parent_run_id)
    return version, promote(job.model_name, PromotionRule.of(job), parent_run_id=parent_run_id,
                            version=version)


def rollback(name: str, target: Target | None = None) -> tuple[str, str, Deployed | None]:
    """Point `champion` back at the version it replaced, and `target`'s InferenceService with it when
    one is given; returns (from version, to version, the deploy or None)."""
    demoted, restored = promotion.rollback(name)
    if target is None:
        return demoted, restored, None
    try:
        return demoted, restored, deploy(name, target)
    except DeployError as err:
        raise DeployError(f"{name} champion moved back from version {demoted} to {restored}, but "
                          f"InferenceService {target.inference_service} did not follow: {err}") from None
