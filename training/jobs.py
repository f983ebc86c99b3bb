"""The jobs a user, the MLproject or a pipeline component runs: each one step, tracked in MLflow.

    train      -> a run with params, metrics, grids and the generator/discriminator
    evaluate   -> a run with the sample metrics, the real-data reference and a report
    register   -> a registry version aliased `challenger`, tagged with its lineage and evaluation
    promote    -> `champion` moved to the challenger only if the rule says so
    main       -> all of the above as nested runs under one parent (the MLproject main entry point)

The CLI and the MLproject call these; so will the Kubeflow components.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from training import checkpoint
from training.config import ConfigError, TrainConfig
from training.data import check_readable


def preflight(config: TrainConfig) -> None:
    """Cheap checks before any heavy import: readable data, and a checkpoint when resuming."""
    check_readable(config.data)
    if not config.resume:
        return
    run_dir = checkpoint.latest_run_dir(Path(config.checkpoint_dir))
    if run_dir is None:
        raise ConfigError(f"resume: no checkpoint under checkpoint_dir={config.checkpoint_dir}")
    try:
        previous = checkpoint.latest_manifest(run_dir)["config"]
    except (ValueError, KeyError):
        return  # an unreadable newest manifest: the loop falls back to an intact one and checks that
    refused = config.resume_conflicts(previous)
    if refused:
        raise ConfigError(f"cannot resume from {run_dir}: it was trained with different {', '.join(refused)}")


def check_tracking_server(timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI (without credentials), when an http(s) tracking server does not
    answer; MLflow itself would retry for minutes. Any HTTP answer, even 401, counts as up."""
    import urllib.error
    import urllib.parse
    import urllib.request

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    shown = parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")).geturl()
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"MLflow tracking server {shown} is unreachable ({reason}); start it or set "
                          "MLFLOW_TRACKING_URI") from None


def check_artifact_store() -> None:
    """Fail fast when the experiment's artifacts go to an S3 bucket this process cannot reach, naming
    the endpoint and the bucket, never a credential (MLflow would fail only when logging, after training)."""
    import urllib.parse

    import boto3
    import botocore.exceptions
    import mlflow

    from training import tracking

    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    experiment = mlflow.get_experiment(experiment_id) if experiment_id else mlflow.set_experiment(tracking.EXPERIMENT)
    location = urllib.parse.urlparse(experiment.artifact_location)
    if location.scheme != "s3":
        return
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"S3 artifact store {endpoint or 'AWS S3'}, bucket {location.netloc}"
    try:
        boto3.client("s3", endpoint_url=endpoint).head_bucket(Bucket=location.netloc)
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise ConfigError(f"{where}: access refused ({code}); check AWS_ACCESS_KEY_ID, "
                          "AWS_SECRET_ACCESS_KEY and that the bucket exists") from None
    except botocore.exceptions.BotoCoreError as err:
        raise ConfigError(f"{where}: unreachable ({type(err).__name__})") from None


