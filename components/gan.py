"""The pipeline's components: typed Kubeflow signatures whose bodies make one call into `training.jobs`.

The training component's hyperparameters are TrainConfig's, with its defaults (tests/test_pipeline.py
holds them to it); its body hands them over in one call.
"""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.container_images import GPU_IMAGE, IMAGE


@dsl.component(base_image=IMAGE)
def prepare_data(data: str, dataset: Output[Dataset]):
    """Validated MNIST as an .npz artifact: the same source gives the same artifact (cacheable)."""
    from training import jobs

    jobs.prepare_data(data, dataset.path)


@dsl.component(base_image=IMAGE)
def open_mlflow_run(data: str, dataset: Input[Dataset], kfp_run: str) -> str:
    """Opens the pipeline run's parent MLflow run, with the dataset as its input; returns its id."""
    from training import jobs

    return jobs.open_run(data, dataset.path, kfp_run)


@dsl.component(base_image=GPU_IMAGE)
def train_gan(dataset: Input[Dataset], parent_run_id: str, checkpoint_root: str, generator: Output[Model],
              metrics: Output[Metrics], classifier: Input[Model] = None, preset: str = "seed",
              train_images: int = 0, epochs: int = 200, batch_size: int = 0, learning_rate: float = 0.0,
              beta_1: float = 0.5, z_dim: int = 100, n_iter_d: int = 1, n_iter_g: int = 0,
              real_label: float = 0.9, fake_label: float = 0.0, ema_decay: float = 0.999, eval_every: int = 5,
              eval_samples: int = 2000, select: str = "auto", seed: int = 0, max_steps: int = 0,
              max_minutes: float = 0.0, precision: str = "auto", devices: int = 1, log_every: int = 50,
              checkpoint_dir: str = "checkpoints", resume: bool = False) -> str:
    """Train the GAN on the dataset, checkpointing under checkpoint_root (storage that outlives the pod),
    the classifier scoring its FID curve (without one, the image's cache trains its own); `generator` is
    the one the run exports (averaged, best). Returns the MLflow training run id."""
    from training import jobs
    from training.config import TrainConfig
    from training.kfp_plugin import task_metrics

    config = TrainConfig.pick({**locals(), "data": dataset.path})
    trained = jobs.train(config, parent_run_id, checkpoint_root, generator_out=generator.path,
                         classifier_dir=classifier.path if classifier else None)
    if trained.resumed:
        print(f"train: resumed from a checkpoint under {checkpoint_root} (a retry, or resume=true)")
    for name, value in task_metrics(trained.last_metrics()).items():
        metrics.log_metric(name, value)
    generator.metadata.update({"mlflow_run_id": trained.run_id, "mlflow_model_id": trained.model_id,
                               "mlflow_run": trained.link, **trained.exported()})
    return trained.run_id


@dsl.component(base_image=GPU_IMAGE)
def train_and_evaluate_trial(
        dataset: Input[Dataset], classifier: Input[Model], kfp_run: str, checkpoint_root: str,
        trial: str, samples: int, preset: str = "seed", train_images: int = 0, epochs: int = 200,
        batch_size: int = 0, learning_rate: float = 0.0, beta_1: float = 0.5, z_dim: int = 100,
        n_iter_d: int = 1, n_iter_g: int = 0, real_label: float = 0.9, fake_label: float = 0.0,
        ema_decay: float = 0.999, eval_every: int = 5, eval_samples: int = 2000, select: str = "auto",
        seed: int = 0, max_steps: int = 0, max_minutes: float = 0.0, precision: str = "auto",
        devices: int = 1, log_every: int = 50, checkpoint_dir: str = "checkpoints",
        resume: bool = False) -> str:
    """One trial of a sweep (`trial`: its values as JSON, over these): train, then evaluate, under the
    pipeline run's parent MLflow run; returns the outcome as JSON. A trial that fails is an outcome too,
    so the sweep goes on without it."""
    from training import jobs
    from training.config import TrainConfig
    from training.sweep import Trial

    base = TrainConfig.pick({**locals(), "data": dataset.path})
    outcome = jobs.run_pipeline_trial(Trial.from_json(trial), base, samples, kfp_run, checkpoint_root,
                                      classifier.path)
    print(f"trial {outcome.trial.index}: {outcome.status} {outcome.error}")
    return outcome.to_json()


@dsl.component(base_image=IMAGE)
def rank_trials(trials: list, min_fid_gain: float, max_classes_lost: int, min_classes_covered: int,
                confidence: float, parent_run_id: str = "", outcomes: Optional[list] = None,  # noqa: UP045 (kfp reads Optional, not `| None`)
                ) -> NamedTuple("Winner", training_run_id=str, evaluation_run_id=str):
    """Rank the sweep's trials by the promotion rule (the ranking goes onto the parent run); returns
    the winner's runs. Fails when every trial failed. It runs even when a trial's task failed, so its
    inputs from other tasks have defaults (Kubeflow's rule for such tasks)."""
    from collections import namedtuple

    from training import jobs
    from training.promotion import PromotionRule
    from training.sweep import Outcome, Trial

    ranking = jobs.rank_trials(parent_run_id, [Trial.from_json(t) for t in trials],
                               [Outcome.from_json(o) for o in outcomes or []],
                               PromotionRule(min_fid_gain, max_classes_lost, min_classes_covered, confidence))
    winner = ranking.winner
    print(f"sweep: trial {winner.trial.index} of {len(trials)} wins (run {winner.training_run_id})")
    return namedtuple("Winner", "training_run_id evaluation_run_id")(winner.training_run_id,
                                                                      winner.evaluation_run_id)


