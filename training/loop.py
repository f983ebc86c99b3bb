"""The training loop: epochs of compiled steps, metrics, sample grids, the FID curve, checkpoints, resume.

An epoch is one pass of the training images through D. Metrics stay on the device between flushes
(every `log_every` steps), so the loop never waits on the accelerator step by step. Every `eval_every`
epochs, and when the run ends, a judge scores the generator; the weights of the best score are kept
in the checkpoint folder's `best/`, beside the latest state.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from training import backend, checkpoint, plots
from training.adam import Adam
from training.checkpoint import NonFiniteLoss, Preempted
from training.config import TrainConfig
from training.data import epoch_batches, steps_per_epoch
from training.models import build_models
from training.progress import Progress
from training.redaction import redacted
from training.sampling import latents, render
from training.step import Gan, LatentSampler, Recipe

METRICS = ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake")
GRID_SAMPLES = 64
BEST = "best"  # the checkpoint folder's subfolder holding the generator of the best curve point

# A judge scores a generator with given (trainable, non-trainable) weights: {"fid": ..., ...}
Judge = Callable[[Any, tuple[list, list]], dict[str, float]]


class Tracker(Protocol):
    def log_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float], grid_path: Path) -> None: ...
    def log_curve(self, step: int, scores: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    gan: Gan
    global_step: int
    epochs_done: int
    history: dict[str, list[tuple[int, float]]]
    grid_paths: list[Path]
    stopped_by: str  # "epochs", "max_steps", "max_minutes"
    train_seconds: float  # wall time of this call of `train`, compilation included
    curve: list[dict]  # the FID curve's points: step, epoch and scores (fid, raw_fid, ...)
    curve_seconds: float  # of train_seconds, the time spent scoring the curve
    generators: dict[str, Any]  # name -> Keras generator: generator (raw), generator_ema, generator_best
    selected: str  # the name of the generator the run exports
    best: dict | None  # the best curve point (its step, epoch and scores), if any was scored

    @property
    def averaged(self) -> bool:
        return "generator_ema" in self.generators


def build_gan(config: TrainConfig) -> Gan:
    """Fresh, seeded G and D for the config's preset and precision (policy set before building), on
    the config's devices."""
    backend.check_supported()
    parallel = backend.DataParallel(config.devices)  # before anything heavy: it may refuse the count
    keras.config.set_dtype_policy(backend.resolve_precision(config.precision))
    backend.make_deterministic(config.seed)
    generator, discriminator = build_models(config.preset, config.z_dim)
    recipe = Recipe(config.n_iter_d, config.n_iter_g, config.real_label, config.fake_label, config.ema_decay)
    return Gan(generator, discriminator, Adam(config.learning_rate, config.beta_1),
               LatentSampler(config.z_dim, seed=config.seed), recipe, parallel)


