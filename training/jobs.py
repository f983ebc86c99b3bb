"""The jobs: each does one step of the project's work, tracked in MLflow, and returns what it made.

    train      -> a run with params, metrics, grids, the Keras models and the generator as a LoggedModel
    evaluate   -> a run with the sample metrics (also on the generator's LoggedModel), the real-data
                  reference and a report
    register   -> a registry version of the trained LoggedModel, aliased `challenger`, with its evaluation
    promote    -> `champion` moved to the challenger only if the rule says so
    rollback   -> `champion` back at the version it replaced
    sample     -> generated digits as .npz and a PNG grid
    main       -> train, evaluate, register and promote as nested runs under one parent run
    register_and_promote -> the end of `main` and of a sweep: register, then promote that version

and, for the Kubeflow pipeline, `prepare_data`, `open_run`, `train_classifier` and `passes_gate`.
The CLI (and through it the MLproject) and the components each call one job; printing is theirs. Every
job takes its parent MLflow run by id (`parent_run_id`) and optional local output paths, so that a
pipeline task gets its files without downloading what it has just logged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import checkpoint, checks, mlflow_env
from training.config import ConfigError, JobConfig, TrainConfig
from training.promotion import PromotionRule


@dataclass(frozen=True)
class Trained:
    run_id: str
    model_id: str  # the generator's LoggedModel
    result: Any  # loop.TrainResult
    resumed: bool  # continued a checkpoint (a resume, or a retried pipeline task)
    link: str  # where a person opens the run

    def last_metrics(self) -> dict[str, float]:
        return {name: values[-1][1] for name, values in self.result.history.items()}

    def exported(self) -> dict[str, str]:
        """Which generator the run exports: artifact, weights, checkpoint, epoch (its tags)."""
        from training.tracking import generator_tags

        return generator_tags(self.result)


@dataclass(frozen=True)
class Evaluated:
    run_id: str
    evaluation: Any  # evaluation.Evaluation
    link: str


@dataclass(frozen=True)
class Promoted:
    name: str
    decision: Any  # promotion.Decision
    dry_run: bool
    copied_from: str | None = None  # "<name>/<version>" when carried over from another registry


@dataclass(frozen=True)
class MainResult:
    run_id: str
    trained: Trained
    evaluated: Evaluated
    version: str
    promoted: Promoted


def train(config: TrainConfig, parent_run_id: str | None = None, checkpoint_root: str | None = None,
          generator_out: str | None = None, trial: int | None = None,
          classifier_dir: str | None = None) -> Trained:
    """Train inside an MLflow run (re-opened when resuming). A pipeline task gives `checkpoint_root`,
    storage that outlives its pod, and finds its own checkpoint there when retried
    (checkpoint.pipeline_run_dir); `generator_out` receives a copy of the exported generator's file. A
    sweep's trial names its run `trial-<n>` and tags it `sweep_trial`. The FID curve's judge is the
    classifier in `classifier_dir` (a pipeline artifact) or the local cache's."""
    if checkpoint_root is not None:
        own_dir, resume = checkpoint.pipeline_run_dir(
            Path(checkpoint_root) / config.checkpoint_dir,
            (parent_run_id or "local") + (f"-trial-{trial}" if trial else ""), config.resume)
        config = config.replace(checkpoint_dir=str(own_dir), resume=resume)
    checks.before_training(config)
    from training.data import load_mnist, to_unit_range

    mnist = load_mnist(config.data)
    num_images = config.train_images or len(mnist.x_train)
    if num_images > len(mnist.x_train):
        raise ConfigError(f"train_images must be in 0..{len(mnist.x_train)} (got {num_images})")
    if config.batch_size > num_images:
        raise ConfigError(f"batch_size must be in 1..{num_images} (got {config.batch_size})")
    import mlflow  # after the data's checks: a refused file or size costs no framework import

    from training import loop, registry, tracking
    from training.sweep import TRIAL_TAG, trial_run_name

    train_images = to_unit_range(mnist.x_train[:num_images])
    judge = _quality_probe(mnist, config, classifier_dir) if config.eval_every else None
    checks.artifact_store()

    resume_dir = checkpoint.latest_run_dir(Path(config.checkpoint_dir)) if config.resume else None
    manifest = checkpoint.latest_manifest(resume_dir) if resume_dir else {}
    attached = os.environ.get("MLFLOW_RUN_ID") and not parent_run_id  # inside `mlflow run`
    resume_run_id = None if attached else manifest.get("run_id")
    name = trial_run_name(trial) if trial else "train"
    with tracking.start_run(name, parent_run_id, run_id=resume_run_id) as run:
        continuing = manifest.get("run_id") == run.info.run_id  # else a new run, e.g. from `mlflow run`
        if trial:
            mlflow.set_tag(TRIAL_TAG, str(trial))
        tracking.log_start(config, mnist, num_images, resumed=continuing)
        run_dir = resume_dir or Path(config.checkpoint_dir) / run.info.run_id
        tracker = tracking.MlflowTracker(run.info.run_id, run_dir)
        try:
            result = loop.train(config, train_images, tracker, run_id=run.info.run_id, checkpoint_dir=run_dir,
                                judge=judge)
        finally:
            tracker.outbox.send()  # best effort on the way out; the journal keeps the rest for --resume
        tracker.close()
        with tempfile.TemporaryDirectory() as tmp:
            generator_file = tracking.log_final(result, Path(tmp))
            model_id = registry.log_generator(generator_file)
            link = mlflow_env.run_link(run.info.run_id)
            trained = Trained(run.info.run_id, model_id, result, bool(resume_dir), link)
            mlflow.log_metrics({f"final_{k}": v for k, v in trained.last_metrics().items()},
                               model_id=model_id, dataset=tracking.training_dataset(mnist, num_images))
            if generator_out:
                _copy(generator_file, Path(generator_out) / "generator.keras")
    return trained


