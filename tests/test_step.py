"""TensorFlow and JAX compute the same training step: same losses, same weight updates."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import QUICK, ROOT, cli_env, run_cli

METRICS = ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake")


def _one_step(backend: str, *args: str, tmp_path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "one_step.py"), *args], check=True,
                   env=cli_env(tmp_path, backend=backend), timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_tensorflow_and_jax_take_the_same_step(tmp_path):
    start, after_tf, after_jax = (tmp_path / n for n in ("start.npz", "tf.npz", "jax.npz"))
    _one_step("tensorflow", "init", str(start), tmp_path=tmp_path)
    _one_step("tensorflow", "step", str(start), str(after_tf), tmp_path=tmp_path)
    _one_step("jax", "step", str(start), str(after_jax), tmp_path=tmp_path)
    with np.load(start) as s0, np.load(after_tf) as tf, np.load(after_jax) as jx:
        for name in METRICS:
            np.testing.assert_allclose(tf[name], jx[name], rtol=1e-4, atol=1e-6, err_msg=name)
        leaves = [k for k in s0.files if k.startswith("arr_")]
        assert leaves == [k for k in tf.files if k.startswith("arr_")]
        moved = 0
        for key in leaves:
            update_tf, update_jax = tf[key] - s0[key], jx[key] - s0[key]
            scale = max(np.abs(update_tf).max(), 1e-12)
            np.testing.assert_allclose(update_jax, update_tf, atol=1e-3 * scale + 1e-7, err_msg=key)
            moved += bool(np.any(update_tf != 0))
        assert moved > len(leaves) // 2, "the step changed almost nothing: nothing was compared"


@pytest.mark.slow
def test_tensorflow_step_compiles_with_xla(tmp_path, mnist_path):
    """XLA is what a GPU uses by default; here it is forced on the CPU so that the path stays tested."""
    result = run_cli(["train", "--data", str(mnist_path), *QUICK, "--max-steps", "2", "--epochs", "1"],
                     tmp_path, MNIST_GAN_XLA="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 steps" in result.stdout
