"""Command-line flags derived from the configs' parameters: a parser whose errors take one line, flags
that parse and check their values as the configs do, and the sweep's SPEC and -s axes. The `mnist-gan`
commands and the `pipeline` command (pipelines/__main__.py) build their flags from these."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from training import deploy
from training.config import ConfigError, Param, params, parse_and_check
from training.redaction import redacted

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block, quoting no URL's secrets
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redacted(message)}\n")

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


def add_flag(parser: argparse.ArgumentParser, p: Param, *aliases: str, default: Any = None,
             required: bool = False) -> None:
    """A flag for a parameter. Left out, it is None (the config's default applies) unless `default`."""
    shown = f" (default: {p.default})" if p.default is not None else ""
    if p.type == "bool":
        parser.add_argument(p.flag, *aliases, dest=p.name, nargs="?", const=True, default=default,
                            type=typed(p), metavar="BOOL", help=p.help + shown)
    else:
        parser.add_argument(p.flag, *aliases, dest=p.name, default=default, type=typed(p),
                            metavar=p.type.upper(), help=p.help + shown, required=required)


def given(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The parameters of `cls` that were given on the command line."""
    return {p.name: getattr(args, p.name) for p in params(cls) if getattr(args, p.name, None) is not None}


def add_sweep_flags(parser: argparse.ArgumentParser, spec_flag: str = "--spec") -> None:
    """SPEC and -s axes: the sweep's trials (training/sweep.py says what SPEC may hold)."""
    parser.add_argument(spec_flag, dest="spec", default=None, metavar="SPEC",
                        help="YAML/JSON file or text: a grid {name: [values]} or a list of trials")
    parser.add_argument("-s", "--set", dest="axes", action="append", default=[], metavar="NAME=V1,V2",
                        help="one more grid axis (repeatable), e.g. -s seed=0,1,2")


def add_serving_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      required: bool = False):
    """The flags of deploy.Target's parameters (those in `names`, or all); the artifacts destination
    defaults to $MNIST_GAN_ARTIFACTS_DESTINATION; `required`: --inference-service must be given."""
    for p in deploy.PARAMS:
        if names is None or p.name in names:
            default = deploy.default_destination() if p is deploy.ARTIFACTS_DESTINATION else p.default
            add_flag(parser, p, default=default, required=required and p is deploy.INFERENCE_SERVICE)


def serving_target(args: argparse.Namespace) -> deploy.Target | None:
    """The deploy.Target the serving flags describe; None without --inference-service."""
    if getattr(args, "inference_service", None) is None:
        return None
    return deploy.Target(**{p.name: getattr(args, p.name) for p in deploy.PARAMS if hasattr(args, p.name)})