def _quality_probe(mnist, config: TrainConfig, classifier_dir: str | None):
    """The FID curve's judge: the evaluator's classifier on `eval_samples` samples."""
    from training.evaluation import QualityProbe

    return QualityProbe(_classifier(mnist, classifier_dir), mnist, config.eval_samples)


def _classifier(mnist, classifier_dir: str | None):
    """The evaluator's classifier: from `classifier_dir` (a pipeline artifact), else the local cache's
    (trained there if absent)."""
    from training import classifier as mnist_classifier

    return (mnist_classifier.load(Path(classifier_dir)) if classifier_dir
            else mnist_classifier.load_or_train(mnist))


def evaluate(generator: str, data: str, samples: int, seed: int = 0, training_run_id: str | None = None,
             parent_run_id: str | None = None, classifier_dir: str | None = None,
             report_html: str | None = None, report_md: str | None = None) -> Evaluated:
    """Score `samples` images of the generator (any URI sampling.generator_path takes) against the
    test split. The classifier comes from `classifier_dir` (a pipeline artifact) or the local cache.
    With `training_run_id`, the metrics also go onto that run's generator LoggedModel."""
    import mlflow

    from training import evaluation, registry, report, tracking
    from training.data import load_mnist
    from training.metrics import HEADLINE
    from training.sampling import load_generator

    mnist = load_mnist(data)
    model = load_generator(generator)
    checks.artifact_store()
    classifier = _classifier(mnist, classifier_dir)
    started = time.perf_counter()
    result = evaluation.evaluate(model, mnist, classifier, n=samples, seed=seed)
    evaluation_seconds = time.perf_counter() - started
    model_id = training_run_id and registry.logged_model_id(mlflow.MlflowClient(), training_run_id)
    with tracking.start_run("evaluate", parent_run_id) as run:
        mlflow.log_params({"generator_uri": generator, "samples": samples, "seed": seed,
                           "evaluator": classifier.key, "evaluator_test_accuracy": classifier.test_accuracy,
                           "data_sha256": mnist.sha256})
        test_split = tracking.evaluation_dataset(mnist)
        mlflow.log_input(test_split, context="evaluation")
        mlflow.log_metrics(result.metrics, model_id=model_id or None, dataset=test_split)
        mlflow.log_metrics({f"reference_{k}": v for k, v in result.reference.items()}
                           | {"evaluation_seconds": evaluation_seconds})
        title = f"Evaluation of {generator} on {samples} samples"
        if training_run_id:  # the training run shows its evaluation too
            mlflow.set_tag("training_run_id", training_run_id)
            client = mlflow.MlflowClient()
            client.set_tag(training_run_id, "evaluation_run_id", run.info.run_id)
            for name in HEADLINE:
                client.log_metric(training_run_id, name, result.metrics[name])
            which = tracking.describe_generator(client.get_run(training_run_id).data.tags)
            title = f"Evaluation of {generator} ({which}) on {samples} samples"
        with tempfile.TemporaryDirectory() as tmp:
            for path in report.write_report(result, mnist.x_train, Path(tmp), title):
                mlflow.log_artifact(str(path), artifact_path="report")
            for out, name in ((report_html, "report.html"), (report_md, "report.md")):
                if out:
                    _copy(Path(tmp) / name, Path(out))
    return Evaluated(run.info.run_id, result, mlflow_env.run_link(run.info.run_id))


