"""The evaluate job: a generator's samples scored against the test split, in an MLflow run with a report."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training import checks, mlflow_env
from training.data import file_sha256, load_mnist
from training.jobs.artifacts import copy_file, evaluator
from training.redaction import redacted

if TYPE_CHECKING:
    from training.evaluation import Evaluation


@dataclass(frozen=True)
class Evaluated:
    run_id: str
    evaluation: Evaluation
    link: str


def evaluate(generator: str, data: str, samples: int, seed: int = 0, training_run_id: str | None = None,
             parent_run_id: str | None = None, classifier_dir: str | None = None,
             report_html: str | None = None, report_md: str | None = None) -> Evaluated:
    """Score `samples` images of the generator (any URI sampling.generator_path takes) against the
    test split. The classifier comes from `classifier_dir` (a pipeline artifact) or the local cache.
    The run records the sha256 of the generator file scored and of the classifier's weights. With
    `training_run_id`, the metrics also go onto that run's generator LoggedModel, which must be this
    very file (else EvaluationMismatch, before any scoring or writing)."""
    import mlflow

    from training import evaluation, registry, report, tracking
    from training.metrics import HEADLINE
    from training.sampling import generator_path, load_generator

    mnist = load_mnist(data)
    generator_file = generator_path(generator)  # the file scored: what its sha256 names
    generator_sha256 = file_sha256(generator_file)
    model_id = training_run_id and registry.generator_of(mlflow.MlflowClient(), training_run_id, generator,
                                                         generator_sha256)
    model = load_generator(str(generator_file))
    checks.artifact_store()
    classifier = evaluator(mnist, classifier_dir)
    started = time.perf_counter()
    result = evaluation.evaluate(model, mnist, classifier, n=samples, seed=seed)
    evaluation_seconds = time.perf_counter() - started
    shown = redacted(generator)  # as recorded: without the credentials or signature a URL may carry
    with tracking.start_run("evaluate", parent_run_id) as run:
        mlflow.log_params({"generator_uri": shown, registry.CHECKSUM_KEY: generator_sha256,
                           "samples": samples, "seed": seed, "evaluator": classifier.key,
                           registry.EVALUATOR_KEY: classifier.fingerprint,
                           "evaluator_test_accuracy": classifier.test_accuracy, "data_sha256": mnist.sha256})
        test_split = tracking.evaluation_dataset(mnist)
        mlflow.log_input(test_split, context="evaluation")
        mlflow.log_metrics(result.metrics, model_id=model_id or None, dataset=test_split)
        mlflow.log_metrics({f"reference_{k}": v for k, v in result.reference.items()}
                           | {"evaluation_seconds": evaluation_seconds})
        title = f"Evaluation of {shown} on {samples} samples"
        if training_run_id:  # the training run shows its evaluation too
            mlflow.set_tag("training_run_id", training_run_id)
            client = mlflow.MlflowClient()
            client.set_tag(training_run_id, "evaluation_run_id", run.info.run_id)
            for name in HEADLINE:
                client.log_metric(training_run_id, name, result.metrics[name])
            which = tracking.describe_generator(client.get_run(training_run_id).data.tags)
            title = f"Evaluation of {shown} ({which}) on {samples} samples"
        with tempfile.TemporaryDirectory() as tmp:
            for path in report.write_report(result, mnist.x_train, Path(tmp), title):
                mlflow.log_artifact(str(path), artifact_path="report")
            for out, name in ((report_html, "report.html"), (report_md, "report.md")):
                if out:
                    copy_file(Path(tmp) / name, Path(out))
    return Evaluated(run.info.run_id, result, mlflow_env.run_link(run.info.run_id))
