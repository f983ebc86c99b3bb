"""The training loop: epochs of compiled steps, metrics, sample grids, checkpoints, resume.

An epoch is one pass of the training images through D. Metrics stay on the device between flushes
(every `log_every` steps), so the loop never waits on the accelerator step by step.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from training import backend, checkpoint, plots
from training.adam import Adam
from training.config import TrainConfig
from training.data import epoch_batches, steps_per_epoch
from training.models import PRESET_WIDTHS, build_discriminator, build_generator
from training.sampling import latents, render
from training.step import Gan, LatentSampler, Recipe

METRICS = ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake")
GRID_SAMPLES = 64


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; training stopped before checkpointing the bad weights."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and the run can be resumed."""


class Tracker(Protocol):
    def log_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float], grid_path: Path) -> None: ...


@dataclass
class TrainResult:
    gan: Gan
    global_step: int
    epochs_done: int
    history: dict[str, list[tuple[int, float]]]
    grid_paths: list[Path]
    stopped_by: str  # "epochs", "max_steps"
    train_seconds: float  # wall time of this call of `train`, compilation included


def build_gan(config: TrainConfig) -> Gan:
    """Fresh, seeded G and D for the config's preset and precision (policy set before building), on
    the config's devices."""
    backend.check_supported()
    parallel = backend.DataParallel(config.devices)  # before anything heavy: it may refuse the count
    keras.config.set_dtype_policy(backend.resolve_precision(config.precision))
    backend.make_deterministic(config.seed)
    widths = PRESET_WIDTHS[config.preset]
    recipe = Recipe(config.n_iter_d, config.n_iter_g, config.real_label, config.fake_label)
    return Gan(build_generator(widths, config.z_dim), build_discriminator(widths),
               Adam(config.learning_rate, config.beta_1), LatentSampler(config.z_dim, seed=config.seed),
               recipe, parallel)


def train(config: TrainConfig, train_images: np.ndarray, tracker: Tracker | None = None,
          run_id: str | None = None, checkpoint_dir: Path | None = None) -> TrainResult:
    """Train on (N, 28, 28, 1) float32 images in [-1, 1]; returns with the final weights assigned.

    Checkpoints (and sample grids) go to `checkpoint_dir`, by default config.checkpoint_dir itself.
    """
    gan = build_gan(config)
    step_fn = backend.compile_step(gan.train_step, gan.parallel)
    checkpoint_dir = checkpoint_dir or Path(config.checkpoint_dir)
    grid_dir = checkpoint_dir / "grids"
    grid_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(config, checkpoint_dir, len(train_images), gan.initial_state())
    if config.resume:
        progress.restore(checkpoint_dir)
    state = gan.parallel.replicate(progress.state)
    device_images = gan.parallel.replicate(keras.ops.convert_to_tensor(train_images))
    z_grid = latents(GRID_SAMPLES, config.z_dim, seed=(config.seed, 2**31))  # the same points all run
    steps = steps_per_epoch(len(train_images), config.batch_size, config.n_iter_d)

    with _SigtermFlag() as sigterm:
        for epoch in range(progress.epoch, config.epochs):
            batches = epoch_batches(len(train_images), config.batch_size, config.n_iter_d,
                                               config.seed, epoch)
            bar = keras.utils.Progbar(steps, stateful_metrics=METRICS + ("images_per_sec",))
            print(f"Epoch {epoch + 1}/{config.epochs}")
            window = _Window(config.batch_size * config.n_iter_d)
            for i in range(progress.step_in_epoch, steps):
                state, metrics = step_fn(state, device_images, batches[i])
                progress.global_step += 1
                window.add(metrics)
                last_of_epoch = i + 1 == steps
                hit_max = config.max_steps and progress.global_step >= config.max_steps
                stopping = hit_max or sigterm.is_set()
                if progress.global_step % config.log_every == 0 or last_of_epoch or stopping:
                    values = window.flush(progress.global_step)
                    progress.record(values, progress.global_step)
                    if tracker:
                        tracker.log_step(progress.global_step, values)
                    bar.update(i + 1, values=list(values.items()))
                if sigterm.is_set() or (hit_max and not last_of_epoch):
                    progress.save(state, epoch, i + 1, run_id)
                    if sigterm.is_set():
                        raise Preempted(f"SIGTERM at step {progress.global_step}: checkpoint written "
                                        f"to {checkpoint_dir}; rerun with --resume to continue")
                    return progress.result(gan, state, "max_steps")
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            grid_path = _save_grid(gan, state, z_grid, grid_dir / f"epoch_{epoch + 1:04d}.png", epoch)
            progress.grid_paths.append(grid_path)
            epoch_metrics = progress.epoch_summary()
            if tracker:
                tracker.log_epoch(epoch + 1, epoch_metrics, grid_path)
            progress.save(state, epoch + 1, 0, run_id)
            if config.max_steps and progress.global_step >= config.max_steps:
                return progress.result(gan, state, "max_steps")
    return progress.result(gan, state, "epochs")


