"""The main job: train, evaluate, register and promote as nested runs under one parent run."""

from __future__ import annotations

from dataclasses import dataclass

from training import checks
from training.config import JobConfig, TrainConfig
from training.jobs.evaluation_run import Evaluated, evaluate
from training.jobs.release import Promoted, register_and_promote
from training.jobs.training_run import Trained, train


@dataclass(frozen=True)
class MainResult:
    run_id: str
    trained: Trained
    evaluated: Evaluated
    version: str
    promoted: Promoted
    link: str  # where a person opens the experiment's training runs, main's first


def main(config: TrainConfig, job: JobConfig) -> MainResult:
    """train -> evaluate -> register -> promote, nested under one parent run (the MLproject's main)."""
    checks.before_training(config)
    import mlflow

    from training import mlflow_env, notes, tracking

    checks.artifact_store()
    with tracking.start_job_run("main", config) as (parent_id, _):
        trained = train(config, parent_run_id=parent_id)
        evaluated = evaluate(f"runs:/{trained.run_id}", config.data, job.samples,
                             training_run_id=trained.run_id, parent_run_id=parent_id)
        version, promoted = register_and_promote(trained.run_id, evaluated.run_id, job, config.data,
                                                 parent_id)
        mlflow.set_tags({"training_run_id": trained.run_id, "evaluation_run_id": evaluated.run_id,
                         "registered_model": job.model_name, "registered_version": version,
                         "promoted": str(promoted.decision.promote).lower()})
        mlflow.log_metrics(evaluated.evaluation.metrics)
        done = MainResult(parent_id, trained, evaluated, version, promoted,
                          mlflow_env.runs_view(mlflow.active_run().info.experiment_id))
        notes.describe_main(done)
    return done
