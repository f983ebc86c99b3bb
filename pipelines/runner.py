"""Compile the pipeline, run it with the local runner, or submit it to a Kubeflow Pipelines cluster."""

import datetime
import functools
from pathlib import Path

from pipelines.mnist_gan import ClusterSettings, build, compile_to

TERMINAL_FAILURES = ("FAILED", "CANCELED", "CANCELING", "SKIPPED")
EVALUATOR_MOUNT = "/mnt/mnist-gan-evaluator"  # where the docker runner's containers see the host's


@functools.cache
def pipeline_parameters() -> dict:
    """Name -> default of every pipeline parameter, read from the compiled pipeline's signature."""
    return {name: spec.default for name, spec in build().component_spec.inputs.items()}


def check_arguments(arguments: dict[str, str], devices: int = 1) -> dict:
    """Parse and check pipeline arguments given as text exactly as the jobs will (TrainConfig and
    JobConfig, together with the defaults), on the `devices` the training task gets (the GPUs it
    requests), before anything is compiled or submitted; returns the typed values. So a combination the
    training task would refuse on the cluster (a batch `devices` cannot share evenly) is refused here."""
    from training.config import JobConfig, TrainConfig, names

    unknown = sorted(set(arguments) - set(pipeline_parameters()))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s): {', '.join(unknown)}")
    typed = {}
    for cls, extra in ((TrainConfig, {"devices": devices}), (JobConfig, {})):
        config = cls.from_text({k: v for k, v in arguments.items() if k in names(cls)} | extra)
        typed.update({k: v for k, v in config.to_dict().items() if k in arguments})
    return typed


def compile_pipeline(output: Path, settings: ClusterSettings, trials: list | None = None) -> Path:
    """The pipeline YAML, a sweep's when `trials` (training/sweep.py) are given: written beside `output`,
    then put in its place whole (a reader never sees half of one)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    try:
        compile_to(str(partial), settings, trials)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def run_local(arguments: dict, pipeline_root: Path, runner: str = "subprocess",
              hosts: dict[str, str] | None = None, network: str = "host", trials: list | None = None) -> None:
    """The whole pipeline on this machine (kfp.local): each task as a process in this Python environment
    (runner "subprocess"), or in the component image (runner "docker": Docker, or podman through its
    Docker-compatible socket in DOCKER_HOST), on `network` with `hosts` (name -> IP) in /etc/hosts.
    Tasks that can be cached (the dataset, the evaluator) are reused by later runs on the same root."""
    import warnings

    from kfp import local

    pipeline_root = pipeline_root.resolve()
    workspace = pipeline_root / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    if runner == "docker":
        if "data" in arguments:
            arguments = {**arguments, "data": _visible_to_containers(arguments["data"], pipeline_root)}
        task_runner = docker_runner(pipeline_root, workspace, hosts or {}, network)
    else:
        task_runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=task_runner, pipeline_root=str(pipeline_root), workspace_root=str(workspace),
               enable_caching=True)
    _show_cache_hits()
    # CPU, memory and GPU requests are the cluster's business; kfp.local warns that it ignores them.
    warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner")
    build(ClusterSettings(cpu_only=True, retry_backoff="5s"), trials)(**arguments)


def _show_cache_hits() -> None:
    """kfp.local says at INFO on the root logger when it reuses a task's outputs: print just that."""
    import logging

    handler = logging.StreamHandler()
    handler.addFilter(lambda record: "cache hit" in record.getMessage())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def docker_runner(pipeline_root: Path, workspace: Path, hosts: dict[str, str], network: str,
                  checkpoints: Path | None = None):
    """kfp.local's DockerRunner for the component image; `checkpoints`, a host folder, is mounted where
    the cluster mounts the checkpoint volume (ClusterSettings.checkpoint_pvc). The host's evaluator
    classifiers are mounted read-only, so that the train-classifier task loads the one trained here
    (training/classifier.py) instead of training its own in the container."""
    import os

    import docker
    from kfp import local

    from pipelines.mnist_gan import CHECKPOINT_MOUNT, SECRET_ENV
    from training import data

    environment = {"HOME": "/home/app", **{k: os.environ[k] for k in SECRET_ENV if k in os.environ}}
    # The containers run as the image's user (uid 10001) and write their outputs into these mounts.
    mounts = [] if checkpoints is None else [docker.types.Mount(CHECKPOINT_MOUNT, str(checkpoints), "bind")]
    for folder in (pipeline_root, workspace, *([checkpoints] if checkpoints else [])):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
    evaluators = data.EVALUATOR_CACHE.resolve()  # only this folder: the rest of the cache stays theirs
    if evaluators.is_dir():
        mounts.append(docker.types.Mount(EVALUATOR_MOUNT, str(evaluators), "bind", read_only=True))
        environment["MNIST_GAN_EVALUATOR_CACHE"] = EVALUATOR_MOUNT
    return local.DockerRunner(
        mounts=mounts,
        # The image's ENTRYPOINT is the mnist-gan CLI; Kubernetes replaces it with the task's command,
        # Docker only when told to.
        entrypoint=["/usr/bin/env"], network_mode=network, extra_hosts=hosts, environment=environment)