def train(config: TrainConfig, mnist=None, nested: bool = False):
    """Train inside an MLflow run (re-opened when resuming); returns (run id, TrainResult)."""
    preflight(config)
    from training import loop, preprocess, tracking
    from training.data import load_mnist

    mnist = mnist or load_mnist(config.data)
    num_images = config.train_images or len(mnist.x_train)
    if num_images > len(mnist.x_train):
        raise ConfigError(f"train_images must be in 0..{len(mnist.x_train)} (got {num_images})")
    if config.batch_size > num_images:
        raise ConfigError(f"batch_size must be in 1..{num_images} (got {config.batch_size})")
    train_images = preprocess.to_unit_range(mnist.x_train[:num_images])
    check_artifact_store()

    resume_dir = checkpoint.latest_run_dir(Path(config.checkpoint_dir)) if config.resume else None
    manifest = checkpoint.latest_manifest(resume_dir) if resume_dir else {}
    attached = os.environ.get("MLFLOW_RUN_ID") and not nested
    resume_run_id = None if attached else manifest.get("run_id")
    with tracking.start_run(resume_run_id, nested=nested, name="train") as run:
        continuing = manifest.get("run_id") == run.info.run_id  # else a new run, e.g. from `mlflow run`
        tracking.log_start(config, mnist, num_images, resumed=continuing)
        run_dir = resume_dir or Path(config.checkpoint_dir) / run.info.run_id
        tracker = tracking.MlflowTracker(run.info.run_id, run_dir)
        try:
            result = loop.train(config, train_images, tracker, run_id=run.info.run_id, checkpoint_dir=run_dir)
        finally:
            tracker.outbox.send()  # best effort on the way out; the journal keeps the rest for --resume
        tracker.close()
        tracking.log_final(result)
    print(f"train: run {run.info.run_id}, {result.global_step} steps, {result.epochs_done} epoch(s)")
    return run.info.run_id, result


