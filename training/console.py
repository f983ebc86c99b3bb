"""What the console shows: the project's own lines (what happened, where the result is); the start-up
notices of TensorFlow, absl and MLflow only when asked for, with `--verbose` or
MNIST_GAN_LOG_LEVEL=debug. Called by the CLI before anything imports them (they read their settings at
import)."""

from __future__ import annotations

import os

LEVEL_VARIABLE = "MNIST_GAN_LOG_LEVEL"


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(LEVEL_VARIABLE, "").lower() == "debug"


def configure(verbose: bool) -> None:
    """Third-party logging at its defaults when verbose; else warnings and errors only (a user's own
    settings of these variables win)."""
    if verbose:
        return
    for name, quiet in QUIET.items():
        if not os.environ.get(name):
            os.environ[name] = quiet


QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ notices: oneDNN, CPU features, grappler
         "MLFLOW_LOGGING_LEVEL": "WARNING"}  # system-metrics start/stop, database set-up
