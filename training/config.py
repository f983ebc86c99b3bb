"""Every parameter of every job, with its default, its range and its help, declared once.

`TrainConfig` holds training's hyperparameters, `JobConfig` the rest of what a job is asked (how many
samples to evaluate, which registered model, the promotion rule). The CLI flags, the MLproject
parameters, the component inputs and the pipeline parameters are derived from these two classes or
tested against them; text becomes a value through `parse` and a value is judged by `check`, and
nothing else in the project converts or bounds a parameter. Validation runs before any heavy import.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("seed", "small", "tiny", "cpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
SELECTIONS = ("auto", "best", "last")
MNIST_TRAIN_IMAGES = 60_000
DEFAULT_DATA_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MAX_SAMPLES = 1_000_000
SEED_MAX = 2**31 - 1  # every seed a user gives (training, evaluation, sampling, serving)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}

# Parameters that may change between a run and its resumption; any other change is refused.
# `devices` among them: a checkpoint holds the state once, whatever the number of devices that wrote it.
RESUMABLE_CHANGES = {"epochs", "max_steps", "max_minutes", "resume", "log_every", "data", "checkpoint_dir",
                     "devices", "eval_every", "select"}

# The recipe a preset brings: the value a TrainConfig field takes where it is given as 0. seed, small and
# tiny are the post's recipe (small and tiny only shrink its widths); cpu is this project's own recipe for
# CPUs (docs/BENCHMARKS.md, "A recipe for CPUs", has the measurements that chose it).
SEED_RECIPE = {"batch_size": 128, "learning_rate": 2e-4, "n_iter_g": 5}
PRESET_RECIPES = {"seed": SEED_RECIPE, "small": SEED_RECIPE, "tiny": SEED_RECIPE,
                  "cpu": {"batch_size": 64, "learning_rate": 1e-3, "n_iter_g": 2}}

# Parameters newer than some checkpoints, with the value that reproduces how those were trained.
PREDATED_BY = {"ema_decay": 0.0}

# A registered model's name: MLflow's registry refuses "/", ":" and names that are not their own
# normalized path; its SQL stores hold 256 characters, and the promotion lock is a model named
# <name> + PROMOTION_LOCK_SUFFIX (training/promotion_lock.py).
PROMOTION_LOCK_SUFFIX = ".promotion-lock"
MODEL_NAME_MAX = 256 - len(PROMOTION_LOCK_SUFFIX)


class ConfigError(ValueError):
    """A parameter has a value outside its allowed range; the message names both."""


@dataclass(frozen=True)
class Param:
    """One parameter: its name, type ("int", "float", "str" or "bool"), default, help and bounds
    (min/max inclusive, gt/lt exclusive, ge/le inclusive for floats, or choices)."""

    name: str
    type: str
    default: Any
    help: str
    bounds: dict = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _param(default: Any, help: str, **bounds: Any) -> Any:
    return field(default=default, metadata={"help": help, **bounds})


def _by_preset(name: str) -> str:
    """Help's end for a field a preset chooses: "0 = the preset's: 128 (seed, small, tiny), 64 (cpu)"."""
    by_value: dict[Any, list[str]] = {}
    for preset, recipe in PRESET_RECIPES.items():
        by_value.setdefault(recipe[name], []).append(preset)
    return "0 = the preset's: " + ", ".join(f"{value:g} ({', '.join(presets)})"
                                             for value, presets in by_value.items())