def train(config: TrainConfig, train_images: np.ndarray, tracker: Tracker | None = None,
          run_id: str | None = None, checkpoint_dir: Path | None = None,
          judge: Judge | None = None) -> TrainResult:
    """Train on (N, 28, 28, 1) float32 images in [-1, 1]; returns with the final weights assigned.

    Checkpoints (and sample grids) go to `checkpoint_dir`, by default config.checkpoint_dir itself.
    Without a judge (or with eval_every=0) there is no FID curve and the last generator is exported.
    """
    gan = build_gan(config)
    step_fn = backend.compile_step(gan.train_step, gan.parallel)
    checkpoint_dir = checkpoint_dir or Path(config.checkpoint_dir)
    grid_dir = checkpoint_dir / "grids"
    grid_dir.mkdir(parents=True, exist_ok=True)
    judge = judge if config.eval_every else None
    run = _RunState(config, checkpoint_dir, len(train_images), gan.initial_state())
    if config.resume:
        run.restore(checkpoint_dir)
    state = gan.parallel.replicate(run.state)
    device_images = gan.parallel.replicate(keras.ops.convert_to_tensor(train_images))
    z_grid = latents(GRID_SAMPLES, config.z_dim, seed=(config.seed, 2**31))  # the same points all run
    steps = steps_per_epoch(len(train_images), config.batch_size, config.n_iter_d)

    with _SigtermFlag() as sigterm:
        if config.resume and (limit := run.limit_reached()):
            return run.result(gan, state, limit)
        for epoch in range(run.epoch, config.epochs):
            batches = epoch_batches(len(train_images), config.batch_size, config.n_iter_d, config.seed, epoch)
            display = Progress(epoch + 1, config.epochs, steps, METRICS + ("images_per_sec",),
                               first_step=run.step_in_epoch, budget_ends=run.budget_ends())
            window = _Window(config.batch_size * config.n_iter_d)
            for i in range(run.step_in_epoch, steps):
                state, metrics = step_fn(state, device_images, batches[i])
                run.global_step += 1
                window.add(metrics)
                last_of_epoch = i + 1 == steps
                limit = run.limit_reached()
                stopping = limit or sigterm.is_set()
                if run.global_step % config.log_every == 0 or last_of_epoch or stopping:
                    values = window.flush(run.global_step)
                    run.record(values, run.global_step)
                    if tracker:
                        tracker.log_step(run.global_step, values)
                    display.update(i + 1, values, last=last_of_epoch or bool(stopping))
                if sigterm.is_set() or (limit and not last_of_epoch):
                    if judge and not sigterm.is_set():  # the end of the run: its last curve point
                        _score(run, gan, state, judge, tracker, round(epoch + (i + 1) / steps, 2))
                    run.save(state, epoch, i + 1, run_id)
                    if sigterm.is_set():
                        raise Preempted(f"SIGTERM at step {run.global_step}: checkpoint written "
                                        f"to {checkpoint_dir}; rerun with --resume to continue")
                    return run.result(gan, state, limit)
            run.epoch, run.step_in_epoch = epoch + 1, 0
            grid_path = _save_grid(gan, state, z_grid, grid_dir / f"epoch_{epoch + 1:04d}.png", epoch)
            run.grid_paths.append(grid_path)
            epoch_metrics = run.epoch_summary()
            if tracker:
                tracker.log_epoch(epoch + 1, epoch_metrics, grid_path)
            if judge and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs or limit):
                _score(run, gan, state, judge, tracker, epoch + 1)
            run.save(state, epoch + 1, 0, run_id)
            if limit:
                return run.result(gan, state, limit)
    return run.result(gan, state, "epochs")


def _score(run: _RunState, gan: Gan, state, judge: Judge, tracker: Tracker | None, epoch: float) -> None:
    point = run.score(gan, state, judge, epoch)
    if tracker:
        tracker.log_curve(point["step"], {k: v for k, v in point.items() if k not in ("step", "epoch")})


