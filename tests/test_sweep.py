"""Sweeps: the SPEC and its checks, the ranking by the promotion rule, trials in worker processes, and
whole sweeps under `mlflow run -e sweep` and under kfp.local, each with one trial that fails."""

from __future__ import annotations

import csv
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import ROOT, cli_env, run_cli
from tests.support.process_state import tracking_to
from tests.support.worker_calls import square_or_die
from training import classifier, sweep, workers
from training.config import ConfigError, TrainConfig
from training.data import file_sha256, load_mnist
from training.promotion import PromotionRule

# The failing trial asks for every training image of MNIST, from a copy that lacks the last one: a value
# TrainConfig accepts (it cannot know the file) that fails when the trial loads the data.
SPEC = """\
- {seed: 0}
- {seed: 1, learning_rate: 2e-3}
- {seed: 2, train_images: 60000}
"""
BASE = {"preset": "cpu", "train_images": 256, "batch_size": 64, "epochs": 1, "max_steps": 2, "log_every": 1,
        "samples": 100, "min_classes_covered": 0}


@pytest.fixture(scope="session")
def mnist_less_one(tmp_path_factory, mnist_path) -> Path:
    """The real MNIST without its last training image. Its evaluator is the full set's (the classifier
    cache is keyed by the file's digest): one image fewer is not worth a minute of training it again."""
    with np.load(mnist_path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][:-1], arrays["y_train"][:-1]
    path = tmp_path_factory.mktemp("data") / "mnist-59999.npz"
    np.savez(path, **arrays)
    full = classifier.load_or_train(load_mnist(str(mnist_path)))
    entry = classifier.EVALUATOR_CACHE / classifier.cache_key(file_sha256(path))
    # The cache is this machine's, shared with every other test run and job on it: written under the lock
    # its readers take (training/classifier.py), never while another process writes or reads it half-made.
    lock = os.open(entry.with_name(f"{entry.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (entry / "meta.json").is_file():  # saved by an earlier run, or by another test worker
            classifier.save(full, entry)
    finally:
        os.close(lock)
    return path


# ---- the SPEC ----

def test_a_grid_is_every_combination_and_s_adds_an_axis(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("learning_rate: [1e-4, 2e-4]\npreset: tiny\n")
    trials = sweep.load(str(spec), ["seed=0,1,2"], TrainConfig())
    assert len(trials) == 6 and [t.index for t in trials] == [1, 2, 3, 4, 5, 6]
    assert trials[0].values == {"preset": "tiny", "learning_rate": 1e-4, "seed": 0}
    assert trials[5].values == {"preset": "tiny", "learning_rate": 2e-4, "seed": 2}
    assert sweep.swept_names(trials) == ["learning_rate", "seed"]


def test_listed_trials_take_the_base_value_of_what_they_leave_out():
    trials = sweep.load('[{"seed": 3}, {"n_iter_g": 2}]', [], TrainConfig(n_iter_g=4))
    assert [t.values for t in trials] == [{"n_iter_g": 4, "seed": 3}, {"n_iter_g": 2, "seed": 0}]
    assert trials[1].config(TrainConfig(n_iter_g=4)).n_iter_g == 2
    with pytest.raises(ConfigError, match="resume does not apply to a sweep"):
        sweep.load('[{"seed": 3}]', [], TrainConfig(resume=True))


def test_a_trial_that_changes_the_preset_takes_that_presets_recipe_for_what_it_leaves_out():
    trials = sweep.load('[{"preset": "cpu"}, {"preset": "small", "batch_size": 32}]', [], TrainConfig())
    cpu = TrainConfig(preset="cpu")
    assert [t.values for t in trials] == [{"preset": "cpu", "batch_size": cpu.batch_size},
                                          {"preset": "small", "batch_size": 32}]
    assert trials[0].config(TrainConfig()) == cpu
    assert trials[1].config(TrainConfig()).n_iter_g == TrainConfig().n_iter_g


@pytest.mark.parametrize(("spec", "axes", "message"), [
    ("[{seed: 0}, {learning_rate: 2.0}]", [], r"trial 2: learning_rate must be in \[0.0, 1.0\] \(got 2.0\)"),
    (None, ["n_iter_g=5,-1"], r"trial 2: n_iter_g must be in \[0, 100\] \(got -1\)"),
    (None, ["seed=1,x"], r"trial 2: seed must be an integer \(got 'x'\)"),
    (None, ["batch_size=64,100"], "trial 2: batch_size must be in 1..train_images=64"),
    ("[{lerning_rate: 0.1}]", [], "trial 1: lerning_rate is not a training parameter"),
    ("{data: [a.npz, b.npz]}", [], "trial 1: data cannot vary within a sweep"),
    ("{devices: [1, 2]}", [], "trial 1: devices cannot vary within a sweep"),
    (None, ["seed"], "each -s must be NAME=V1,V2"),
    (None, [], "the sweep names no trials"),
    ("missing.yaml", [], "sweep spec missing.yaml: no such file"),
    ("[{seed: 0}", [], "not YAML or JSON"),
    ("[1, 2]", [], "must be a mapping of parameter -> values"),
    (None, ["seed=" + ",".join(map(str, range(300)))], "the sweep has 300 trials; at most 256"),
])
def test_a_bad_spec_names_the_trial_and_the_field(spec, axes, message):
    with pytest.raises(ConfigError, match=message):
        sweep.load(spec, axes, TrainConfig(train_images=64, batch_size=64))


def test_a_bad_trial_exits_2_in_one_line_before_anything_runs(tmp_path):
    for command in (["sweep", "-s", "seed=0,1", "-s", "beta_1=0.5,1.0"],
                    ["pipeline", "compile", "-o", "p.yaml", "-s", "seed=0,1", "-s", "beta_1=0.5,1.0"]):
        result = run_cli(command, tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].endswith(
            "error: trial 2: beta_1 must be in [0.0, 1.0) (got 1.0)")
    assert not (tmp_path / "p.yaml").exists() and not (tmp_path / "mlflow.db").exists()


# ---- the ranking ----

def _outcome(index: int, status: str = "finished") -> sweep.Outcome:
    trial = sweep.Trial(index, {"seed": index})
    if status != "finished":
        return sweep.failed(trial, "NonFiniteLoss: d_loss became NaN")
    return sweep.Outcome(trial, status, f"train-{index}", f"eval-{index}")


def _evaluation(fid: float, classes: int, samples: int = 1000) -> dict[str, float]:
    return {"fid": fid, "classes_covered": classes, "samples": samples}


def test_the_winner_is_the_one_the_promotion_rule_keeps():
    outcomes = [_outcome(1), _outcome(2), _outcome(3, "failed"), _outcome(4)]
    evaluations = {"eval-1": _evaluation(30.0, 10), "eval-2": _evaluation(20.0, 8),
                   "eval-4": _evaluation(29.5, 10)}
    # the lowest FID (trial 2) loses two classes: the rule keeps trial 4, 0.5 better than trial 1
    ranking = sweep.rank(outcomes, evaluations, PromotionRule(0.0, 0, 0, 0.95), ["seed"])
    assert ranking.winner.trial.index == 4
    assert [(r["rank"], r["trial"], r["winner"]) for r in ranking.rows] == [
        (1, 2, False), (2, 4, True), (3, 1, False), (None, 3, False)]
    assert ranking.rows[-1]["status"] == "failed" and "NaN" in ranking.rows[-1]["error"]
    # a gain within the rule's margin does not win; losing classes the rule allows does
    assert sweep.rank(outcomes, evaluations, PromotionRule(1.0, 0, 0, 0.95), ["seed"]).winner.trial.index == 1
    assert sweep.rank(outcomes, evaluations, PromotionRule(0.0, 2, 0, 0.95), ["seed"]).winner.trial.index == 2


def test_a_trial_that_covers_too_few_classes_never_wins_over_one_that_may_be_promoted():
    outcomes = [_outcome(1), _outcome(2), _outcome(4)]
    evaluations = {"eval-1": _evaluation(40.0, 5), "eval-2": _evaluation(38.0, 10),
                   "eval-4": _evaluation(10.0, 4)}
    # trial 2 is within the 5-FID margin of trial 1, but trial 1 could never be promoted
    for floor, winner in ((10, 2), (0, 4)):
        ranked = sweep.rank(outcomes, evaluations, PromotionRule(5.0, 10, floor, 0.95), ["seed"])
        assert ranked.winner.trial.index == winner


def test_no_winner_when_every_trial_failed():
    assert sweep.rank([_outcome(1, "failed")], {}, PromotionRule(0.0, 0, 0, 0.95), []).winner is None


@pytest.fixture
def own_tracking_store(tmp_path, monkeypatch):
    """This test's sqlite store as the process's tracking URI, the previous one restored after; run from
    tmp_path, where the store's default artifact root (./mlruns) then lies, not the checkout."""
    monkeypatch.chdir(tmp_path)
    with tracking_to(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        yield


def test_a_trial_without_an_outcome_is_ranked_from_what_mlflow_recorded(own_tracking_store):
    """On a cluster, a trial whose pod died after training hands over no outcome: its runs in MLflow
    decide. Trial 2 finished and was evaluated, trial 3 left nothing."""
    from training import jobs
    from training.metrics import HEADLINE

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("sweep-test")

    def evaluated(fid: float) -> str:
        run = client.create_run(experiment_id)
        for name in HEADLINE:
            client.log_metric(run.info.run_id, name, {"fid": fid, "classes_covered": 10}.get(name, 0.5))
        client.log_param(run.info.run_id, "samples", "1000")
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    parent = client.create_run(experiment_id).info.run_id
    trials = [sweep.Trial(i, {"seed": i}) for i in (1, 2, 3)]
    first = sweep.Outcome(trials[0], "finished", "train-1", evaluated(30.0))
    second = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "sweep_trial": "2",
                                                    "evaluation_run_id": evaluated(20.0)})
    client.set_terminated(second.info.run_id)
    ranking = jobs.rank_trials(parent, trials, [first], PromotionRule(0.0, 0, 0, 0.95))
    assert ranking.winner.trial.index == 2 and ranking.winner.training_run_id == second.info.run_id
    assert [(row["trial"], row["status"]) for row in ranking.rows] == [(2, "finished"), (1, "finished"),
                                                                      (3, "failed")]
    assert "no run" in ranking.rows[-1]["error"]
    assert client.get_run(parent).data.metrics["trials_failed"] == 1


# ---- trials in worker processes ----

def test_a_killed_worker_process_loses_only_its_own_call(tmp_path):
    done = []
    results = workers.run_each(square_or_die, [(1,), (2,), (3,)], 2, tmp_path,
                               on_done=lambda i, result: done.append(i))
    assert results[0] == 1 and results[2] == 9 and sorted(done) == [0, 1, 2]
    assert isinstance(results[1], workers.Died) and "killed by signal 9" in str(results[1])
    assert (tmp_path / "2.log").read_text() == "squaring 3\n"


# ---- whole sweeps ----

def _sweep_runs(tracking_uri: str, parent_name: str | None = None):
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags
                 and (parent_name is None or r.info.run_name.startswith(parent_name))]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return client, parent, children


def _check_ranked_and_promoted(tracking_uri: str, tmp_path: Path, parent_name: str | None = None) -> None:
    client, parent, children = _sweep_runs(tracking_uri, parent_name)
    trials = {name: run for name, run in children.items() if name.startswith("trial-")}
    assert sorted(trials) == ["trial-1", "trial-2", "trial-3"]
    assert trials["trial-3"].info.status == "FAILED"
    assert "train_images must be in 0..59999 (got 60000)" in trials["trial-3"].data.tags["error"]
    for name in ("trial-1", "trial-2"):
        run = trials[name]
        assert run.info.status == "FINISHED" and run.data.tags["sweep_trial"] == name[-1]
        assert "fid" in run.data.metrics and len(client.get_metric_history(run.info.run_id, "d_loss")) >= 2
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["trials_failed"] == 1
    artifacts = Path(client.download_artifacts(parent.info.run_id, "sweep", str(tmp_path / "sweep")))
    with open(artifacts / "ranking.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["finished", "finished", "failed"]
    assert float(rows[0]["fid"]) <= float(rows[1]["fid"]) and rows[2]["trial"] == "3"
    (winner,) = [row for row in rows if row["winner"] == "True"]
    assert (artifacts / "fid_by_parameter.png").read_bytes()[:4] == b"\x89PNG"
    assert (artifacts / "ranking.json").is_file()
    champion = client.get_model_version_by_alias("mnist-gan-generator", "champion")
    assert str(champion.version) == "1" and champion.run_id == winner["training_run_id"]


@pytest.mark.slow
@pytest.mark.xdist_group("sweep")
def test_mlflow_run_sweep_ranks_registers_and_promotes_the_best_despite_a_failing_trial(tmp_path,
                                                                                        mnist_less_one):
    params = {**BASE, "spec": SPEC, "data": str(mnist_less_one), "workers": 2,
              "checkpoint_dir": str(tmp_path / "ckpt")}
    command = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "sweep",
               "--env-manager", "local", *[item for k, v in params.items() for item in ("-P", f"{k}={v}")]]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "sweep: trial 3/3 (train_images=60000, learning_rate=0.001, seed=2) failed" in result.stdout
    assert "promote mnist-gan-generator version 1 to champion" in result.stdout
    _check_ranked_and_promoted(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    _, parent, _ = _sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    note = parent.data.tags["mlflow.note.content"].split("\n\n")  # what the parent's page says
    assert note[0] in {f"**Sweep of 3 trials, 2 finished: trial {n} wins.**" for n in (1, 2)}, note
    assert note[1] == "**mnist-gan-generator version 1: registered and promoted to champion.**", note
    assert note[4].startswith("| rank | trial |") and "**winner**" in note[4], note


@pytest.mark.slow
@pytest.mark.xdist_group("sweep")
def test_a_sweep_whose_trials_all_fail_exits_1_and_promotes_nothing(tmp_path, mnist_less_one):
    result = run_cli(["sweep", "-s", "train_images=60000", "-s", "seed=0,1", "--data", str(mnist_less_one),
                      "--preset", "tiny", "--samples", "100"], tmp_path, timeout=600)
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "error: all 2 trials failed; nothing registered or promoted" in result.stderr
    client, parent, children = _sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert parent.info.status == "FAILED" and parent.data.metrics["trials_failed"] == 2
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**sweep failed**: SweepFailed: all 2 trials failed"), note
    assert {children["trial-1"].info.status, children["trial-2"].info.status} == {"FAILED"}
    assert client.search_registered_models() == []


@pytest.mark.slow
@pytest.mark.xdist_group("sweep")
def test_the_sweep_pipeline_runs_under_kfp_local(tmp_path, mnist_less_one):
    params = {**BASE, "data": str(mnist_less_one)}
    flags = [item for key, value in params.items() for item in ("-p", f"{key}={value}")]
    result = run_cli(["pipeline", "run-local", "--sweep", SPEC, *flags,
                      "--pipeline-root", str(tmp_path / "root")], tmp_path, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    _check_ranked_and_promoted(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, parent_name="kfp-")
