"""What a person sees: `make run` in a pipe (a pod's log, CI) prints plain progress lines, the job's own
lines and a summary; no terminal control characters and no third-party start-up notices."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, cli_env

THIRD_PARTY = re.compile(r"mlflow\.(system_metrics|store)|cpu_feature_guard|oneDNN|absl::|UserWarning|"
                         r"Add type hints|interpreted in multiple ways|grappler|NodeDef|^I0000|^W0000|^E0000|"
                         r"Successfully registered model|Created version|WARNING mlflow|\d+/\d+ - \d+s")


def test_make_run_in_a_pipe_prints_progress_lines_and_a_summary_and_nothing_else(tmp_path, mnist_path):
    """The README's first command, as a pod's log or CI sees it (the venv is already installed)."""
    import mlflow

    env = cli_env(tmp_path, MNIST_GAN_PROGRESS_EVERY_S="0", TF_CPP_MIN_LOG_LEVEL="")
    mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(
        "console", artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns in the checkout
    params = {"preset": "tiny", "data": mnist_path, "train_images": 256, "batch_size": 64, "log_every": 2,
              "eval_samples": 500, "epochs": 2, "samples": 500, "checkpoint_dir": tmp_path / "ckpt"}
    cli_params = " ".join(f"-P {name}={value}" for name, value in params.items())
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-o", "install", "run",
                           f"VENV={Path(sys.executable).parent.parent}",
                           f"PARAMS={cli_params} --experiment-name console"],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\b" not in done.stdout and "\r" not in done.stdout, "no progress bar in a pipe"
    lines = done.stdout.splitlines()
    progress = [line for line in lines if line.startswith("epoch ")]
    assert progress and all(re.match(r"epoch \d+/2  step \d+/4  d_loss [\d.]+  g_loss [\d.]+", line)
                            for line in progress)
    noise = [line for line in lines + done.stderr.splitlines() if THIRD_PARTY.search(line)]
    assert not noise, noise
    summary = lines[lines.index(next(line for line in lines if line.startswith("main: done"))):]
    assert summary[1].startswith("  champion: mnist-gan-generator version 1; alias 'champion' moved")
    assert re.match(r"  FID [\d.]+ on 500 samples \(real images score [\d.]+\)", summary[2])
    assert "mlflow ui --backend-store-uri sqlite:///" in summary[3] and "report.html" in summary[4]
    outside_progress = [line for line in lines + done.stderr.splitlines() if not line.startswith("epoch ")]
    assert len(outside_progress) < 25, outside_progress


def test_progress_lines_in_a_pipe_give_the_eta_at_the_recent_pace(monkeypatch):
    import io

    from training import progress

    clock = iter([0.0, 100.0, 110.0, 111.0])  # the first window holds compilation: slow
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    stream = io.StringIO()
    display = progress.Progress(3, 5, 100, ("d_loss", "g_loss"), first_step=0, stream=stream)
    for step in (10, 20, 30):
        display.update(step, {"d_loss": 0.5, "g_loss": 1.25, "images_per_sec": 1234.4})
    assert stream.getvalue().splitlines() == [
        "epoch 3/5  step 10/100  d_loss 0.5000  g_loss 1.2500  1,234 images/s  epoch ETA 0:15:00",
        "epoch 3/5  step 20/100  d_loss 0.5000  g_loss 1.2500  1,234 images/s  epoch ETA 0:01:20",
        "epoch 3/5  step 30/100  d_loss 0.5000  g_loss 1.2500  1,234 images/s  epoch ETA 0:00:07"]
