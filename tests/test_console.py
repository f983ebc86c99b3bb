"""What a person sees: `main` in a pipe (a pod's log, CI) prints plain progress lines, its own lines and
a summary; no terminal control characters and no third-party start-up notices."""

from __future__ import annotations

import re

from tests.conftest import TINY, run_cli

THIRD_PARTY = re.compile(r"mlflow\.(system_metrics|store)|cpu_feature_guard|oneDNN|absl::|UserWarning|"
                         r"Add type hints|interpreted in multiple ways|grappler|NodeDef|^I0000|^W0000|^E0000")


def test_main_in_a_pipe_prints_progress_lines_and_a_summary_and_nothing_else(tmp_path, mnist_path):
    done = run_cli(["main", "--data", str(mnist_path), *TINY, "--epochs", "2", "--samples", "500"], tmp_path,
                   MNIST_GAN_PROGRESS_EVERY_S="0", TF_CPP_MIN_LOG_LEVEL="")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\b" not in done.stdout and "\r" not in done.stdout, "no progress bar in a pipe"
    lines = done.stdout.splitlines()
    progress = [line for line in lines if line.startswith("epoch ")]
    assert progress and all(re.match(r"epoch \d+/2  step \d+/4  d_loss [\d.]+  g_loss [\d.]+", p)
                            for p in progress)
    noise = [line for line in lines + done.stderr.splitlines() if THIRD_PARTY.search(line)]
    assert not noise, noise
    summary = lines[lines.index(next(line for line in lines if line.startswith("main: done"))):]
    assert summary[1].startswith("  champion: mnist-gan-generator version 1; alias 'champion' moved")
    assert re.match(r"  FID [\d.]+ on 500 samples \(real images score [\d.]+\)", summary[2])
    assert "mlflow ui --backend-store-uri sqlite:///" in summary[3] and "report.html" in summary[4]
    assert len([line for line in lines if not line.startswith("epoch ")]) < 25
