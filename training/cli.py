"""`mnist-gan`: one console script, one subcommand per job, each one call into `training.jobs`.

A command is a row of COMMANDS: its flags, the job it runs (after the cheap checks), and the lines it
prints (training/summaries.py). Each command's flags and preparation sit together below, in the table's
order. Other packages add commands through the `mnist_gan.commands` entry point group (the `pipeline`
command lives in pipelines/__main__.py). Invalid parameters exit with code 2 and a one-line message,
before any heavy import.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from training import checks, console, mlflow_env, summaries
from training.checkpoint import CheckpointError, Preempted
from training.config import MAX_SAMPLES, ConfigError, JobConfig, Param, TrainConfig, param, params
from training.data import DataError
from training.flags import (
    EXIT_USAGE,
    Parser,
    add_flag,
    add_serving_flags,
    add_sweep_flags,
    given,
    serving_target,
)
from training.new_files import check_new
from training.promotion import PromotionRule
from training.redaction import redacted

EXIT_FAILED, EXIT_PREEMPTED = 1, 143
COUNT = Param("count", "int", 64, "how many digits to write", {"min": 1, "max": MAX_SAMPLES})
VERSION = Param("version", "int", None, "the version to promote (default: the one aliased challenger)",
                {"min": 1})
WORKERS = Param("workers", "int", 1, "trials trained at once, each in its own process", {"min": 1, "max": 64})
FOLLOW = Param("follow", "int", 0, "keep following the champion: look every N seconds and deploy it when the "
               "service serves anything else (0 = deploy once)", {"min": 0, "max": 86_400})
TO_NAME = dataclasses.replace(param(JobConfig, "model_name"), name="to_name", default=None,
                              help="model name in the target registry (default: the model's own)")
RULE_PARAMS = PromotionRule.parameters()
JOB_PARAMS = ("samples", "model_name", *RULE_PARAMS)  # main and sweep


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Callable[[], Any]]  # cheap checks, then the job to run
    report: Callable[[Any], list[str]] = lambda result: []  # the lines a person reads afterwards
    tracked: bool = True  # talks to the tracking server: probe it first
    reads_store: bool = False  # works on what training recorded: the store must exist


def _train_flags(parser):
    for p in params(TrainConfig):
        add_flag(parser, p)


def _job_flags(parser, names: tuple[str, ...]):
    for name in names:
        add_flag(parser, param(JobConfig, name), *(("--name",) if name == "model_name" else ()))


def _job(args) -> JobConfig:
    return JobConfig.from_dict(given(args, JobConfig))


# ---- train ----

def _train(args):
    from training import jobs

    config = TrainConfig.from_dict(given(args, TrainConfig))
    checks.before_training(config)
    return lambda: jobs.train(config)


# ---- main ----

def _main_flags(parser):
    _train_flags(parser)
    _job_flags(parser, JOB_PARAMS)


def _main(args):
    from training import jobs

    config, job = TrainConfig.from_dict(given(args, TrainConfig)), _job(args)
    checks.before_training(config)
    return lambda: jobs.main(config, job)


# ---- sweep ----

def _sweep_flags(parser):
    add_sweep_flags(parser)
    add_flag(parser, WORKERS, default=WORKERS.default)
    _train_flags(parser)
    _job_flags(parser, JOB_PARAMS)


def _sweep(args):
    from training import jobs, sweep

    base, job = TrainConfig.from_dict(given(args, TrainConfig)), _job(args)
    trials = sweep.load(args.spec, args.axes, base)
    checks.before_training(base)

    def progress(outcome) -> None:
        print(redacted(summaries.trial_line(outcome, len(trials))), flush=True)

    return lambda: jobs.sweep(trials, base, job, args.workers, on_outcome=progress)


# ---- evaluate ----

def _evaluate_flags(parser):
    parser.add_argument("--generator", required=True,
                        help="a training run id, runs:/<id>, models:/<name>@<alias> or a .keras file")
    for p in (param(TrainConfig, "data"), param(JobConfig, "samples"), param(TrainConfig, "seed")):
        add_flag(parser, p, default=p.default)
    parser.add_argument("--training-run-id", default=None, help="link the evaluation to this run")


def _evaluate(args):
    from training import jobs
    from training.data import load_mnist

    _check_generator("generator", args.generator)
    load_mnist(args.data)  # before the generator and the frameworks load; the job reuses it
    return lambda: jobs.evaluate(args.generator, args.data, args.samples, args.seed, args.training_run_id)


def _check_generator(flag: str, uri: str) -> None:
    """A generator named by a URL (scheme://) is none that training.sampling loads."""
    if "://" in uri:
        raise ConfigError(f"{flag}={redacted(uri)}: not a generator this project loads; give a training run "
                          "id, runs:/<id>, models:/<name>@<alias> or a .keras file")


# ---- register ----

def _register_flags(parser):
    parser.add_argument("--training-run-id", required=True)
    parser.add_argument("--evaluation-run-id", required=True)
    _job_flags(parser, ("model_name",))


def _register(args):
    from training import jobs

    name = _job(args).model_name
    return lambda: (name, jobs.register(args.training_run_id, args.evaluation_run_id, name))


# ---- promote ----

def _promote_flags(parser):
    _job_flags(parser, ("model_name", "samples", *RULE_PARAMS))
    data = param(TrainConfig, "data")
    add_flag(parser, data, default=data.default)  # whose test split judges the head-to-head
    add_flag(parser, VERSION)
    parser.add_argument("--dry-run", action="store_true", help="print the decision, change nothing anywhere")
    parser.add_argument("--to-registry-uri", default=None,
                        help="copy the challenger into this registry and gate it against its champion")
    add_flag(parser, TO_NAME)


def _promote(args):
    from training import jobs
    from training.data import check_readable
    from training.head_to_head import Judge

    job = _job(args)
    rule = PromotionRule.of(job)
    check_readable(args.data)
    if args.to_registry_uri:
        checks.target_registry(args.to_registry_uri)
    version = None if args.version is None else str(args.version)
    # A version named by a person may be promoted again after a rollback; the challenger alias may not.
    return lambda: jobs.promote(job.model_name, rule, Judge(args.data, job.samples), args.dry_run,
                                args.to_registry_uri, args.to_name, version=version,
                                reinstate=version is not None)


# ---- rollback ----

def _rollback_flags(parser):
    _job_flags(parser, ("model_name",))
    add_serving_flags(parser, ("inference_service", "namespace", "artifacts_destination", "model_reader",
                               "timeout"))


def _rollback(args):
    from training import jobs

    name, target = _job(args).model_name, serving_target(args)
    return lambda: (name, *jobs.rollback(name, target))


# ---- deploy ----

def _deploy_flags(parser):
    _job_flags(parser, ("model_name",))
    add_serving_flags(parser, required=True)
    add_flag(parser, FOLLOW, default=FOLLOW.default)


def _deploy(args):
    from training import jobs

    name, target = _job(args).model_name, serving_target(args)
    if not args.follow:
        return lambda: jobs.deploy(name, target)
    return lambda: _follow(name, target, args.follow)


def _follow(name: str, target, period_s: int) -> None:
    """`deploy --follow`: until SIGTERM or Ctrl-C, one line for each change made and each failed look."""
    import signal
    import threading

    from training import jobs

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"deploy: following {name}@champion into InferenceService {target.inference_service} every "
          f"{period_s} s", flush=True)

    def said(deployed) -> None:
        if deployed:
            print(summaries.deployed_line(deployed), flush=True)

    def failed(why: str) -> None:
        print(f"deploy: {redacted(why)} (looking again in {period_s} s)", file=sys.stderr, flush=True)

    try:
        jobs.follow(name, target, period_s, said, failed, stop)
    except KeyboardInterrupt:
        pass


