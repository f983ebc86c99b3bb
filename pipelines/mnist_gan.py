"""prepare data -> open the MLflow run -> train (GPU) + evaluator -> evaluate -> register -> promote
(behind the evaluation gate) -> deploy (when the champion moved, if the cluster serves it); as a sweep,
the trials (train + evaluate, on GPUs) fan out in parallel and their ranked winner is registered and
promoted.

Cluster settings are compile-time arguments of `build`; MLflow and S3 credentials reach the tasks
from a Kubernetes secret as environment variables, never as pipeline parameters.
"""

import dataclasses
from dataclasses import dataclass

from kfp import dsl, kubernetes

from components import gan
from training.config import DEFAULT_DATA_URL, ConfigError, TrainConfig, names
from training.deploy import Target

# Secret key -> environment variable; every task that talks to MLflow or S3 gets these.
SECRET_ENV = {key: key for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                     "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
                                     "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")}


CHECKPOINT_MOUNT = "/mnt/checkpoints"  # where a checkpoint volume is mounted in the training pod


@dataclass(frozen=True)
class ClusterSettings:
    """Compile-time settings of the cluster the pipeline runs on."""

    secret_name: str = "mnist-gan-tracking"
    gpu_type: str = "nvidia.com/gpu"
    gpu_count: int = 1  # the training task requests these GPUs and trains data-parallel on all of them
    cpu_only: bool = False
    # GPU node pools are usually tainted: the training pod tolerates these taint keys (any value,
    # NoSchedule) and may be pinned to labelled nodes, e.g. (("nvidia.com/gpu.present", "true"),).
    gpu_tolerations: tuple[str, ...] = ("nvidia.com/gpu",)
    gpu_node_selector: tuple[tuple[str, str], ...] = ()
    train_cpu: str = "4"
    train_memory: str = "16Gi"
    task_cpu: str = "1"
    task_memory: str = "4Gi"
    # Checkpoints: a PersistentVolumeClaim to mount (kept across pipeline runs, so resume=true can
    # continue an earlier run), or "" for the pipeline run's own workspace (kept for retries only).
    checkpoint_pvc: str = ""
    workspace_size: str = "20Gi"
    retries: int = 2
    retry_backoff: str = "60s"
    sweep_parallelism: int = 4  # a sweep's trials that train at once (each on gpu_count GPUs)
    # The KServe InferenceService that serves the champion: a deploy task follows each promotion that
    # moves it. None: nothing is served on the cluster.
    serving: Target | None = None

    def __post_init__(self) -> None:
        if self.gpu_count < 1 or (self.cpu_only and self.gpu_count != 1):
            raise ConfigError(f"gpu_count must be at least 1, and 1 with cpu_only (got {self.gpu_count})")
        if self.sweep_parallelism < 1:
            raise ConfigError(f"sweep_parallelism must be at least 1 (got {self.sweep_parallelism})")
        for name in ("train_cpu", "train_memory", "task_cpu", "task_memory", "workspace_size"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")


def _limit_resources(task, cpu: str, memory: str) -> None:
    """Request cpu and memory and cap both at the request (a task over its memory is killed, not its
    node)."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)


def _place_on_gpu_nodes(task, settings: ClusterSettings) -> None:
    task.set_accelerator_type(settings.gpu_type).set_accelerator_limit(settings.gpu_count)
    for key in settings.gpu_tolerations:
        kubernetes.add_toleration(task, key=key, operator="Exists", effect="NoSchedule")
    for key, value in settings.gpu_node_selector:
        kubernetes.add_node_selector(task, label_key=key, label_value=value)


def build(settings: ClusterSettings = ClusterSettings(), trials: list | None = None):
    """The pipeline function for these cluster settings: one training, or with `trials` (a sweep's,
    training/sweep.py) a sweep whose trials fan out under a ParallelFor and whose ranked winner goes on
    to the same register -> gate -> promote (-> deploy)."""
    workspace = None if settings.checkpoint_pvc else dsl.WorkspaceConfig(size=settings.workspace_size)
    checkpoint_root = CHECKPOINT_MOUNT if settings.checkpoint_pvc else dsl.WORKSPACE_PATH_PLACEHOLDER

    def as_training_task(task):
        task.set_retry(num_retries=settings.retries, backoff_duration=settings.retry_backoff)
        if settings.checkpoint_pvc:
            kubernetes.mount_pvc(task, pvc_name=settings.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
        if settings.cpu_only:
            task.set_container_image(gan.IMAGE)
        else:
            _place_on_gpu_nodes(task, settings)
        if settings.gpu_count > 1:  # data parallel over the pod's GPUs is JAX's (the image has both)
            task.set_env_variable("KERAS_BACKEND", "jax")
        _limit_resources(task, settings.train_cpu, settings.train_memory)
        return task

    @dsl.pipeline(name="mnist-gan-sweep" if trials else "mnist-gan",
                  description="Train, evaluate, register and promote the MNIST GAN.",
                  pipeline_config=dsl.PipelineConfig(workspace=workspace))
    def mnist_gan(data: str = DEFAULT_DATA_URL, train_images: int = 0, preset: str = "seed",
                  epochs: int = 200, batch_size: int = 0, learning_rate: float = 0.0,
                  beta_1: float = 0.5, z_dim: int = 100, n_iter_d: int = 1, n_iter_g: int = 0,
                  real_label: float = 0.9, fake_label: float = 0.0, ema_decay: float = 0.999,
                  eval_every: int = 5, eval_samples: int = 2000, select: str = "auto", seed: int = 0,
                  max_steps: int = 0, max_minutes: float = 0.0, precision: str = "auto", log_every: int = 50,
                  checkpoint_dir: str = "checkpoints", resume: bool = False, samples: int = 10_000,
                  model_name: str = "mnist-gan-generator", min_fid_gain: float = 0.0,
                  max_classes_lost: int = 0, min_classes_covered: int = 10, confidence: float = 0.95):
        # Parameters and defaults are TrainConfig's and JobConfig's (tests/test_config.py holds them),
        # but for `devices`: the GPUs the training task requests, a cluster setting.
        hyperparameters = {name: value for name, value in locals().items()
                           if name in names(TrainConfig) and name != "data"}
        # One PromotionRule, asked by the tasks that rank, gate and promote.
        rule = {"min_fid_gain": min_fid_gain, "max_classes_lost": max_classes_lost,
                "min_classes_covered": min_classes_covered, "confidence": confidence}
        # Cacheable: the same data gives the same dataset, and so the same evaluator.
        prep = gan.prepare_data(data=data)
        classifier = gan.train_classifier(dataset=prep.outputs["dataset"])
        # Never cached: each writes to MLflow, and a cached answer would point at another run's records.
        opened = gan.open_mlflow_run(data=data, dataset=prep.outputs["dataset"],
                                     kfp_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        parent = opened.output
        training = dict(dataset=prep.outputs["dataset"], classifier=classifier.outputs["classifier"],
                        checkpoint_root=checkpoint_root,
                        devices=settings.gpu_count, **hyperparameters)
        if trials:
            specs = [trial.to_json() for trial in trials]
            with dsl.ParallelFor(items=specs, parallelism=settings.sweep_parallelism) as trial:
                # A trial finds its parent run by the pipeline run's id: kfp.local (2.17) hands a loop's
                # tasks the loop item in place of any other task's output parameter.
                tried = as_training_task(gan.train_and_evaluate_trial(
                    kfp_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, trial=trial, samples=samples,
                    **training).after(opened))
            ranked = gan.rank_trials(parent_run_id=parent, trials=specs, outcomes=dsl.Collected(tried.output),
                                     **rule)
            ranked.ignore_upstream_failure()  # a trial whose pod died is ranked as failed
            tracked = [opened, tried, ranked]
            training_run, evaluation_run = (ranked.outputs["training_run_id"],
                                            ranked.outputs["evaluation_run_id"])
            generator = {}  # promote checks the registered files themselves
        else:
            train = as_training_task(gan.train_gan(parent_run_id=parent, **training))
            scored = gan.evaluate(
                dataset=prep.outputs["dataset"], generator=train.outputs["generator"],
                classifier=classifier.outputs["classifier"], parent_run_id=parent,
                training_run_id=train.outputs["Output"], samples=samples)
            tracked = [opened, train, scored]
            training_run, evaluation_run = train.outputs["Output"], scored.outputs["Output"]
            generator = {"generator": train.outputs["generator"]}
        registered = gan.register(parent_run_id=parent, training_run_id=training_run,
                                  evaluation_run_id=evaluation_run, model_name=model_name)
        gate = gan.evaluation_gate(evaluation_run_id=evaluation_run, **rule)
        tracked += [registered, gate]
        with dsl.If(gate.output == True):  # a KFP condition on the gate task, not a Python bool
            promoted = gan.promote(parent_run_id=parent, model_name=model_name, version=registered.output,
                                   dataset=prep.outputs["dataset"], samples=samples,
                                   classifier=classifier.outputs["classifier"], **rule, **generator)
            tracked.append(promoted)
            if settings.serving:  # namespace "": the pod's own (a component input cannot be None)
                target = settings.serving
                inputs = dataclasses.asdict(target) | {"namespace": target.namespace or ""}
                with dsl.If(promoted.outputs["promoted"] == True):  # the champion moved
                    tracked.append(gan.deploy(model_name=model_name, **inputs))
        for task in [prep, classifier, *tracked]:
            if task is not tracked[1]:  # the training task (or trial) has its own resources
                _limit_resources(task, settings.task_cpu, settings.task_memory)
        for task in tracked:
            task.set_caching_options(enable_caching=False)
            kubernetes.use_secret_as_env(task, secret_name=settings.secret_name,
                                         secret_key_to_env=SECRET_ENV, optional=True)

    return mnist_gan


def compile_to(path: str, settings: ClusterSettings = ClusterSettings(), trials: list | None = None) -> None:
    from kfp import compiler

    compiler.Compiler().compile(build(settings, trials), package_path=path)
