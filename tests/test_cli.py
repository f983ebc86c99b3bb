"""Every bad parameter: one line on stderr naming it, exit code 2, nothing tracked, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

BAD_FLAGS = [
    (["--epochs", "0"], "epochs must be in [1, inf]"),
    (["--epochs", "many"], "epochs must be an integer"),
    (["--batch-size", "-1"], "batch_size must be in [0, 60000]"),
    (["--learning-rate", "2"], "learning_rate must be in [0.0, 1.0]"),
    (["--max-minutes", "-1"], "max_minutes must be in [0.0, inf]"),
    (["--learning-rate", "fast"], "learning_rate must be a number"),
    (["--beta-1", "1"], "beta_1 must be in [0.0, 1.0)"),
    (["--n-iter-d", "0"], "n_iter_d must be in [1, 100]"),
    (["--n-iter-g", "-3"], "n_iter_g must be in [0, 100]"),
    (["--preset", "huge"], "preset must be one of seed, small, tiny"),
    (["--precision", "fp16"], "precision must be one of auto, float32, mixed_bfloat16"),
    (["--resume", "maybe"], "resume must be true or false"),
    (["--data", "no/such/mnist.npz"], "data=no/such/mnist.npz: no such file"),
    (["--resume"], "resume: no checkpoint under checkpoint_dir=checkpoints"),
    (["--learning-rte", "0.1"], "unrecognized arguments: --learning-rte"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line(flags, message, tmp_path, mnist_path):
    data = [] if "--data" in flags else ["--data", str(mnist_path)]
    result = run_cli(["train", *data, *flags], tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_batch_larger_than_the_data_is_refused_before_a_run_starts(tmp_path, mnist_path):
    result = run_cli(["train", "--data", str(mnist_path), "--train-images", "100", "--batch-size",
                      "101"], tmp_path, timeout=60)
    assert result.returncode == 2
    assert "batch_size must be in 1..train_images=100 (got 101)" in result.stderr


def test_corrupt_data_file_is_refused_before_a_run_starts(tmp_path, mnist_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(mnist_path.read_bytes()[:100_000])
    result = run_cli(["train", "--data", str(truncated), "--preset", "tiny"], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"{truncated}: not a readable .npz file" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unreachable_tracking_server_fails_fast_naming_it_without_credentials(tmp_path, mnist_path):
    from infra.local_stack import free_port

    port = free_port()
    result = run_cli(["train", "--data", str(mnist_path), "--preset", "tiny"], tmp_path, timeout=60,
                     MLFLOW_TRACKING_URI=f"http://alice:s3cret@127.0.0.1:{port}")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in line
    assert "s3cret" not in result.stderr and "alice" not in result.stderr