def _visible_to_containers(data: str, pipeline_root: Path) -> str:
    """A local data file, copied under the pipeline root (mounted at the same path in every container)."""
    import shutil

    if "://" in data or pipeline_root in Path(data).resolve().parents:
        return data
    copy = pipeline_root / "inputs" / Path(data).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.parent.chmod(0o755)
    shutil.copyfile(data, copy)
    return str(copy)


def submit(host: str, arguments: dict, settings: ClusterSettings, namespace: str | None = None,
           experiment: str = "mnist-gan", run_name: str | None = None, token: str | None = None,
           cookie: str | None = None, wait: bool = False, timeout_s: int = 24 * 3600,
           trials: list | None = None, service_account: str | None = None,
           mlflow_experiment: str | None = None) -> tuple[str, str]:
    """Submit a freshly compiled pipeline, run by `service_account` (None: KFP's default), its MLflow
    runs in `mlflow_experiment` where KFP's MLflow plugin is on (None: the plugin's default); returns
    (run id, run URL). With wait, raises on failure."""
    import tempfile

    import kfp
    import kfp_server_api
    import urllib3

    try:
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token,
                            cookies=cookie)
        with tempfile.TemporaryDirectory() as tmp:
            package = compile_pipeline(Path(tmp) / "pipeline.yaml", settings, trials)
            # kfp.Client's own create_run* cannot send the run's plugins_input (kfp 2.17): the same
            # request, built here with it.
            job = client._create_job_config(params=arguments, pipeline_package_path=str(package),
                                            pipeline_id=None, version_id=None, enable_caching=None,
                                            cache_key=None, pipeline_root=None)
            plugins = {"mlflow": {"experiment_name": mlflow_experiment}} if mlflow_experiment else None
            run = client._run_api.run_service_create_run(run=kfp_server_api.V2beta1Run(
                experiment_id=client.create_experiment(experiment, namespace=namespace).experiment_id,
                display_name=run_name or f"mnist-gan {datetime.datetime.now():%Y-%m-%d %H:%M:%S}",
                pipeline_spec=job.pipeline_spec, runtime_config=job.runtime_config,
                service_account=service_account, plugins_input=plugins))
    except urllib3.exceptions.HTTPError as err:
        raise RuntimeError(f"Kubeflow Pipelines at {host} is unreachable ({type(err).__name__})") from None
    except kfp_server_api.ApiException as err:
        raise RuntimeError(f"Kubeflow Pipelines at {host} refused the request: HTTP {err.status} "
                           f"{err.reason}") from None
    url = f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    if wait:
        state = client.wait_for_run_completion(run.run_id, timeout=timeout_s).state
        if str(state).upper() in TERMINAL_FAILURES:
            raise RuntimeError(f"run {run.run_id} ended {state}: {url}")
    return run.run_id, url