def register(training_run_id: str, evaluation_run_id: str, name: str,
             parent_run_id: str | None = None) -> str:
    """Register the generator the training run logged, with the evaluation run's metrics, as the
    model's `challenger`; returns the version."""
    import mlflow

    from training import registry, tracking

    client = mlflow.MlflowClient()
    evaluated = registry.evaluation_metrics(client, evaluation_run_id)
    model_id = registry.logged_model_id(client, training_run_id)
    if model_id is None:
        raise registry.RegistryError(f"run {training_run_id} logged no generator model "
                                     "(is it a training run?)")
    trained = client.get_run(training_run_id).data
    tags = {"evaluation_run_id": evaluation_run_id, "data_sha256": trained.params.get("data_sha256", ""),
            "preset": trained.params.get("preset", ""),
            **{k: v for k, v in trained.tags.items() if k in tracking.GENERATOR_TAGS}}
    checks.artifact_store()
    with tracking.start_run("register", parent_run_id):
        version = registry.register(model_id, name, tags, evaluated)
        mlflow.set_tags({"registered_model": name, "registered_version": version})
    return version


def promote(name: str, rule: PromotionRule, dry_run: bool = False, target_uri: str | None = None,
            target_name: str | None = None, parent_run_id: str | None = None, version: str | None = None,
            generator_file: str | None = None) -> Promoted:
    """Gate `version` (default: the challenger) against the champion, in the target registry when one
    is given. `generator_file`: the registered file itself (a pipeline artifact), checked in place."""
    import contextlib

    import mlflow

    from training import promotion, registry, tracking

    client, copied_from = mlflow.MlflowClient(), None
    if target_uri:
        source = version or registry.alias_version(client, name, registry.CHALLENGER)
        if source is None:
            raise registry.RegistryError(f"{name} has no '{registry.CHALLENGER}' version to copy")
        version = registry.copy_to_registry(name, str(source), target_uri, target_name)
        copied_from, name = f"{name}/{source}", target_name or name
        client = mlflow.MlflowClient(tracking_uri=target_uri, registry_uri=target_uri)
        generator_file = None  # the copy is what gets promoted: verify its files
    tracked = parent_run_id and not dry_run
    with tracking.start_run("promote", parent_run_id) if tracked else contextlib.nullcontext():
        decision = promotion.promote(name, rule, dry_run=dry_run, client=client, version=version,
                                     generator_file=Path(generator_file) if generator_file else None)
        if tracked:
            mlflow.set_tags({"promoted": str(decision.promote).lower(), "reason": decision.reason,
                             "challenger_version": decision.challenger})
    return Promoted(name, decision, dry_run, copied_from)


def register_and_promote(training_run_id: str, evaluation_run_id: str, job: JobConfig,
                         parent_run_id: str | None = None) -> tuple[str, Promoted]:
    """The end of `main` and of a sweep: register the generator as challenger, then promote that very
    version by the job's promotion rule; returns (version, Promoted)."""
    version = register(training_run_id, evaluation_run_id, job.model_name, parent_run_id=parent_run_id)
    return version, promote(job.model_name, PromotionRule.of(job), parent_run_id=parent_run_id,
                            version=version)


