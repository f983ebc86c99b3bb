"""`mnist-gan`: one console script, one subcommand per job, each one call into `training.jobs`.

A command is a row of COMMANDS: its flags, the job it runs (after the cheap checks), and the lines it
prints. Other packages add commands through the `mnist_gan.commands` entry point group (the `pipeline`
command lives in pipelines/__main__.py). Invalid parameters exit with code 2 and a one-line message,
before any heavy import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from training import checks, console
from training.checkpoint import CheckpointError, Preempted
from training.config import (
    MAX_SAMPLES,
    ConfigError,
    JobConfig,
    Param,
    TrainConfig,
    param,
    params,
    parse_and_check,
)
from training.data import DataError

EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143
COUNT = Param("count", "int", 64, "how many digits to write", {"min": 1, "max": MAX_SAMPLES})
VERSION = Param("version", "int", None, "the version to promote (default: the one aliased challenger)",
                {"min": 1})
WORKERS = Param("workers", "int", 1, "trials trained at once, each in its own process", {"min": 1, "max": 64})
RULE_PARAMS = ("min_fid_gain", "max_classes_lost", "min_classes_covered")  # PromotionRule.of(JobConfig)
JOB_PARAMS = ("samples", "model_name", *RULE_PARAMS)  # main and sweep


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        # argparse drops a value of "--" (`--epochs=--`), silently leaving the default: refuse it instead
        for arg in sys.argv[1:] if args is None else args:
            flag, _, value = arg.partition("=")
            if flag.startswith("--") and value == "--":
                self.error(f"{flag[2:].replace('-', '_')} needs a value (got '--')")
        return super().parse_args(args, namespace)


def typed(p: Param):
    """An argparse type that parses and checks a value as `p` says; the error names p and its range."""
    def convert(raw: str):
        try:
            return parse_and_check(p, raw)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return convert


def add_flag(parser: argparse.ArgumentParser, p: Param, *aliases: str, default: Any = None) -> None:
    """A flag for a parameter. Left out, it is None (the config's default applies) unless `default`."""
    shown = f" (default: {p.default})" if p.default is not None else ""
    if p.type == "bool":
        parser.add_argument(p.flag, *aliases, dest=p.name, nargs="?", const=True, default=default,
                            type=typed(p), metavar="BOOL", help=p.help + shown)
    else:
        parser.add_argument(p.flag, *aliases, dest=p.name, default=default, type=typed(p),
                            metavar=p.type.upper(), help=p.help + shown)


def given(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The parameters of `cls` that were given on the command line."""
    return {p.name: getattr(args, p.name) for p in params(cls) if getattr(args, p.name, None) is not None}


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Callable[[], Any]]  # cheap checks, then the job to run
    report: Callable[[Any], list[str]] = lambda result: []  # the lines a person reads afterwards
    tracked: bool = True  # talks to the tracking server: probe it first


# ---- flags ----

def _train_flags(parser):
    for p in params(TrainConfig):
        add_flag(parser, p)


def _job_flags(parser, names: tuple[str, ...]):
    for name in names:
        add_flag(parser, param(JobConfig, name), *(("--name",) if name == "model_name" else ()))


def _main_flags(parser):
    _train_flags(parser)
    _job_flags(parser, JOB_PARAMS)


def add_sweep_flags(parser, spec_flag: str = "--spec"):
    """SPEC and -s axes: the sweep's trials (training/sweep.py says what SPEC may hold)."""
    parser.add_argument(spec_flag, dest="spec", default=None, metavar="SPEC",
                        help="YAML/JSON file or text: a grid {name: [values]} or a list of trials")
    parser.add_argument("-s", "--set", dest="axes", action="append", default=[], metavar="NAME=V1,V2",
                        help="one more grid axis (repeatable), e.g. -s seed=0,1,2")


def _sweep_flags(parser):
    add_sweep_flags(parser)
    add_flag(parser, WORKERS, default=WORKERS.default)
    _train_flags(parser)
    _job_flags(parser, JOB_PARAMS)


def _evaluate_flags(parser):
    parser.add_argument("--generator", required=True,
                        help="a training run id, runs:/<id>, models:/<name>@<alias> or a .keras file")
    for p in (param(TrainConfig, "data"), param(JobConfig, "samples"), param(TrainConfig, "seed")):
        add_flag(parser, p, default=p.default)
    parser.add_argument("--training-run-id", default=None, help="link the evaluation to this run")


def _register_flags(parser):
    parser.add_argument("--training-run-id", required=True)
    parser.add_argument("--evaluation-run-id", required=True)
    _job_flags(parser, ("model_name",))


def _promote_flags(parser):
    _job_flags(parser, ("model_name", *RULE_PARAMS))
    add_flag(parser, VERSION)
    parser.add_argument("--dry-run", action="store_true", help="print the decision, change nothing")
    parser.add_argument("--to-registry-uri", default=None,
                        help="copy the challenger into this registry and gate it against its champion")
    parser.add_argument("--to-name", default=None, help="model name in the target registry")


def _sample_flags(parser):
    parser.add_argument("--model-uri", required=True,
                        help="models:/<name>@<alias>, runs:/<id>, a run id or a .keras file")
    add_flag(parser, COUNT, "-n", default=COUNT.default)
    add_flag(parser, param(TrainConfig, "seed"), default=param(TrainConfig, "seed").default)
    parser.add_argument("--out", required=True, type=Path, help="the .npz to write (must not exist)")


# ---- jobs ----

def _job(args) -> JobConfig:
    return JobConfig.from_dict(given(args, JobConfig))


def _train(args):
    from training import jobs

    config = TrainConfig.from_dict(given(args, TrainConfig))
    checks.before_training(config)
    return lambda: jobs.train(config)


def _main(args):
    from training import jobs

    config, job = TrainConfig.from_dict(given(args, TrainConfig)), _job(args)
    checks.before_training(config)
    return lambda: jobs.main(config, job)


def _sweep(args):
    from training import jobs, sweep

    base, job = TrainConfig.from_dict(given(args, TrainConfig)), _job(args)
    trials = sweep.load(args.spec, args.axes, base)
    checks.before_training(base)

    def progress(outcome) -> None:
        what = ", ".join(f"{k}={v}" for k, v in outcome.trial.values.items())
        done = f"run {outcome.training_run_id}" if outcome.status == "finished" else outcome.error
        print(f"sweep: trial {outcome.trial.index}/{len(trials)} ({what}) {outcome.status}: {done}",
              flush=True)

    return lambda: jobs.sweep(trials, base, job, args.workers, on_outcome=progress)


def _evaluate(args):
    from training import jobs
    from training.data import check_readable

    check_readable(args.data)
    return lambda: jobs.evaluate(args.generator, args.data, args.samples, args.seed, args.training_run_id)


def _register(args):
    from training import jobs

    name = _job(args).model_name
    return lambda: (name, jobs.register(args.training_run_id, args.evaluation_run_id, name))


def _promote(args):
    from training import jobs
    from training.promotion import PromotionRule

    job = _job(args)
    rule = PromotionRule.of(job)
    version = None if args.version is None else str(args.version)
    return lambda: jobs.promote(job.model_name, rule, args.dry_run, args.to_registry_uri, args.to_name,
                                version=version)


def _rollback(args):
    from training import jobs

    name = _job(args).model_name
    return lambda: (name, *jobs.rollback(name))


def _sample(args):
    from training import jobs

    _check_new_npz("out", args.out)
    return lambda: (args.count, jobs.sample(args.model_uri, args.count, args.seed, args.out))


def _check_new_npz(flag: str, path: Path) -> None:
    """A file a command is about to write: an .npz that does not exist yet (nothing is overwritten)."""
    if path.exists():
        raise ConfigError(f"{flag}={path} exists; choose a new file (nothing is overwritten)")
    if path.suffix != ".npz":
        raise ConfigError(f"{flag} must end in .npz (got {path})")


# ---- what a person reads ----

def trained_line(trained) -> str:
    from training.tracking import describe_generator

    result = trained.result
    best = f" (FID {result.best['fid']:.4g} on its curve)" if result.selected == "generator_best" else ""
    stop = {"max_minutes": " (its time budget, max_minutes, is spent)",
            "max_steps": " (max_steps reached)"}.get(result.stopped_by, "")
    return (f"train: run {trained.run_id}, {result.global_step} steps, {result.epochs_done} epoch(s){stop}; "
            f"exports {describe_generator(trained.exported())}{best}")


def evaluated_line(evaluated) -> str:
    from training.metrics import HEADLINE

    evaluation = evaluated.evaluation
    return f"evaluate: run {evaluated.run_id}, " + ", ".join(
        f"{k} {evaluation.metrics[k]:.4g} (reference {evaluation.reference[k]:.4g})" for k in HEADLINE)


def registered_line(name: str, version: str) -> str:
    return f"register: {name} version {version} is 'challenger'"


def promoted_lines(promoted) -> list[str]:
    decision, would = promoted.decision, "would " if promoted.dry_run else ""
    lines = [f"promote: copied {promoted.copied_from} to {promoted.name}/{decision.challenger}"] \
        if promoted.copied_from else []
    if decision.promote:
        verdict = f"{would}promote {promoted.name} version {decision.challenger} to champion"
    elif decision.champion:
        verdict = f"{would}keep the champion (version {decision.champion}), refuse {decision.challenger}"
    else:
        verdict = f"{would}refuse {promoted.name} version {decision.challenger} (no champion yet, none made)"
    return [*lines, f"promote{' (dry run)' if promoted.dry_run else ''}: {verdict}: {decision.reason}"]


def _main_lines(done) -> list[str]:
    return [trained_line(done.trained), evaluated_line(done.evaluated),
            registered_line(done.promoted.name, done.version), *promoted_lines(done.promoted),
            *summary_lines(done)]


def summary_lines(done) -> list[str]:
    """What a person acts on after `main`: the champion and why, the FID against real images, and where
    to look further."""
    import mlflow

    decision, name = done.promoted.decision, done.promoted.name
    champion = decision.challenger if decision.promote else decision.champion
    moved = f"{'moved to it' if decision.promote else 'not moved'} ({decision.reason})"
    evaluation = done.evaluated.evaluation
    uri = mlflow.get_tracking_uri()
    where = (f"open {done.evaluated.link}" if uri.startswith(("http://", "https://"))
             else f"mlflow ui --backend-store-uri {uri}")
    fid = (f"FID {evaluation.metrics['fid']:.4g} on {len(evaluation.samples):,} samples "
           f"(real images score {evaluation.reference['fid']:.4g})")
    return [f"main: done (run {done.run_id})",
            f"  champion: {name} version {champion}; alias 'champion' {moved}" if champion else
            f"  champion: none for {name}; version {decision.challenger} {moved}",
            f"  {fid}",
            f"  look further: {where}",
            f"                report: runs:/{done.evaluated.run_id}/report/report.html",
            f"                serve: make serve MODEL_URI=models:/{name}@champion"]


def _sweep_lines(done) -> list[str]:
    columns = [k for k in done.ranking.rows[0] if k not in ("training_run_id", "error", "winner")]
    table = [columns] + [[_cell(row[k]) for k in columns] for row in done.ranking.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["sweep: " + "  ".join(cell.rjust(width) for cell, width in zip(line, widths)).rstrip()
             + ("  <- winner" if i and done.ranking.rows[i - 1]["winner"] else "")
             for i, line in enumerate(table)]
    winner = done.ranking.winner
    lines += [f"sweep: trial {winner.trial.index} wins (run {winner.training_run_id})",
              registered_line(done.model_name, done.version)]
    lines += promoted_lines(done.promoted)
    return [*lines, f"sweep: run {done.run_id} done; the ranking is in its artifacts under sweep/"]


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rollback_lines(done) -> list[str]:
    name, demoted, restored = done
    return [f"rollback: {name} champion moved from version {demoted} back to {restored}"]


def _sample_lines(done) -> list[str]:
    count, out = done
    return [f"sample: {count} images -> {out} and {out.with_suffix('.png')}"]


def _data_flags(parser):
    actions = parser.add_subparsers(dest="action", required=True, parser_class=Parser)
    download = actions.add_parser("download", help="fetch MNIST, check it, and write a local copy")
    data = param(TrainConfig, "data")
    add_flag(download, data, default=data.default)
    download.add_argument("--to", required=True, type=Path, help="the .npz to write (must not exist)")


def _data(args):
    from training import jobs

    _check_new_npz("to", args.to)
    return lambda: (jobs.download_data(args.data, args.to), args.to)


def _data_lines(done) -> list[str]:
    mnist, target = done
    counts = f"{len(mnist.x_train):,} training and {len(mnist.x_test):,} test images"
    return [f"data: {mnist.source} checked (sha256 {mnist.sha256[:16]}..., {counts}), written to {target}",
            f"data: train offline with --data {target} (mlflow run: -P data={target})"]


def _model_name_flag(parser):
    _job_flags(parser, ("model_name",))


COMMANDS: dict[str, Command] = {
    "train": Command("train a GAN, tracked in MLflow", _train_flags, _train, lambda t: [trained_line(t)]),
    "main": Command("train, evaluate, register, promote", _main_flags, _main, _main_lines),
    "sweep": Command("train several trials, rank them, register and promote the best", _sweep_flags, _sweep,
                     _sweep_lines),
    "evaluate": Command("score a generator's samples against MNIST's test split", _evaluate_flags, _evaluate,
                        lambda e: [evaluated_line(e)]),
    "register": Command("register a trained generator as 'challenger'", _register_flags, _register,
                        lambda done: [registered_line(*done)]),
    "promote": Command("make the challenger champion if it is better", _promote_flags, _promote,
                       promoted_lines),
    "rollback": Command("point 'champion' back at the previous champion", _model_name_flag, _rollback,
                        _rollback_lines),
    "sample": Command("write N generated digits to .npz and a PNG grid", _sample_flags, _sample,
                      _sample_lines, tracked=False),
    "data": Command("data download: a checked local copy of MNIST, for machines without internet",
                    _data_flags, _data, _data_lines, tracked=False),
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
    with console.quiet(console.verbose_requested(args.verbose)):
        try:
            run = command.prepare(args)
            if command.tracked:
                checks.tracking_server()
        except (ConfigError, ValueError) as err:
            print(f"mnist-gan {args.command}: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        return _run(args.command, run, command.report)


def _run(name: str, run, report) -> int:
    try:
        result = run()
    except Preempted as err:  # before the RuntimeError it derives from
        print(f"mnist-gan {name}: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as err:
        print(f"mnist-gan {name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (RuntimeError, OSError, *_mlflow_errors()) as err:  # NonFiniteLoss, RegistryError: RuntimeErrors
        print(f"mnist-gan {name}: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    for line in report(result):
        print(line)
    return 0


def _mlflow_errors() -> tuple[type[Exception], ...]:
    """MlflowException, if the job imported MLflow (else nothing can have raised it): a command that
    never talks to MLflow, such as `pipeline compile`, does not import it to report its errors."""
    exceptions = sys.modules.get("mlflow.exceptions")
    return (exceptions.MlflowException,) if exceptions else ()


if __name__ == "__main__":
    sys.exit(main())
