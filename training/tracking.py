"""MLflow tracking of a training run: params, dataset input, metrics, grids and final artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI (default: MLflow's embedded sqlite:///mlflow.db).
Inside `mlflow run`, MLFLOW_RUN_ID names the run to attach to.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow

from training import kfp_plugin, mlflow_env, notes
from training.config import TrainConfig
from training.data import Mnist, load_mnist
from training.outbox import Outbox
from training.redaction import error_text, redacted

if TYPE_CHECKING:
    from training.loop import TrainResult

JOURNAL = "tracking-journal.jsonl"  # in the run's checkpoint folder: what MLflow has not received yet
MAX_TAG = 5000  # characters of a tag value MLflow stores
CURVE = "curve"  # the FID curve's metrics (curve/fid, curve/raw_fid, ...), at the step they were scored
PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "mlflow", "numpy")
GENERATOR_ARTIFACT = "models/generator.keras"  # in a training run: the raw G of its last step
GENERATOR_ARTIFACT_TAG = "generator_artifact"  # a training run's tag naming the generator it exports


class MlflowTracker:
    """The loop's Tracker: step metrics as they flush, epoch summaries and sample grids, sent through an
    Outbox so that an outage of the tracking server does not stop training. On resume, the steps and
    epochs the run already has (a killed process may have logged past its last checkpoint) are skipped,
    so the metric history has no duplicated step."""

    def __init__(self, run_id: str, run_dir: Path):
        self.outbox = Outbox(run_id, run_dir / JOURNAL)
        self.logged_step = self.outbox.last_step("d_loss")
        self.logged_epoch = self.outbox.last_step("epoch_d_loss")
        self.logged_curve = self.outbox.last_step(f"{CURVE}/fid")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if step > self.logged_step:
            self.outbox.metrics(metrics, step)

    def log_epoch(self, epoch: int, metrics: dict[str, float], grid_path: Path) -> None:
        if epoch > self.logged_epoch:
            self.outbox.metrics({f"epoch_{name}": value for name, value in metrics.items()}, epoch)
        self.outbox.artifact(grid_path, "grids")

    def log_curve(self, step: int, scores: dict[str, float]) -> None:
        if step > self.logged_curve:
            self.outbox.metrics({f"{CURVE}/{name}": value for name, value in scores.items()}, step)

    def close(self) -> None:
        """Wait (MNIST_GAN_TRACKING_WAIT_S, default 600 s) for whatever an outage held back."""
        self.outbox.close(float(os.environ.get("MNIST_GAN_TRACKING_WAIT_S", "600")))


@contextlib.contextmanager
def start_job_run(name: str, config: TrainConfig):
    """The parent run `name` of a job that trains (main, a sweep), its dataset logged first by a nested
    `prepare-data` run; yields (the parent's run id, the loaded MNIST). If the job fails, the parent's
    description says why."""
    with start_run(name) as parent, notes.failure_noted(name):
        with start_run("prepare-data", parent.info.run_id):
            mnist = load_mnist(config.data)
            log_dataset(mnist, config.train_images or len(mnist.x_train))
        yield parent.info.run_id, mnist


@contextlib.contextmanager
def start_run(name: str, parent_run_id: str | None = None, run_id: str | None = None):
    """Start the run `name` (or re-open `run_id`, or attach to `mlflow run`'s), as a child of
    `parent_run_id` when one is given, in the parent's experiment; a parent this process has not opened
    (a pipeline task's) is named, not re-opened. Under Kubeflow's MLflow plugin, the first run a task
    opens under the pipeline's parent is the run KFP opened for the task (training/kfp_plugin.py). The
    run ends FAILED if the body raises, with the error (redacted) as its `error` tag."""
    active = mlflow.active_run()
    if parent_run_id and not (active and active.info.run_id == parent_run_id):
        task_run_id, parent_run_id = kfp_plugin.task_run(parent_run_id)
        os.environ.pop("MLFLOW_RUN_ID", None)  # a pipeline task's runs hang off its parent run
        if task_run_id and run_id in (None, task_run_id):
            run_id = task_run_id
        if run_id:
            started = mlflow.start_run(run_id=run_id, log_system_metrics=True)
        else:
            parent = mlflow.MlflowClient().get_run(parent_run_id)
            started = mlflow.start_run(run_name=name, parent_run_id=parent_run_id,
                                       experiment_id=parent.info.experiment_id, log_system_metrics=True)
        with _failing_with_error(started) as run:
            yield run
        return
    nested = parent_run_id is not None
    if not (nested or active):
        mlflow_env.set_experiment(run_id)
    experiment_id = active.info.experiment_id if nested and not run_id else None
    with _failing_with_error(mlflow.start_run(run_id=run_id, nested=nested, run_name=None if run_id else name,
                                              experiment_id=experiment_id, log_system_metrics=True)) as run:
        yield run


@contextlib.contextmanager
def _failing_with_error(started):
    """The run `started`; an exception in the body is its `error` tag, and the run ends FAILED."""
    with started as run:
        try:
            yield run
        except Exception as err:
            mlflow.set_tag("error", error_text(err)[:MAX_TAG])
            raise


@contextlib.contextmanager
def on_run(run_id: str):
    """Log onto the run `run_id`: the active run, or re-opened (a pipeline task logging on its parent) and
    left with the status it had: a parent still running (KFP's, under its MLflow plugin) stays so."""
    active = mlflow.active_run()
    if active and active.info.run_id == run_id:
        yield active
        return
    os.environ.pop("MLFLOW_RUN_ID", None)
    client = mlflow.MlflowClient()
    status = client.get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id) as run:
        yield run
    if status == "RUNNING":
        client.update_run(run_id, status=status)


def run_params(config: TrainConfig) -> dict[str, str]:
    """Every hyperparameter plus what the numbers depend on: backend, device, precision, versions."""
    from training import backend

    params = {name: param_text(value) for name, value in config.to_dict().items()}
    params.update(backend=backend.name(), device=backend.device_description(config.devices),
                  accelerator=backend.accelerator(),
                  compute_precision=backend.resolve_precision(config.precision),
                  python=platform.python_version())
    versions = backend.installed_versions(PACKAGES)
    params.update({f"version_{name}": version for name, version in versions.items()})
    return params


def param_text(value) -> str:
    """A param's value as recorded: a URL without the credentials or signature it may carry."""
    return str(value).lower() if isinstance(value, bool) else redacted(str(value))


def log_start(config: TrainConfig, mnist: Mnist, num_train_images: int, resumed: bool,
              given: dict | None = None) -> None:
    """Params and the dataset input; a resumed run already has them (params are immutable). `given`:
    the hyperparameters as the caller gave them, before presets and the pipeline chose values."""
    if resumed:
        return
    # `mlflow run` has already logged the MLproject parameters, spelled as the user passed them.
    run = mlflow.active_run()
    already_logged = run.data.params
    params = {**run_params(config), "data_sha256": mnist.sha256}
    if given and kfp_plugin.is_task_run(run.info.run_id):
        # KFP's launcher logs the task's inputs (the hyperparameters as given) under their names after
        # the task: ours say the same, spelled as it spells them; a value chosen since goes to effective.*
        for name, value in given.items():
            if params.get(name, param_text(value)) != param_text(value):
                params[f"effective.{name}"] = params[name]
            params[name] = kfp_plugin.launcher_spelling(value)
    mlflow.log_params({k: v for k, v in params.items() if k not in already_logged})
    log_dataset(mnist, num_train_images)


def log_dataset(mnist: Mnist, num_train_images: int) -> None:
    """The training split as the run's dataset input, with its source and digest."""
    mlflow.log_input(training_dataset(mnist, num_train_images), context="training")


def training_dataset(mnist: Mnist, num_train_images: int):
    return mlflow.data.from_numpy(
        features=mnist.x_train[:num_train_images], targets=mnist.y_train[:num_train_images],
        source=_source(mnist), name="mnist", digest=mnist.sha256[:32])


def evaluation_dataset(mnist: Mnist):
    """The test split, which every evaluation scores against."""
    return mlflow.data.from_numpy(features=mnist.x_test, targets=mnist.y_test, source=_source(mnist),
                                  name="mnist-test", digest=mnist.sha256[32:64])


def _source(mnist: Mnist):
    """Where the data came from, as the one MLflow DatasetSource it is. (Asked to guess from a local
    path, MLflow finds two local-file sources, one per scheme it registers, and warns.)"""
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source

    if "://" in mnist.source:  # https or s3: one source each
        return resolve_dataset_source(mnist.source)
    local = [s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource"][-1:]
    return resolve_dataset_source(str(Path(mnist.source).resolve()), candidate_sources=local)


def log_final(result: TrainResult, directory: Path) -> Path:
    """The GIF of the grids, the loss and FID curves and the models in Keras format (models/: the raw
    generator, the averaged one, the best one, the discriminator), written to `directory` and logged,
    with tags saying which generator the run exports; returns that generator's file."""
    from training import plots

    if result.grid_paths:
        plots.save_gif(result.grid_paths, directory / "samples.gif")
    plots.save_loss_curves(result.history, directory / "loss_curves.png")
    if result.curve:
        plots.save_fid_curve(result.curve, directory / "fid_curve.png")
    for path in directory.iterdir():
        mlflow.log_artifact(str(path))
    models = directory / "models"
    models.mkdir()
    for name, model in {**result.generators, "discriminator": result.gan.discriminator}.items():
        model.save(models / f"{name}.keras")
    mlflow.log_artifacts(str(models), artifact_path="models")
    mlflow.log_metric("train_seconds", result.train_seconds, step=result.global_step)
    if result.curve:
        mlflow.log_metrics({"curve_seconds": result.curve_seconds,
                            "curve_share": result.curve_seconds / max(result.train_seconds, 1e-9)},
                           step=result.global_step)
    mlflow.set_tags({"global_step": str(result.global_step), "epochs_done": str(result.epochs_done),
                     "stopped_by": result.stopped_by, **generator_tags(result)})
    return models / f"{result.selected}.keras"


def generator_tags(result: TrainResult) -> dict[str, str]:
    """Which generator a training run exports: its artifact, weights (averaged or raw), checkpoint
    (best of the curve or last) and the epoch it comes from. The registry copies them to a version."""
    best = result.selected == "generator_best"
    return {GENERATOR_ARTIFACT_TAG: f"models/{result.selected}.keras",
            "generator_weights": "ema" if result.averaged else "raw",
            "generator_checkpoint": "best" if best else "last",
            "generator_epoch": str(result.best["epoch"] if best else result.epochs_done)}


GENERATOR_TAGS = ("generator_weights", "generator_checkpoint", "generator_epoch")  # copied to a version


def describe_generator(tags: dict[str, str]) -> str:
    """A run's (or a version's) generator tags in words, e.g. 'averaged weights, best FID at epoch 12'."""
    if "generator_weights" not in tags:
        return "raw weights, last epoch"
    weights = "averaged (EMA) weights" if tags["generator_weights"] == "ema" else "raw weights"
    which = "best curve FID at" if tags["generator_checkpoint"] == "best" else "last,"
    return f"{weights}, {which} epoch {tags['generator_epoch']}"


def log_ranking(ranking, swept: list[str]) -> None:
    """A sweep's ranking on the active run: a table (MLflow's table view), a CSV, and FID against each
    swept value as a plot; the counts and the best FID as metrics."""
    import tempfile

    import pandas as pd

    from training import plots

    table = pd.DataFrame(ranking.rows)
    mlflow.log_table(table, "sweep/ranking.json")
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "ranking.csv", index=False)
        plots.save_sweep_plot(ranking.rows, swept, Path(tmp) / "fid_by_parameter.png")
        mlflow.log_artifacts(tmp, "sweep")
    finished = [row for row in ranking.rows if row["status"] == "finished"]
    mlflow.log_metrics({"trials_finished": len(finished), "trials_failed": len(ranking.rows) - len(finished)}
                       | ({"best_fid": finished[0]["fid"]} if finished else {}))
