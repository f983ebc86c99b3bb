"""The jobs that move a trained generator toward serving: register it as `challenger`, promote it to
`champion` if the promotion rule says so, roll `champion` back, and deploy the champion to a KServe
InferenceService."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from training import checks, promotion
from training.config import JobConfig
from training.deploy import Deployed, Target, deploy  # deploy: a job as it is (training.jobs)
from training.head_to_head import Judge
from training.kserve import DeployError
from training.promotion import Decision, PromotionRule


@dataclass(frozen=True)
class Promoted:
    name: str
    decision: Decision
    dry_run: bool
    copied_from: str | None = None  # "<name>/<version>" when carried over from another registry
    run_id: str | None = None  # the `promote` run that recorded the decision (None in a dry run)


def register(training_run_id: str, evaluation_run_id: str, name: str,
             parent_run_id: str | None = None) -> str:
    """Register the generator the training run logged, with the evaluation run's metrics, as the
    model's `challenger`; returns the version. An evaluation of another generator is refused
    (registry.EvaluationMismatch) before anything is written."""
    import mlflow

    from training import registry, tracking

    client = mlflow.MlflowClient()
    evaluated = registry.evaluation_metrics(client, evaluation_run_id)
    model_id = registry.logged_model_id(client, training_run_id)
    if model_id is None:
        raise registry.RegistryError(f"run {training_run_id} logged no generator model "
                                     "(is it a training run?)")
    registry.check_evaluation_of(client, evaluation_run_id, training_run_id, model_id)
    trained = client.get_run(training_run_id).data
    evaluator = client.get_run(evaluation_run_id).data.params.get(registry.EVALUATOR_KEY)
    tags = {"evaluation_run_id": evaluation_run_id, "data_sha256": trained.params.get("data_sha256", ""),
            "preset": trained.params.get("preset", ""),
            **{k: v for k, v in trained.tags.items() if k in tracking.GENERATOR_TAGS},
            **({registry.EVALUATOR_KEY: evaluator} if evaluator else {})}
    checks.artifact_store()
    with tracking.start_run("register", parent_run_id):
        version = registry.register(model_id, name, tags, evaluated)
        mlflow.set_tags({"registered_model": name, "registered_version": version})
    return version


def promote(name: str, rule: PromotionRule, judge: Judge, dry_run: bool = False,
            target_uri: str | None = None, target_name: str | None = None, parent_run_id: str | None = None,
            version: str | None = None, generator_file: str | None = None,
            reinstate: bool = False) -> Promoted:
    """Gate `version` (default: the challenger) against the champion, scored head to head by `judge`, in
    the target registry when one is given (a dry run copies nothing there). `generator_file`: the
    registered file itself (a pipeline artifact), checked in place. `reinstate`: a person named this
    version, so a rollback does not bar it. Unless dry, the decision is also an MLflow run, `promote`,
    with the head-to-head's scores and its picture."""
    import mlflow

    from training import registry, tracking

    client, copied_from = mlflow.MlflowClient(), None
    if target_uri:
        source = version or registry.alias_version(client, name, registry.CHALLENGER)
        if source is None:
            raise registry.RegistryError(f"{name} has no '{registry.CHALLENGER}' version to copy")
        copied_from, target_name = f"{name}/{source}", target_name or name
        database = checks.sqlite_database(target_uri)
        target = (None if dry_run and database and not database.is_file()  # no registry there yet
                  else mlflow.MlflowClient(tracking_uri=target_uri, registry_uri=target_uri))
        if dry_run:
            candidate = promotion.Candidate(client, name, str(source))
            decision = promotion.judge_against_champion(candidate, target, target_name, rule, judge)
            return Promoted(target_name, decision, dry_run, copied_from)
        version = registry.copy_to_registry(name, str(source), target_uri, target_name)
        name, client = target_name, target
        generator_file = None  # the copy is what gets promoted: verify its files
    with contextlib.nullcontext() if dry_run else tracking.start_run("promote", parent_run_id) as run:
        decision = promotion.promote(name, rule, judge, dry_run=dry_run, client=client, version=version,
                                     generator_file=Path(generator_file) if generator_file else None,
                                     reinstate=reinstate)
        if not dry_run:
            _log_decision(name, decision)
    return Promoted(name, decision, dry_run, copied_from, run and run.info.run_id)


def _log_decision(name: str, decision: Decision) -> None:
    """The decision in the active promote run: why, the head-to-head's scores, and its picture; the run's
    description says the same in words."""
    import mlflow

    from training import notes, report

    notes.describe_promotion(name, decision)

    mlflow.set_tags({"promoted": str(decision.promote).lower(), "reason": decision.reason,
                     "registered_model": name, "challenger_version": decision.challenger,
                     **({"champion_version": decision.champion} if decision.champion else {})})
    # Prefixed: under Kubeflow's MLflow plugin this is the promote task's run, where KFP's launcher logs the
    # task's inputs (min_fid_gain, samples...) under their own names, spelled its way.
    if decision.rule:
        mlflow.log_params({f"rule.{k}": v for k, v in dataclasses.asdict(decision.rule).items()})
    head = decision.head_to_head
    if head is None:
        return
    mlflow.log_params({"head_to_head.samples": head.samples, "head_to_head.seed": head.seed,
                       "evaluator_sha256": head.evaluator_sha256})
    mlflow.log_metrics({k: v for k, v in decision.scores().items() if k not in ("samples", "confidence")})
    with tempfile.TemporaryDirectory() as tmp:
        for path in report.write_decision_report(name, decision, Path(tmp)):
            mlflow.log_artifact(str(path), artifact_path="report")


def register_and_promote(training_run_id: str, evaluation_run_id: str, job: JobConfig, data: str,
                         parent_run_id: str | None = None) -> tuple[str, Promoted]:
    """The end of `main` and of a sweep: register the generator as challenger, then promote that very
    version by the job's promotion rule, head to head on `data`'s test split; returns (version, Promoted)."""
    version = register(training_run_id, evaluation_run_id, job.model_name, parent_run_id=parent_run_id)
    return version, promote(job.model_name, PromotionRule.of(job), Judge(data, job.samples),
                            parent_run_id=parent_run_id, version=version)


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