class _Parameters:
    """What TrainConfig and JobConfig share: checked on construction, unknown keys refused."""

    def __post_init__(self) -> None:
        for param in params(type(self)):
            check(param, getattr(self, param.name))

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a mapping of typed values, rejecting keys that are not parameters."""
        unknown = sorted(set(values) - set(names(cls)))
        if unknown:
            raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_text(cls, values: dict[str, str]):
        """Build from a mapping of texts (flags, pipeline arguments), parsing each by its type."""
        by_name = {p.name: p for p in params(cls)}
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
        return cls(**{name: parse(by_name[name], raw) for name, raw in values.items()})

    @classmethod
    def pick(cls, values: dict[str, Any]):
        """Build from those entries of `values` that are parameters of this class (a component's or a
        pipeline's arguments), ignoring the others."""
        return cls.from_dict({name: values[name] for name in names(cls) if name in values})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig(_Parameters):
    # model and data
    preset: str = _param("seed", "G, D and their recipe: seed (the post's), small and tiny (the post's, "
                         "narrower), cpu (ours, for CPUs)", choices=PRESETS)
    data: str = _param(DEFAULT_DATA_URL, "mnist.npz source: https URL, local path or s3:// URI")
    train_images: int = _param(0, "use only the first N training images (0 = all)", min=0,
                               max=MNIST_TRAIN_IMAGES)
    # the seed's recipe
    epochs: int = _param(200, "passes of the training images through D", min=1)
    batch_size: int = _param(0, "real images per D step, D sees as many fakes (" + _by_preset("batch_size")
                             + ")", min=0, max=MNIST_TRAIN_IMAGES)
    learning_rate: float = _param(0.0, "Adam learning rate of D and G (" + _by_preset("learning_rate") + ")",
                                  ge=0.0, le=1.0)
    beta_1: float = _param(0.5, "Adam beta_1 of D and G", ge=0.0, lt=1.0)
    z_dim: int = _param(100, "dimension of the generator's input z ~ U(-1, 1)", min=1, max=4096)
    n_iter_d: int = _param(1, "D steps per training step", min=1, max=100)
    n_iter_g: int = _param(0, "G steps per training step (" + _by_preset("n_iter_g") + ")", min=0, max=100)
    real_label: float = _param(0.9, "D's target for real images (one-sided smoothing)", ge=0.0,
                               le=1.0)
    fake_label: float = _param(0.0, "D's target for generated images", ge=0.0, le=1.0)
    # the generator a run keeps: averaged, scored along the way, the best of it
    ema_decay: float = _param(0.999, "moving average of G's weights, the generator sampled, evaluated and "
                              "served (0 = off: the raw G)", ge=0.0, lt=1.0)
    eval_every: int = _param(5, "score the generator every N epochs and at the end: the FID curve in "
                             "MLflow (0 = off)", min=0)
    eval_samples: int = _param(2000, "samples scored per point of the FID curve", min=100, max=60_000)
    select: str = _param("auto", "the generator a run exports: best (lowest FID of the curve), last, or "
                         "auto (best when the curve is on)", choices=SELECTIONS)
    # run control
    seed: int = _param(0, "random seed (weights, shuffling, z, dropout)", min=0, max=SEED_MAX)
    max_steps: int = _param(0, "stop after this many training steps (0 = no limit)", min=0)
    max_minutes: float = _param(0.0, "stop after this many minutes of training, compilation and FID curve "
                                "included, summed over resumed calls (0 = no limit)", ge=0.0)
    precision: str = _param("auto", "auto = mixed_bfloat16 on a GPU, float32 on a CPU",
                            choices=PRECISIONS)
    devices: int = _param(1, "local accelerators to train on, data-parallel (JAX backend); each step's "
                          "batch is split across them, so batch_size must divide evenly", min=1, max=64)
    log_every: int = _param(50, "log step metrics every N training steps", min=1)
    checkpoint_dir: str = _param("checkpoints", "checkpoints go to CHECKPOINT_DIR/<mlflow run id>/")
    resume: bool = _param(False, "continue the run whose checkpoint under checkpoint_dir is newest")

    def __post_init__(self) -> None:
        chosen = [name for name in PRESET_RECIPES.get(self.preset, {}) if getattr(self, name) == 0]
        for name in chosen:
            object.__setattr__(self, name, PRESET_RECIPES[self.preset][name])
        object.__setattr__(self, "_chosen_by_preset", tuple(chosen))
        super().__post_init__()
        if self.batch_size % self.devices:
            raise ConfigError(f"batch_size must be a multiple of devices={self.devices} (got "
                              f"{self.batch_size}): each device takes an equal share of every batch")
        if self.select == "best" and not self.eval_every:
            raise ConfigError("select=best needs the FID curve (eval_every > 0); use select=last or auto")
        if self.train_images and self.batch_size > self.train_images:
            raise ConfigError(
                f"batch_size must be in 1..train_images={self.train_images} (got {self.batch_size})")

    def as_given(self) -> dict[str, Any]:
        """The values as given: 0 where the preset chose."""
        return self.to_dict() | {name: 0 for name in self._chosen_by_preset}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes`; what the preset chose is chosen again, by the new preset if it changes."""
        return dataclasses.replace(self, **self.as_given() | changes)

    @property
    def keeps_best(self) -> bool:
        """Whether the run exports the best generator of its FID curve rather than the last."""
        return self.select == "best" or (self.select == "auto" and self.eval_every > 0)

    def resume_conflicts(self, checkpointed: dict[str, Any]) -> list[str]:
        """The parameters that differ from a checkpoint's config and may not change on resume."""
        changed = {k for k, v in (PREDATED_BY | checkpointed).items() if self.to_dict().get(k) != v}
        return sorted(changed - RESUMABLE_CHANGES)


@dataclass(frozen=True)
class JobConfig(_Parameters):
    samples: int = _param(10_000, "generated images to evaluate (the same N for every compared model)",
                          min=10, max=MAX_SAMPLES)
    model_name: str = _param("mnist-gan-generator", "registered model name (no '/' or ':')",
                             registered_model_name=True)
    min_fid_gain: float = _param(0.0, "promote only when FID drops by more than this", ge=0.0)
    max_classes_lost: int = _param(0, "classes covered the challenger may lose against the champion",
                                   min=0, max=10)
    min_classes_covered: int = _param(10, "classes a generator must cover to be promoted at all",
                                      min=0, max=10)
    confidence: float = _param(0.95, "promote on FID only when the head-to-head gain with the champion "
                               "exceeds min_fid_gain with this confidence (beyond evaluation noise)",
                               ge=0.5, lt=1.0)


def params(cls) -> list[Param]:
    """The parameters of TrainConfig or JobConfig, in declaration order."""
    return [Param(f.name, f.type, f.default, f.metadata["help"],
                  {k: v for k, v in f.metadata.items() if k != "help"}) for f in dataclasses.fields(cls)]


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def param(cls, name: str) -> Param:
    """One parameter of a config class, e.g. param(TrainConfig, "seed")."""
    return next(p for p in params(cls) if p.name == name)


def parse(param: Param, raw: Any) -> Any:
    """Text -> the parameter's type (a value already of that type passes). The one place where
    "true"/"yes"/"1" become True; anything else not in TRUE or FALSE is refused, naming the parameter."""
    if not isinstance(raw, str):
        return raw
    try:
        if param.type == "bool":
            if raw.strip().lower() not in TRUE + FALSE:
                raise ValueError
            return raw.strip().lower() in TRUE
        return {"int": int, "float": float, "str": str}[param.type](raw)
    except ValueError:
        raise ConfigError(f"{param.name} must be {KINDS[param.type]} (got {raw!r})") from None


def check(param: Param, value: Any) -> None:
    """Raise ConfigError unless `value` has the parameter's type and lies within its bounds."""
    name, bounds = param.name, param.bounds
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[param.type]
    if isinstance(value, bool) and param.type != "bool" or not isinstance(value, expected):
        raise ConfigError(f"{name} must be of type {param.type} (got {value!r})")
    if param.type == "float" and math.isnan(value):
        raise ConfigError(f"{name} must be a number (got NaN)")
    if "choices" in bounds and value not in bounds["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(bounds['choices'])} (got {value!r})")
    if param.type == "str" and not value:
        raise ConfigError(f"{name} must not be empty")
    if bounds.get("registered_model_name"):
        _check_registered_model_name(name, value)
    low = bounds.get("min", bounds.get("ge"))
    high = bounds.get("max", bounds.get("le"))
    too_low = ("gt" in bounds and value <= bounds["gt"]) or (low is not None and value < low)
    too_high = ("lt" in bounds and value >= bounds["lt"]) or (high is not None and value > high)
    if too_low or too_high:
        raise ConfigError(f"{name} must be in {_describe_range(bounds)} (got {value!r})")


def _check_registered_model_name(name: str, value: str) -> None:
    """What MLflow's registry would refuse at `register`, after training: refused before anything runs.
    (Without "/", MLflow's own rule, a name equal to its normalized path, leaves out "." and "..*".)"""
    if not value.strip():
        raise ConfigError(f"{name} must not be blank")
    if "/" in value or ":" in value:
        raise ConfigError(f"{name} must be a registered model name, without '/' or ':' (got {value!r})")
    if value == "." or value.startswith(".."):
        raise ConfigError(f"{name} must be a registered model name, not '.' or starting with '..' "
                          f"(got {value!r})")
    if len(value) > MODEL_NAME_MAX:
        raise ConfigError(f"{name} must be a registered model name of at most {MODEL_NAME_MAX} characters "
                          f"(got {len(value)})")


def parse_and_check(param: Param, raw: Any) -> Any:
    value = parse(param, raw)
    check(param, value)
    return value


def _describe_range(bounds: dict[str, Any]) -> str:
    left = f"({bounds['gt']}" if "gt" in bounds else f"[{bounds.get('min', bounds.get('ge', '-inf'))}"
    right = f"{bounds['lt']})" if "lt" in bounds else f"{bounds.get('max', bounds.get('le', 'inf'))}]"
    return f"{left}, {right}"
