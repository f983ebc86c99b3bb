"""The Kubeflow pipeline's own steps: the dataset as an artifact, the parent run, the classifier, the gate."""

from __future__ import annotations

import os
from pathlib import Path

from training.data import load_mnist
from training.jobs.artifacts import copy_file
from training.promotion import PromotionRule
from training.redaction import redacted


def prepare_data(data: str, dataset_out: str) -> None:
    """Validate MNIST and write the verified bytes as the pipeline's dataset artifact: the same source
    gives the same artifact (so Kubeflow caches this task and the classifier trained on it) and the same
    sha256 as `mlflow run`'s lineage tags."""
    copy_file(load_mnist(data).path, Path(dataset_out))


def open_run(data: str, dataset: str, pipeline_run: str) -> str:
    """The parent MLflow run of a pipeline run, with the dataset logged by a nested `prepare-data` run;
    returns the parent run id. The parent is opened here, or adopted: the run Kubeflow's MLflow plugin
    opened for the pipeline run (whose run for this task then holds the dataset), or an injected
    MLFLOW_RUN_ID."""
    import mlflow

    from training import kfp_plugin, tracking

    mnist = load_mnist(dataset)
    tags = {"kfp_run": pipeline_run, "data_source": redacted(data), "data_sha256": mnist.sha256}
    plugin = kfp_plugin.active()
    if plugin:
        parent_run_id = plugin.parent_run_id
        with tracking.on_run(parent_run_id):  # KFP's run: still running when we leave it (KFP ends it)
            mlflow.set_tags(tags)
    else:
        with tracking.start_run(f"kfp-{pipeline_run}", run_id=os.environ.get("MLFLOW_RUN_ID")) as parent:
            mlflow.set_tags(tags)
        parent_run_id = parent.info.run_id
    with tracking.start_run("prepare-data", parent_run_id):
        tracking.log_dataset(mnist, len(mnist.x_train))
    return parent_run_id


def train_classifier(dataset: str, classifier_out: str) -> float:
    """The MNIST classifier for this dataset (trained, or from the local cache), saved as a folder;
    returns its test accuracy. It learns from the whole training split, whatever `train_images` is."""
    from training import classifier as mnist_classifier

    classifier = mnist_classifier.load_or_train(load_mnist(dataset))
    mnist_classifier.save(classifier, Path(classifier_out))
    return classifier.test_accuracy


def passes_gate(evaluation_run_id: str, rule: PromotionRule) -> tuple[bool, str]:
    """Whether the promotion rule admits the evaluated generator at all (its class coverage), and why."""
    import mlflow

    from training import registry

    return rule.admits(registry.evaluation_metrics(mlflow.MlflowClient(), evaluation_run_id))