# ---- sample ----

def _sample_flags(parser):
    parser.add_argument("--model-uri", required=True,
                        help="models:/<name>@<alias>, runs:/<id>, a run id or a .keras file")
    add_flag(parser, COUNT, "-n", default=COUNT.default)
    add_flag(parser, param(TrainConfig, "seed"), default=param(TrainConfig, "seed").default)
    parser.add_argument("--out", required=True, type=Path, help="the .npz to write (must not exist)")


def _sample(args):
    from training import jobs
    from training.jobs.local_files import sample_files

    _check_generator("model_uri", args.model_uri)
    check_new("out", sample_files(args.out), (".npz",))
    return lambda: (args.count, jobs.sample(args.model_uri, args.count, args.seed, args.out))


# ---- data download ----

def _data_flags(parser):
    actions = parser.add_subparsers(dest="action", required=True, parser_class=Parser)
    download = actions.add_parser("download", help="fetch MNIST, check it, and write a local copy")
    data = param(TrainConfig, "data")
    add_flag(download, data, default=data.default)
    download.add_argument("--to", required=True, type=Path, help="the .npz to write (must not exist)")


def _data(args):
    from training import jobs

    check_new("to", [args.to], (".npz",))
    return lambda: (jobs.download_data(args.data, args.to), args.to)


