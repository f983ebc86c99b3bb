"""A checkpoint folder is trained by one process at a time: a second refuses in one line, naming the
folder and the holder, and changes nothing; the lock ends with its process, however it ends."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import mlflow

from tests.conftest import QUICK, ROOT, cli_env, run_cli
from training import checkpoint

# Takes the lock as training does (checkpoint_lock.hold) and reports: "held", or the refusal's message.
TAKE = """
import sys
from pathlib import Path
from training import checkpoint_lock
try:
    with checkpoint_lock.hold(Path(sys.argv[1]), run_id=sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin or kills this process
except checkpoint_lock.FolderBusy as err:
    print(err, flush=True)
"""


def _take(folder, run_id: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TAKE, str(folder), run_id], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_one_process_holds_a_folder_and_a_killed_holder_leaves_it_free(tmp_path):
    folder = tmp_path / "checkpoints" / "run-a"
    holder = _take(folder, "run-a")
    try:
        assert holder.stdout.readline() == "held\n"
        second = _take(folder, "run-b")
        refusal, _ = second.communicate(timeout=60)
        assert refusal.strip() == (f"checkpoint folder {folder} is being trained by another process (pid "
                                   f"{holder.pid} on {socket.gethostname()}, run run-a); wait for it to "
                                   "end, or give another checkpoint_dir")
    finally:
        holder.kill()  # SIGKILL: no code of the holder runs to release anything
        holder.wait(timeout=60)
    third = _take(folder, "run-c")
    assert third.stdout.readline() == "held\n", "the lock died with its process"
    third.communicate("", timeout=60)


def test_resuming_a_folder_another_process_is_training_is_refused_and_changes_nothing(tmp_path, mnist_path):
    """The report: `--resume` attached to the newest run under checkpoint_dir even while another live
    process trained it, and both wrote its checkpoints and logged its steps."""
    args = ["train", "--data", str(mnist_path), *QUICK, "--eval-every", "0", "--epochs", "1000"]
    first = subprocess.Popen([sys.executable, "-m", "training.cli", *args], cwd=tmp_path,
                             env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while (run_dir := checkpoint.latest_run_dir(tmp_path / "checkpoints")) is None:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        run_id = run_dir.name
        for command in ("train", "main"):  # main opens its parent run only after the checks
            refused = run_cli([command, *args[1:], "--resume"], tmp_path, timeout=120)
            assert refused.returncode == 2, refused.stderr[-2000:]
            (line,) = refused.stderr.strip().splitlines()
            assert line == (f"mnist-gan {command}: error: checkpoint folder checkpoints/{run_id} is being "
                            f"trained by another process (pid {first.pid} on {socket.gethostname()}, run "
                            f"{run_id}); wait for it to end, or give another checkpoint_dir")
        assert first.poll() is None, "the first process trains on"
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert (run.info.run_id, run.info.status) == (run_id, "RUNNING"), "no run opened, none reopened"
    finally:
        first.send_signal(signal.SIGTERM)  # a checkpoint, then exit 143
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr[-2000:]

    stop_at = checkpoint.latest_manifest(run_dir)["global_step"] + 2
    resumed = run_cli([*args, "--resume", "--max-steps", str(stop_at)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert client.get_run(run_id).info.status == "FINISHED", "the folder was free once its trainer ended"
    steps = [m.step for m in client.get_metric_history(run_id, "d_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == stop_at, "one process logged each step, once"