@dsl.component(base_image=IMAGE)
def train_classifier(dataset: Input[Dataset], classifier: Output[Model]) -> float:
    """The MNIST classifier that judges samples, for this dataset (KFP caches it); returns its test
    accuracy."""
    from training import jobs

    return jobs.train_classifier(dataset.path, classifier.path)


@dsl.component(base_image=IMAGE)
def evaluate(dataset: Input[Dataset], generator: Input[Model], classifier: Input[Model],
             parent_run_id: str, training_run_id: str, samples: int, metrics: Output[Metrics],
             report: Output[HTML], summary: Output[Markdown]) -> str:
    """Score the generator's samples; returns the MLflow evaluation run id."""
    from training import jobs
    from training.kfp_plugin import task_metrics

    evaluated = jobs.evaluate(generator.path, dataset.path, samples, training_run_id=training_run_id,
                              parent_run_id=parent_run_id, classifier_dir=classifier.path,
                              report_html=report.path, report_md=summary.path)
    for name, value in task_metrics(evaluated.evaluation.metrics).items():
        metrics.log_metric(name, value)
    report.metadata["mlflow_run"] = evaluated.link
    return evaluated.run_id


@dsl.component(base_image=IMAGE)
def evaluation_gate(evaluation_run_id: str, min_fid_gain: float, max_classes_lost: int,
                    min_classes_covered: int, confidence: float) -> bool:
    """True when the promotion rule admits the evaluated generator at all (the classes it covers)."""
    from training import jobs
    from training.promotion import PromotionRule

    rule = PromotionRule(min_fid_gain, max_classes_lost, min_classes_covered, confidence)
    passes, why = jobs.passes_gate(evaluation_run_id, rule)
    print(f"evaluation gate: {'passed' if passes else 'refused'}: {why}")
    return passes


@dsl.component(base_image=IMAGE)
def register(parent_run_id: str, training_run_id: str, evaluation_run_id: str, model_name: str) -> str:
    """Register the trained generator as the model's `challenger`; returns the version."""
    from training import jobs

    return jobs.register(training_run_id, evaluation_run_id, model_name, parent_run_id)


@dsl.component(base_image=IMAGE)
def promote(parent_run_id: str, model_name: str, version: str, dataset: Input[Dataset],
            classifier: Input[Model], samples: int, min_fid_gain: float, max_classes_lost: int,
            min_classes_covered: int, confidence: float, generator: Input[Model] = None
            ) -> NamedTuple("Promotion", promoted=bool, decision=str):
    """Move `champion` to this run's version (not whatever `challenger` points at by now, which a
    concurrent run may have moved) if the promotion rule says so, scored head to head with the champion
    by the pipeline's classifier on the dataset's test split; returns whether it moved, and the decision
    as JSON. The `generator` artifact, when given, is checked in place; otherwise the version's files are."""
    import json
    from collections import namedtuple

    from training import jobs
    from training.head_to_head import Judge
    from training.promotion import PromotionRule

    rule = PromotionRule(min_fid_gain, max_classes_lost, min_classes_covered, confidence)
    judge = Judge(dataset.path, samples, classifier_dir=classifier.path)
    decision = jobs.promote(model_name, rule, judge, parent_run_id=parent_run_id, version=version,
                            generator_file=generator and f"{generator.path}/generator.keras").decision
    said = {"promoted": decision.promote, "reason": decision.reason, "version": decision.challenger}
    return namedtuple("Promotion", "promoted decision")(decision.promote, json.dumps(said))


@dsl.component(base_image=IMAGE)
def deploy(model_name: str, inference_service: str, namespace: str, artifacts_destination: str,
           model_reader: str, canary_traffic_percent: int, timeout: int) -> str:
    """Point the InferenceService (in `namespace`, "" for this pod's; created if absent) at the
    champion's model files and wait until KServe reports it Ready; the registry records which version
    it serves. The pod's service account must be allowed to (infra/k8s/serving/deployer.yaml). Returns
    the deploy as JSON."""
    import json

    from training import jobs, summaries
    from training.deploy import Target

    target = Target(inference_service, namespace or None, artifacts_destination, model_reader,
                    canary_traffic_percent, timeout)
    deployed = jobs.deploy(model_name, target)
    print(summaries.deployed_line(deployed))
    return json.dumps({"version": deployed.version, "inference_service": deployed.service,
                       "storage_uri": deployed.storage_uri, "canary_traffic_percent": canary_traffic_percent})
