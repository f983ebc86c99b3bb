"""The sweep job: trials trained and evaluated under one parent run, ranked by the promotion rule, the
winner registered and promoted. A pipeline runs the same trials as tasks (`run_pipeline_trial`) and
ranks them in one (`rank_trials`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training import checkpoint, checks, mlflow_env
from training.config import JobConfig, TrainConfig
from training.jobs.evaluation_run import evaluate
from training.jobs.release import Promoted, register_and_promote
from training.jobs.training_run import train
from training.promotion import PromotionRule
from training.redaction import error_text, redacted
from training.sweep import TRIAL_TAG, Outcome, Ranking, Trial, failed, rank, swept_names
from training.workers import Died, run_each

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


class SweepFailed(RuntimeError):
    """No trial of a sweep finished; nothing was registered or promoted."""


@dataclass(frozen=True)
class SweepResult:
    run_id: str
    ranking: Ranking
    model_name: str
    version: str
    promoted: Promoted


def sweep(trials: list[Trial], base: TrainConfig, job: JobConfig, workers: int = 1,
          on_outcome: Callable[[Outcome], None] = lambda outcome: None) -> SweepResult:
    """Run the trials here, `workers` processes at a time, under one parent run; rank them, register
    the winner and promote it by the job's promotion rule (the MLproject's `sweep`)."""
    checks.before_training(base)
    import mlflow

    from training import notes, tracking
    from training.classifier import load_or_train

    checks.artifact_store()
    with tracking.start_job_run("sweep", base) as (parent_id, mnist):
        load_or_train(mnist)  # once, before the trials look it up in the cache
        mlflow.log_params({"trials": len(trials), "workers": workers, "samples": job.samples})
        mlflow.log_dict({"trials": [t.values for t in trials]}, "sweep/trials.json")
        outcomes = {}

        def finished(index: int, result: Outcome | Died) -> None:
            outcomes[index] = _outcome(trials[index], result, parent_id)
            on_outcome(outcomes[index])

        with tempfile.TemporaryDirectory() as logs:
            run_each(run_trial, [(t, base, job.samples, parent_id) for t in trials], workers, Path(logs),
                     on_done=finished)
            for log in Path(logs).glob("*.log"):  # what the trials printed, quoting any URL redacted
                log.write_text(redacted(log.read_text(errors="replace")))
            mlflow.log_artifacts(logs, "sweep/logs")
        ranking = rank_trials(parent_id, trials, list(outcomes.values()), PromotionRule.of(job))
        winner = ranking.winner
        version, promoted = register_and_promote(winner.training_run_id, winner.evaluation_run_id, job,
                                                 base.data, parent_id)
        mlflow.set_tags({"winner_trial": str(winner.trial.index), "training_run_id": winner.training_run_id,
                         "registered_model": job.model_name, "registered_version": version,
                         "promoted": str(promoted.decision.promote).lower()})
        done = SweepResult(parent_id, ranking, job.model_name, version, promoted)
        notes.describe_sweep(done)
    return done


def run_trial(trial: Trial, base: TrainConfig, samples: int, parent_run_id: str,
              checkpoint_root: str | None = None, classifier_dir: str | None = None) -> Outcome:
    """Train and evaluate one trial of a sweep (over `base`) under the sweep's parent run. A trial that
    fails (NaN losses, a value its model cannot take, out of memory) is recorded as failed, on its run
    and in the outcome, and does not stop the sweep."""
    config = trial.config(base)
    try:
        trained = train(config, parent_run_id, checkpoint_root, trial=trial.index,
                        classifier_dir=classifier_dir)
        evaluated = evaluate(f"runs:/{trained.run_id}", config.data, samples, config.seed,
                             training_run_id=trained.run_id, parent_run_id=parent_run_id,
                             classifier_dir=classifier_dir)
    except checkpoint.Preempted:
        raise  # the pipeline retries the task, which resumes the trial
    except Exception as err:  # noqa: BLE001 (the trial is the boundary: its run ends FAILED with this error)
        outcome = failed(trial, error_text(err))
        _record_failure(parent_run_id, outcome)
        return outcome
    return Outcome(trial, "finished", trained.run_id, evaluated.run_id)


def run_pipeline_trial(trial: Trial, base: TrainConfig, samples: int, pipeline_run: str, checkpoint_root: str,
                       classifier_dir: str) -> Outcome:
    """run_trial under the parent MLflow run that `open_run` opened for the pipeline run, or under the
    run Kubeflow's MLflow plugin opened for this iteration of the loop."""
    import mlflow

    from training import kfp_plugin

    plugin = kfp_plugin.active()
    if plugin:
        return run_trial(trial, base, samples, plugin.task_run_id or plugin.parent_run_id, checkpoint_root,
                         classifier_dir)
    client = mlflow.MlflowClient()
    parents = client.search_runs([mlflow_env.set_experiment().experiment_id],
                                 f"tags.kfp_run = '{pipeline_run}'")
    parents = [run for run in parents if "mlflow.parentRunId" not in run.data.tags]
    if not parents:
        raise RuntimeError(f"no MLflow run tagged kfp_run={pipeline_run}: did open-mlflow-run run?")
    return run_trial(trial, base, samples, parents[0].info.run_id, checkpoint_root, classifier_dir)


