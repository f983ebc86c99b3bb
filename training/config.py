"""The training configuration: every default lives here, once.

The CLI flags, the MLproject parameters and (later) the KFP component inputs are derived from or
tested against `TrainConfig`. Validation happens before any expensive import or data load.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("seed", "small", "tiny")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BACKENDS = ("tensorflow", "jax")
MNIST_TRAIN_IMAGES = 60_000
DEFAULT_DATA_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
DEFAULT_EVAL_SAMPLES = 10_000  # every compared model is evaluated on this many samples
DEFAULT_MODEL_NAME = "mnist-gan-generator"
MAX_SAMPLES = 1_000_000
# Bounds of the job parameters that are not training's, for every caller (CLI, MLproject, pipeline):
# name -> (lowest, highest or None for no upper bound).
JOB_LIMITS = {"samples": (10, MAX_SAMPLES), "min_fid_gain": (0.0, None), "max_classes_lost": (0, 10),
              "min_classes_covered": (0, 10)}


# Parameters that may change between a run and its resumption; any other change is refused.
RESUMABLE_CHANGES = {"epochs", "max_steps", "resume", "log_every", "data", "checkpoint_dir"}


class ConfigError(ValueError):
    """A parameter has a value outside its allowed range; the message names both."""


def _param(default: Any, help: str, **bounds: Any) -> Any:
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class TrainConfig:
    # model and data
    preset: str = _param("seed", "model size: seed (the post's G and D), small, tiny", choices=PRESETS)
    data: str = _param(DEFAULT_DATA_URL, "mnist.npz source: https URL, local path or s3:// URI")
    train_images: int = _param(0, "use only the first N training images (0 = all)", min=0,
                               max=MNIST_TRAIN_IMAGES)
    # the seed's recipe
    epochs: int = _param(200, "passes of the training images through D", min=1)
    batch_size: int = _param(128, "real images per D step (D sees as many fakes)", min=1,
                             max=MNIST_TRAIN_IMAGES)
    learning_rate: float = _param(2e-4, "Adam learning rate of D and G", gt=0.0, le=1.0)
    beta_1: float = _param(0.5, "Adam beta_1 of D and G", ge=0.0, lt=1.0)
    z_dim: int = _param(100, "dimension of the generator's input z ~ U(-1, 1)", min=1, max=4096)
    n_iter_d: int = _param(1, "D steps per training step", min=1, max=100)
    n_iter_g: int = _param(5, "G steps per training step", min=1, max=100)
    real_label: float = _param(0.9, "D's target for real images (one-sided smoothing)", ge=0.0,
                               le=1.0)
    fake_label: float = _param(0.0, "D's target for generated images", ge=0.0, le=1.0)
    # run control
    seed: int = _param(0, "random seed (weights, shuffling, z, dropout)", min=0, max=2**31 - 1)
    max_steps: int = _param(0, "stop after this many training steps (0 = no limit)", min=0)
    precision: str = _param("auto", "auto = mixed_bfloat16 on a GPU, float32 on a CPU",
                            choices=PRECISIONS)
    log_every: int = _param(50, "log step metrics every N training steps", min=1)
    checkpoint_dir: str = _param("checkpoints", "checkpoints go to CHECKPOINT_DIR/<mlflow run id>/")
    resume: bool = _param(False, "continue the run whose checkpoint under checkpoint_dir is newest")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.train_images and self.batch_size > self.train_images:
            raise ConfigError(
                f"batch_size must be in 1..train_images={self.train_images} (got {self.batch_size})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping, rejecting keys that are not parameters."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def resume_conflicts(self, checkpointed: dict[str, Any]) -> list[str]:
        """The parameters that differ from a checkpoint's config and may not change on resume."""
        changed = {k for k, v in checkpointed.items() if self.to_dict().get(k) != v}
        return sorted(changed - RESUMABLE_CHANGES)


def _check(f: dataclasses.Field, value: Any) -> None:
    name, meta = f.name, f.metadata
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[f.type]
    if isinstance(value, bool) and f.type != "bool" or not isinstance(value, expected):
        raise ConfigError(f"{name} must be of type {f.type} (got {value!r})")
    if f.type == "float" and math.isnan(value):
        raise ConfigError(f"{name} must be a number (got NaN)")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])} (got {value!r})")
    if f.type == "str" and not value:
        raise ConfigError(f"{name} must not be empty")
    lo, hi = meta.get("min", meta.get("ge", meta.get("gt"))), meta.get("max", meta.get("le", meta.get("lt")))
    too_low = ("gt" in meta and value <= meta["gt"]) or (lo is not None and "gt" not in meta and value < lo)
    too_high = ("lt" in meta and value >= meta["lt"]) or (hi is not None and "lt" not in meta and value > hi)
    if too_low or too_high:
        raise ConfigError(f"{name} must be in {_describe_range(meta)} (got {value!r})")


def _describe_range(meta: dict[str, Any]) -> str:
    left = f"({meta['gt']}" if "gt" in meta else f"[{meta.get('min', meta.get('ge', '-inf'))}"
    right = f"{meta['lt']})" if "lt" in meta else f"{meta.get('max', meta.get('le', 'inf'))}]"
    return f"{left}, {right}"


def check_range(name: str, value: float, low: float, high: float | None) -> None:
    """Raise ConfigError unless `value` is a number in [low, high] (high None: no upper bound)."""
    if math.isnan(value) or value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be in [{low}, {'inf' if high is None else high}] (got {value!r})")


def check_limit(name: str, value: float) -> None:
    """Raise ConfigError unless `value` is within JOB_LIMITS[name]."""
    check_range(name, value, *JOB_LIMITS[name])


def parameter_fields() -> list[dataclasses.Field]:
    """The parameters in declaration order, for deriving CLI flags and MLproject parameters."""
    return list(dataclasses.fields(TrainConfig))