COMMANDS: dict[str, Command] = {
    "train": Command("train a GAN, tracked in MLflow", _train_flags, _train,
                     lambda trained: [summaries.trained_line(trained)]),
    "main": Command("train, evaluate, register, promote", _main_flags, _main, summaries.main_lines),
    "sweep": Command("train several trials, rank them, register and promote the best", _sweep_flags, _sweep,
                     summaries.sweep_lines),
    "evaluate": Command("score a generator's samples against MNIST's test split", _evaluate_flags, _evaluate,
                        lambda evaluated: [summaries.evaluated_line(evaluated)]),
    "register": Command("register a trained generator as 'challenger'", _register_flags, _register,
                        lambda done: [summaries.registered_line(*done)], reads_store=True),
    "promote": Command("make the challenger champion if it is better, head to head and beyond noise",
                       _promote_flags, _promote,
                       summaries.promoted_lines, reads_store=True),
    "rollback": Command("point 'champion' back at the previous champion (and an InferenceService with it)",
                        _rollback_flags, _rollback, lambda done: summaries.rollback_lines(*done),
                        reads_store=True),
    "deploy": Command("point a KServe InferenceService at the champion and wait until it is Ready",
                      _deploy_flags, _deploy,
                      lambda deployed: [summaries.deployed_line(deployed)] if deployed else [],
                      reads_store=True),
    "sample": Command("write N generated digits to .npz and a PNG grid", _sample_flags, _sample,
                      lambda done: [summaries.sample_line(*done)], tracked=False),
    "data": Command("data download: a checked local copy of MNIST, for machines without internet",
                    _data_flags, _data, lambda done: summaries.data_lines(*done), tracked=False),
}


def commands() -> dict[str, Command]:
    """COMMANDS and those other installed packages add (entry point group `mnist_gan.commands`)."""
    extra = {entry.name: entry.load() for entry in metadata.entry_points(group="mnist_gan.commands")}
    return {**COMMANDS, **extra}


def build_parser(table: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="mnist-gan", description="Train, evaluate and ship the seed's MNIST GAN.")
    _add_verbose(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, command in (table or commands()).items():
        subparser = subparsers.add_parser(name, help=command.help)
        _add_verbose(subparser, default=argparse.SUPPRESS)  # a flag before the command survives
        command.add_arguments(subparser)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help=f"show TensorFlow's and MLflow's notices too ({console.LEVEL_VARIABLE}=debug)")


def main(argv: list[str] | None = None) -> int:
    table = commands()
    args = build_parser(table).parse_args(argv)
    command = table[args.command]
    mlflow_env.artifacts_through_the_server()
    with console.quiet(console.verbose_requested(args.verbose)):
        try:
            run = command.prepare(args)
            if command.reads_store:
                checks.existing_store()
            if command.tracked:
                checks.tracking_server()
        except (ConfigError, ValueError) as err:
            print(f"mnist-gan {args.command}: error: {redacted(str(err))}", file=sys.stderr)
            return EXIT_USAGE
        return _run(args.command, run, command.report)


def _run(name: str, run, report) -> int:
    try:
        result = run()
    except Preempted as err:  # before the RuntimeError it derives from
        print(f"mnist-gan {name}: {redacted(str(err))}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as err:
        print(f"mnist-gan {name}: error: {redacted(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except (RuntimeError, OSError, *_mlflow_errors()) as err:  # NonFiniteLoss, RegistryError: RuntimeErrors
        print(f"mnist-gan {name}: error: {redacted(str(err))}", file=sys.stderr)
        return EXIT_FAILED
    for line in report(result):
        print(redacted(line))
    return 0


def _mlflow_errors() -> tuple[type[Exception], ...]:
    """MlflowException, if the job imported MLflow (else nothing can have raised it): a command that
    never talks to MLflow, such as `pipeline compile`, does not import it to report its errors."""
    exceptions = sys.modules.get("mlflow.exceptions")
    return (exceptions.MlflowException,) if exceptions else ()


if __name__ == "__main__":
    sys.exit(main())