def rank_trials(parent_run_id: str, trials: list[Trial], outcomes: list[Outcome],
                rule: PromotionRule) -> Ranking:
    """Rank a sweep's trials by the promotion rule and log the ranking on its parent run (a table, a
    CSV and a plot of FID against each swept value); a trial without an outcome (its task or process
    died) counts as failed. Raises SweepFailed when none finished."""
    import mlflow

    from training import registry, tracking

    client = mlflow.MlflowClient()
    reported = {outcome.trial.index: outcome for outcome in outcomes}
    outcomes = [reported.get(t.index) or _recorded_outcome(client, parent_run_id, t) for t in trials]
    evaluations = {o.evaluation_run_id: registry.evaluation_metrics(client, o.evaluation_run_id)
                   for o in outcomes if o.status == "finished"}
    swept = swept_names(trials)
    ranking = rank(outcomes, evaluations, rule, swept)
    with tracking.on_run(parent_run_id):
        tracking.log_ranking(ranking, swept)
    if ranking.winner is None:
        raise SweepFailed(f"all {len(trials)} trials failed; nothing registered or promoted "
                          f"(first error: {outcomes[0].error})")
    return ranking


def _outcome(trial: Trial, result: Outcome | Died, parent_run_id: str) -> Outcome:
    """A worker's result, or the failure of a trial whose process died (its run closed FAILED)."""
    if not isinstance(result, Died):
        return result
    outcome = failed(trial, f"the trial's {result}")
    _record_failure(parent_run_id, outcome)
    return outcome


def _record_failure(parent_run_id: str, outcome: Outcome) -> None:
    """A failed trial's run ends FAILED with the error: one its process left RUNNING (killed) is closed,
    and a trial that failed before its training run opened (its data, say) gets one, with its values."""
    import mlflow

    from training import tracking

    client = mlflow.MlflowClient()
    error = outcome.error[:tracking.MAX_TAG]
    for run in _trial_runs(client, parent_run_id, outcome.trial.index):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", error)
            client.set_terminated(run.info.run_id, "FAILED")
        return
    with tracking.start_run(outcome.trial.run_name, parent_run_id) as run:
        mlflow.log_params(outcome.trial.values)
        mlflow.set_tags({TRIAL_TAG: str(outcome.trial.index), "error": error})
    client.set_terminated(run.info.run_id, "FAILED")


def _recorded_outcome(client: MlflowClient, parent_run_id: str, trial: Trial) -> Outcome:
    """What MLflow recorded of a trial that returned no outcome (its pod or process died, and Kubeflow
    handed over no result): finished if its training and evaluation runs finished."""
    runs = _trial_runs(client, parent_run_id, trial.index)
    if not runs:
        return failed(trial, "no outcome and no run: its task or process died before training")
    run = runs[0]
    evaluation_run_id = run.data.tags.get("evaluation_run_id")
    if run.info.status == "FINISHED" and evaluation_run_id:
        return Outcome(trial, "finished", run.info.run_id, evaluation_run_id)
    return failed(trial, run.data.tags.get("error") or f"its run ended {run.info.status} "
                                                       "(its task or process died)")


def _trial_runs(client: MlflowClient, parent_run_id: str, index: int) -> list[Run]:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                               f"and tags.{TRIAL_TAG} = '{index}'")
