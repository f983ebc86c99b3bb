"""Data-parallel training (devices > 1, JAX backend) computes what one device computes, its checkpoints
resume on any device count, and the settings it cannot honour are refused before training.

Virtual devices exist only if XLA_FLAGS asks for them before JAX is imported, and this process runs the
TensorFlow backend, so the JAX parts run in subprocesses with 4 virtual CPU devices.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import QUICK, ROOT, cli_env, run_cli
from training import cli

VIRTUAL_DEVICES = {"backend": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
METRICS = ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake")
# Measured on preset cpu at batch 16: the 4-device step's weights are within 2.2e-4 of the 1-device step's
# update (per tensor, relative to its largest change) and its losses within 1e-7 relative. Not zero: each
# device sums its quarter of the batch and an all-reduce adds the four partial sums, another float32
# summation order (batch means, batch-norm statistics, gradients). 2e-3 of the update leaves a 9x margin,
# while the same step on another batch is off by 2x the update in some tensor.
UPDATE_RTOL, METRIC_RTOL = 2e-3, 1e-5


def _leaves(saved, run: str, prefix: str = "leaf") -> list[np.ndarray]:
    count = len([k for k in saved.files if k.startswith(f"one_device_{prefix}_")])
    return [saved[f"{run}_{prefix}_{i}"] for i in range(count)]


def _same_update(saved, run: str) -> bool:
    """Whether `run`'s step moved every tensor as the one-device step did, within UPDATE_RTOL."""
    start, reference, other = _leaves(saved, "one_device", "start_leaf"), _leaves(saved, "one_device"), \
        _leaves(saved, run)
    for s, r, o in zip(start, reference, other, strict=True):
        update, other_update = r.astype(np.float64) - s, o.astype(np.float64) - s
        if np.abs(other_update - update).max() > UPDATE_RTOL * max(np.abs(update).max(), 1e-12):
            return False
    return True


def _on_virtual_devices(mode: str, out, mnist_path, tmp_path) -> None:
    script = ROOT / "tests" / "support" / "data_parallel_runs.py"
    subprocess.run([sys.executable, str(script), mode, str(mnist_path), str(out)], check=True,
                   env=cli_env(tmp_path, **VIRTUAL_DEVICES), timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_four_devices_take_the_one_device_step(tmp_path, mnist_path):
    out = tmp_path / "steps.npz"
    _on_virtual_devices("step", out, mnist_path, tmp_path)
    with np.load(out) as saved:
        for run in ("four_devices", "other_batch"):
            for a, b in zip(_leaves(saved, "one_device", "start_leaf"), _leaves(saved, run, "start_leaf")):
                np.testing.assert_array_equal(a, b, err_msg=f"{run} started from other weights")
        assert saved["one_device_devices"] == 1 and saved["one_device_all_reduces"] == 0
        assert saved["four_devices_devices"] == 4 and saved["four_devices_replicated"]
        assert saved["four_devices_all_reduces"] > 0, "no all-reduce: the batch was not split"
        for name in METRICS:
            np.testing.assert_allclose(saved[f"four_devices_{name}"], saved[f"one_device_{name}"],
                                       rtol=METRIC_RTOL, err_msg=name)
        assert _same_update(saved, "four_devices")
        moved = [np.any(r != s) for r, s in zip(_leaves(saved, "one_device"),
                                                _leaves(saved, "one_device", "start_leaf"))]
        assert sum(moved) > len(moved) // 2, "the step changed almost nothing: nothing was compared"
        assert not _same_update(saved, "other_batch"), "another batch passed for the same step"


@pytest.mark.slow
def test_a_run_on_two_devices_resumes_on_one(tmp_path, mnist_path):
    out = tmp_path / "resume.json"
    _on_virtual_devices("resume", out, mnist_path, tmp_path)
    report = json.loads(out.read_text())
    two, one = report["two_devices"], report["resumed_on_one"]
    assert (two["config"]["devices"], one["config"]["devices"]) == (2, 1)
    assert two["global_step"] == two["checkpoint_step"] == 3  # 4 steps an epoch: stopped mid-epoch
    assert one["global_step"] == one["checkpoint_step"] == 8
    assert one["logged_at"] == [2, 3, 4, 6, 8], "the resumed part continues at the checkpoint's step 3"
    assert (two["device"], one["device"]) == ("2 x cpu", "cpu")


def test_a_batch_the_devices_cannot_share_is_refused(capsys, kept_environment):
    code = cli.main(["train", "--devices", "3", "--batch-size", "8", "--data", "/nonexistent/mnist.npz"])
    assert code == 2
    assert "batch_size must be a multiple of devices=3 (got 8)" in capsys.readouterr().err


def test_several_devices_on_tensorflow_are_refused_before_training(tmp_path, mnist_path):
    done = run_cli(["train", "--data", str(mnist_path), *QUICK, "--devices", "2"], tmp_path,
                   backend="tensorflow")
    assert done.returncode == 2
    assert "devices=2 needs the JAX backend (KERAS_BACKEND=jax)" in done.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "mlflow.db").exists()


def test_more_devices_than_jax_sees_are_refused(tmp_path, mnist_path):
    done = run_cli(["train", "--data", str(mnist_path), *QUICK, "--devices", "8"], tmp_path,
                   **VIRTUAL_DEVICES)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "devices=8, but JAX sees only 4 local device(s)" in done.stderr
    assert "Epoch" not in done.stdout


@pytest.mark.slow
def test_mnist_gan_train_uses_all_four_devices_it_is_given(tmp_path, mnist_path):
    """What a pipeline's training task with --gpu-count 4 runs (KERAS_BACKEND=jax, devices=4), on 4
    virtual CPU devices: a tracked run whose params name the 4 devices."""
    import mlflow

    done = run_cli(["train", "--data", str(mnist_path), *QUICK, "--devices", "4", "--max-steps", "2"],
                   tmp_path, **VIRTUAL_DEVICES)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["1"])
    assert run.info.status == "FINISHED"
    assert (run.data.params["devices"], run.data.params["device"], run.data.params["backend"]) == (
        "4", "4 x cpu", "jax")
    assert run.data.tags["global_step"] == "2"
