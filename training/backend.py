"""Everything that differs between Keras backends, and nothing else.

The backend is chosen by KERAS_BACKEND (default tensorflow), as Keras itself does. Nothing here imports
TensorFlow when the backend is JAX, so a GPU host with only JAX runs the same training code.
"""

from __future__ import annotations

import contextlib
import functools
import os
from importlib import metadata

import keras

from training.config import ConfigError

SUPPORTED = ("tensorflow", "jax")
BATCH_AXIS = "batch"  # the one axis of the device mesh: data parallelism only


def name() -> str:
    return keras.backend.backend()


def check_supported() -> None:
    if name() not in SUPPORTED:
        raise RuntimeError(f"KERAS_BACKEND={name()} is not supported; use one of {', '.join(SUPPORTED)}")


def value_and_grad(fn):
    """fn(params, ...) -> (loss, aux)  becomes  (params, ...) -> ((loss, aux), d loss / d params)."""
    if name() == "jax":
        import jax

        return jax.value_and_grad(fn, has_aux=True)
    import tensorflow as tf

    @functools.wraps(fn)
    def with_tape(params, *args):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss, aux = fn(params, *args)
        return (loss, aux), tape.gradient(loss, params)

    return with_tape


class DataParallel:
    """Training on the first `count` local devices (JAX backend): the state and the dataset replicated on
    each, every batch split across them along its batch axis. jax.jit (GSPMD) then compiles the step
    for the whole mesh: it computes what the single-device step computes, the gradients averaged over the
    global batch by an all-reduce. With one device every method is the identity: no extra ops."""

    def __init__(self, count: int = 1):
        self.count = count
        self.mesh = None
        if count == 1:
            return
        if name() != "jax":
            raise ConfigError(f"devices={count} needs the JAX backend (KERAS_BACKEND=jax); "
                              f"{name()} trains on one device")
        import jax
        import numpy as np

        from training.checks import local_devices

        self.mesh = jax.sharding.Mesh(np.array(local_devices(count)), (BATCH_AXIS,))

    def replicate(self, tree):
        """A copy of a nest of arrays on every device of the mesh."""
        if self.mesh is None:
            return tree
        import jax

        return jax.device_put(tree, self.sharding())

    def split_batch(self, tree):
        """Inside the compiled step: arrays (n, B, ...), n stacked updates of batch B, each split
        across the devices along B (each holds (n, B / count, ...))."""
        if self.mesh is None:
            return tree
        import jax

        return jax.lax.with_sharding_constraint(tree, self.sharding(None, BATCH_AXIS))

    def sharding(self, *spec):
        """Arrays laid out over the mesh as PartitionSpec(*spec) says; no spec: replicated."""
        import jax

        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*spec))


def compile_step(step, parallel: DataParallel | None = None):
    """Compile step(state, *inputs) -> (state, metrics) once: jax.jit (donating the state) or
    tf.function, with XLA where `use_xla()` says so. Over several devices, the new state and the
    metrics come back replicated, like the state that went in."""
    if name() == "jax":
        import jax

        if parallel is not None and parallel.mesh is not None:
            return jax.jit(step, donate_argnums=0, out_shardings=parallel.sharding())
        return jax.jit(step, donate_argnums=0)
    import tensorflow as tf

    return tf.function(step, jit_compile=use_xla(), reduce_retracing=True)


def use_xla() -> bool:
    """TensorFlow's XLA: on a GPU only by default (on 2 CPU cores it made the small preset's step 3x
    slower); MNIST_GAN_XLA=1 or 0 overrides."""
    choice = os.environ.get("MNIST_GAN_XLA", "auto").lower()
    if choice not in ("auto", "1", "0"):
        raise RuntimeError(f"MNIST_GAN_XLA must be auto, 1 or 0 (got {choice!r})")
    return accelerator() == "gpu" if choice == "auto" else choice == "1"


@functools.cache
def accelerator() -> str:
    """'gpu' when the backend sees a GPU, else 'cpu'."""
    if name() == "jax":
        import jax

        return "gpu" if any(d.platform == "gpu" for d in jax.devices()) else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def device_description(devices: int = 1) -> str:
    """What training runs on: the device kind, with the count when it trains on several."""
    if name() == "jax":
        import jax

        kinds = ", ".join(sorted({d.device_kind for d in jax.local_devices()[:devices]}))
        return kinds if devices == 1 else f"{devices} x {kinds}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{len(gpus)} x {details.get('device_name', 'GPU')}"


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and the backend. Without XLA, TensorFlow's kernels are made deterministic
    too: its deterministic mode has no XLA MaxPool gradient, so XLA runs are seeded, not bit-exact."""
    keras.utils.set_random_seed(seed)
    if name() == "tensorflow" and not use_xla():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def to_numpy(tree):
    """Fetch a nest of device tensors to host NumPy arrays (one sync)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def resolve_precision(requested: str) -> str:
    """The Keras dtype policy a config's `precision` stands for: `auto` is mixed_bfloat16 on a GPU."""
    if requested != "auto":
        return requested
    return "mixed_bfloat16" if accelerator() == "gpu" else "float32"


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Name -> installed version of those of `packages` that are installed."""
    versions = {}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions
