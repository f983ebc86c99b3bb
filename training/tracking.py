"""MLflow tracking of a training run: params, dataset input, metrics, grids and final artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI (default: MLflow's embedded sqlite:///mlflow.db).
Inside `mlflow run`, MLFLOW_RUN_ID names the run to attach to.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow

from training.config import TrainConfig
from training.data import Mnist
from training.outbox import Outbox

if TYPE_CHECKING:
    from training.loop import TrainResult

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "mnist-gan")
JOURNAL = "tracking-journal.jsonl"  # in the run's checkpoint folder: what MLflow has not received yet
PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "mlflow", "numpy")


class MlflowTracker:
    """The loop's Tracker: step metrics as they flush, epoch summaries and sample grids, sent through an
    Outbox so that an outage of the tracking server does not stop training. On resume, the steps and
    epochs the run already has (a killed process may have logged past its last checkpoint) are skipped,
    so the metric history has no duplicated step."""

    def __init__(self, run_id: str, run_dir: Path):
        self.outbox = Outbox(run_id, run_dir / JOURNAL)
        self.logged_step = self.outbox.last_step("d_loss")
        self.logged_epoch = self.outbox.last_step("epoch_d_loss")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if step > self.logged_step:
            self.outbox.metrics(metrics, step)

    def log_epoch(self, epoch: int, metrics: dict[str, float], grid_path: Path) -> None:
        if epoch > self.logged_epoch:
            self.outbox.metrics({f"epoch_{name}": value for name, value in metrics.items()}, epoch)
        self.outbox.artifact(grid_path, "grids")

    def close(self) -> None:
        """Wait (MNIST_GAN_TRACKING_WAIT_S, default 600 s) for whatever an outage held back."""
        self.outbox.close(float(os.environ.get("MNIST_GAN_TRACKING_WAIT_S", "600")))


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Name -> installed version of those of `packages` that are installed."""
    versions = {}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


@contextlib.contextmanager
def start_run(run_id: str | None = None, nested: bool = False, name: str | None = None):
    """Start a run (or re-open `run_id`, or attach to `mlflow run`'s); it ends FAILED if the body raises."""
    if not (os.environ.get("MLFLOW_RUN_ID") or run_id or mlflow.active_run()):
        mlflow.set_experiment(EXPERIMENT)
    parent = mlflow.active_run() if nested else None
    # A child belongs to its parent's experiment, also in a process that re-opened the parent.
    experiment_id = parent.info.experiment_id if parent and not run_id else None
    with mlflow.start_run(run_id=run_id, nested=nested, run_name=None if run_id else name,
                          experiment_id=experiment_id, log_system_metrics=True) as run:
        yield run


def run_params(config: TrainConfig) -> dict[str, str]:
    """Every hyperparameter plus what the numbers depend on: backend, device, precision, versions."""
    from training import backend
    from training.loop import resolve_precision

    params = {name: str(value).lower() if isinstance(value, bool) else str(value)
              for name, value in config.to_dict().items()}
    params.update(backend=backend.name(), device=backend.device_description(),
                  accelerator=backend.accelerator(),
                  compute_precision=resolve_precision(config.precision),
                  python=platform.python_version())
    params.update({f"version_{name}": version for name, version in installed_versions(PACKAGES).items()})
    return params


def log_start(config: TrainConfig, mnist: Mnist, num_train_images: int, resumed: bool) -> None:
    """Params and the dataset input; a resumed run already has them (params are immutable)."""
    if resumed:
        return
    # `mlflow run` has already logged the MLproject parameters, spelled as the user passed them.
    already_logged = mlflow.active_run().data.params
    params = {**run_params(config), "data_sha256": mnist.sha256}
    mlflow.log_params({k: v for k, v in params.items() if k not in already_logged})
    log_dataset(mnist, num_train_images)


def log_dataset(mnist: Mnist, num_train_images: int) -> None:
    """The training split as the run's dataset input, with its source and digest."""
    source = mnist.source if "://" in mnist.source else str(Path(mnist.source).resolve())
    dataset = mlflow.data.from_numpy(
        features=mnist.x_train[:num_train_images], targets=mnist.y_train[:num_train_images],
        source=source, name="mnist", digest=mnist.sha256[:32])
    mlflow.log_input(dataset, context="training")


def log_final(result: TrainResult) -> None:
    """The GIF of the grids, the loss curves and both models in Keras format."""
    from training import images

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if result.grid_paths:
            images.save_gif(result.grid_paths, tmp / "samples.gif")
        images.save_loss_curves(result.history, tmp / "loss_curves.png")
        for path in tmp.iterdir():
            mlflow.log_artifact(str(path))
        result.gan.generator.save(tmp / "generator.keras")
        result.gan.discriminator.save(tmp / "discriminator.keras")
        mlflow.log_artifact(str(tmp / "generator.keras"), artifact_path="models")
        mlflow.log_artifact(str(tmp / "discriminator.keras"), artifact_path="models")
    mlflow.log_metric("train_seconds", result.train_seconds, step=result.global_step)
    mlflow.set_tags({"global_step": str(result.global_step), "epochs_done": str(result.epochs_done),
                     "stopped_by": result.stopped_by})
