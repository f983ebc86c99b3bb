"""Checkpoints and resume, preemption, and the NaN guard, through the real CLI and loop."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import QUICK, cli_env, run_cli
from tests.support.corruption import corruptions
from tests.support.process_state import tracking_to
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
        # the state; not the digest of the manifest, whose run id and timings differ between runs
        return manifest, [npz[k] for k in sorted(npz.files) if k != checkpoint.MANIFEST_DIGEST]


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
    with tracking_to(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        assert generator_path(f"runs:/{straight_run}").name == "generator_best.keras"
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


def test_resume_skips_a_damaged_newest_checkpoint_in_one_line_and_refuses_when_none_is_intact(
        tmp_path, mnist_path):
    """The job as a user runs it: a truncated newest manifest is skipped, said so, and training goes on
    from the previous checkpoint; with that one damaged too, exit 2 in one line, never a traceback. A
    journal line that is not an item is set aside, not in the way."""
    _train(tmp_path, mnist_path, "--epochs", "2", "--checkpoint-dir", "ckpt")  # checkpoints at steps 4, 8
    run_dir = checkpoint.latest_run_dir(tmp_path / "ckpt")
    newest, previous = run_dir / "ckpt-000000008.json", run_dir / "ckpt-000000004.npz"
    newest.write_bytes(newest.read_bytes()[:100])  # a cut write: not JSON
    intact = previous.read_bytes()
    previous.write_bytes(intact[:-10])

    refused = run_cli(["train", "--data", str(mnist_path), *QUICK, "--epochs", "3",
                       "--checkpoint-dir", "ckpt", "--resume"], tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    last_line = refused.stderr.strip().splitlines()[-1]
    shown = run_dir.relative_to(tmp_path)  # as the user named it: --checkpoint-dir ckpt
    assert last_line.startswith(f"mnist-gan train: error: no intact checkpoint in {shown} ("), last_line
    assert "ckpt-000000008.json: unreadable manifest" in last_line and "ckpt-000000004.json: " in last_line

    previous.write_bytes(intact)
    (run_dir / "tracking-journal.jsonl").write_bytes(b"\x00 not a journal line\n")
    resumed = _train(tmp_path, mnist_path, "--epochs", "3", "--checkpoint-dir", "ckpt", "--resume")
    assert (f"checkpoint: {shown}: skipped ckpt-000000008.json: unreadable manifest (JSONDecodeError); "
            "using ckpt-000000004.json instead") in resumed.stdout.splitlines(), resumed.stdout
    assert "tracking: set aside 1 item(s)" in resumed.stdout
    manifest = checkpoint.latest_manifest(run_dir)
    assert manifest["global_step"] == 12
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(manifest["run_id"], "d_loss")] == [2, 4, 6, 8, 10, 12]


RESTORED = (4, 8)  # the steps of the checkpoints (and the best points) restore() chooses from


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """A run folder as the loop leaves it, without training: two checkpoints and two best points."""
    from training.loop import _RunState

    directory = tmp_path_factory.mktemp("resumable")
    config = _quick_config(directory, resume=True)
    run = _RunState(config, directory, 256, _tiny_state(0))
    for step in RESTORED:
        run.global_step, run.history = step, {"d_loss": [(step, 0.5)]}
        checkpoint.save(directory / BEST, {"g": np.full(3, step, np.float32)},
                        {"step": step, "epoch": step // 4, "fid": 100.0 - step, "global_step": step})
        run.save(_tiny_state(step), step // 4, 0, "run-1")
    return config, directory


def _tiny_state(step: int) -> dict:
    return {"d": np.full((2, 2), step, np.float32), "g": np.full(3, step, np.float32)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["ckpt-000000008.json", "ckpt-000000008.npz", f"{BEST}/ckpt-000000008.json",
                               f"{BEST}/ckpt-000000008.npz"]),
       corruption=corruptions(), also_previous=st.booleans())
def test_restore_falls_back_from_any_damaged_file_or_refuses_in_one_line(resumable, capsys, target,
                                                                         corruption, also_previous):
    """Whatever happens to the newest checkpoint's or best point's files (and, in some examples, to the
    previous one's too): restore() uses what is intact, says in one line what it skipped, or raises a
    one-line CheckpointError; never another exception."""
    from training.loop import _RunState

    config, written = resumable
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(shutil.copytree(written, Path(scratch) / "run"))
        damaged = [directory / target] + [directory / target.replace("08", "04")] * also_previous
        for path in damaged:
            path.write_bytes(corruption.apply(path.read_bytes()))
        run = _RunState(config, directory, 256, _tiny_state(0))
        capsys.readouterr()
        try:
            run.restore(directory)
        except checkpoint.CheckpointError as refused:
            assert also_previous and "\n" not in str(refused), refused
            assert "no intact checkpoint" in str(refused)
            return
        said = capsys.readouterr().out.splitlines()
    chosen = run.best["global_step"] if target.startswith(BEST) else run.global_step
    other = run.global_step if target.startswith(BEST) else run.best["global_step"]
    assert other == RESTORED[1], "an intact file is used as it is"
    assert chosen in RESTORED and len(said) == (chosen == RESTORED[0]), said
    if chosen == RESTORED[0]:
        assert "skipped ckpt-000000008." in said[0] and said[0].endswith("using ckpt-000000004.json instead")
    np.testing.assert_array_equal(np.asarray(run.state["g"]), _tiny_state(run.global_step)["g"])
    assert run.best["fid"] == 100.0 - run.best["global_step"]


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
