"""preprocess -> train (GPU) + evaluator -> evaluate -> register -> promote (behind the evaluation gate).

Cluster settings are compile-time arguments of `build`; MLflow and S3 credentials reach the tasks
from a Kubernetes secret as environment variables, never as pipeline parameters.
"""

from dataclasses import dataclass

from kfp import dsl, kubernetes

from components import gan
from training.config import DEFAULT_DATA_URL, DEFAULT_EVAL_SAMPLES, DEFAULT_MODEL_NAME

# Secret key -> environment variable; every task that talks to MLflow or S3 gets these.
SECRET_ENV = {key: key for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                     "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
                                     "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")}


@dataclass(frozen=True)
class ClusterSettings:
    secret_name: str = "mnist-gan-tracking"
    gpu_type: str = "nvidia.com/gpu"
    gpu_count: int = 1
    cpu_only: bool = False
    train_cpu: str = "4"
    train_memory: str = "16G"
    retries: int = 2


def build(settings: ClusterSettings = ClusterSettings()):
    """The pipeline function for these cluster settings."""

    @dsl.pipeline(name="mnist-gan", description="Train, evaluate, register and promote the MNIST GAN.")
    def mnist_gan(data: str = DEFAULT_DATA_URL, train_images: int = 0, preset: str = "seed",
                  epochs: int = 200, batch_size: int = 128, learning_rate: float = 0.0002,
                  beta_1: float = 0.5, z_dim: int = 100, n_iter_d: int = 1, n_iter_g: int = 5,
                  real_label: float = 0.9, fake_label: float = 0.0, seed: int = 0, max_steps: int = 0,
                  precision: str = "auto", log_every: int = 50, checkpoint_dir: str = "checkpoints",
                  resume: str = "false", samples: int = DEFAULT_EVAL_SAMPLES,
                  model_name: str = DEFAULT_MODEL_NAME, min_fid_gain: float = 0.0,
                  max_classes_lost: int = 0, min_classes_covered: int = 10):
        prep = gan.preprocess(data=data, kfp_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        parent = prep.outputs["Output"]
        train = gan.train_gan(
            dataset=prep.outputs["dataset"], parent_run_id=parent, preset=preset,
            train_images=train_images, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, beta_1=beta_1, z_dim=z_dim,
            n_iter_d=n_iter_d, n_iter_g=n_iter_g, real_label=real_label, fake_label=fake_label, seed=seed,
            max_steps=max_steps, precision=precision, log_every=log_every,
            checkpoint_dir=checkpoint_dir, resume=resume)
        train.set_cpu_request(settings.train_cpu).set_memory_request(settings.train_memory)
        train.set_retry(num_retries=settings.retries, backoff_duration="60s")
        if not settings.cpu_only:
            train.set_accelerator_type(settings.gpu_type).set_accelerator_limit(settings.gpu_count)
        classifier = gan.train_classifier(dataset=prep.outputs["dataset"])
        scored = gan.evaluate(
            dataset=prep.outputs["dataset"], generator=train.outputs["generator"],
            classifier=classifier.outputs["classifier"], parent_run_id=parent,
            training_run_id=train.outputs["Output"], samples=samples)
        registered = gan.register(parent_run_id=parent, training_run_id=train.outputs["Output"],
                                  evaluation_run_id=scored.outputs["Output"], model_name=model_name)
        gate = gan.evaluation_gate(evaluation_run_id=scored.outputs["Output"],
                                   min_classes_covered=min_classes_covered)
        tracked = [prep, train, scored, registered, gate]
        with dsl.If(gate.output == True):  # a KFP condition on the gate task, not a Python bool
            promoted = gan.promote(parent_run_id=parent, model_name=model_name, version=registered.output,
                                   min_fid_gain=min_fid_gain, max_classes_lost=max_classes_lost)
            tracked.append(promoted)
        for task in tracked:
            kubernetes.use_secret_as_env(task, secret_name=settings.secret_name,
                                         secret_key_to_env=SECRET_ENV, optional=True)

    return mnist_gan


def compile_to(path: str, settings: ClusterSettings = ClusterSettings()) -> None:
    from kfp import compiler

    compiler.Compiler().compile(build(settings), package_path=path)
