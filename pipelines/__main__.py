"""`mnist-gan pipeline compile | run-local | submit` (also `python -m pipelines ...`).

The command reaches the `mnist-gan` console script through the `mnist_gan.commands` entry point group,
so `training` never imports this package. Kubeflow itself is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.cli import Command, main
from training.config import ConfigError, Param
from training.flags import Parser, add_flag, add_serving_flags, add_sweep_flags, serving_target

GPU_COUNT = Param("gpu_count", "int", 1, "GPUs of the training task; it trains data-parallel on all "
                  "of them (JAX image)", {"min": 1, "max": 64})
PARALLELISM = Param("parallelism", "int", 4, "a sweep's trials that run at once", {"min": 1, "max": 1000})
PIPELINE_SUFFIXES = (".yaml", ".yml")  # what KFP's compiler writes with Kubernetes settings


def add_arguments(pipeline: argparse.ArgumentParser) -> None:
    actions = pipeline.add_subparsers(dest="action", required=True, parser_class=Parser)
    cluster = Parser(add_help=False)
    cluster.add_argument("--gpu-type", default="nvidia.com/gpu", help="accelerator type of the training task")
    add_flag(cluster, GPU_COUNT, default=GPU_COUNT.default)
    cluster.add_argument("--cpu-only", action="store_true", help="train without requesting a GPU")
    cluster.add_argument("--gpu-toleration", action="append", default=None, metavar="TAINT_KEY",
                         help="taint key of GPU nodes the training task tolerates (repeatable; "
                              "default nvidia.com/gpu)")
    cluster.add_argument("--gpu-node-selector", action="append", default=[], metavar="LABEL=VALUE",
                         help="node label the training task requires (repeatable)")
    cluster.add_argument("--checkpoint-pvc", default="", metavar="CLAIM",
                         help="PersistentVolumeClaim for checkpoints, kept across runs (default: the "
                              "pipeline run's workspace, kept for retries)")
    cluster.add_argument("--secret", default="mnist-gan-tracking",
                         help="Kubernetes secret holding MLFLOW_TRACKING_URI, AWS_* (see docs/KUBEFLOW.md)")
    add_sweep_flags(cluster, "--sweep")
    add_flag(cluster, PARALLELISM, default=PARALLELISM.default)
    # The InferenceService is in the pipeline's namespace (--namespace is the run's).
    add_serving_flags(cluster, ("inference_service", "artifacts_destination", "model_reader",
                                "canary_traffic_percent"))
    arguments = Parser(add_help=False)
    arguments.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                           help="pipeline parameter (repeatable), e.g. -p epochs=2")
    compile_ = actions.add_parser("compile", parents=[cluster], help="write the pipeline YAML")
    compile_.add_argument("-o", "--output", type=Path, default=Path("pipeline.yaml"),
                          help="the pipeline YAML to write (replaced whole if it exists)")
    local = actions.add_parser("run-local", parents=[arguments], help="run every task here (kfp.local)")
    add_sweep_flags(local, "--sweep")
    local.add_argument("--pipeline-root", type=Path, default=Path("outputs/kfp"))
    local.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                       help="tasks as processes here, or in the component image (Docker or podman)")
    local.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                       help="docker runner: a host name the containers resolve, e.g. mlflow:127.0.0.1")
    local.add_argument("--network", default="host", help="docker runner: the containers' network")
    submit = actions.add_parser("submit", parents=[cluster, arguments], help="start a run on a cluster")
    submit.add_argument("--host", required=True, help="Kubeflow Pipelines API URL")
    submit.add_argument("--namespace", default=None)
    submit.add_argument("--experiment", default="mnist-gan")
    submit.add_argument("--run-name", default=None)
    submit.add_argument("--token", default=None, help="bearer token (or set KF_PIPELINES_TOKEN)")
    submit.add_argument("--cookie", default=None, help="session cookie, e.g. authservice_session=...")
    submit.add_argument("--wait", action="store_true", help="wait for the run; exit 1 if it fails")
    submit.add_argument("--mlflow-experiment", default=None, metavar="NAME",
                        help="where KFP's MLflow plugin is on: the MLflow experiment of this run's runs "
                             "(default: the plugin's)")
    submit.add_argument("--service-account", default=None,
                        help="the run's Kubernetes service account (default: KFP's; with --inference-service "
                             "it needs infra/k8s/serving/deployer.yaml's Role)")


def prepare(args: argparse.Namespace):
    """Check every argument (cluster settings, pipeline parameters) before Kubeflow is contacted."""
    from pipelines import runner
    from pipelines.mnist_gan import ClusterSettings
    from training import sweep
    from training.config import TrainConfig

    settings = None
    if args.action in ("compile", "submit"):
        selector = _pairs(args.gpu_node_selector, "=", "each --gpu-node-selector must be LABEL=VALUE")
        tolerations = ClusterSettings.gpu_tolerations if args.gpu_toleration is None else args.gpu_toleration
        settings = ClusterSettings(secret_name=args.secret, gpu_type=args.gpu_type,
                                   gpu_count=args.gpu_count, cpu_only=args.cpu_only,
                                   gpu_tolerations=tuple(tolerations),
                                   gpu_node_selector=tuple(selector.items()),
                                   checkpoint_pvc=args.checkpoint_pvc, sweep_parallelism=args.parallelism,
                                   serving=serving_target(args))
    # The training task's devices: the GPUs it requests on a cluster, one under kfp.local (run_local).
    devices = settings.gpu_count if settings else 1
    given = {} if args.action == "compile" else _pairs(args.param, "=", "each -p must be KEY=VALUE",
                                                        empty_value=True)
    arguments = runner.check_arguments(given, devices)
    base = TrainConfig.pick({**arguments, "devices": devices})  # what each trial's values go over
    trials = sweep.load(args.spec, args.axes, base) if args.spec is not None or args.axes else None
    if args.action == "compile":
        if args.output.suffix not in PIPELINE_SUFFIXES:
            raise ConfigError(f"output must end in {' or '.join(PIPELINE_SUFFIXES)} (got {args.output})")
        return lambda: f"pipeline: wrote {runner.compile_pipeline(args.output, settings, trials)}"
    if args.action == "run-local":
        hosts = _pairs(args.add_host, ":", "each --add-host must be NAME:IP")
        return lambda: runner.run_local(arguments, args.pipeline_root, args.runner, hosts, args.network,
                                        trials)

    def submit():
        token = args.token or os.environ.get("KF_PIPELINES_TOKEN")
        run_id, url = runner.submit(args.host, arguments, settings, args.namespace, args.experiment,
                                    args.run_name, token, args.cookie, args.wait, trials=trials,
                                    service_account=args.service_account,
                                    mlflow_experiment=args.mlflow_experiment)
        return f"pipeline: submitted run {run_id}: {url}"

    return submit


def _pairs(entries: list[str], separator: str, message: str, empty_value: bool = False) -> dict[str, str]:
    pairs = [entry.split(separator, 1) for entry in entries]
    if any(len(pair) != 2 or not pair[0] or not (pair[1] or empty_value) for pair in pairs):
        raise ConfigError(message)
    return dict(pairs)


COMMAND = Command("compile, run locally or submit the Kubeflow pipeline", add_arguments, prepare,
                  report=lambda line: [line] if line else [], tracked=False)

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
