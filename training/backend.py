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

SUPPORTED = ("tensorflow", "jax")


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


def compile_step(step):
    """Compile step(state, *inputs) -> (state, metrics) once: jax.jit (donating the state) or
    tf.function, with XLA where `use_xla()` says so."""
    if name() == "jax":
        import jax

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


def device_description() -> str:
    if name() == "jax":
        import jax

        return ", ".join(sorted({d.device_kind for d in jax.devices()}))
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
