"""The train job: a GAN trained inside an MLflow run, its generator logged as a LoggedModel."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training import checkpoint, checkpoint_lock, checks, mlflow_env
from training.config import ConfigError, TrainConfig
from training.data import Mnist, load_mnist, to_unit_range
from training.jobs.artifacts import copy_file, evaluator
from training.sweep import TRIAL_TAG, trial_run_name

if TYPE_CHECKING:
    from training.evaluation import QualityProbe
    from training.loop import TrainResult


@dataclass(frozen=True)
class Trained:
    run_id: str
    model_id: str  # the generator's LoggedModel
    result: TrainResult
    resumed: bool  # continued a checkpoint (a resume, or a retried pipeline task)
    link: str  # where a person opens the run

    def last_metrics(self) -> dict[str, float]:
        return {name: values[-1][1] for name, values in self.result.history.items()}

    def exported(self) -> dict[str, str]:
        """Which generator the run exports: artifact, weights, checkpoint, epoch (its tags)."""
        from training.tracking import generator_tags

        return generator_tags(self.result)


def train(config: TrainConfig, parent_run_id: str | None = None, checkpoint_root: str | None = None,
          generator_out: str | None = None, trial: int | None = None,
          classifier_dir: str | None = None) -> Trained:
    """Train inside an MLflow run (re-opened when resuming). A pipeline task gives `checkpoint_root`,
    storage that outlives its pod, and finds its own checkpoint there when retried
    (checkpoint.pipeline_run_dir); `generator_out` receives a copy of the exported generator's file. A
    sweep's trial names its run `trial-<n>` and tags it `sweep_trial`. The FID curve's judge is the
    classifier in `classifier_dir` (a pipeline artifact) or the local cache's."""
    given = config.as_given()
    if checkpoint_root is not None:
        own_dir, resume = checkpoint.pipeline_run_dir(
            Path(checkpoint_root) / config.checkpoint_dir,
            (parent_run_id or "local") + (f"-trial-{trial}" if trial else ""), config.resume)
        config = config.replace(checkpoint_dir=str(own_dir), resume=resume)
    checks.before_training(config)
    mnist = load_mnist(config.data)
    num_images = config.train_images or len(mnist.x_train)
    if num_images > len(mnist.x_train):
        raise ConfigError(f"train_images must be in 0..{len(mnist.x_train)} (got {num_images})")
    if config.batch_size > num_images:
        raise ConfigError(f"batch_size must be in 1..{num_images} (got {config.batch_size})")
    import mlflow  # after the data's checks: a refused file or size costs no framework import

    from training import loop, registry, tracking

    train_images = to_unit_range(mnist.x_train[:num_images])
    judge = _quality_probe(mnist, config, classifier_dir) if config.eval_every else None
    checks.artifact_store()

    resume_dir = checkpoint.latest_run_dir(Path(config.checkpoint_dir)) if config.resume else None
    manifest = checkpoint.latest_manifest(resume_dir) if resume_dir else {}
    attached = os.environ.get("MLFLOW_RUN_ID") and not parent_run_id  # inside `mlflow run`
    resume_run_id = None if attached else manifest.get("run_id")
    name = trial_run_name(trial) if trial else "train"
    with contextlib.ExitStack() as alone:  # the checkpoint folder: trained by this process only
        if resume_dir:  # locked before its run is reopened: a refused process changes nothing of it
            alone.enter_context(checkpoint_lock.hold(resume_dir, manifest.get("run_id")))
        with tracking.start_run(name, parent_run_id, run_id=resume_run_id) as run:
            run_dir = resume_dir or Path(config.checkpoint_dir) / run.info.run_id
            if not resume_dir:
                alone.enter_context(checkpoint_lock.hold(run_dir, run.info.run_id))
            continuing = manifest.get("run_id") == run.info.run_id  # else a new run, e.g. from `mlflow run`
            if trial:
                mlflow.set_tag(TRIAL_TAG, str(trial))
            tracking.log_start(config, mnist, num_images, resumed=continuing, given=given)
            tracker = tracking.MlflowTracker(run.info.run_id, run_dir)
            try:
                result = loop.train(config, train_images, tracker, run_id=run.info.run_id,
                                    checkpoint_dir=run_dir, judge=judge)
            finally:
                tracker.outbox.send()  # best effort on the way out; the journal keeps the rest for --resume
            tracker.close()
            with tempfile.TemporaryDirectory() as tmp:
                generator_file = tracking.log_final(result, Path(tmp))
                model_id = registry.log_generator(generator_file)
                link = mlflow_env.run_link(run.info.run_id)
                trained = Trained(run.info.run_id, model_id, result, bool(resume_dir), link)
                mlflow.log_metrics({f"final_{k}": v for k, v in trained.last_metrics().items()},
                                   model_id=model_id, dataset=tracking.training_dataset(mnist, num_images))
                if generator_out:
                    copy_file(generator_file, Path(generator_out) / "generator.keras")
    return trained


def _quality_probe(mnist: Mnist, config: TrainConfig, classifier_dir: str | None) -> QualityProbe:
    """The FID curve's judge: the evaluator's classifier on `eval_samples` samples."""
    from training.evaluation import QualityProbe

    return QualityProbe(evaluator(mnist, classifier_dir), mnist, config.eval_samples)