def evaluate(generator_uri: str, data: str, samples: int, seed: int = 0,
             training_run_id: str | None = None, mnist=None, nested: bool = False, judge=None):
    """Score `samples` images of the generator against the test split; returns (run id, Evaluation).
    `judge` is the evaluator to use; by default the cached one for this data."""
    import mlflow

    from training import evaluation, evaluator, metrics, report, tracking
    from training.data import load_mnist
    from training.sampling import load_generator

    mnist = mnist or load_mnist(data)
    generator = load_generator(generator_uri)
    check_artifact_store()
    judge = judge or evaluator.load_or_train(mnist)
    started = time.perf_counter()
    result = evaluation.evaluate(generator, mnist, judge, n=samples, seed=seed)
    evaluation_seconds = time.perf_counter() - started
    with tracking.start_run(nested=nested, name="evaluate") as run:
        mlflow.log_params({"generator_uri": generator_uri, "samples": samples, "seed": seed,
                           "evaluator": judge.key, "evaluator_test_accuracy": judge.test_accuracy,
                           "data_sha256": mnist.sha256})
        mlflow.log_metrics({**result.metrics, "evaluation_seconds": evaluation_seconds})
        mlflow.log_metrics({f"reference_{k}": v for k, v in result.reference.items()})
        if training_run_id:
            mlflow.set_tag("training_run_id", training_run_id)
            mlflow.MlflowClient().set_tag(training_run_id, "evaluation_run_id", run.info.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            title = f"Evaluation of {generator_uri} on {samples} samples"
            for path in report.write_report(result, mnist.x_train, Path(tmp), title):
                mlflow.log_artifact(str(path), artifact_path="report")
    print(f"evaluate: run {run.info.run_id}, " + ", ".join(
        f"{k} {result.metrics[k]:.4g} (reference {result.reference[k]:.4g})" for k in metrics.HEADLINE))
    return run.info.run_id, result


def register(training_run_id: str, evaluation_run_id: str, name: str, nested: bool = False) -> str:
    """Register the training run's generator with the evaluation run's metrics; returns the version."""
    import mlflow

    from training import registry, tracking
    from training.sampling import generator_path

    client = mlflow.MlflowClient()
    evaluation_run = client.get_run(evaluation_run_id).data
    evaluated = dict(evaluation_run.metrics)
    if "samples" in evaluation_run.params:
        evaluated["samples"] = float(evaluation_run.params["samples"])
    missing = [m for m in registry.EVALUATION_KEYS if m not in evaluated]
    if missing:
        raise ConfigError(f"evaluation run {evaluation_run_id} lacks metrics {', '.join(missing)}")
    trained = client.get_run(training_run_id).data.params
    tags = {"evaluation_run_id": evaluation_run_id, "data_sha256": trained.get("data_sha256", ""),
            "preset": trained.get("preset", "")}
    check_artifact_store()
    with tracking.start_run(nested=nested, name="register"):
        version = registry.register_generator(
            generator_path(f"runs:/{training_run_id}"), name, training_run_id,
            {m: evaluated[m] for m in registry.EVALUATION_KEYS}, tags)
        mlflow.set_tags({"registered_model": name, "registered_version": version})
    print(f"register: {name} version {version} is '{registry.CHALLENGER}'")
    return version


def promote(name: str, rule, dry_run: bool = False, target_uri: str | None = None,
            target_name: str | None = None, nested: bool = False, version: str | None = None):
    """Gate `version` (default: the challenger) against the champion (in the target registry when one
    is given)."""
    import mlflow

    from training import registry, tracking

    client = mlflow.MlflowClient()
    if target_uri:
        source = version or client.get_model_version_by_alias(name, registry.CHALLENGER).version
        copied = registry.copy_to_registry(name, str(source), target_uri, target_name)
        print(f"promote: copied {name}/{source} to {target_uri} as {target_name or name}/{copied}")
        name, version = target_name or name, copied
        client = mlflow.MlflowClient(tracking_uri=target_uri, registry_uri=target_uri)
    context = contextlib.nullcontext() if dry_run or not nested else tracking.start_run(nested=True, name="promote")
    with context:
        decision = registry.promote(name, rule, dry_run=dry_run, client=client, version=version)
        if nested and not dry_run:
            mlflow.set_tags({"promoted": str(decision.promote).lower(), "reason": decision.reason,
                             "challenger_version": decision.challenger})
    would = "would " if dry_run else ""
    if decision.promote:
        verdict = f"{would}promote {name} version {decision.challenger} to champion"
    else:
        verdict = f"{would}keep the champion (version {decision.champion}), refuse {decision.challenger}"
    print(f"promote{' (dry run)' if dry_run else ''}: {verdict}: {decision.reason}")
    return decision


def main(config: TrainConfig, samples: int, model_name: str, rule) -> None:
    """prepare data -> train -> evaluate -> register -> promote, nested under one parent run."""
    preflight(config)
    import mlflow

    from training import tracking
    from training.data import load_mnist

    check_artifact_store()
    with tracking.start_run(name="main") as parent:
        with tracking.start_run(nested=True, name="prepare-data"):
            mnist = load_mnist(config.data)
            tracking.log_dataset(mnist, config.train_images or len(mnist.x_train))
        training_run_id, _ = train(config, mnist=mnist, nested=True)
        evaluation_run_id, result = evaluate(f"runs:/{training_run_id}", config.data, samples,
                                             training_run_id=training_run_id, mnist=mnist, nested=True)
        version = register(training_run_id, evaluation_run_id, model_name, nested=True)
        decision = promote(model_name, rule, nested=True, version=version)
        mlflow.set_tags({"training_run_id": training_run_id, "evaluation_run_id": evaluation_run_id,
                         "registered_model": model_name, "registered_version": version,
                         "promoted": str(decision.promote).lower()})
        mlflow.log_metrics(result.metrics)
    print(f"main: run {parent.info.run_id} done")


def rollback(name: str) -> tuple[str, str]:
    from training import registry

    demoted, restored = registry.rollback(name)
    print(f"rollback: {name} champion moved from version {demoted} back to {restored}")
    return demoted, restored


def sample(model_uri: str, n: int, seed: int, out: Path) -> Path:
    """Write n digits as uint8 (n, 28, 28) under key `images` in `out` (.npz), and a PNG grid beside it."""
    import numpy as np

    from training import images
    from training.sampling import generate, load_generator

    digits = images.to_uint8(generate(load_generator(model_uri), n, seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.npz")
    np.savez_compressed(partial, images=digits)
    partial.replace(out)
    images.grid(digits[:64], caption=f"{model_uri}, seed {seed}").save(out.with_suffix(".png"))
    print(f"sample: {n} images -> {out} and {out.with_suffix('.png')}")
    return out