def _save_grid(gan: Gan, state, z: np.ndarray, path: Path, epoch: int) -> Path:
    fake = render(gan.generator, z, weights=gan.generator_weights(state))
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
class _RunState:
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
    curve: list[dict] = field(default_factory=list)
    best: dict | None = None
    curve_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    seconds_before: float = 0.0  # of training, in the calls this one resumes (up to their last checkpoint)

    def training_seconds(self) -> float:
        """What the run's time budget counts: this call's wall time and the earlier calls'."""
        return self.seconds_before + time.perf_counter() - self.started

    def budget_ends(self) -> float | None:
        """The time.perf_counter() value at which the time budget is spent, if there is one."""
        if not self.config.max_minutes:
            return None
        return self.started + self.config.max_minutes * 60 - self.seconds_before

    def limit_reached(self) -> str | None:
        """The limit, other than the last epoch, that ends the run now: "max_steps" or "max_minutes"."""
        if self.config.max_steps and self.global_step >= self.config.max_steps:
            return "max_steps"
        if self.config.max_minutes and self.training_seconds() >= self.config.max_minutes * 60:
            return "max_minutes"
        return None

    def record(self, values: dict[str, float], step: int) -> None:
        self.epoch_values.append(values)
        for name, value in values.items():
            self.history.setdefault(name, []).append((step, value))

    def epoch_summary(self) -> dict[str, float]:
        summary = {name: float(np.mean([v[name] for v in self.epoch_values]))
                   for name in self.epoch_values[0]}
        self.epoch_values = []
        return summary

    def score(self, gan: Gan, state, judge: Judge, epoch: float) -> dict:
        """A point of the FID curve for the state after `epoch` epochs: the exported generator's scores
        (and the raw one's, as raw_*, when G is averaged); a new best is kept, before the checkpoint."""
        started = time.perf_counter()
        point = {"step": self.global_step, "epoch": epoch,
                 **judge(gan.generator, gan.generator_weights(state))}
        if "g_ema" in state:
            raw = judge(gan.generator, gan.generator_weights(state, averaged=False))
            point |= {f"raw_{name}": value for name, value in raw.items()}
        self.curve.append(point)
        if self.best is None or point["fid"] < self.best["fid"]:
            self.best = point
            checkpoint.save(self.directory / BEST, gan.generator_weights(state),
                            dict(point, global_step=self.global_step))
        self.curve_seconds += time.perf_counter() - started
        return point

    def save(self, state, epoch: int, step_in_epoch: int, run_id: str | None) -> None:
        checkpoint.save(self.directory, state, {
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
            "config": self.config.to_dict() | {"data": redacted(self.config.data)},  # may change on resume
            "num_images": self.num_images, "run_id": run_id,
            "history": self.history, "grids": [p.name for p in self.grid_paths],
            "epoch_values": self.epoch_values, "curve": self.curve,
            "training_seconds": self.training_seconds(),
        })

    def restore(self, directory: Path) -> None:
        """Continue from the newest intact checkpoint in `directory` (a damaged newer one is skipped, said
        so) and the best generator so far; CheckpointError, in one line, when neither can be used."""
        self.state, manifest = checkpoint.load_latest(directory, self.state)
        try:
            self._continue_from(manifest, directory)
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # a manifest of an older format
            raise checkpoint.CheckpointError(
                f"cannot resume from {directory}: its checkpoint manifest lacks or garbles a field "
                f"({type(err).__name__}: {err})") from None
        # best/ is written before the latest checkpoint: after a crash between the two it is ahead
        self.best = _best_so_far(directory / BEST)

    def _continue_from(self, manifest: dict, directory: Path) -> None:
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
        self.curve = manifest.get("curve", [])
        self.seconds_before = manifest.get("training_seconds", 0.0)

    def result(self, gan: Gan, state, stopped_by: str) -> TrainResult:
        gan.assign(state)
        generators = {"generator": gan.generator}
        if "g_ema" in state:
            generators["generator_ema"] = _generator_with(gan, gan.generator_weights(state))
        selected = "generator_ema" if "g_ema" in state else "generator"
        if self.best is not None:
            template = gan.generator_weights(state)
            best_weights, _ = checkpoint.load_latest(self.directory / BEST, template, report=False)
            generators["generator_best"] = _generator_with(gan, best_weights)
            if self.config.keeps_best:
                selected = "generator_best"
        best = self.best and {k: v for k, v in self.best.items() if k not in _MANIFEST_KEYS}
        return TrainResult(gan, self.global_step, self.epoch, self.history, self.grid_paths,
                           stopped_by, time.perf_counter() - self.started, self.curve, self.curve_seconds,
                           generators, selected, best)


_MANIFEST_KEYS = ("global_step", "arrays", "sha256", "leaves")  # what checkpoint.save adds to a point


def _best_so_far(best_dir: Path) -> dict | None:
    """The newest intact point of best/ (None before the first curve point); a damaged newer one is
    skipped, said so. With none intact, CheckpointError: resuming would forget the best so far."""
    try:
        return checkpoint.newest_intact(best_dir)
    except checkpoint.NoIntactCheckpoint as err:
        raise checkpoint.CheckpointError(
            f"{err}; move {best_dir} away to resume without the best generator so far") from None


def _generator_with(gan: Gan, weights: tuple[list, list]):
    """A copy of G holding `weights` (trainable, non-trainable), e.g. the averaged ones."""
    model = keras.models.clone_model(gan.generator)
    for variables, values in zip((model.trainable_variables, model.non_trainable_variables), weights,
                                 strict=True):
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
    return model


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