def rollback(name: str) -> tuple[str, str]:
    """Point `champion` back at the version it replaced; returns (from version, to version)."""
    from training import promotion

    return promotion.rollback(name)


def sample(model_uri: str, n: int, seed: int, out: Path) -> Path:
    """Write n digits as uint8 (n, 28, 28) under key `images` in `out` (.npz), and a PNG grid beside it."""
    import numpy as np

    from training import plots
    from training.sampling import generate, load_generator

    digits = plots.to_uint8(generate(load_generator(model_uri), n, seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.npz")
    np.savez_compressed(partial, images=digits)
    partial.replace(out)
    plots.grid(digits[:64], caption=f"{model_uri}, seed {seed}").save(out.with_suffix(".png"))
    return out


def main(config: TrainConfig, job: JobConfig) -> MainResult:
    """train -> evaluate -> register -> promote, nested under one parent run (the MLproject's main)."""
    checks.before_training(config)
    import mlflow

    from training import tracking
    from training.data import load_mnist

    checks.artifact_store()
    with tracking.start_run("main") as parent:
        parent_id = parent.info.run_id
        with tracking.start_run("prepare-data", parent_id):
            mnist = load_mnist(config.data)
            tracking.log_dataset(mnist, config.train_images or len(mnist.x_train))
        trained = train(config, parent_run_id=parent_id)
        evaluated = evaluate(f"runs:/{trained.run_id}", config.data, job.samples,
                             training_run_id=trained.run_id, parent_run_id=parent_id)
        version, promoted = register_and_promote(trained.run_id, evaluated.run_id, job, parent_id)
        mlflow.set_tags({"training_run_id": trained.run_id, "evaluation_run_id": evaluated.run_id,
                         "registered_model": job.model_name, "registered_version": version,
                         "promoted": str(promoted.decision.promote).lower()})
        mlflow.log_metrics(evaluated.evaluation.metrics)
    return MainResult(parent_id, trained, evaluated, version, promoted)


# ---- sweeps: trials under one parent run, ranked by the promotion rule, the winner registered ----

class SweepFailed(RuntimeError):
    """No trial of a sweep finished; nothing was registered or promoted."""


@dataclass(frozen=True)
class SweepResult:
    run_id: str
    ranking: Any  # sweep.Ranking
    model_name: str
    version: str
    promoted: Promoted


def run_trial(trial, base: TrainConfig, samples: int, parent_run_id: str, checkpoint_root: str | None = None,
              classifier_dir: str | None = None):
    """Train and evaluate one trial of a sweep (a sweep.Trial over `base`) under the sweep's parent
    run; returns its sweep.Outcome. A trial that fails (NaN losses, a value its model cannot take,
    out of memory) is recorded as failed, on its run and in the outcome, and does not stop the sweep."""
    from training.sweep import Outcome, failed

    config = trial.config(base)
    try:
        trained = train(config, parent_run_id, checkpoint_root, trial=trial.index,
                        classifier_dir=classifier_dir)
        evaluated = evaluate(f"runs:/{trained.run_id}", config.data, samples, config.seed,
                             training_run_id=trained.run_id, parent_run_id=parent_run_id,
                             classifier_dir=classifier_dir)
    except checkpoint.Preempted:
        raise  # the pipeline retries the task, which resumes the trial
    except Exception as err:  # noqa: BLE001 (the trial is the boundary: its run ends FAILED with this error)
        outcome = failed(trial, f"{type(err).__name__}: {err}")
        _record_failure(parent_run_id, outcome)
        return outcome
    return Outcome(trial, "finished", trained.run_id, evaluated.run_id)


def run_pipeline_trial(trial, base: TrainConfig, samples: int, pipeline_run: str, checkpoint_root: str,
                       classifier_dir: str):
    """run_trial under the parent MLflow run that `open_run` opened for the pipeline run."""
    import mlflow

    from training import tracking

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    parents = client.search_runs([experiment.experiment_id] if experiment else [],
                                 f"tags.kfp_run = '{pipeline_run}'")
    parents = [run for run in parents if "mlflow.parentRunId" not in run.data.tags]
    if not parents:
        raise RuntimeError(f"no MLflow run tagged kfp_run={pipeline_run}: did open-mlflow-run run?")
    return run_trial(trial, base, samples, parents[0].info.run_id, checkpoint_root, classifier_dir)


def _record_failure(parent_run_id: str, outcome) -> None:
    """A failed trial's run ends FAILED with the error: one its process left RUNNING (killed) is closed,
    and a trial that failed before its training run opened (its data, say) gets one, with its values."""
    import mlflow

    from training import tracking
    from training.sweep import TRIAL_TAG

    client = mlflow.MlflowClient()
    error = outcome.error[:tracking.MAX_TAG]
    for run in _trial_runs(client, parent_run_id, outcome.trial.index):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", error)
            client.set_terminated(run.info.run_id, "FAILED")
        return
    with tracking.start_run(outcome.trial.run_name, parent_run_id) as run:
        mlflow.log_params(outcome.trial.values)
        mlflow.set_tags({TRIAL_TAG: str(outcome.trial.index), "error": error})
    client.set_terminated(run.info.run_id, "FAILED")


def _trial_runs(client, parent_run_id: str, index: int) -> list:
    from training.sweep import TRIAL_TAG

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                               f"and tags.{TRIAL_TAG} = '{index}'")


def rank_trials(parent_run_id: str, trials: list, outcomes: list, rule):
    """Rank a sweep's trials by the promotion rule and log the ranking on its parent run (a table, a
    CSV and a plot of FID against each swept value); a trial without an outcome (its task or process
    died) counts as failed. Raises SweepFailed when none finished."""
    import mlflow

    from training import registry, tracking
    from training.sweep import rank, swept_names

    client = mlflow.MlflowClient()
    reported = {outcome.trial.index: outcome for outcome in outcomes}
    outcomes = [reported.get(t.index) or _recorded_outcome(client, parent_run_id, t) for t in trials]
    evaluations = {o.evaluation_run_id: registry.evaluation_metrics(client, o.evaluation_run_id)
                   for o in outcomes if o.status == "finished"}
    swept = swept_names(trials)
    ranking = rank(outcomes, evaluations, rule, swept)
    with tracking.on_run(parent_run_id):
        tracking.log_ranking(ranking, swept)
    if ranking.winner is None:
        raise SweepFailed(f"all {len(trials)} trials failed; nothing registered or promoted "
                          f"(first error: {outcomes[0].error})")
    return ranking


def sweep(trials: list, base: TrainConfig, job: JobConfig, workers: int = 1,
          on_outcome=lambda outcome: None) -> SweepResult:
    """Run the trials here, `workers` processes at a time, under one parent run; rank them, register
    the winner and promote it by the job's promotion rule (the MLproject's `sweep`)."""
    checks.before_training(base)
    import mlflow

    from training import tracking
    from training.classifier import load_or_train
    from training.data import load_mnist
    from training.workers import run_each

    checks.artifact_store()
    with tracking.start_run("sweep") as parent:
        parent_id = parent.info.run_id
        with tracking.start_run("prepare-data", parent_id):
            mnist = load_mnist(base.data)
            tracking.log_dataset(mnist, base.train_images or len(mnist.x_train))
        load_or_train(mnist)  # once, before the trials look it up in the cache
        mlflow.log_params({"trials": len(trials), "workers": workers, "samples": job.samples})
        mlflow.log_dict({"trials": [t.values for t in trials]}, "sweep/trials.json")
        outcomes = {}

        def finished(index: int, result) -> None:
            outcomes[index] = _outcome(trials[index], result, parent_id)
            on_outcome(outcomes[index])

        with tempfile.TemporaryDirectory() as logs:
            run_each(run_trial, [(t, base, job.samples, parent_id) for t in trials], workers, Path(logs),
                     on_done=finished)
            mlflow.log_artifacts(logs, "sweep/logs")
        ranking = rank_trials(parent_id, trials, list(outcomes.values()), PromotionRule.of(job))
        winner = ranking.winner
        version, promoted = register_and_promote(winner.training_run_id, winner.evaluation_run_id, job,
                                                 parent_id)
        mlflow.set_tags({"winner_trial": str(winner.trial.index), "training_run_id": winner.training_run_id,
                         "registered_model": job.model_name, "registered_version": version,
                         "promoted": str(bool(promoted and promoted.decision.promote)).lower()})
    return SweepResult(parent_id, ranking, job.model_name, version, promoted)


def _recorded_outcome(client, parent_run_id: str, trial):
    """What MLflow recorded of a trial that returned no outcome (its pod or process died, and Kubeflow
    handed over no result): finished if its training and evaluation runs finished."""
    from training.sweep import Outcome, failed

    runs = _trial_runs(client, parent_run_id, trial.index)
    if not runs:
        return failed(trial, "no outcome and no run: its task or process died before training")
    run = runs[0]
    evaluation_run_id = run.data.tags.get("evaluation_run_id")
    if run.info.status == "FINISHED" and evaluation_run_id:
        return Outcome(trial, "finished", run.info.run_id, evaluation_run_id)
    return failed(trial, run.data.tags.get("error") or f"its run ended {run.info.status} "
                                                       "(its task or process died)")


def _outcome(trial, result, parent_run_id: str):
    """A worker's result, or the failure of a trial whose process died (its run closed FAILED)."""
    from training.sweep import failed
    from training.workers import Died

    if not isinstance(result, Died):
        return result
    outcome = failed(trial, f"the trial's {result}")
    _record_failure(parent_run_id, outcome)
    return outcome


# The pipeline's own steps: the dataset as an artifact, the parent run, the classifier, the gate.

def download_data(source: str, target: Path):
    """Fetch MNIST from `source` (the public URL by default), check it (sha256, shapes, labels) and write
    the verified file to `target`, a local copy for offline runs (`--data target`); returns data.Mnist."""
    from training.data import load_mnist

    mnist = load_mnist(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(mnist.path, partial)
    partial.replace(target)
    return mnist


def prepare_data(data: str, dataset_out: str) -> None:
    """Validate MNIST and write the verified bytes as the pipeline's dataset artifact: the same source
    gives the same artifact (so Kubeflow caches this task and the classifier trained on it) and the same
    sha256 as `mlflow run`'s lineage tags."""
    from training.data import load_mnist

    _copy(load_mnist(data).path, Path(dataset_out))


def open_run(data: str, dataset: str, pipeline_run: str) -> str:
    """Open the parent MLflow run of a pipeline run (or adopt an injected MLFLOW_RUN_ID), with the
    dataset logged by a nested `prepare-data` run; returns the parent run id."""
    import mlflow

    from training import tracking
    from training.data import load_mnist

    mnist = load_mnist(dataset)
    with tracking.start_run(f"kfp-{pipeline_run}", run_id=os.environ.get("MLFLOW_RUN_ID")) as parent:
        mlflow.set_tags({"kfp_run": pipeline_run, "data_source": data, "data_sha256": mnist.sha256})
        with tracking.start_run("prepare-data", parent.info.run_id):
            tracking.log_dataset(mnist, len(mnist.x_train))
    return parent.info.run_id


def train_classifier(dataset: str, classifier_out: str) -> float:
    """The MNIST classifier for this dataset (trained, or from the local cache), saved as a folder;
    returns its test accuracy. It learns from the whole training split, whatever `train_images` is."""
    from training import classifier as mnist_classifier
    from training.data import load_mnist

    classifier = mnist_classifier.load_or_train(load_mnist(dataset))
    mnist_classifier.save(classifier, Path(classifier_out))
    return classifier.test_accuracy


def passes_gate(evaluation_run_id: str, rule: PromotionRule) -> tuple[bool, str]:
    """Whether the promotion rule admits the evaluated generator at all (its class coverage), and why."""
    import mlflow

    from training import registry

    return rule.admits(registry.evaluation_metrics(mlflow.MlflowClient(), evaluation_run_id))


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
