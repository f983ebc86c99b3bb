"""Progress as a pipe (a pod's log, CI) shows it: plain lines at the recent pace. `make run` itself, in a
pipe, is checked in tests/test_project.py, on the same run as the MLflow project's main."""

from __future__ import annotations


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


def test_a_run_with_a_time_budget_shows_what_is_left_of_it(monkeypatch):
    import io

    from training import progress

    clock = iter([0.0, 60.0, 60.0, 200.0, 200.0])  # start; each update reads the clock twice
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    stream = io.StringIO()
    display = progress.Progress(1, 200, 938, ("d_loss",), stream=stream, budget_ends=180.0)
    display.update(300, {"d_loss": 0.5})
    display.update(600, {"d_loss": 0.5}, last=True)
    assert [line.split("epoch ETA ")[1] for line in stream.getvalue().splitlines()] == [
        "0:02:08  time budget left 0:02:00", "0:02:38  time budget left 0:00:00"]


def test_native_start_up_notices_are_hidden_and_every_other_line_passes_in_order(tmp_path):
    """What TensorFlow's C++ side prints through absl at start-up (on a CPU with AVX-512: "oneDNN custom
    operations are on"), whatever TF_CPP_MIN_LOG_LEVEL says; written to file descriptor 2 as it does."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = r"""
import os, sys
from training import console
with console.native_notices_hidden():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796185641.349 13507 port.cc:153] oneDNN custom operations are on.\n")
    print("ours: first", file=sys.stderr, flush=True)
    os.write(2, b"E0000 00:00:1796185641.350 13507 cuda_dnn.cc:8579] a native error stays\n")
    print("ours: last, without a newline", file=sys.stderr, end="")
print(" then after", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stderr.splitlines() == [
        "ours: first", "E0000 00:00:1796185641.350 13507 cuda_dnn.cc:8579] a native error stays",
        "ours: last, without a newline then after"]


def test_the_main_summary_says_whether_champion_moved_and_why():
    from types import SimpleNamespace

    from training.promotion import Decision
    from training.summaries import summary_lines

    evaluation = SimpleNamespace(metrics={"fid": 34.87}, reference={"fid": 0.77}, n=10_000)
    evaluated = SimpleNamespace(evaluation=evaluation, run_id="e1", link="http://mlflow/e1")

    def summary(decision: Decision) -> list[str]:
        promoted = SimpleNamespace(decision=decision, name="m", dry_run=False, copied_from=None)
        return summary_lines(SimpleNamespace(run_id="p1", promoted=promoted, evaluated=evaluated,
                                             link="http://127.0.0.1:5000/#/experiments/1/runs?view"))

    moved = summary(Decision(True, "no champion yet", "1", None))
    assert moved[:3] == ["main: done (run p1)",
                         "  champion: m version 1; alias 'champion' moved to it (no champion yet)",
                         "  FID 34.87 on 10,000 samples (real images score 0.77)"]
    kept = summary(Decision(False, "FID 40 vs champion 30", "2", "1"))
    assert kept[1] == "  champion: m version 1; alias 'champion' not moved (FID 40 vs champion 30)"
    none = summary(Decision(False, "1 digit classes covered", "1", None))
    assert none[1] == "  champion: none for m; version 1 not moved (1 digit classes covered)"
