"""Shared fixtures: the real MNIST, a scratch working directory, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = (ROOT.parent / "shared" / "data" / "mnist.npz").resolve()
# Fast settings shared by the tests that train: the tiny preset on a slice of the real digits.
TINY = ["--preset", "tiny", "--train-images", "256", "--batch-size", "64", "--log-every", "2",
        "--eval-samples", "500"]
# The evaluator classifier is trained once (about a minute) and reused by every test and test run.
TEST_CACHE = ROOT / ".pytest_cache" / "mnist-gan-cache"


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    if not MNIST.is_file():
        pytest.fail(f"the real MNIST is expected at {MNIST} (see shared/data/README.md)")
    return MNIST


def cli_env(tmp_path: Path, backend: str = "tensorflow", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", MNIST_GAN_CACHE=str(TEST_CACHE),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.update(extra)
    return env


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """`mnist-gan ARGS` in tmp_path, as a user runs it; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=tmp_path,
                          env=cli_env(tmp_path, **env), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="session")
def lab(tmp_path_factory, mnist_path):
    """One tracking database with a trained and a collapsed generator, each evaluated (tests/lab.py)."""
    import mlflow

    from tests.lab import open_lab

    yield open_lab(tmp_path_factory.mktemp("lab"), mnist_path)
    mlflow.set_tracking_uri(None)
