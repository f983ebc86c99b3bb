"""Shared fixtures: the real MNIST, a scratch working directory, the CLI as a subprocess, and the check that
each test leaves the process as it found it (tests/support/process_state.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import process_state
from training.config import DEFAULT_DATA_URL
from training.data import CACHE_DIR, DataError, load_mnist

ROOT = Path(__file__).resolve().parents[1]
# Where the tests take the real MNIST from: this file if set, else the project's download cache, else a
# checked download from TEST_DATA_URL (the public file unless a mirror is named).
TEST_DATA = "MNIST_GAN_TEST_DATA"
TEST_DATA_URL = "MNIST_GAN_TEST_DATA_URL"
# Fast settings shared by the tests that train: preset cpu (batch 64, 1 D : 2 G steps; the cheapest step
# to trace and to take) on a slice of the real digits.
QUICK = ["--preset", "cpu", "--train-images", "256", "--log-every", "2", "--eval-samples", "500"]


def find_test_mnist(environ: dict[str, str]) -> Path:
    """The real MNIST the tests train and score on, validated like any local .npz or download.

    In order: $MNIST_GAN_TEST_DATA (a local .npz); the project's download cache, which
    `mnist-gan data download` and every run on the default URL fill; a sha256-checked download of
    $MNIST_GAN_TEST_DATA_URL (default: the public file) into that cache.
    """
    given = environ.get(TEST_DATA)
    if given:
        path = Path(given).expanduser().resolve()
        try:
            load_mnist(str(path))
        except DataError as err:
            raise DataError(f"{TEST_DATA}={given}: {err}") from None
        return path
    url = environ.get(TEST_DATA_URL) or DEFAULT_DATA_URL
    try:
        return load_mnist(url).path
    except DataError as err:
        raise DataError(f"the tests need the real MNIST and could not get it ({err}): with internet, "
                        f"they download it once into {CACHE_DIR}; offline, set {TEST_DATA}=/path/to/"
                        "mnist.npz (`mnist-gan data download --to mnist.npz` writes one with internet)"
                        ) from None


def pytest_configure(config):
    """Once per test run, before any test (xdist's workers inherit the result from the controller)."""
    if hasattr(config, "workerinput"):
        return
    try:
        os.environ[TEST_DATA] = str(find_test_mnist(dict(os.environ)))
    except DataError as err:
        raise pytest.UsageError(str(err)) from None


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After a failed run in random order, the seed that repeats the order (pytest-randomly says it only in
    the header, which -q, as `make test` runs, leaves out)."""
    seed = config.getoption("randomly_seed", None)
    randomized = isinstance(seed, int) and config.pluginmanager.hasplugin("randomly")
    if randomized and exitstatus != pytest.ExitCode.OK:
        terminalreporter.write_line(f"tests ran in random order: --randomly-seed={seed} repeats it")


_between_tests: dict[str, object] = {}  # the process's state after the last test's check


def pytest_sessionstart(session):
    _between_tests.update(process_state.snapshot())


@pytest.fixture(autouse=True)
def _process_left_as_found():
    """Fail a test that leaves the working directory, the environment, MLflow's tracking or registry URI,
    active experiment or active run, or Keras's global settings changed, naming what, and put them back:
    one test's leftovers change what the tests after it do, in an order each run draws anew
    (pytest-randomly). A fixture of wider scope (module, session) that changes them fails the first test
    it is set up for. Change them with monkeypatch, or MLflow's with process_state.tracking_to."""
    before = process_state.snapshot()
    if changed := process_state.changes(_between_tests, before):
        process_state.restore(_between_tests)
        pytest.fail("a fixture of wider scope than this test (module, session) left process-wide state "
                    f"changed, now put back: {'; '.join(changed)}", pytrace=False)
    yield
    after = process_state.snapshot()
    if changed := process_state.changes(before, after):
        process_state.restore(before)
        pytest.fail(f"the test left process-wide state changed, now put back: {'; '.join(changed)}",
                    pytrace=False)
    _between_tests.clear()
    _between_tests.update(after)


@pytest.fixture
def kept_environment():
    """For a test that runs an entry point in this process (training.cli.main), which sets up the
    environment as its process's own: the environment as it was, after the test."""
    with process_state.environment_kept():
        yield


@pytest.fixture
def tracking_to():
    """`tracking_to(uri)`: this process's MLflow tracks to `uri` until the test ends, then MLflow's
    settings are what they were (process_state.tracking_to)."""
    with contextlib.ExitStack() as stack:
        yield lambda uri: stack.enter_context(process_state.tracking_to(uri))


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    return Path(os.environ[TEST_DATA])


def cli_env(tmp_path: Path, backend: str = "tensorflow", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", MNIST_GAN_CACHE=str(CACHE_DIR),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.update(extra)
    return env


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """`mnist-gan ARGS` in tmp_path, as a user runs it; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=tmp_path,
                          env=cli_env(tmp_path, **env), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="session")
def host_classifier(mnist_path):
    """The evaluator classifier in this machine's cache (trained there once), which the docker runner
    mounts read-only into the containers: the pipeline's train-classifier task loads it."""
    from training import classifier
    from training.data import load_mnist

    return classifier.load_or_train(load_mnist(str(mnist_path)))


@pytest.fixture(scope="session")
def lab(tmp_path_factory, mnist_path):
    """One tracking database with a trained and a collapsed generator, each evaluated
    (tests/support/two_generators.py)."""
    from tests.support.two_generators import open_lab

    return open_lab(tmp_path_factory.mktemp("lab"), mnist_path)