def _save_grid(gan: Gan, state, z: np.ndarray, path: Path, epoch: int) -> Path:
    fake = render(gan.generator, z, weights=(state["g_trainable"], state["g_non_trainable"]))
    picture = plots.grid(plots.to_uint8(fake), caption=f"epoch {epoch + 1}")
    picture.save(path)
    return path


class _Window:
    """Device-side metrics of the steps since the last flush; one host sync per flush."""

    def __init__(self, real_images_per_step: int):
        self.real_images_per_step = real_images_per_step
        self.pending: list[dict] = []
        self.started = time.perf_counter()

    def add(self, metrics: dict) -> None:
        self.pending.append(metrics)

    def flush(self, global_step: int) -> dict[str, float]:
        fetched = backend.to_numpy(self.pending)
        elapsed = time.perf_counter() - self.started
        values = {name: float(np.mean([m[name] for m in fetched])) for name in METRICS}
        bad = [name for name in ("d_loss", "g_loss") if not all(math.isfinite(m[name]) for m in fetched)]
        if bad:
            raise NonFiniteLoss(f"{' and '.join(bad)} became NaN/inf by step {global_step}; "
                                "stopped without checkpointing these weights")
        values["images_per_sec"] = len(fetched) * self.real_images_per_step / max(elapsed, 1e-9)
        self.pending, self.started = [], time.perf_counter()
        return values


@dataclass
class _Progress:
    """Where the run stands, and everything a checkpoint must carry to continue it exactly."""

    config: TrainConfig
    directory: Path
    num_images: int
    state: Any
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    grid_paths: list[Path] = field(default_factory=list)
    epoch_values: list[dict[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def record(self, values: dict[str, float], step: int) -> None:
        self.epoch_values.append(values)
        for name, value in values.items():
            self.history.setdefault(name, []).append((step, value))

    def epoch_summary(self) -> dict[str, float]:
        summary = {name: float(np.mean([v[name] for v in self.epoch_values]))
                   for name in self.epoch_values[0]}
        self.epoch_values = []
        return summary

    def save(self, state, epoch: int, step_in_epoch: int, run_id: str | None) -> None:
        checkpoint.save(self.directory, state, {
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
            "config": self.config.to_dict(), "num_images": self.num_images, "run_id": run_id,
            "history": self.history, "grids": [p.name for p in self.grid_paths],
            "epoch_values": self.epoch_values,
        })

    def restore(self, directory: Path) -> None:
        self.state, manifest = checkpoint.load_latest(directory, self.state)
        refused = self.config.resume_conflicts(manifest["config"])
        if refused or manifest["num_images"] != self.num_images:
            raise checkpoint.CheckpointError(
                f"cannot resume from {directory}: it was trained with different "
                f"{', '.join(refused) or 'training images'}")
        self.epoch, self.step_in_epoch = manifest["epoch"], manifest["step_in_epoch"]
        self.global_step = manifest["global_step"]
        self.history = {k: [tuple(p) for p in v] for k, v in manifest["history"].items()}
        self.grid_paths = [directory / "grids" / name for name in manifest["grids"]]
        self.epoch_values = manifest["epoch_values"]

    def result(self, gan: Gan, state, stopped_by: str) -> TrainResult:
        gan.assign(state)
        return TrainResult(gan, self.global_step, self.epoch, self.history, self.grid_paths,
                           stopped_by, time.perf_counter() - self.started)


class _SigtermFlag:
    """Turns SIGTERM (preemption) into a flag the loop checks after each step."""

    def __enter__(self) -> threading.Event:
        self.event = threading.Event()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
