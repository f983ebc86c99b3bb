"""Checkpoints and resume, preemption, and the NaN guard, through the real CLI and loop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest

from tests.conftest import QUICK, cli_env, run_cli
from training import checkpoint
from training.config import TrainConfig
from training.data import to_unit_range
from training.loop import BEST, NonFiniteLoss, train
from training.sampling import generator_path

# every test here trains
pytestmark = pytest.mark.slow


def _final_arrays(directory):
    directory = checkpoint.latest_run_dir(directory)
    manifest = checkpoint.latest_manifest(directory)
    with np.load(directory / manifest["arrays"]) as npz:
        return manifest, [npz[k] for k in sorted(npz.files)]


def _train(tmp_path, mnist_path, *flags):
    result = run_cli(["train", "--data", str(mnist_path), *QUICK, *flags], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_resume_continues_to_the_same_weights_in_the_same_run(tmp_path, mnist_path):
    _train(tmp_path, mnist_path, "--epochs", "2", "--checkpoint-dir", "straight")
    # Stop mid-epoch (4 steps per epoch), then resume twice: once mid-epoch, once at an epoch end.
    _train(tmp_path, mnist_path, "--epochs", "2", "--max-steps", "3", "--checkpoint-dir", "resumed")
    _train(tmp_path, mnist_path, "--epochs", "2", "--max-steps", "4", "--checkpoint-dir", "resumed",
           "--resume")
    _train(tmp_path, mnist_path, "--epochs", "2", "--checkpoint-dir", "resumed", "--resume")

    straight, straight_arrays = _final_arrays(tmp_path / "straight")
    resumed, resumed_arrays = _final_arrays(tmp_path / "resumed")
    assert straight["global_step"] == resumed["global_step"] == 8
    assert len(straight_arrays) == len(resumed_arrays)
    for a, b in zip(straight_arrays, resumed_arrays):
        np.testing.assert_array_equal(a, b)

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert resumed["run_id"] != straight["run_id"]
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == [resumed["run_id"]]
    history = [m.step for m in client.get_metric_history(resumed["run_id"], "d_loss")]
    assert history == [2, 3, 4, 6, 8], "one metric series, no gap and no duplicated step"
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert len(client.search_runs(client.get_run(resumed["run_id"]).info.experiment_id)) == 2

    changed = run_cli(["train", "--data", str(mnist_path), *QUICK, "--epochs", "3",
                       "--checkpoint-dir", "resumed", "--resume", "--learning-rate", "0.002"], tmp_path)
    assert changed.returncode == 2 and "trained with different learning_rate" in changed.stderr
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED", "a refused resume changes nothing"


CURVE = ["--eval-every", "1", "--eval-samples", "500"]


def test_the_fid_curve_keeps_the_best_generator_and_resume_keeps_the_best_so_far(tmp_path, mnist_path):
    straight = _train(tmp_path, mnist_path, "--epochs", "3", *CURVE, "--checkpoint-dir", "straight")
    # The same run in two parts; the first exports its last generator, the resumed one its best.
    _train(tmp_path, mnist_path, "--epochs", "2", *CURVE, "--select", "last", "--checkpoint-dir", "resumed")
    _train(tmp_path, mnist_path, "--epochs", "3", *CURVE, "--checkpoint-dir", "resumed", "--resume")

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    straight_run = checkpoint.latest_manifest(checkpoint.latest_run_dir(tmp_path / "straight"))["run_id"]
    curve = {name: [(m.step, m.value) for m in client.get_metric_history(straight_run, f"curve/{name}")]
             for name in ("fid", "classifier_score", "classes_covered", "raw_fid")}
    assert all([step for step, _ in points] == [4, 8, 12] for points in curve.values()), curve
    fids = [value for _, value in curve["fid"]]
    best_epoch = 1 + fids.index(min(fids))
    tags = client.get_run(straight_run).data.tags
    assert (tags["generator_artifact"], tags["generator_weights"], tags["generator_checkpoint"],
            tags["generator_epoch"]) == ("models/generator_best.keras", "ema", "best", str(best_epoch))
    assert f"exports averaged (EMA) weights, best curve FID at epoch {best_epoch}" in straight.stdout
    logged = {a.path for a in client.list_artifacts(straight_run)} | {
        a.path for a in client.list_artifacts(straight_run, "models")}
    assert {"fid_curve.png", "models/generator.keras", "models/generator_ema.keras",
            "models/generator_best.keras"} <= logged
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        assert generator_path(f"runs:/{straight_run}").name == "generator_best.keras"
    finally:
        mlflow.set_tracking_uri(None)
    best_dir = checkpoint.latest_run_dir(tmp_path / "straight") / BEST
    best = checkpoint.latest_manifest(best_dir)
    assert (best["epoch"], best["fid"]) == (best_epoch, min(fids))

    resumed_dir = checkpoint.latest_run_dir(tmp_path / "resumed")
    resumed_best = checkpoint.latest_manifest(resumed_dir / BEST)
    assert ((resumed_best["epoch"], resumed_best["fid"])
            == (best["epoch"], best["fid"])), "the best so far survives"
    with np.load(best_dir / best["arrays"]) as a, np.load(resumed_dir / BEST / resumed_best["arrays"]) as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    resumed_tags = client.get_run(checkpoint.latest_manifest(resumed_dir)["run_id"]).data.tags
    assert resumed_tags["generator_artifact"] == "models/generator_best.keras"


def test_select_last_exports_the_averaged_generator_of_the_last_step(tmp_path, mnist_path):
    _train(tmp_path, mnist_path, "--epochs", "1", *CURVE, "--select", "last")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = checkpoint.latest_manifest(checkpoint.latest_run_dir(tmp_path / "checkpoints"))["run_id"]
    tags = client.get_run(run_id).data.tags
    assert ((tags["generator_artifact"], tags["generator_checkpoint"])
            == ("models/generator_ema.keras", "last"))


def test_a_time_budget_ends_the_run_like_its_last_epoch_and_resume_counts_time_spent(tmp_path, mnist_path):
    """max_minutes through the main job: the step that spends the budget ends the run (a last curve point,
    a checkpoint, the best generator exported), then evaluate, register and promote run as after the last
    epoch. A resumed run counts the minutes already spent: with the same budget it takes no step."""
    budget = ["--max-minutes", "0.01"]  # 0.6 s: spent by the first step, which compiles
    main = run_cli(["main", "--data", str(mnist_path), *QUICK, "--epochs", "100", *CURVE, *budget,
                    "--samples", "200", "--checkpoint-dir", "ckpt"], tmp_path)
    assert main.returncode == 0, main.stderr[-3000:]
    assert "1 steps, 0 epoch(s) (its time budget, max_minutes, is spent)" in main.stdout, main.stdout
    run_dir = checkpoint.latest_run_dir(tmp_path / "ckpt")
    first = checkpoint.latest_manifest(run_dir)
    assert first["global_step"] == 1 and first["training_seconds"] >= 0.6
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = client.get_run(first["run_id"]).data.tags
    assert (tags["stopped_by"], tags["generator_checkpoint"]) == ("max_minutes", "best")
    assert [m.step for m in client.get_metric_history(first["run_id"], "curve/fid")] == [1]
    registered = client.get_model_version_by_alias("mnist-gan-generator", "challenger").tags
    assert registered["training_run_id"] == first["run_id"], "evaluated and registered after the budget"
    assert registered["promotion.decision"] == "refused", "the rule asked: 1 step covers few classes"

    again = _train(tmp_path, mnist_path, "--epochs", "100", *CURVE, *budget, "--checkpoint-dir", "ckpt",
                   "--resume")
    assert "1 steps, 0 epoch(s) (its time budget, max_minutes, is spent)" in again.stdout, again.stdout
    assert checkpoint.latest_manifest(run_dir)["global_step"] == 1, "no step past a spent budget"

    _train(tmp_path, mnist_path, "--epochs", "100", *CURVE, "--max-minutes", "30", "--max-steps", "3",
           "--checkpoint-dir", "ckpt", "--resume")
    last = checkpoint.latest_manifest(run_dir)
    assert last["global_step"] == 3 and last["training_seconds"] > first["training_seconds"]
    assert [m.step for m in client.get_metric_history(first["run_id"], "d_loss")] == [1, 2, 3]


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path, mnist_path):
    args = [sys.executable, "-m", "training.cli", "train", "--data", str(mnist_path), *QUICK,
            "--epochs", "1000", "--train-images", "4096"]
    process = subprocess.Popen(args, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (run_dir := checkpoint.latest_run_dir(tmp_path / "checkpoints")) is None:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    first = checkpoint.latest_manifest(run_dir)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "checkpoint written" in stderr and "--resume" in stderr
    manifest = checkpoint.latest_manifest(run_dir)
    assert manifest["global_step"] > first["global_step"], "the SIGTERM checkpoint is the newest"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(manifest["run_id"]).info.status == "FAILED"

    stop_at = manifest["global_step"] + 3
    resumed = run_cli(args[3:] + ["--resume", "--max-steps", str(stop_at)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert client.get_run(manifest["run_id"]).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(manifest["run_id"], "d_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == stop_at, "continuous, no duplicated step"
    assert manifest["global_step"] in steps, "the steps before SIGTERM were logged before exiting"


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tmp_path, mnist_path):
    good = _real_images(mnist_path, 256)
    config = _quick_config(tmp_path, epochs=1, log_every=2)
    train(config, good)
    before = checkpoint.latest_manifest(tmp_path / "ckpt")

    poisoned = good.copy()
    poisoned[:] = np.nan
    with pytest.raises(NonFiniteLoss, match="d_loss and g_loss became NaN/inf by step 6"):
        train(config.replace(epochs=2, resume=True), poisoned)
    after = checkpoint.latest_manifest(tmp_path / "ckpt")
    assert after == before
    state, manifest = checkpoint.load_latest(tmp_path / "ckpt", _template(config))
    assert manifest["global_step"] == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in _leaves(state))


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, mnist_path):
    config = _quick_config(tmp_path, epochs=2, log_every=1)
    train(config, _real_images(mnist_path, 128))
    latest = checkpoint.latest_manifest(tmp_path / "ckpt")
    arrays = tmp_path / "ckpt" / latest["arrays"]
    arrays.write_bytes(arrays.read_bytes()[:1000])
    _, manifest = checkpoint.load_latest(tmp_path / "ckpt", _template(config))
    assert manifest["global_step"] == latest["global_step"] - 2


def _real_images(mnist_path, count: int) -> np.ndarray:
    with np.load(mnist_path) as npz:
        return to_unit_range(npz["x_train"][:count])


def _quick_config(tmp_path, **changes) -> TrainConfig:
    return TrainConfig(preset="cpu", checkpoint_dir=str(tmp_path / "ckpt"), **changes)


def _template(config):
    from training.loop import build_gan

    return build_gan(config).initial_state()


def _leaves(state):
    import keras

    return [keras.ops.convert_to_numpy(x) for x in keras.tree.flatten(state)]
