"""What one test may change for every test after it in the same process, and how it is put back: the
working directory, the environment, MLflow's tracking and registry URIs, active experiment and active run,
and Keras's global settings. tests/conftest.py fails a test that leaves any of them changed; `tracking_to`
points this process's MLflow at a store for one block and puts all of MLflow's settings back after it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# Set by the libraries themselves when first imported (TensorFlow, MLflow), not by a test: one added
# during a test is that test's first import, and stays for every later test as it would outside tests.
SET_ON_IMPORT = frozenset({
    "TF2_BEHAVIOR", "TF_CPP_MIN_LOG_LEVEL", "TPU_ML_PLATFORM", "TPU_ML_PLATFORM_VERSION",
    "TPU_SKIP_MDS_QUERY", "HDF5_PLUGIN_PATH", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK",
    "ENABLE_RUNTIME_UPTIME_TELEMETRY"})
# Libraries' own bookkeeping, set and removed by them as they go: pytest's for each phase of a test,
# MLflow's telemetry session
UNWATCHED = frozenset({"PYTEST_CURRENT_TEST", "_MLFLOW_TELEMETRY_SESSION_ID"})
# The environment variables through which MLflow hands its settings to subprocesses (it sets them itself)
MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
                    "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")

CWD, ENVIRONMENT = "working directory", "environment"
TRACKING_URI, REGISTRY_URI = "MLflow tracking URI (mlflow.set_tracking_uri)", "MLflow registry URI"
EXPERIMENT, RUN = "MLflow active experiment (mlflow.set_experiment)", "MLflow active run (mlflow.start_run)"
DTYPE_POLICY, FLOATX, DATA_FORMAT = "Keras dtype policy", "Keras floatx", "Keras image data format"


def _mlflow_modules():
    """MLflow's modules that hold its process-wide settings, or None while no test has imported MLflow
    (then nothing can have set them)."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    return tracking, registry, fluent


def snapshot() -> dict[str, object]:
    """The process-wide state a test must leave as it found it, by name."""
    state: dict[str, object] = {CWD: os.getcwd(),
                                ENVIRONMENT: {k: v for k, v in os.environ.items() if k not in UNWATCHED}}
    modules = _mlflow_modules()
    if modules:
        tracking, registry, fluent = modules
        run = fluent.active_run()
        state |= {TRACKING_URI: tracking._tracking_uri, REGISTRY_URI: registry._registry_uri,
                  EXPERIMENT: fluent._active_experiment_id, RUN: run and run.info.run_id}
    if "keras" in sys.modules:
        import keras

        state |= {DTYPE_POLICY: keras.config.dtype_policy().name, FLOATX: keras.config.floatx(),
                  DATA_FORMAT: keras.config.image_data_format()}
    return state


def changes(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What differs, in words. Environment variables are named, never their values (credentials). A
    setting missing before (its library not yet imported) counts as unset."""
    said = []
    was, now = before[ENVIRONMENT], after[ENVIRONMENT]
    for verb, names in (("added", set(now) - set(was) - SET_ON_IMPORT), ("removed", set(was) - set(now)),
                        ("changed", {k for k in set(was) & set(now) if was[k] != now[k]})):
        if names:
            said.append(f"environment variables {verb}: {', '.join(sorted(names))}")
    for name, value in after.items():
        was = before.get(name, KERAS_DEFAULTS.get(name))
        if name != ENVIRONMENT and value != was:
            said.append(f"{name}: {was!r} before, {value!r} after")
    return said


# Keras's settings when first imported: what a test that imports it must leave
KERAS_DEFAULTS = {DTYPE_POLICY: "float32", FLOATX: "float32", DATA_FORMAT: "channels_last"}


def restore(before: dict[str, object]) -> None:
    """Put back what `snapshot` found (runs started since are ended as killed)."""
    os.chdir(before[CWD])
    modules = _mlflow_modules()
    if modules:
        tracking, registry, fluent = modules
        _end_runs_above(fluent, 0 if before.get(RUN) is None else 1)
        tracking.set_tracking_uri(before.get(TRACKING_URI))
        registry._registry_uri = before.get(REGISTRY_URI)
        fluent._active_experiment_id = before.get(EXPERIMENT)
    if "keras" in sys.modules:
        import keras

        keras.config.set_dtype_policy(before.get(DTYPE_POLICY, KERAS_DEFAULTS[DTYPE_POLICY]))
        keras.config.set_floatx(before.get(FLOATX, KERAS_DEFAULTS[FLOATX]))
        keras.config.set_image_data_format(before.get(DATA_FORMAT, KERAS_DEFAULTS[DATA_FORMAT]))
    environment = before[ENVIRONMENT]
    for name in set(os.environ) - set(environment) - SET_ON_IMPORT - UNWATCHED:
        del os.environ[name]
    os.environ.update(environment)


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """The environment as it was before the block, after it: for an entry point run in this process
    (training.cli.main), which sets the environment up as its process's own."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved) - SET_ON_IMPORT - UNWATCHED:
            del os.environ[name]
        os.environ.update(saved)


@contextlib.contextmanager
def tracking_to(uri: str) -> Iterator[None]:
    """This process's MLflow tracks to `uri` inside the block (for MLflow's fluent API: mlflow.start_run,
    set_experiment, log_*); after it, its tracking and registry URIs, active experiment and the
    environment variables that carry them are what they were, and runs started in it are ended."""
    import mlflow

    tracking, registry, fluent = _mlflow_modules()
    saved = (tracking._tracking_uri, registry._registry_uri, fluent._active_experiment_id)
    variables = {name: os.environ.get(name) for name in MLFLOW_VARIABLES}
    runs = len(fluent._active_run_stack.get())
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        _end_runs_above(fluent, runs)
        tracking.set_tracking_uri(saved[0])
        registry._registry_uri, fluent._active_experiment_id = saved[1:]
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _end_runs_above(fluent, depth: int) -> None:
    """End (as killed) the runs on MLflow's stack of active runs above its first `depth`; one whose store
    is gone (a test's tmp_path) is only taken off the stack."""
    stack = fluent._active_run_stack.get()
    while len(stack) > depth:
        try:
            fluent.end_run("KILLED")
        except Exception:  # noqa: BLE001 (its store may be gone; the run leaves the stack all the same)
            if len(stack) > depth:
                stack.pop()
