"""What each Kubeflow task does, as plain functions over file paths: `components/` only wires KFP
artifacts to these, so the cluster, the local runner and the CLI all run this code.

MLflow: the open-mlflow-run task opens one parent run per KFP run (or adopts an injected MLFLOW_RUN_ID);
every later task re-enters that parent and records its work as a nested run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from training.config import TrainConfig


@contextlib.contextmanager
def _inside(parent_run_id: str):
    """Make the pipeline's parent run the active one, so that jobs' nested runs hang under it."""
    import mlflow

    os.environ.pop("MLFLOW_RUN_ID", None)
    with mlflow.start_run(run_id=parent_run_id):
        yield


def prepare_data(data: str, dataset_path: str) -> None:
    """Validate MNIST and write it as the pipeline's dataset artifact: the verified bytes themselves, so
    the same source gives the same artifact (KFP caches this task and the evaluator trained on it) and
    the same sha256 as `mlflow run`'s lineage tags. (A training subset is the training task's
    `train_images`: the evaluator always learns from the whole training split.)"""
    from training.data import load_mnist

    mnist = load_mnist(data)
    Path(dataset_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mnist.path, dataset_path)


def open_parent_run(data: str, dataset_path: str, kfp_run: str) -> str:
    """Open the parent MLflow run of this pipeline run (or adopt an injected MLFLOW_RUN_ID), with the
    dataset logged by a nested `prepare-data` run; returns the parent run id."""
    import mlflow

    from training import tracking
    from training.data import load_mnist

    mnist = load_mnist(dataset_path)
    with tracking.start_run(run_id=os.environ.get("MLFLOW_RUN_ID"), name=f"kfp-{kfp_run}") as parent:
        mlflow.set_tags({"kfp_run": kfp_run, "data_source": data, "data_sha256": mnist.sha256})
        with tracking.start_run(nested=True, name="prepare-data"):
            tracking.log_dataset(mnist, len(mnist.x_train))
    return parent.info.run_id


def train(config: TrainConfig, parent_run_id: str, generator_dir: str,
          checkpoint_root: str = ".") -> tuple[str, dict[str, float]]:
    """Train on the dataset artifact (config.data); copy the generator into generator_dir/generator.keras;
    returns (run id, last logged metrics).

    Checkpoints go under checkpoint_root/checkpoint_dir/kfp-<parent run id>/, one folder per pipeline
    run: when KFP retries this task after a crash or a preemption (same pipeline run, same inputs), it
    finds its own checkpoint there and resumes it, in the same MLflow run, instead of starting over.
    checkpoint_root is storage that outlives the pod: the pipeline run's workspace, or a mounted volume
    (which also keeps earlier pipeline runs' checkpoints for resume=true).
    """
    from training import checkpoint, jobs
    from training.sampling import generator_path as run_generator

    root = Path(checkpoint_root) / config.checkpoint_dir  # an absolute checkpoint_dir stays as it is
    own_dir = root / f"kfp-{parent_run_id}"
    if checkpoint.latest_run_dir(own_dir) is not None:
        print(f"train: this pipeline run already has a checkpoint in {own_dir} (a retry): resuming it")
        config = config.replace(resume=True)
    elif config.resume:  # resume=true: continue the newest checkpoint of an earlier pipeline run
        earlier = checkpoint.latest_run_dir(root / "*")
        own_dir = earlier.parent if earlier else own_dir
    config = config.replace(checkpoint_dir=str(own_dir))
    with _inside(parent_run_id):
        run_id, result = jobs.train(config, nested=True)
    Path(generator_dir).mkdir(parents=True, exist_ok=True)
    shutil.copy(run_generator(f"runs:/{run_id}"), Path(generator_dir) / "generator.keras")
    last = {name: values[-1][1] for name, values in result.history.items()}
    return run_id, last


def train_classifier(dataset_path: str, classifier_dir: str) -> float:
    """The evaluator for this dataset (trained, or from the local cache), saved as an artifact folder."""
    from training import evaluator
    from training.data import load_mnist

    judge = evaluator.load_or_train(load_mnist(dataset_path))
    evaluator.save(judge, Path(classifier_dir))
    return judge.test_accuracy


def evaluate(dataset_path: str, generator_dir: str, classifier_dir: str, parent_run_id: str,
             training_run_id: str, samples: int, report_html: str, report_md: str) -> tuple[str, dict]:
    """Evaluate the generator artifact with the classifier artifact; returns (run id, metrics)."""
    import mlflow

    from training import evaluator, jobs
    from training.data import load_mnist

    judge = evaluator.load(Path(classifier_dir))
    with _inside(parent_run_id):
        run_id, result = jobs.evaluate(generator_dir, dataset_path, samples,
                                       training_run_id=training_run_id, mnist=load_mnist(dataset_path),
                                       nested=True, judge=judge)
    report = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report"))
    for source, target in ((report / "report.html", report_html), (report / "report.md", report_md)):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return run_id, result.metrics


def passes_gate(evaluation_run_id: str, min_classes_covered: int) -> bool:
    import mlflow

    covered = mlflow.MlflowClient().get_run(evaluation_run_id).data.metrics["classes_covered"]
    print(f"evaluation gate: {covered:g} classes covered, needs {min_classes_covered}")
    return covered >= min_classes_covered


def register(parent_run_id: str, training_run_id: str, evaluation_run_id: str, model_name: str) -> str:
    from training import jobs

    with _inside(parent_run_id):
        return jobs.register(training_run_id, evaluation_run_id, model_name, nested=True)


def promote(parent_run_id: str, model_name: str, version: str, min_fid_gain: float,
            max_classes_lost: int) -> str:
    """Gate the version this pipeline run registered (not whatever `challenger` points at by now, which a
    concurrent run may have moved). Returns the decision as JSON: {"promoted", "reason", "version"}."""
    from training import jobs
    from training.promotion import PromotionRule

    with _inside(parent_run_id):
        decision = jobs.promote(model_name, PromotionRule(min_fid_gain, max_classes_lost), nested=True,
                                version=version)
    return json.dumps({"promoted": decision.promote, "reason": decision.reason,
                       "version": decision.challenger})
