"""`mnist-gan`: one console script, one subcommand per job; each is a thin call into `training.jobs`.

Invalid parameters exit with code 2 and a one-line message, before any heavy import.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.config import (
    DEFAULT_DATA_URL,
    DEFAULT_EVAL_SAMPLES,
    DEFAULT_MODEL_NAME,
    JOB_LIMITS,
    MAX_SAMPLES,
    ConfigError,
    TrainConfig,
    check_range,
    parameter_fields,
)
from training.data import check_readable
from training.promotion import PromotionRule

EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        # argparse drops a value of "--" (`--epochs=--`), silently leaving the default: refuse it instead
        for arg in sys.argv[1:] if args is None else args:
            flag, _, value = arg.partition("=")
            if flag.startswith("--") and value == "--":
                self.error(f"{flag[2:].replace('-', '_')} needs a value (got '--')")
        return super().parse_args(args, namespace)


def _convert(field, raw: str):
    """Turn a flag's text into the field's type; the message names the parameter and the type."""
    if not isinstance(raw, str):  # argparse hands over [] for a lone "--" value
        raise ConfigError(f"{field.name} must be {KINDS[field.type]} (got {raw!r})")
    try:
        if field.type == "bool":
            if raw.lower() not in TRUE + FALSE:
                raise ValueError
            return raw.lower() in TRUE
        return {"int": int, "float": float, "str": str}[field.type](raw)
    except ValueError:
        raise ConfigError(f"{field.name} must be {KINDS[field.type]} (got {raw!r})") from None


def _bounded(name: str, kind, low=None, high=None):
    """An argparse type that names the parameter and its range (low..high, or JOB_LIMITS[name]) in its
    error."""
    low, high = (low, high) if low is not None else JOB_LIMITS[name]

    def parse(raw: str):
        try:
            value = kind(raw)
            check_range(name, value, low, high)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {KINDS[kind.__name__]} (got {raw!r})") from None
        return value
    return parse


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    for field in parameter_fields():
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, nargs="?", const="true", default=None, help=field.metadata["help"])
        else:
            parser.add_argument(flag, default=None, metavar=field.type.upper(),
                                help=f"{field.metadata['help']} (default: {field.default})")


def _add_rule_flags(parser: argparse.ArgumentParser) -> None:
    defaults = PromotionRule()
    parser.add_argument("--min-fid-gain", type=_bounded("min_fid_gain", float),
                        default=defaults.min_fid_gain, help="FID must drop by more than this")
    parser.add_argument("--max-classes-lost", type=_bounded("max_classes_lost", int),
                        default=defaults.max_classes_lost, help="classes covered the challenger may lose")


def _samples_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=_bounded("samples", int),
                        default=DEFAULT_EVAL_SAMPLES, help="generated images to evaluate (same N for "
                        f"every compared model; default {DEFAULT_EVAL_SAMPLES})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-gan", description="Train, evaluate and ship the seed's MNIST GAN.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    name_help = f"registered model name (default {DEFAULT_MODEL_NAME})"

    _add_train_flags(commands.add_parser("train", help="train a GAN, tracked in MLflow"))

    main = commands.add_parser("main", help="prepare data, train, evaluate, register, promote")
    _add_train_flags(main)
    _samples_flag(main)
    main.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help=name_help)
    _add_rule_flags(main)

    evaluate = commands.add_parser("evaluate", help="score a generator's samples against MNIST's test split")
    evaluate.add_argument("--generator", required=True,
                          help="a training run id, runs:/<id>, models:/<name>@<alias> or a .keras file")
    evaluate.add_argument("--data", default=DEFAULT_DATA_URL, help="mnist.npz source")
    _samples_flag(evaluate)
    evaluate.add_argument("--seed", type=_bounded("seed", int, 0, 2**31 - 1), default=0)
    evaluate.add_argument("--training-run-id", default=None, help="link the evaluation to this run")

    register = commands.add_parser("register", help="register a trained generator as 'challenger'")
    register.add_argument("--training-run-id", required=True)
    register.add_argument("--evaluation-run-id", required=True)
    register.add_argument("--name", default=DEFAULT_MODEL_NAME, help=name_help)

    promote = commands.add_parser("promote", help="make the challenger champion if it is better")
    promote.add_argument("--name", default=DEFAULT_MODEL_NAME, help=name_help)
    _add_rule_flags(promote)
    promote.add_argument("--version", default=None, type=_bounded("version", int, 1),
                         help="the version to promote (default: the one aliased challenger)")
    promote.add_argument("--dry-run", action="store_true", help="print the decision, change nothing")
    promote.add_argument("--to-registry-uri", default=None,
                         help="copy the challenger into this registry and gate it against its champion")
    promote.add_argument("--to-name", default=None, help="model name in the target registry")

    rollback = commands.add_parser("rollback", help="point 'champion' back at the previous champion")
    rollback.add_argument("--name", default=DEFAULT_MODEL_NAME, help=name_help)

    pipeline = commands.add_parser("pipeline", help="compile, run locally or submit the Kubeflow pipeline")
    actions = pipeline.add_subparsers(dest="action", required=True, parser_class=_Parser)
    cluster = _Parser(add_help=False)
    cluster.add_argument("--gpu-type", default="nvidia.com/gpu", help="accelerator type of the training task")
    cluster.add_argument("--gpu-count", type=_bounded("gpu_count", int, 1, 16), default=1,
                         help="GPUs of the training task (1: there is no data-parallel training yet)")
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
                         help="Kubernetes secret holding MLFLOW_TRACKING_URI, AWS_* (see README)")
    arguments = _Parser(add_help=False)
    arguments.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                           help="pipeline parameter (repeatable), e.g. -p epochs=2")
    compile_ = actions.add_parser("compile", parents=[cluster], help="write the pipeline YAML")
    compile_.add_argument("-o", "--output", type=Path, default=Path("pipeline.yaml"))
    local = actions.add_parser("run-local", parents=[arguments], help="run every task here (kfp.local)")
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

    sample = commands.add_parser("sample", help="write N generated digits to .npz and a PNG grid")
    sample.add_argument("--model-uri", required=True,
                        help="models:/<name>@<alias>, runs:/<id>, a run id or a .keras file")
    sample.add_argument("-n", "--count", type=_bounded("n", int, 1, MAX_SAMPLES), default=64)
    sample.add_argument("--seed", type=_bounded("seed", int, 0, 2**63 - 1), default=0)
    sample.add_argument("--out", required=True, type=Path, help="the .npz to write (must not exist)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: _convert(f, getattr(args, f.name)) for f in parameter_fields()
              if getattr(args, f.name) is not None}
    return TrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run = _prepare(args)
    except (ConfigError, ValueError) as err:
        print(f"mnist-gan {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return _run(args.command, run)


def _prepare(args: argparse.Namespace):
    """Validate everything cheap, then return the job to run as a no-argument callable."""
    from training import jobs

    rule = PromotionRule(args.min_fid_gain, args.max_classes_lost) if hasattr(args, "min_fid_gain") else None
    config = config_from_args(args) if args.command in ("train", "main") else None
    if config:
        jobs.preflight(config)
    if args.command in ("train", "main", "evaluate", "register", "promote", "rollback"):
        jobs.check_tracking_server()
    if args.command == "evaluate":
        check_readable(args.data)
    if config:
        if args.command == "train":
            return lambda: jobs.train(config)
        return lambda: jobs.main(config, args.samples, args.model_name, rule)
    if args.command == "evaluate":
        return lambda: jobs.evaluate(args.generator, args.data, args.samples, args.seed,
                                     args.training_run_id)
    if args.command == "register":
        return lambda: jobs.register(args.training_run_id, args.evaluation_run_id, args.name)
    if args.command == "promote":
        return lambda: jobs.promote(args.name, rule, args.dry_run, args.to_registry_uri, args.to_name,
                                    version=None if args.version is None else str(args.version))
    if args.command == "rollback":
        return lambda: jobs.rollback(args.name)
    if args.command == "pipeline":
        return _prepare_pipeline(args)
    if args.out.exists():
        raise ConfigError(f"out={args.out} exists; choose a new file (nothing is overwritten)")
    if args.out.suffix != ".npz":
        raise ConfigError(f"out must end in .npz (got {args.out})")
    return lambda: jobs.sample(args.model_uri, args.count, args.seed, args.out)


def _prepare_pipeline(args: argparse.Namespace):
    from pipelines import runner
    from pipelines.mnist_gan import ClusterSettings

    settings = None
    if args.action in ("compile", "submit"):
        selector = [pair.split("=", 1) for pair in args.gpu_node_selector]
        if any(len(pair) != 2 or not all(pair) for pair in selector):
            raise ConfigError("each --gpu-node-selector must be LABEL=VALUE")
        tolerations = ClusterSettings.gpu_tolerations if args.gpu_toleration is None else args.gpu_toleration
        settings = ClusterSettings(secret_name=args.secret, gpu_type=args.gpu_type,
                                   gpu_count=args.gpu_count, cpu_only=args.cpu_only,
                                   gpu_tolerations=tuple(tolerations),
                                   gpu_node_selector=tuple(map(tuple, selector)),
                                   checkpoint_pvc=args.checkpoint_pvc)
    if args.action == "compile":
        return lambda: print(f"pipeline: wrote {runner.compile_pipeline(args.output, settings)}")
    pairs = [p.split("=", 1) for p in args.param]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError("each -p must be KEY=VALUE")
    arguments = runner.check_arguments(dict(pairs))
    if args.action == "run-local":
        hosts = [entry.split(":", 1) for entry in args.add_host]
        if any(len(entry) != 2 or not all(entry) for entry in hosts):
            raise ConfigError("each --add-host must be NAME:IP")
        return lambda: runner.run_local(arguments, args.pipeline_root, args.runner, dict(hosts),
                                        args.network)

    def submit():
        token = args.token or os.environ.get("KF_PIPELINES_TOKEN")
        run_id, url = runner.submit(args.host, arguments, settings, args.namespace, args.experiment,
                                    args.run_name, token, args.cookie, args.wait)
        print(f"pipeline: submitted run {run_id}: {url}")

    return submit


def _run(command: str, run) -> int:
    from mlflow.exceptions import MlflowException

    from training.checkpoint import CheckpointError
    from training.data import DataError
    from training.loop import NonFiniteLoss, Preempted
    from training.registry import RegistryError

    try:
        run()
    except Preempted as err:  # before the RuntimeError it derives from
        print(f"mnist-gan {command}: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as err:
        print(f"mnist-gan {command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (NonFiniteLoss, RegistryError, MlflowException, RuntimeError, OSError) as err:
        print(f"mnist-gan {command}: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
