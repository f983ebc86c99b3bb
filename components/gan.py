"""The pipeline's components. Hyperparameter names and defaults are the MLproject's (tested)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import GPU_IMAGE, IMAGE


@dsl.component(base_image=IMAGE)
def prepare_data(data: str, dataset: Output[Dataset]):
    """Validated MNIST as an .npz artifact: the same source gives the same artifact (cacheable)."""
    from training import pipeline_tasks

    pipeline_tasks.prepare_data(data, dataset.path)


@dsl.component(base_image=IMAGE)
def open_mlflow_run(data: str, dataset: Input[Dataset], kfp_run: str) -> str:
    """Opens the pipeline run's parent MLflow run, with the dataset as its input; returns its id."""
    from training import pipeline_tasks

    return pipeline_tasks.open_parent_run(data, dataset.path, kfp_run)


@dsl.component(base_image=GPU_IMAGE)
def train_gan(dataset: Input[Dataset], parent_run_id: str, checkpoint_root: str, generator: Output[Model],
              metrics: Output[Metrics], preset: str = "seed", train_images: int = 0, epochs: int = 200,
              batch_size: int = 128,
              learning_rate: float = 0.0002, beta_1: float = 0.5, z_dim: int = 100, n_iter_d: int = 1,
              n_iter_g: int = 5, real_label: float = 0.9, fake_label: float = 0.0, seed: int = 0,
              max_steps: int = 0, precision: str = "auto", log_every: int = 50,
              checkpoint_dir: str = "checkpoints", resume: str = "false") -> str:
    """Train the GAN on the dataset, checkpointing under checkpoint_root (storage that outlives the pod);
    returns the MLflow training run id."""
    from training import pipeline_tasks
    from training.config import TrainConfig

    config = TrainConfig(
        preset=preset, data=dataset.path, train_images=train_images, epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate, beta_1=beta_1, z_dim=z_dim, n_iter_d=n_iter_d, n_iter_g=n_iter_g,
        real_label=real_label, fake_label=fake_label, seed=seed, max_steps=max_steps,
        precision=precision, log_every=log_every, checkpoint_dir=checkpoint_dir,
        resume=resume.lower() == "true")
    run_id, last = pipeline_tasks.train(config, parent_run_id, generator.path, checkpoint_root)
    for name, value in last.items():
        metrics.log_metric(name, value)
    return run_id


@dsl.component(base_image=IMAGE)
def train_classifier(dataset: Input[Dataset], classifier: Output[Model]) -> float:
    """The evaluator CNN for this dataset (KFP caches it); returns its test accuracy."""
    from training import pipeline_tasks

    return pipeline_tasks.train_classifier(dataset.path, classifier.path)


@dsl.component(base_image=IMAGE)
def evaluate(dataset: Input[Dataset], generator: Input[Model], classifier: Input[Model],
             parent_run_id: str, training_run_id: str, samples: int, metrics: Output[Metrics],
             report: Output[HTML], summary: Output[Markdown]) -> str:
    """Score the generator's samples; returns the MLflow evaluation run id."""
    from training import pipeline_tasks

    run_id, values = pipeline_tasks.evaluate(dataset.path, generator.path, classifier.path,
                                             parent_run_id, training_run_id, samples, report.path,
                                             summary.path)
    for name, value in values.items():
        metrics.log_metric(name, value)
    return run_id


@dsl.component(base_image=IMAGE)
def evaluation_gate(evaluation_run_id: str, min_classes_covered: int) -> bool:
    """True when the evaluated generator covers at least min_classes_covered digit classes."""
    from training import pipeline_tasks

    return pipeline_tasks.passes_gate(evaluation_run_id, min_classes_covered)


@dsl.component(base_image=IMAGE)
def register(parent_run_id: str, training_run_id: str, evaluation_run_id: str, model_name: str) -> str:
    """Register the generator as the model's `challenger`; returns the version."""
    from training import pipeline_tasks

    return pipeline_tasks.register(parent_run_id, training_run_id, evaluation_run_id, model_name)


@dsl.component(base_image=IMAGE)
def promote(parent_run_id: str, model_name: str, version: str, min_fid_gain: float,
            max_classes_lost: int) -> str:
    """Move `champion` to this run's version if the promotion rule says so; returns the decision (JSON)."""
    from training import pipeline_tasks

    return pipeline_tasks.promote(parent_run_id, model_name, version, min_fid_gain, max_classes_lost)
