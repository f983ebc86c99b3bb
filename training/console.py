"""What the console shows: the project's own lines (what happened, where the result is); the start-up
notices of TensorFlow, absl and MLflow only when asked for, with `--verbose` or
MNIST_GAN_LOG_LEVEL=debug. Called by the CLI before anything imports them (they read their settings at
import)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

from training.redaction import redacted

LEVEL_VARIABLE = "MNIST_GAN_LOG_LEVEL"


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(LEVEL_VARIABLE, "").lower() == "debug"


# What C++ libraries print through absl before it is set up, whatever TF_CPP_MIN_LOG_LEVEL says (TensorFlow
# 2.21: "oneDNN custom operations are on" on CPUs with AVX-512): the banner and INFO lines.
NATIVE_NOTICE = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written"
                           rb"|I\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] ")


@contextlib.contextmanager
def native_notices_hidden():
    """The process's file descriptor 2 through a filter that drops NATIVE_NOTICE lines and passes every
    other line on, in order (Python's own stderr included), any URL in it redacted; restored, and
    everything passed on, at exit."""
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    passed_on = os.dup(terminal)  # the forwarder's own: `terminal` is restored and closed at exit

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines, os.fdopen(passed_on, "wb", buffering=0) as out:
            for line in lines:
                if not NATIVE_NOTICE.match(line):  # and a library's line quoting a URL, without its secrets
                    out.write(redacted(line.decode(errors="surrogateescape")).encode(errors="surrogateescape"))

    forwarder = threading.Thread(target=forward, name="native-notices", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes this process's write end: the forwarder reads to the end and stops
        os.close(terminal)
        forwarder.join(timeout=10)


def quiet(verbose: bool):
    """What a command runs in: third-party notices hidden, unless verbose."""
    configure(verbose)
    return contextlib.nullcontext() if verbose else native_notices_hidden()


def configure(verbose: bool) -> None:
    """Third-party logging at its defaults when verbose; else warnings and errors only (a user's own
    settings of these variables win)."""
    if verbose:
        return
    for name, quiet in QUIET.items():
        if not os.environ.get(name):
            os.environ[name] = quiet


QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ notices: oneDNN, CPU features, grappler
         "MLFLOW_LOGGING_LEVEL": "WARNING",  # system-metrics start/stop, database set-up
         # "🏃 View run ... at:" after every run on a tracking server: our own lines link the training view
         "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
