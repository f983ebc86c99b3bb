"""The training job: validated data in, a tracked MLflow run with a trained GAN out.

The CLI, the MLproject entry point and the KFP training component all call `run_training`.
"""

from __future__ import annotations

import os
from pathlib import Path

from training import checkpoint
from training.config import ConfigError, TrainConfig
from training.data import check_readable


def preflight(config: TrainConfig) -> None:
    """Cheap checks before any heavy import: readable data, and a checkpoint when resuming."""
    check_readable(config.data)
    if config.resume and checkpoint.latest_run_dir(Path(config.checkpoint_dir)) is None:
        raise ConfigError(f"resume: no checkpoint under checkpoint_dir={config.checkpoint_dir}")


def run_training(config: TrainConfig):
    """Load and validate MNIST, then train inside an MLflow run; returns the TrainResult."""
    preflight(config)
    from training import loop, preprocess, tracking
    from training.data import load_mnist

    mnist = load_mnist(config.data)
    num_images = config.train_images or len(mnist.x_train)
    if num_images > len(mnist.x_train):
        raise ConfigError(f"train_images must be in 0..{len(mnist.x_train)} (got {num_images})")
    if config.batch_size > num_images:
        raise ConfigError(f"batch_size must be in 1..{num_images} (got {config.batch_size})")
    train_images = preprocess.to_unit_range(mnist.x_train[:num_images])

    resume_dir = checkpoint.latest_run_dir(Path(config.checkpoint_dir)) if config.resume else None
    manifest = checkpoint.latest_manifest(resume_dir) if resume_dir else {}
    resume_run_id = None if os.environ.get("MLFLOW_RUN_ID") else manifest.get("run_id")
    with tracking.training_run(resume_run_id) as run:
        continuing = manifest.get("run_id") == run.info.run_id  # else a new run, e.g. from `mlflow run`
        tracking.log_start(config, mnist, num_images, resumed=continuing)
        run_dir = resume_dir or Path(config.checkpoint_dir) / run.info.run_id
        result = loop.train(config, train_images, tracking.MlflowTracker(), run_id=run.info.run_id,
                            checkpoint_dir=run_dir)
        tracking.log_final(result)
    print(f"MLflow run {run.info.run_id}: {result.global_step} steps, {result.epochs_done} epoch(s)")
    return result
